/* Unit tests of what the platform loader gives the ivshmem backend and
 * pvhv: the info key hv-heap (parsing, defaults, both ends agreeing), the
 * config-level region sizes pvd and pvhv share, and the layout of a vlink's
 * memory computed from them (proto/pv-ivshmem.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "config.h"
#include "pv-ivshmem.h"
#include "pvd.h"

static const char *fixtures;
static const char *demo_dtb;
static struct pv_platform *plat;
static char err[1024];

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static int load_fixture(const char *name)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/config-%s.dtb", fixtures, name);
        return pv_config_load_file(path, plat, err, sizeof(err));
}

static const struct pv_vlink_cfg *find_link(const char *link_name)
{
        for (unsigned i = 0; i < plat->nvlinks; i++)
                if (strcmp(plat->vlinks[i].link_name, link_name) == 0)
                        return &plat->vlinks[i];
        return NULL;
}

static uint64_t heap_of(const char *link_name)
{
        const struct pv_vlink_cfg *vl = find_link(link_name);
        CU_ASSERT_PTR_NOT_NULL(vl);
        return vl ? vl->hv_heap : UINT64_MAX;
}

/* ---- hv-heap ---------------------------------------------------------------- */

static void test_heap_values(void)
{
        int rc = load_fixture("good-hv-heap");
        if (rc < 0)
                fprintf(stderr, "\n    %s\n", err);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT_EQUAL(heap_of("vm2-vm3-vogl0"), 64u << 10);       /* given by both ends, 0x10000 */
        CU_ASSERT_EQUAL(heap_of("vm2-vm4-vbpipe0"), 0);             /* grants nothing */
        CU_ASSERT_EQUAL(heap_of("vm2-vm3-vdef0"), PV_IVSHM_HEAP_VUMEM_DEFAULT);
        CU_ASSERT_EQUAL(heap_of("vm2-vm4-vbpipe1"), PV_IVSHM_HEAP_DEFAULT);

        CU_ASSERT_EQUAL_FATAL(pv_config_load_file(demo_dtb, plat, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(heap_of("vm2-vm3-vogl0"), PV_IVSHM_HEAP_VUMEM_DEFAULT);
        CU_ASSERT_EQUAL(heap_of("vm2-vm4-vbpipe0"), PV_IVSHM_HEAP_DEFAULT);
}

static void test_heap_disagree(void)
{
        CU_ASSERT_EQUAL(load_fixture("bad-hv-heap"), -EINVAL);
        const char *want = "/vms/vm4/vdevs/vbpipe@fe: property info: hv-heap 2M differs from the server end's 1M";
        if (!strstr(err, want))
                fprintf(stderr, "\n    got: %s\n", err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
        CU_ASSERT_EQUAL(plat->nvlinks, 0);
}

#define INFO(vb, ...) pv_info_parse((const char *const[]){ __VA_ARGS__ }, \
                                    sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *), \
                                    vb, &info, err, sizeof(err))

static void info_bad(int rc, const char *text)
{
        if (rc != -EINVAL || !strstr(err, text))
                fprintf(stderr, "\n    got rc %d: %s (want: %s)\n", rc, err, text);
        CU_ASSERT_EQUAL(rc, -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, text));
}

static void test_heap_parse(void)
{
        struct pv_info info;
        CU_ASSERT_EQUAL(INFO(false, "vumem-pdev=4K", "hv-heap=4097"), 0);
        CU_ASSERT_EQUAL(info.hv_heap, 8192);                         /* page-rounded */
        CU_ASSERT_EQUAL(INFO(false, "vumem-pdev=4K, hv-heap = 4G"), 0);
        CU_ASSERT_EQUAL(info.hv_heap, 4ull << 30);
        CU_ASSERT_EQUAL(INFO(true, ";;;hv-heap=0;name=p"), 0);
        CU_ASSERT_EQUAL(info.hv_heap, 0);
        CU_ASSERT_STRING_EQUAL(info.name, "p");
        CU_ASSERT_EQUAL(INFO(true, "a;64K"), 0);
        CU_ASSERT_EQUAL(info.hv_heap, 0);                            /* not given */

        info_bad(INFO(false, "vumem-pdev=4K", "hv-heap=5G"), "\"hv-heap=5G\": too large (max 4G)");
        info_bad(INFO(true, "hv-heap=lots"), "\"hv-heap=lots\": not a size");
        info_bad(INFO(true, "hv-heap=1M;hv-heap=1M"), "\"hv-heap=1M\": given twice");
        info_bad(INFO(false, "hv-heaps=1M"), "known: vrpq-reqs, vrpq-pmem, vumem-pdev, hv-heap");
        info_bad(INFO(true, "heap=1M"), "known for vbpipe: wakeup, name, hv-heap");
}

/* ---- region sizes and the layout ----------------------------------------------- */

/* pvhv sizes a vlink's memory from the configuration; pvd from its vlink:
 * they must be the same numbers. */
static void check_region_sizes(const struct pv_vlink_cfg *cfg)
{
        size_t from_cfg[PV_REGION_COUNT], from_vlink[PV_REGION_COUNT];
        struct pvd_vlink vl = { .cfg = cfg };
        pv_vlink_cfg_region_sizes(cfg, from_cfg);
        pvd_vlink_region_sizes(&vl, from_vlink);
        CU_ASSERT_EQUAL(memcmp(from_cfg, from_vlink, sizeof(from_cfg)), 0);
        CU_ASSERT(from_cfg[PV_REGION_CTL] > 0);
        CU_ASSERT_EQUAL(from_cfg[PV_REGION_VRPQ] > 0, cfg->vrpq_reqs > 0);
        CU_ASSERT_EQUAL(from_cfg[PV_REGION_VUMEM] > 0, cfg->vumem_pdev > 0);
        CU_ASSERT_EQUAL(from_cfg[PV_REGION_VBPIPE] > 0, cfg->kind == PV_VLINK_VBPIPE);
}

/* Spans inside the memory, page-aligned, in order, not overlapping. */
static void check_layout(const struct pv_vlink_cfg *cfg)
{
        size_t sizes[PV_REGION_COUNT];
        uint64_t region[PV_REGION_COUNT], need = PV_IVSHM_PAGE;
        struct pv_ivshm_hdr h;
        pv_vlink_cfg_region_sizes(cfg, sizes);
        for (int r = 0; r < PV_REGION_COUNT; r++) {
                region[r] = sizes[r];
                need += sizes[r];
        }
        need += 2 * PV_IVSHM_SIDE_SIZE + 2 * cfg->hv_heap;
        memset(&h, 0, sizeof(h));
        CU_ASSERT_EQUAL_FATAL(pv_ivshm_layout(region, cfg->hv_heap, &h), 0);
        CU_ASSERT_EQUAL(h.size & (h.size - 1), 0);                   /* QEMU maps no other size */
        CU_ASSERT(h.size >= need && h.size >= PV_IVSHM_MIN_SIZE);
        CU_ASSERT(h.size < 2 * need || h.size == PV_IVSHM_MIN_SIZE);
        struct pv_ivshm_span spans[2 + PV_REGION_COUNT + 2];
        unsigned n = 0;
        spans[n++] = h.side[0];
        spans[n++] = h.side[1];
        for (int r = 0; r < PV_REGION_COUNT; r++) {
                CU_ASSERT_EQUAL(h.region[r].size >= region[r], true);
                if (h.region[r].size)
                        spans[n++] = h.region[r];
        }
        spans[n++] = h.heap[0];
        spans[n++] = h.heap[1];
        CU_ASSERT_EQUAL(h.heap[0].size, h.heap[1].size);
        CU_ASSERT(h.heap[0].size >= cfg->hv_heap);
        uint64_t end = PV_IVSHM_PAGE; /* the header's page */
        for (unsigned i = 0; i < n; i++) {
                CU_ASSERT_EQUAL(spans[i].offset % PV_IVSHM_PAGE, 0);
                CU_ASSERT_EQUAL(spans[i].size % PV_IVSHM_PAGE, 0);
                CU_ASSERT(spans[i].offset >= end);
                end = spans[i].offset + spans[i].size;
        }
        CU_ASSERT(end <= h.size);
}

static void test_sizes_and_layout(void)
{
        const char *fixtures_to_check[] = { "good-hv-heap", "good-access" };
        for (unsigned f = 0; f < 2; f++) {
                CU_ASSERT_EQUAL_FATAL(load_fixture(fixtures_to_check[f]), 0);
                for (unsigned i = 0; i < plat->nvlinks; i++) {
                        check_region_sizes(&plat->vlinks[i]);
                        check_layout(&plat->vlinks[i]);
                }
        }
        CU_ASSERT_EQUAL_FATAL(pv_config_load_file(demo_dtb, plat, err, sizeof(err)), 0);
        for (unsigned i = 0; i < plat->nvlinks; i++) {
                check_region_sizes(&plat->vlinks[i]);
                check_layout(&plat->vlinks[i]);
        }
        /* A heap that cannot fit is refused, not wrapped. */
        uint64_t region[PV_REGION_COUNT] = { 4096 };
        struct pv_ivshm_hdr h;
        CU_ASSERT_EQUAL(pv_ivshm_layout(region, UINT64_MAX / 2, &h), -1);
        region[1] = UINT64_MAX - 100;
        CU_ASSERT_EQUAL(pv_ivshm_layout(region, 0, &h), -1);
}

int main(void)
{
        static const struct {
                const char *name;
                CU_TestFunc fn;
        } tests[] = {
                { "hv-heap values and defaults", test_heap_values },
                { "hv-heap of the two ends disagree", test_heap_disagree },
                { "hv-heap parsing", test_heap_parse },
                { "region sizes from the configuration, and the layout", test_sizes_and_layout },
        };
        fixtures = getenv("PV_TEST_FIXTURES");
        demo_dtb = getenv("PV_TEST_DEMO_DTB");
        if (!fixtures || !demo_dtb) {
                fprintf(stderr, "PV_TEST_FIXTURES, PV_TEST_DEMO_DTB unset; run via meson test\n");
                return 77;
        }
        plat = malloc(sizeof(*plat));
        if (!plat)
                return 1;
        int fds_before = count_fds();
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite suite = CU_add_suite("config-hv", NULL, NULL);
        if (!suite)
                return 1;
        for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
                if (!CU_add_test(suite, tests[i].name, tests[i].fn))
                        return 1;
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        free(plat);
        if (count_fds() != fds_before) {
                fprintf(stderr, "fd leak: %d open before, %d after\n", fds_before, count_fds());
                failed++;
        }
        return failed ? 1 : 0;
}
