/* Unit tests of the platform configuration: sizes, info strings, the demo
 * and test platforms, and one malformed tree per error class (fixtures in
 * tests/config/, compiled by dtc at build time; truncated, empty and
 * non-DTB files and an unterminated string are made here). Each error must
 * name the node and the property. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <libfdt.h>

#include "config.h"

static struct pv_platform *plat;
static char err[1024];
static int fds_before;

static int count_fds(void)
{
        char path[64];
        int n = 0;
        for (int fd = 0; fd < 1024; fd++) {
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                n += access(path, F_OK) == 0;
        }
        return n;
}

static const char *fixture(const char *name)
{
        static char path[512];
        const char *dir = getenv("PV_FIXTURE_DIR");
        snprintf(path, sizeof(path), "%s/config-%s.dtb", dir ? dir : "tests", name);
        return path;
}

static const char *conf(const char *name)
{
        static char path[512];
        const char *dir = getenv("PV_CONF_DIR");
        snprintf(path, sizeof(path), "%s/%s", dir ? dir : "conf", name);
        return path;
}

/* Load a bad fixture: must fail, and the message must name all of needles. */
static void expect_error(const char *name, const char *const *needles)
{
        int rc = pv_config_load_file(fixture(name), plat, err, sizeof(err));
        CU_ASSERT(rc < 0);
        for (int i = 0; needles[i]; i++) {
                if (!strstr(err, needles[i])) {
                        fprintf(stderr, "\n%s: message \"%s\" lacks \"%s\"\n", name, err, needles[i]);
                        CU_FAIL("message does not name the node or property");
                }
        }
        CU_ASSERT_EQUAL(plat->nvlinks, 0);
}

#define EXPECT(name, ...) expect_error(name, (const char *const[]){ __VA_ARGS__, NULL })

static void test_parse_size(void)
{
        uint64_t v;
        CU_ASSERT_EQUAL(pv_parse_size("128K", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 131072);
        CU_ASSERT_EQUAL(pv_parse_size("2M", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 2u << 20);
        CU_ASSERT_EQUAL(pv_parse_size("1g", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 1u << 30);
        CU_ASSERT_EQUAL(pv_parse_size("0x1000", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 4096);
        CU_ASSERT_EQUAL(pv_parse_size("0x10k", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 16384);
        CU_ASSERT_EQUAL(pv_parse_size("42", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, 42);
        CU_ASSERT_EQUAL(pv_parse_size("", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("K", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("12Q", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("1 K", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("-1", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("1KK", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("0x", 0, UINT64_MAX, &v), -EINVAL);
        CU_ASSERT_EQUAL(pv_parse_size("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
        CU_ASSERT_EQUAL(pv_parse_size("18446744073709551615", 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(pv_parse_size("17179869184G", 0, UINT64_MAX, &v), -ERANGE);
        CU_ASSERT_EQUAL(pv_parse_size("4G", 0, 1u << 30, &v), -ERANGE);
        CU_ASSERT_EQUAL(pv_parse_size("1", 16, 1u << 30, &v), -ERANGE);
}

static void test_info_vdev(void)
{
        struct pv_info in;
        const char *seed[] = { "vumem-pdev=128K", "vrpq-reqs=128K", "vrpq-pmem=2M" };
        CU_ASSERT_EQUAL(pv_info_parse(seed, 3, false, &in, err, sizeof(err)), 0);
        CU_ASSERT(in.has_vrpq && in.has_vumem);
        CU_ASSERT_EQUAL(in.vrpq_reqs, 131072);
        CU_ASSERT_EQUAL(in.vrpq_pmem, 2u << 20);
        CU_ASSERT_EQUAL(in.vumem_pdev, 131072);
        CU_ASSERT_STRING_EQUAL(in.raw, "vumem-pdev=128K; vrpq-reqs=128K; vrpq-pmem=2M");

        /* The seed's garbled fragment, mended: one string, ',' separated, spaces. */
        const char *one[] = { " vrpq-reqs=128K, vrpq-pmem=2M ;vumem-pdev=4K;" };
        CU_ASSERT_EQUAL(pv_info_parse(one, 1, false, &in, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(in.vrpq_reqs, 131072);
        CU_ASSERT_EQUAL(in.vumem_pdev, 4096);

        /* Rounding: requests to a power of two, bytes to pages. */
        const char *round[] = { "vrpq-reqs=100", "vrpq-pmem=5000" };
        CU_ASSERT_EQUAL(pv_info_parse(round, 2, false, &in, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(in.vrpq_reqs, 128);
        CU_ASSERT_EQUAL(in.vrpq_pmem, 8192);

        const char *dup[] = { "vumem-pdev=4K", "vumem-pdev=8K" };
        CU_ASSERT_EQUAL(pv_info_parse(dup, 2, false, &in, err, sizeof(err)), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "twice"));
        const char *bare[] = { "vumem-pdev=4K;oops" };
        CU_ASSERT_EQUAL(pv_info_parse(bare, 1, false, &in, err, sizeof(err)), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "oops"));
        const char *wrong[] = { "name=x" };
        CU_ASSERT_EQUAL(pv_info_parse(wrong, 1, false, &in, err, sizeof(err)), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown key \"name\""));
}

static void test_info_vbpipe(void)
{
        struct pv_info in;
        const char *seed[] = { ";;;wakeup=250;name=vbpipe0" };
        CU_ASSERT_EQUAL(pv_info_parse(seed, 1, true, &in, err, sizeof(err)), 0);
        CU_ASSERT(!in.vbpipe_any);
        CU_ASSERT_EQUAL(in.vbpipe_size, PV_VBPIPE_SIZE_DEF);
        CU_ASSERT_EQUAL(in.vbpipe_minor, -1);
        CU_ASSERT_EQUAL(in.wakeup_ms, 250);
        CU_ASSERT_STRING_EQUAL(in.name, "vbpipe0");

        const char *full[] = { "a;100K;7;name=p.x-1" };
        CU_ASSERT_EQUAL(pv_info_parse(full, 1, true, &in, err, sizeof(err)), 0);
        CU_ASSERT(in.vbpipe_any);
        CU_ASSERT_EQUAL(in.vbpipe_size, 128 * 1024);
        CU_ASSERT_EQUAL(in.vbpipe_minor, 7);
        CU_ASSERT_STRING_EQUAL(in.name, "p.x-1");

        const char *none[] = { "" };
        CU_ASSERT_EQUAL(pv_info_parse(none, 1, true, &in, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(in.vbpipe_size, PV_VBPIPE_SIZE_DEF);
        CU_ASSERT_EQUAL(in.name[0], 0);

        const char *bad[][1] = {
                { "z;;;name=a" },       /* unknown flag */
                { ";1K" },              /* too small */
                { ";128M" },            /* too large */
                { ";;256" },            /* minor out of range */
                { ";;;;" },             /* a fourth positional field (empty is fine) */
                { ";;;x" },             /* a fourth positional field */
                { ";;;wakeup=1s" },     /* not a number of ms */
                { ";;;name=a/b" },      /* not a device name */
                { ";;;vrpq-reqs=16" },  /* not a vbpipe key */
        };
        int expect[] = { -EINVAL, -EINVAL, -EINVAL, -EINVAL, 0, -EINVAL, -EINVAL, -EINVAL, -EINVAL };
        for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
                int rc = pv_info_parse(bad[i], 1, true, &in, err, sizeof(err));
                if (rc != expect[i])
                        fprintf(stderr, "\ncase %zu \"%s\": %d (%s)\n", i, bad[i][0], rc, err);
                CU_ASSERT_EQUAL(rc, expect[i]);
        }
}

static void test_demo(void)
{
        CU_ASSERT_EQUAL_FATAL(pv_config_load_file(conf("demo.dtb"), plat, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(plat->nvms, 3);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm2"), 0);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm4"), 2);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm9"), -1);
        CU_ASSERT_EQUAL_FATAL(plat->nvlinks, 2);
        const struct pv_vlink_cfg *vogl = &plat->vlinks[0], *pipe = &plat->vlinks[1];
        CU_ASSERT_EQUAL(vogl->kind, PV_VLINK_VDEV);
        CU_ASSERT_STRING_EQUAL(vogl->compatible, "vogl");
        CU_ASSERT_EQUAL(vogl->vm[PV_SERVER], 0);
        CU_ASSERT_EQUAL(vogl->vm[PV_CLIENT], 1);
        CU_ASSERT_EQUAL(vogl->vrpq_reqs, 131072);
        CU_ASSERT_EQUAL(vogl->vrpq_pmem, 2097152);
        CU_ASSERT_EQUAL(vogl->vumem_pdev, 131072);
        CU_ASSERT_STRING_EQUAL(vogl->link_name, "vm2-vm3-vogl0");
        CU_ASSERT_STRING_EQUAL(vogl->path[PV_SERVER], "/vms/vm2/vdevs/vogl@be");
        CU_ASSERT_STRING_EQUAL(vogl->path[PV_CLIENT], "/vms/vm3/vdevs/vogl@fe");
        CU_ASSERT_EQUAL(vogl->access[PV_SERVER].mode, 0660);
        char dev[PV_NAME_MAX];
        CU_ASSERT_EQUAL(pv_config_dev_name(vogl, PV_SERVER, "vrpq", dev, sizeof(dev)), 0);
        CU_ASSERT_STRING_EQUAL(dev, "vrpq-srv-vogl0");
        CU_ASSERT_EQUAL(pv_config_dev_name(vogl, PV_CLIENT, "vrpq", dev, sizeof(dev)), 0);
        CU_ASSERT_STRING_EQUAL(dev, "vrpq-clt-vogl0");
        CU_ASSERT_EQUAL(pv_config_dev_name(vogl, PV_SERVER, "vumem", dev, sizeof(dev)), 0);
        CU_ASSERT_STRING_EQUAL(dev, "vumem-srv-vogl0");
        CU_ASSERT_EQUAL(pv_config_dev_name(vogl, PV_CLIENT, "vumem", dev, sizeof(dev)), 0);
        CU_ASSERT_STRING_EQUAL(dev, "vumem-clt-vogl0");
        CU_ASSERT_EQUAL(pv_config_dev_name(vogl, PV_CLIENT, "vbpipe", dev, sizeof(dev)), -ENOENT);

        CU_ASSERT_EQUAL(pipe->kind, PV_VLINK_VBPIPE);
        CU_ASSERT_EQUAL(pipe->vm[PV_SERVER], 0);
        CU_ASSERT_EQUAL(pipe->vm[PV_CLIENT], 2);
        CU_ASSERT_EQUAL(pipe->info[PV_SERVER].wakeup_ms, 250);
        CU_ASSERT_EQUAL(pipe->info[PV_CLIENT].wakeup_ms, 250);
        CU_ASSERT_EQUAL(pipe->vbpipe_size, PV_VBPIPE_SIZE_DEF);
        CU_ASSERT_STRING_EQUAL(pipe->pipe_name[PV_SERVER], "vbpipe0");
        CU_ASSERT_STRING_EQUAL(pipe->pipe_name[PV_CLIENT], "vbpipe0");
        CU_ASSERT_STRING_EQUAL(pipe->link_name, "vm2-vm4-vbpipe0");
        CU_ASSERT_EQUAL(pv_config_dev_name(pipe, PV_CLIENT, "vbpipe", dev, sizeof(dev)), 0);
        CU_ASSERT_STRING_EQUAL(dev, "vbpipe0");
        CU_ASSERT_EQUAL(pipe->vrpq_reqs, 0);
        CU_ASSERT_EQUAL(pipe->vumem_pdev, 0);
}

static const struct pv_vlink_cfg *find_link(const char *name)
{
        for (unsigned i = 0; i < plat->nvlinks; i++)
                if (strcmp(plat->vlinks[i].link_name, name) == 0)
                        return &plat->vlinks[i];
        return NULL;
}

static void test_two_clients(void)
{
        CU_ASSERT_EQUAL_FATAL(pv_config_load_file(conf("test-2clients.dtb"), plat, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(plat->nvms, 4);
        CU_ASSERT_EQUAL(plat->nvlinks, 5);
        const struct pv_vlink_cfg *a = find_link("vm2-vm3-vogl0"), *b = find_link("vm2-vm5-vogl1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        char dev[PV_NAME_MAX];
        pv_config_dev_name(a, PV_SERVER, "vrpq", dev, sizeof(dev));
        CU_ASSERT_STRING_EQUAL(dev, "vrpq-srv-vogl0");
        pv_config_dev_name(b, PV_SERVER, "vrpq", dev, sizeof(dev));
        CU_ASSERT_STRING_EQUAL(dev, "vrpq-srv-vogl1");
        pv_config_dev_name(b, PV_CLIENT, "vrpq", dev, sizeof(dev));
        CU_ASSERT_STRING_EQUAL(dev, "vrpq-clt-vogl0");
        const struct pv_vlink_cfg *small = find_link("vm2-vm3-vsmall0");
        CU_ASSERT_PTR_NOT_NULL_FATAL(small);
        CU_ASSERT_EQUAL(small->vrpq_reqs, 64);
        CU_ASSERT_EQUAL(small->vrpq_pmem, 16384);
        CU_ASSERT_EQUAL(small->vumem_pdev, 4096);
        pv_config_dev_name(small, PV_CLIENT, "vumem", dev, sizeof(dev));
        CU_ASSERT_STRING_EQUAL(dev, "vumem-clt-vsmall0");
        const struct pv_vlink_cfg *p1 = find_link("vm2-vm4-vbpipe1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
        CU_ASSERT(p1->info[PV_SERVER].vbpipe_any);
        CU_ASSERT(p1->info[PV_CLIENT].vbpipe_any);
        CU_ASSERT_EQUAL(p1->vbpipe_size, 65536);
        CU_ASSERT_PTR_NOT_NULL(find_link("vm2-vm4-vbpipe0"));
}

static void test_access(void)
{
        CU_ASSERT_EQUAL_FATAL(pv_config_load_file(fixture("access"), plat, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL_FATAL(plat->nvlinks, 1);
        const struct pv_vlink_cfg *p = &plat->vlinks[0];
        CU_ASSERT_STRING_EQUAL(p->access[PV_SERVER].owner, "root");
        CU_ASSERT_STRING_EQUAL(p->access[PV_SERVER].group, "video");
        CU_ASSERT_EQUAL(p->access[PV_SERVER].mode, 0666);
        CU_ASSERT_EQUAL(p->access[PV_CLIENT].mode, 0660);
        CU_ASSERT_EQUAL(p->vbpipe_size, 8192);
        /* No name=: named after the minor (server) or the rank (client). */
        CU_ASSERT_STRING_EQUAL(p->pipe_name[PV_SERVER], "vbpipe3");
        CU_ASSERT_STRING_EQUAL(p->pipe_name[PV_CLIENT], "vbpipe0");
        CU_ASSERT(p->info[PV_CLIENT].vbpipe_any);
        CU_ASSERT(!p->info[PV_SERVER].vbpipe_any);
}

static void test_bad_trees(void)
{
        EXPECT("bad-phandle", "/vms/vm3/vdevs/vogl@fe", "peer-phandle", "no node has phandle 0x99");
        EXPECT("client-to-client", "/vms/vm4/vdevs/vogl@fe", "peer-phandle", "/vms/vm3/vdevs/vogl@fe", "client end");
        EXPECT("client-to-nonvdev", "/vms/vm3/vdevs/vogl@fe", "peer-phandle", "/vms/vm2", "not a vdev");
        EXPECT("same-vm", "/vms/vm2/vdevs/vogl@fe", "peer-phandle", "both ends are in vm2");
        EXPECT("dup-vbpipe", "/vms/vm4/vdevs/vbpipe@2", "vbpipe0", "/vms/vm4/vdevs/vbpipe@1");
        EXPECT("bad-size", "/vms/vm2/vdevs/vogl@be", "property info", "vrpq-pmem=2Q", "not a size");
        EXPECT("big-size", "/vms/vm2/vdevs/vogl@be", "property info", "vrpq-pmem=4G", "out of range");
        EXPECT("unknown-key", "/vms/vm2/vdevs/vogl@be", "property info", "vrpq-foo");
        EXPECT("bad-flag", "/vms/vm2/vdevs/vbpipe@be", "property info", "flag 'z'");
        EXPECT("server-no-compat", "/vms/vm2/vdevs/vogl@be", "compatible");
        EXPECT("both-marks", "/vms/vm2/vdevs/vogl@be", "property server", "not both");
        EXPECT("half-vrpq", "/vms/vm2/vdevs/vogl@be", "property info", "vrpq-pmem");
        EXPECT("no-params", "/vms/vm2/vdevs/vogl@be", "property info", "vumem-pdev");
        EXPECT("client-no-peer", "/vms/vm3/vdevs/vogl@fe", "property client", "peer-phandle");
        EXPECT("control-name", "/vms/vm2/vdevs/vbpipe@be", "control");
        EXPECT("bad-mode", "/vms/vm2/vdevs/vbpipe@be", "property pvd,mode");
        EXPECT("no-vms", "/vms");
}

static char tmpdir[64];

static const char *write_tmp(const char *name, const void *data, size_t len)
{
        static char path[128];
        snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
        FILE *f = fopen(path, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        if (len)
                CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
        fclose(f);
        return path;
}

static void test_bad_files(void)
{
        static char blob[65536];
        FILE *f = fopen(conf("demo.dtb"), "rb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        size_t len = fread(blob, 1, sizeof(blob), f);
        fclose(f);
        CU_ASSERT_FATAL(len > 100);

        const char *p = write_tmp("truncated.dtb", blob, len - 16);
        CU_ASSERT(pv_config_load_file(p, plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "truncated.dtb: truncated"));
        unlink(p);

        p = write_tmp("empty.dtb", "", 0);
        CU_ASSERT(pv_config_load_file(p, plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "empty"));
        unlink(p);

        static const char text[] = "/dts-v1/;\n/ {\n        compatible = \"pvd,platform\";\n};\n";
        p = write_tmp("text.dtb", text, sizeof(text) - 1);
        CU_ASSERT(pv_config_load_file(p, plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "text.dtb: not a device tree blob"));
        unlink(p);

        /* A header that lies about its blocks. */
        memcpy(blob + 8, "\x00\x00\xff\xf0", 4); /* off_dt_struct far outside */
        p = write_tmp("corrupt.dtb", blob, len);
        CU_ASSERT(pv_config_load_file(p, plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt.dtb"));
        unlink(p);

        snprintf(err, sizeof(err), "x");
        CU_ASSERT(pv_config_load_file("/nonexistent/pvd.dtb", plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/pvd.dtb: cannot open"));
}

/* A compatible string whose NUL is missing: libfdt hands us the bytes. */
static void test_unterminated_string(void)
{
        static char buf[4096];
        CU_ASSERT_EQUAL_FATAL(fdt_create_empty_tree(buf, sizeof(buf)), 0);
        /* Offsets move as nodes are added: look each parent up by path. */
        fdt_add_subnode(buf, 0, "vms");
        fdt_add_subnode(buf, fdt_path_offset(buf, "/vms"), "vm2");
        fdt_add_subnode(buf, fdt_path_offset(buf, "/vms"), "vm3");
        fdt_add_subnode(buf, fdt_path_offset(buf, "/vms/vm2"), "vdevs");
        fdt_add_subnode(buf, fdt_path_offset(buf, "/vms/vm3"), "vdevs");
        int be = fdt_add_subnode(buf, fdt_path_offset(buf, "/vms/vm2/vdevs"), "vogl@be");
        CU_ASSERT_FATAL(be >= 0);
        CU_ASSERT_EQUAL(fdt_setprop(buf, be, "compatible", "vogl", 4), 0); /* no NUL */
        CU_ASSERT(pv_config_load_blob(buf, fdt_totalsize(buf), "mem.dtb", plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "/vms/vm2/vdevs/vogl@be: property compatible"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "NUL"));

        CU_ASSERT_EQUAL(fdt_setprop_string(buf, be, "compatible", "vogl"), 0);
        CU_ASSERT_EQUAL(fdt_setprop(buf, be, "info", "vumem-pdev=4K\0vrpq", 18), 0); /* last one unterminated */
        CU_ASSERT(pv_config_load_blob(buf, fdt_totalsize(buf), "mem.dtb", plat, err, sizeof(err)) < 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "/vms/vm2/vdevs/vogl@be: property info"));
}

int main(void)
{
        fds_before = count_fds();
        plat = calloc(1, sizeof(*plat));
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/pvt-config-XXXXXX");
        if (!plat || !mkdtemp(tmpdir))
                return 1;
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("config", NULL, NULL);
        CU_add_test(s, "sizes", test_parse_size);
        CU_add_test(s, "info of VRPQ/VUMEM vlinks", test_info_vdev);
        CU_add_test(s, "info of vbpipes", test_info_vbpipe);
        CU_add_test(s, "demo platform", test_demo);
        CU_add_test(s, "two-client test platform", test_two_clients);
        CU_add_test(s, "access properties and pipe names", test_access);
        CU_add_test(s, "malformed trees", test_bad_trees);
        CU_add_test(s, "truncated, empty, non-DTB files", test_bad_files);
        CU_add_test(s, "unterminated strings", test_unterminated_string);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned fails = CU_get_number_of_failures();
        CU_cleanup_registry();
        free(plat);
        rmdir(tmpdir);
        int fds_after = count_fds();
        if (fds_after != fds_before) {
                fprintf(stderr, "fd leak: %d before, %d after\n", fds_before, fds_after);
                fails++;
        }
        return fails ? 1 : 0;
}
