/* Unit tests of the platform loader (daemon/config.c, daemon/info.c): the
 * shipped platforms, one bad platform per class of configuration error,
 * hostile blobs built in memory, and the size and info parsers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <libfdt.h>

#include "config.h"
#include "pvt-run.h"

static const char *fixtures;  /* build directory holding config-<name>.dtb */
static const char *demo_dtb;
static const char *two_dtb;   /* test-2clients.dtb */
static struct pv_platform *plat; /* far too large for the stack */
static char err[1024];
static char tmpdir[] = "/tmp/pvd-test-config-XXXXXX";

static int suite_init(void)
{
        plat = malloc(sizeof(*plat));
        return plat && mkdtemp(tmpdir) ? 0 : -1;
}

static int suite_clean(void)
{
        free(plat);
        return rmdir(tmpdir);
}

/* Loads a file, checking that the loader leaves no fd behind and that its
 * message is one line. */
static int load(const char *path)
{
        int before = pvt_run_fd_count();
        snprintf(err, sizeof(err), "(untouched)");
        int rc = pv_config_load_file(path, plat, err, sizeof(err));
        CU_ASSERT_EQUAL(pvt_run_fd_count(), before);
        CU_ASSERT_PTR_NULL(strchr(err, '\n'));
        if (rc < 0) {
                CU_ASSERT_EQUAL(plat->nvms, 0);
                CU_ASSERT_EQUAL(plat->nvlinks, 0);
        }
        return rc;
}

static void check_error(int rc, int want, const char *path, const char *prop, const char *text)
{
        char pp[128] = "";
        if (prop)
                snprintf(pp, sizeof(pp), ": property %s: ", prop);
        bool ok = rc == want && (!path || strstr(err, path)) && strstr(err, pp) && strstr(err, text);
        if (!ok)
                fprintf(stderr, "\n    got rc %d (want %d): %s\n", rc, want, err);
        CU_ASSERT_EQUAL(rc, want);
        if (path)
                CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, pp));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, text));
}

static void fixture_error(const char *name, const char *path, const char *prop, const char *text)
{
        char file[512];
        snprintf(file, sizeof(file), "%s/config-%s.dtb", fixtures, name);
        int rc = load(file);
        check_error(rc, -EINVAL, path, prop, text);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, file));
}

static const struct pv_vlink_cfg *find_link(const char *link_name)
{
        for (unsigned i = 0; i < plat->nvlinks; i++)
                if (strcmp(plat->vlinks[i].link_name, link_name) == 0)
                        return &plat->vlinks[i];
        return NULL;
}

static void check_dev(const struct pv_vlink_cfg *vl, enum pv_side side, const char *drv, const char *want)
{
        char name[PV_NAME_MAX];
        int rc = pv_config_dev_name(vl, side, drv, name, sizeof(name));
        CU_ASSERT_EQUAL(rc, want ? 0 : -ENOENT);
        if (want && rc == 0)
                CU_ASSERT_STRING_EQUAL(name, want);
}

/* ---- the shipped platforms ------------------------------------------------ */

static void test_demo(void)
{
        CU_ASSERT_EQUAL_FATAL(load(demo_dtb), 0);
        CU_ASSERT_EQUAL(plat->nvms, 3);
        CU_ASSERT_STRING_EQUAL(plat->vms[0].name, "vm2");
        CU_ASSERT_STRING_EQUAL(plat->vms[1].name, "vm3");
        CU_ASSERT_STRING_EQUAL(plat->vms[2].name, "vm4");
        CU_ASSERT_EQUAL_FATAL(plat->nvlinks, 2);

        const struct pv_vlink_cfg *vl = &plat->vlinks[0];
        CU_ASSERT_EQUAL(vl->id, 0);
        CU_ASSERT_EQUAL(vl->kind, PV_VLINK_VDEV);
        CU_ASSERT_STRING_EQUAL(vl->compatible, "vogl");
        CU_ASSERT_EQUAL(vl->vm[PV_SERVER], 0);
        CU_ASSERT_EQUAL(vl->vm[PV_CLIENT], 1);
        CU_ASSERT_STRING_EQUAL(vl->path[PV_SERVER], "/vms/vm2/vdevs/vogl@be");
        CU_ASSERT_STRING_EQUAL(vl->path[PV_CLIENT], "/vms/vm3/vdevs/vogl@fe");
        CU_ASSERT_EQUAL(vl->vrpq_reqs, 131072);
        CU_ASSERT_EQUAL(vl->vrpq_pmem, 2097152);
        CU_ASSERT_EQUAL(vl->vumem_pdev, 131072);
        CU_ASSERT_EQUAL(vl->index[PV_SERVER], 0);
        CU_ASSERT_EQUAL(vl->index[PV_CLIENT], 0);
        CU_ASSERT_STRING_EQUAL(vl->link_name, "vm2-vm3-vogl0");
        CU_ASSERT_STRING_EQUAL(vl->info[PV_SERVER].raw, "vumem-pdev=128K; vrpq-reqs=128K; vrpq-pmem=2M");
        CU_ASSERT_EQUAL(vl->info[PV_CLIENT].raw[0], '\0');
        CU_ASSERT_EQUAL(vl->access[PV_SERVER].mode, 0660);
        CU_ASSERT_EQUAL(vl->access[PV_CLIENT].owner[0], '\0');
        check_dev(vl, PV_SERVER, "vrpq", "vrpq-srv-vogl0");
        check_dev(vl, PV_CLIENT, "vrpq", "vrpq-clt-vogl0");
        check_dev(vl, PV_SERVER, "vumem", "vumem-srv-vogl0");
        check_dev(vl, PV_CLIENT, "vumem", "vumem-clt-vogl0");
        check_dev(vl, PV_CLIENT, "vbpipe", NULL);

        vl = &plat->vlinks[1];
        CU_ASSERT_EQUAL(vl->kind, PV_VLINK_VBPIPE);
        CU_ASSERT_STRING_EQUAL(vl->compatible, "vbpipe");
        CU_ASSERT_EQUAL(vl->vm[PV_SERVER], 0);
        CU_ASSERT_EQUAL(vl->vm[PV_CLIENT], 2);
        CU_ASSERT_EQUAL(vl->vbpipe_size, PV_VBPIPE_SIZE_DEF);
        for (int side = PV_SERVER; side <= PV_CLIENT; side++) {
                CU_ASSERT_EQUAL(vl->info[side].wakeup_ms, 250);
                CU_ASSERT_STRING_EQUAL(vl->info[side].name, "vbpipe0");
                CU_ASSERT_EQUAL(vl->info[side].vbpipe_minor, -1);
                CU_ASSERT_FALSE(vl->info[side].vbpipe_any);
                CU_ASSERT_STRING_EQUAL(vl->pipe_name[side], "vbpipe0");
                check_dev(vl, (enum pv_side)side, NULL, "vbpipe0");
        }
        CU_ASSERT_STRING_EQUAL(vl->link_name, "vm2-vm4-vbpipe0");
        CU_ASSERT_EQUAL(vl->vrpq_reqs, 0);
        CU_ASSERT_EQUAL(vl->vumem_pdev, 0);
}

static void test_two_clients(void)
{
        CU_ASSERT_EQUAL_FATAL(load(two_dtb), 0);
        CU_ASSERT_EQUAL(plat->nvms, 4);
        CU_ASSERT_EQUAL(plat->nvlinks, 5);
        const struct pv_vlink_cfg *v3 = find_link("vm2-vm3-vogl0"), *v5 = find_link("vm2-vm5-vogl1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(v3);
        CU_ASSERT_PTR_NOT_NULL_FATAL(v5);
        CU_ASSERT_STRING_EQUAL(plat->vms[v5->vm[PV_CLIENT]].name, "vm5");
        check_dev(v3, PV_SERVER, "vrpq", "vrpq-srv-vogl0");
        check_dev(v5, PV_SERVER, "vrpq", "vrpq-srv-vogl1");
        check_dev(v5, PV_SERVER, "vumem", "vumem-srv-vogl1");
        check_dev(v3, PV_CLIENT, "vrpq", "vrpq-clt-vogl0");
        check_dev(v5, PV_CLIENT, "vrpq", "vrpq-clt-vogl0");
        CU_ASSERT_EQUAL(v5->vrpq_reqs, 131072);

        const struct pv_vlink_cfg *small = find_link("vm2-vm3-vsmall0");
        CU_ASSERT_PTR_NOT_NULL_FATAL(small);
        CU_ASSERT_EQUAL(small->vrpq_reqs, 64);
        CU_ASSERT_EQUAL(small->vrpq_pmem, 16384);
        CU_ASSERT_EQUAL(small->vumem_pdev, 4096);
        check_dev(small, PV_CLIENT, "vrpq", "vrpq-clt-vsmall0");

        const struct pv_vlink_cfg *p1 = find_link("vm2-vm4-vbpipe1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
        CU_ASSERT_EQUAL(p1->vbpipe_size, 65536);
        CU_ASSERT_TRUE(p1->info[PV_SERVER].vbpipe_any);
        CU_ASSERT_TRUE(p1->info[PV_CLIENT].vbpipe_any);
        CU_ASSERT_STRING_EQUAL(p1->pipe_name[PV_SERVER], "vbpipe1");
        check_dev(p1, PV_CLIENT, NULL, "vbpipe1");
        CU_ASSERT_PTR_NOT_NULL(find_link("vm2-vm4-vbpipe0"));
}

static void test_access_and_names(void)
{
        char file[512];
        snprintf(file, sizeof(file), "%s/config-good-access.dtb", fixtures);
        CU_ASSERT_EQUAL_FATAL(load(file), 0);
        const struct pv_vlink_cfg *vl = find_link("vm2-vm3-vogl0");
        CU_ASSERT_PTR_NOT_NULL_FATAL(vl);
        CU_ASSERT_STRING_EQUAL(vl->access[PV_SERVER].owner, "gpu");
        CU_ASSERT_STRING_EQUAL(vl->access[PV_SERVER].group, "video");
        CU_ASSERT_EQUAL(vl->access[PV_SERVER].mode, 0660);
        CU_ASSERT_STRING_EQUAL(vl->access[PV_CLIENT].owner, "1000");
        CU_ASSERT_EQUAL(vl->vrpq_reqs, 128);   /* 100, rounded up to a power of two */
        CU_ASSERT_EQUAL(vl->vrpq_pmem, 8192);  /* 5000, rounded up to pages */
        CU_ASSERT_EQUAL(vl->vumem_pdev, 0);
        check_dev(vl, PV_SERVER, "vrpq", "vrpq-srv-vogl0");
        check_dev(vl, PV_SERVER, "vumem", NULL);
        check_dev(vl, PV_SERVER, "bogus", NULL);

        const struct pv_vlink_cfg *p0 = find_link("vm2-vm4-vbpipe7");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p0);
        CU_ASSERT_EQUAL(p0->info[PV_SERVER].vbpipe_minor, 7);
        CU_ASSERT_STRING_EQUAL(p0->pipe_name[PV_CLIENT], "vbpipe0"); /* rank in vm4 */
        CU_ASSERT_EQUAL(p0->access[PV_SERVER].mode, 0600);
        const struct pv_vlink_cfg *p1 = find_link("vm2-vm4-vbpipe1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
        CU_ASSERT_EQUAL(p1->index[PV_SERVER], 1);
        CU_ASSERT_STRING_EQUAL(p1->pipe_name[PV_CLIENT], "vbpipe1");
        CU_ASSERT_EQUAL(plat->nvlinks, 3); /* the unused server makes no vlink */
}

static void test_policy(void)
{
        char file[512];
        snprintf(file, sizeof(file), "%s/config-good-policy.dtb", fixtures);
        CU_ASSERT_EQUAL_FATAL(load(file), 0);
        const struct pv_vm_policy *p = &plat->vms[pv_config_vm_find(plat, "vm3")].policy;
        CU_ASSERT_EQUAL(p->conns_per_user, 100);
        CU_ASSERT_EQUAL(p->node_conns_per_user, 7);
        CU_ASSERT_TRUE(p->status_group_only);
        CU_ASSERT_STRING_EQUAL(p->control_group, "adm");
        /* A VM that sets nothing gets pvd's defaults (zeros here). */
        p = &plat->vms[pv_config_vm_find(plat, "vm2")].policy;
        CU_ASSERT_EQUAL(p->conns_per_user, 0);
        CU_ASSERT_FALSE(p->status_group_only);
        CU_ASSERT_EQUAL(p->control_group[0], '\0');
}

static void test_bad_policy(void)
{
        fixture_error("bad-policy-status", "/vms/vm3", "pvd,status", "\"everyone\": expected \"public\"");
        fixture_error("bad-policy-limits", "/vms/vm2", "pvd,limits", "\"connections=0\": expected a number");
        fixture_error("bad-policy-key", "/vms/vm4", "pvd,limits", "unknown key \"sessions\"");
}

static void test_vm_find(void)
{
        CU_ASSERT_EQUAL_FATAL(load(two_dtb), 0);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm2"), 0);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm5"), 3);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm9"), -1);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, "vm"), -1);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, ""), -1);
        CU_ASSERT_EQUAL(pv_config_vm_find(plat, NULL), -1);
}

/* ---- bad platforms: one per error class -------------------------------------- */

#define P2(n) "/vms/vm2/vdevs/" n
#define P3(n) "/vms/vm3/vdevs/" n
#define P4(n) "/vms/vm4/vdevs/" n

static void test_dangling(void)
{
        fixture_error("bad-dangling", P3("vogl@fe"), "peer-phandle", "no node has phandle 0x99");
}

static void test_peer_client(void)
{
        fixture_error("bad-peer-client", P4("vogl@fe"), "peer-phandle",
                      "points at a client end (it has peer-phandle): " P3("vogl@fe"));
}

static void test_peer_marked_client(void)
{
        fixture_error("bad-peer-marked-client", P3("vogl@fe"), "peer-phandle",
                      "points at a client end (it is marked client): " P4("vogl@fe"));
}

static void test_peer_nonvdev(void)
{
        fixture_error("bad-peer-nonvdev", P3("vogl@fe"), "peer-phandle", "not a vdev (/vms/vm2;");
}

static void test_same_vm(void)
{
        fixture_error("bad-same-vm", P2("vogl@fe"), "peer-phandle", "both ends are in vm2");
}

static void test_dup_pipe(void)
{
        fixture_error("bad-dup-pipe", P4("vbpipe@fe1"), "info", "vbpipe0 is also used by " P4("vbpipe@fe0"));
}

static void test_dup_vrpq_name(void)
{
        fixture_error("bad-dup-vrpq-name", P2("vbpipe@be"), "info",
                      "vrpq-srv-vogl0 is also used by " P2("vogl@be"));
}

static void test_control_reserved(void)
{
        fixture_error("bad-control", P2("vbpipe@be"), "info", "\"control\" is reserved");
}

static void test_bad_size(void)
{
        fixture_error("bad-size", P2("vogl@be"), "info", "\"vrpq-reqs=12Q\": not a size");
}

static void test_oversize(void)
{
        fixture_error("bad-oversize", P2("vogl@be"), "info", "\"vrpq-pmem=1G\": too large (max 256M)");
}

static void test_unknown_key(void)
{
        fixture_error("bad-key", P2("vogl@be"), "info", "unknown key \"vrpq-frobs\"");
}

static void test_unknown_flag(void)
{
        fixture_error("bad-flag", P2("vbpipe@be"), "info", "unknown vbpipe flag 'z'");
}

static void test_no_compatible(void)
{
        fixture_error("bad-no-compatible", P2("vogl@be"), "compatible", "missing on a server end");
}

static void test_server_and_client(void)
{
        fixture_error("bad-server-client", P2("vogl@be"), "server", "also marked client");
}

static void test_client_without_peer(void)
{
        fixture_error("bad-client-no-peer", P3("vogl@fe"), "client", "has no peer-phandle");
}

static void test_server_with_peer(void)
{
        fixture_error("bad-server-peer", P3("vogl@fe"), "peer-phandle", "marked server");
}

static void test_no_params(void)
{
        fixture_error("bad-no-params", P2("vogl@be"), "info", "gives no vrpq-reqs/vrpq-pmem nor vumem-pdev");
}

static void test_half_vrpq(void)
{
        fixture_error("bad-half-vrpq", P2("vogl@be"), "info", "vrpq-reqs given without vrpq-pmem");
}

static void test_compat_mismatch(void)
{
        fixture_error("bad-compat-mismatch", P3("vomx@fe"), "compatible", "\"vomx\" differs");
}

static void test_disagree(void)
{
        fixture_error("bad-disagree", P3("vogl@fe"), "info", "vumem-pdev 64K differs from the server end's 128K");
}

static void test_pipe_size_disagree(void)
{
        fixture_error("bad-pipe-size", P4("vbpipe@fe"), "info", "ring size 128K differs");
}

static void test_bad_mode(void)
{
        fixture_error("bad-mode", P2("vbpipe@be"), "pvd,mode", "01000 is not a permission mode");
}

static void test_bad_vm_name(void)
{
        fixture_error("bad-vm-name", "/vms/vm6@6", NULL, "VM name");
}

/* ---- broken files ------------------------------------------------------------- */

static int slurp(const char *path, char **out, size_t *len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || !(*out = malloc((size_t)st.st_size)) ||
            read(fd, *out, (size_t)st.st_size) != st.st_size) {
                close(fd);
                return -EIO;
        }
        *len = (size_t)st.st_size;
        close(fd);
        return 0;
}

/* Writes a temp file, loads it, removes it. */
static int load_bytes(const char *name, const void *data, size_t len, char *path, size_t plen)
{
        snprintf(path, plen, "%s/%s", tmpdir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_FATAL(write(fd, data, len) == (ssize_t)len);
        close(fd);
        int rc = load(path);
        unlink(path);
        return rc;
}

static void test_truncated(void)
{
        char *dtb, path[256], want[128];
        size_t len;
        CU_ASSERT_EQUAL_FATAL(slurp(demo_dtb, &dtb, &len), 0);
        int rc = load_bytes("half.dtb", dtb, len / 2, path, sizeof(path));
        snprintf(want, sizeof(want), "truncated: header says %zu bytes, file has %zu", len, len / 2);
        check_error(rc, -EINVAL, path, NULL, want);
        rc = load_bytes("stub.dtb", dtb, 20, path, sizeof(path));
        check_error(rc, -EINVAL, path, NULL, "truncated: 20 bytes");
        free(dtb);
}

static void test_not_dtb(void)
{
        char path[256];
        static const char text[] = "/dts-v1/;\n/ { };\n";
        int rc = load_bytes("source.dts", text, sizeof(text) - 1, path, sizeof(path));
        check_error(rc, -EINVAL, path, NULL, "not a device tree blob (bad magic 0x2f647473");
        rc = load_bytes("tiny", "ab", 2, path, sizeof(path));
        check_error(rc, -EINVAL, path, NULL, "not a device tree blob");
}

static void test_empty(void)
{
        char path[256];
        int rc = load_bytes("empty.dtb", "", 0, path, sizeof(path));
        check_error(rc, -EINVAL, path, NULL, "empty file");
}

static void test_too_big(void)
{
        char path[256];
        snprintf(path, sizeof(path), "%s/huge.dtb", tmpdir);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT(ftruncate(fd, 17 << 20) == 0); /* sparse: costs no disk */
        close(fd);
        int rc = load(path);
        unlink(path);
        check_error(rc, -EFBIG, path, NULL, "larger than 16 MiB");
}

static void test_missing_file(void)
{
        char path[256];
        snprintf(path, sizeof(path), "%s/absent.dtb", tmpdir);
        check_error(load(path), -ENOENT, path, NULL, "cannot open");
}

static void test_corrupt_structure(void)
{
        char *dtb;
        size_t len;
        CU_ASSERT_EQUAL_FATAL(slurp(demo_dtb, &dtb, &len), 0);
        /* The first tag of the structure block must be FDT_BEGIN_NODE. */
        fdt32_t bad = cpu_to_fdt32(0x7f);
        memcpy(dtb + fdt_off_dt_struct(dtb), &bad, sizeof(bad));
        int rc = pv_config_load_blob(dtb, len, "corrupt.dtb", plat, err, sizeof(err));
        check_error(rc, -EINVAL, "corrupt.dtb", NULL, "corrupt device tree");
        free(dtb);
}

static void test_unaligned_blob(void)
{
        char *dtb;
        size_t len;
        CU_ASSERT_EQUAL_FATAL(slurp(demo_dtb, &dtb, &len), 0);
        char *buf = malloc(len + 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        memcpy(buf + 1, dtb, len);
        CU_ASSERT_EQUAL(pv_config_load_blob(buf + 1, len, "demo", plat, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(plat->nvlinks, 2);
        free(buf);
        free(dtb);
}

/* ---- hostile trees built in memory ----------------------------------------------- */

#define TREE_SIZE (256 * 1024)

/* The node at path, created with its missing parents. */
static int mknode(void *fdt, const char *path)
{
        char buf[PV_PATH_MAX];
        int off = 0;
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                int sub = fdt_subnode_offset(fdt, off, c);
                off = sub >= 0 ? sub : fdt_add_subnode(fdt, off, c);
                CU_ASSERT_FATAL(off >= 0);
        }
        return off;
}

static void *new_tree(void)
{
        void *fdt = malloc(TREE_SIZE);
        CU_ASSERT_PTR_NOT_NULL_FATAL(fdt);
        CU_ASSERT_EQUAL_FATAL(fdt_create_empty_tree(fdt, TREE_SIZE), 0);
        return fdt;
}

static int load_tree(void *fdt)
{
        CU_ASSERT_EQUAL_FATAL(fdt_pack(fdt), 0);
        int rc = pv_config_load_blob(fdt, fdt_totalsize(fdt), "mem.dtb", plat, err, sizeof(err));
        free(fdt);
        return rc;
}

/* A vogl server in vm2 and its client in vm3; the caller spoils one property. */
static void *vogl_tree(const char *compatible, size_t clen, const char *info, size_t ilen)
{
        void *fdt = new_tree();
        int be = mknode(fdt, "/vms/vm2/vdevs/vogl@be");
        CU_ASSERT_EQUAL(fdt_setprop(fdt, be, "compatible", compatible, (int)clen), 0);
        be = mknode(fdt, "/vms/vm2/vdevs/vogl@be");
        CU_ASSERT_EQUAL(fdt_setprop(fdt, be, "info", info, (int)ilen), 0);
        be = mknode(fdt, "/vms/vm2/vdevs/vogl@be");
        CU_ASSERT_EQUAL(fdt_setprop_u32(fdt, be, "phandle", 1), 0);
        int fe = mknode(fdt, "/vms/vm3/vdevs/vogl@fe");
        CU_ASSERT_EQUAL(fdt_setprop_u32(fdt, fe, "peer-phandle", 1), 0);
        return fdt;
}

static void test_unterminated_compatible(void)
{
        static const char info[] = "vumem-pdev=4K";
        CU_ASSERT_EQUAL(load_tree(vogl_tree("vogl", 5, info, sizeof(info))), 0); /* the sound tree */
        CU_ASSERT_EQUAL(plat->nvlinks, 1);
        int rc = load_tree(vogl_tree("vogl", 4, info, sizeof(info)));
        check_error(rc, -EINVAL, "mem.dtb: " P2("vogl@be"), "compatible", "not NUL-terminated");
}

static void test_unterminated_info(void)
{
        static const char info[] = "vumem-pdev=4K";
        int rc = load_tree(vogl_tree("vogl", 5, info, sizeof(info) - 1));
        check_error(rc, -EINVAL, P2("vogl@be"), "info", "not a list of NUL-terminated strings");
}

static void test_too_many_vms(void)
{
        void *fdt = new_tree();
        char path[64];
        /* fdt_add_subnode puts a node before its siblings: descending
         * creation gives ascending tree order. */
        for (int i = PV_MAX_VMS; i >= 0; i--) {
                snprintf(path, sizeof(path), "/vms/vm%d", i);
                mknode(fdt, path);
        }
        check_error(load_tree(fdt), -EINVAL, "/vms/vm64", NULL, "more than 64 VMs");
}

static void *many_clients(unsigned n)
{
        static const char info[] = "vumem-pdev=4K";
        void *fdt = vogl_tree("vogl", 5, info, sizeof(info));
        char path[64];
        /* Tree order: c1 ... c<n-1>, then vogl@fe (see test_too_many_vms). */
        for (unsigned i = n - 1; i >= 1; i--) {
                snprintf(path, sizeof(path), "/vms/vm3/vdevs/c%u", i);
                CU_ASSERT_EQUAL(fdt_setprop_u32(fdt, mknode(fdt, path), "peer-phandle", 1), 0);
        }
        return fdt;
}

static void test_vlink_limit(void)
{
        CU_ASSERT_EQUAL_FATAL(load_tree(many_clients(PV_MAX_VLINKS)), 0);
        CU_ASSERT_EQUAL(plat->nvlinks, PV_MAX_VLINKS);
        CU_ASSERT_PTR_NOT_NULL(find_link("vm2-vm3-vogl255"));
        check_error(load_tree(many_clients(PV_MAX_VLINKS + 1)), -EINVAL, "/vms/vm3/vdevs/vogl@fe", "peer-phandle",
                    "more than 256 vlinks");
}

/* ---- pv_parse_size ------------------------------------------------------------------ */

static void size_ok(const char *s, uint64_t want)
{
        uint64_t v = 12345;
        CU_ASSERT_EQUAL(pv_parse_size(s, 0, UINT64_MAX, &v), 0);
        CU_ASSERT_EQUAL(v, want);
}

static void size_bad(const char *s, uint64_t min, uint64_t max, int want)
{
        uint64_t v = 12345;
        CU_ASSERT_EQUAL(pv_parse_size(s, min, max, &v), want);
        CU_ASSERT_EQUAL(v, 12345); /* untouched on error */
}

static void test_parse_size(void)
{
        static const struct {
                const char *s;
                uint64_t v;
        } good[] = {
                { "0", 0 },          { "4096", 4096 },         { "010", 10 },
                { "4K", 4096 },      { "4k", 4096 },           { "2M", 2u << 20 },
                { "2m", 2u << 20 },  { "1G", 1u << 30 },       { "3g", 3ull << 30 },
                { "0x1000", 4096 },  { "0X10k", 16384 },       { "0xfF", 255 },
                { "18446744073709551615", UINT64_MAX },        { "17179869183G", 17179869183ull << 30 },
        };
        static const char *const garbage[] = {
                "", "K", "0x", "0xK", "12Q", "1KB", "-1", "+1", " 1", "1 K", "1.5M", "99999999999999999999Q",
        };
        static const char *const overflow[] = {
                "18446744073709551616", "0x10000000000000000", "17179869184G",
        };
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                size_ok(good[i].s, good[i].v);
        for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
                size_bad(garbage[i], 0, UINT64_MAX, -EINVAL);
        for (size_t i = 0; i < sizeof(overflow) / sizeof(overflow[0]); i++)
                size_bad(overflow[i], 0, UINT64_MAX, -ERANGE);
        size_bad(NULL, 0, UINT64_MAX, -EINVAL);
        size_bad("4095", 4096, 8192, -ERANGE);
        size_bad("9K", 4096, 8192, -ERANGE);
        uint64_t v;
        CU_ASSERT_EQUAL(pv_parse_size("8K", 4096, 8192, &v), 0);
        CU_ASSERT_EQUAL(pv_parse_size("4K", 4096, 8192, &v), 0);
}

/* ---- pv_info_parse -------------------------------------------------------------------- */

#define INFO(vb, ...) info_parse(vb, (const char *const[]){ __VA_ARGS__ }, \
                                 sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *))

static struct pv_info info;

static int info_parse(bool vbpipe, const char *const *strs, unsigned n)
{
        snprintf(err, sizeof(err), "(untouched)");
        return pv_info_parse(strs, n, vbpipe, &info, err, sizeof(err));
}

static void info_bad(int rc, const char *text)
{
        if (rc != -EINVAL || !strstr(err, text))
                fprintf(stderr, "\n    got rc %d: %s (want: %s)\n", rc, err, text);
        CU_ASSERT_EQUAL(rc, -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, text));
}

static void test_info_vdev(void)
{
        /* The seed's fragment with its stray separators, once the OCR is fixed. */
        CU_ASSERT_EQUAL_FATAL(INFO(false, "vumem-pdev=128K", "vrpq-reqs=128K, ", ", vrpq-pmem=2M"), 0);
        CU_ASSERT_TRUE(info.has_vrpq);
        CU_ASSERT_TRUE(info.has_vumem);
        CU_ASSERT_EQUAL(info.vrpq_reqs, 131072);
        CU_ASSERT_EQUAL(info.vrpq_pmem, 2u << 20);
        CU_ASSERT_EQUAL(info.vumem_pdev, 128u << 10);
        CU_ASSERT_STRING_EQUAL(info.raw, "vumem-pdev=128K; vrpq-reqs=128K, ; , vrpq-pmem=2M");

        CU_ASSERT_EQUAL(INFO(false, "vrpq-reqs=16,vrpq-pmem=4K;vumem-pdev=0x1000"), 0);
        CU_ASSERT_EQUAL(info.vrpq_reqs, 16);
        CU_ASSERT_EQUAL(info.vumem_pdev, 4096);
        CU_ASSERT_EQUAL(INFO(false, " \tvrpq-reqs = 100 \t;\tvrpq-pmem= 4097 ;; ,"), 0);
        CU_ASSERT_EQUAL(info.vrpq_reqs, 128);
        CU_ASSERT_EQUAL(info.vrpq_pmem, 8192);
        CU_ASSERT_FALSE(info.has_vumem);
        CU_ASSERT_EQUAL(info_parse(false, NULL, 0), 0);
        CU_ASSERT_FALSE(info.has_vrpq || info.has_vumem);
        CU_ASSERT_EQUAL(info.vbpipe_minor, -1);

        info_bad(INFO(false, "vrpq-pmem=2M"), "vrpq-pmem given without vrpq-reqs");
        info_bad(INFO(false, "foo=1"), "unknown key \"foo\"");
        info_bad(INFO(false, "vrpq-reqs"), "\"vrpq-reqs\": not key=value");
        info_bad(INFO(false, "=5"), "key missing");
        info_bad(INFO(false, "vumem-pdev=1K"), "\"vumem-pdev=1K\": too small (min 4K)");
        info_bad(INFO(false, "vumem-pdev=32M"), "\"vumem-pdev=32M\": too large (max 16M)");
        info_bad(INFO(false, "vumem-pdev=99999999999999999999999"), "too large");
        info_bad(INFO(false, "vumem-pdev=4K", "vumem-pdev=8K"), "\"vumem-pdev=8K\": given twice");
        info_bad(INFO(false, "vrpq-reqs=2M, vrpq-pmem=4K"), "\"vrpq-reqs=2M\": too large (max 1M)");
        info_bad(INFO(false, "vrpq-reqs=x1, vrpq-pmem=4K"), "\"vrpq-reqs=x1\": not a size");
        info_bad(INFO(false, "wakeup=5"), "unknown key \"wakeup\"");
}

static void test_info_vbpipe(void)
{
        CU_ASSERT_EQUAL_FATAL(INFO(true, ";;;wakeup=250;name=vbpipe0"), 0);
        CU_ASSERT_FALSE(info.vbpipe_any);
        CU_ASSERT_EQUAL(info.vbpipe_size, PV_VBPIPE_SIZE_DEF);
        CU_ASSERT_EQUAL(info.vbpipe_minor, -1);
        CU_ASSERT_EQUAL(info.wakeup_ms, 250);
        CU_ASSERT_STRING_EQUAL(info.name, "vbpipe0");

        CU_ASSERT_EQUAL(INFO(true, "a;64K;;name=vbpipe1"), 0);
        CU_ASSERT_TRUE(info.vbpipe_any);
        CU_ASSERT_EQUAL(info.vbpipe_size, 65536);
        CU_ASSERT_EQUAL(info.wakeup_ms, 0);
        CU_ASSERT_EQUAL(INFO(true, " a , 100K , 3 "), 0);
        CU_ASSERT_EQUAL(info.vbpipe_size, 128u << 10);
        CU_ASSERT_EQUAL(info.vbpipe_minor, 3);
        CU_ASSERT_EQUAL(info.name[0], '\0');
        CU_ASSERT_EQUAL(INFO(true, "a;", "64K"), 0); /* a trailing separator ends a field */
        CU_ASSERT_EQUAL(info.vbpipe_size, 65536);
        CU_ASSERT_EQUAL(INFO(true, ";;255"), 0);
        CU_ASSERT_EQUAL(info.vbpipe_minor, 255);
        CU_ASSERT_EQUAL(INFO(true, "wakeup=60000"), 0);
        CU_ASSERT_EQUAL(INFO(true, ""), 0);
        CU_ASSERT_EQUAL(info.vbpipe_size, PV_VBPIPE_SIZE_DEF);

        info_bad(INFO(true, ";;;;name=x"), "more than 3 positional fields");
        info_bad(INFO(true, "x"), "unknown vbpipe flag 'x'");
        info_bad(INFO(true, ";;256"), "\"256\": not a vbpipe minor");
        info_bad(INFO(true, ";;-1"), "not a vbpipe minor");
        info_bad(INFO(true, ";2K"), "\"2K\": too small (min 4K)");
        info_bad(INFO(true, ";1G"), "\"1G\": too large (max 64M)");
        info_bad(INFO(true, ";big"), "\"big\": not a size");
        info_bad(INFO(true, "wakeup=60001"), "too large (max 60000 ms)");
        info_bad(INFO(true, "wakeup=soon"), "not a number of milliseconds");
        info_bad(INFO(true, "name=bad/name"), "\"name=bad/name\": a name is");
        info_bad(INFO(true, "name="), "a name is");
        info_bad(INFO(true, "name=a", "5"), "\"5\": positional field after key=value");
        info_bad(INFO(true, "vrpq-reqs=16"), "unknown key \"vrpq-reqs\"");
        info_bad(INFO(true, "name=a;name=b"), "given twice");
}

static void test_info_raw_truncated(void)
{
        static const char blank[] = "                                        ";
        const char *strs[8] = { ";;;wakeup=1;name=a-rather-long-name-for-a-pipe" };
        for (int i = 1; i < 8; i++)
                strs[i] = blank; /* blank strings give no fields, only raw text */
        CU_ASSERT_EQUAL_FATAL(info_parse(true, strs, 8), 0);
        CU_ASSERT_STRING_EQUAL(info.name, "a-rather-long-name-for-a-pipe");
        CU_ASSERT_EQUAL(strlen(info.raw), PV_INFO_RAW_MAX - 1);
        CU_ASSERT_STRING_EQUAL(info.raw + PV_INFO_RAW_MAX - 4, "...");
        CU_ASSERT_EQUAL(strncmp(info.raw, strs[0], strlen(strs[0])), 0);
}

static const struct pvt_test tests[] = {
                { "demo platform", test_demo },
                { "two clients of one server", test_two_clients },
                { "access properties and pipe names", test_access_and_names },
                { "pv_config_vm_find", test_vm_find },
        { "VM policy: pvd,limits, pvd,status, pvd,control-group", test_policy },
        { "bad VM policy", test_bad_policy },
                { "peer-phandle to nothing", test_dangling },
                { "client pointing at a client end", test_peer_client },
                { "client pointing at a marked client", test_peer_marked_client },
                { "client pointing at a non-vdev", test_peer_nonvdev },
                { "both ends in one VM", test_same_vm },
                { "duplicate vbpipe names", test_dup_pipe },
                { "pipe named like a vrpq node", test_dup_vrpq_name },
                { "reserved name control", test_control_reserved },
                { "unparsable size", test_bad_size },
                { "oversized size", test_oversize },
                { "unknown info key", test_unknown_key },
                { "unknown vbpipe flag", test_unknown_flag },
                { "server without compatible", test_no_compatible },
                { "marked server and client", test_server_and_client },
                { "client without peer-phandle", test_client_without_peer },
                { "server with peer-phandle", test_server_with_peer },
                { "VDEV vlink without parameters", test_no_params },
                { "vrpq-reqs without vrpq-pmem", test_half_vrpq },
                { "client compatible mismatch", test_compat_mismatch },
                { "client info disagrees", test_disagree },
                { "vbpipe ring sizes disagree", test_pipe_size_disagree },
                { "pvd,mode out of range", test_bad_mode },
                { "invalid VM name", test_bad_vm_name },
                { "truncated file", test_truncated },
                { "not a DTB", test_not_dtb },
                { "empty file", test_empty },
                { "file too large", test_too_big },
                { "missing file", test_missing_file },
                { "corrupt structure block", test_corrupt_structure },
                { "unaligned blob", test_unaligned_blob },
                { "unterminated compatible", test_unterminated_compatible },
                { "unterminated info", test_unterminated_info },
                { "too many VMs", test_too_many_vms },
                { "vlink limit", test_vlink_limit },
                { "pv_parse_size", test_parse_size },
                { "pv_info_parse VDEV form", test_info_vdev },
                { "pv_info_parse vbpipe form", test_info_vbpipe },
                { "pv_info_parse raw text", test_info_raw_truncated },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "config", suite_init, suite_clean, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        fixtures = getenv("PV_TEST_FIXTURES");
        demo_dtb = getenv("PV_TEST_DEMO_DTB");
        two_dtb = getenv("PV_TEST_2CLIENTS_DTB");
        if (!fixtures || !demo_dtb || !two_dtb) {
                fprintf(stderr, "PV_TEST_FIXTURES, PV_TEST_DEMO_DTB, PV_TEST_2CLIENTS_DTB unset; run via meson test\n");
                return 77;
        }
        int rc = pvt_main(argc, argv, suites);
        if (access(tmpdir, F_OK) == 0) {
                fprintf(stderr, "%s left behind\n", tmpdir);
                rc = 1;
        }
        return rc;
}
