/* Unit tests of the buddy allocator pvd carves VRPQ rings and ports with
 * (daemon/vrpq-alloc.c): splits, merges, ranges that are not a power of
 * two, exhaustion and falling back to smaller blocks. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "vrpq/vrpq-int.h"

static void test_split_merge(void)
{
        struct vrpq_buddy b;
        CU_ASSERT_EQUAL_FATAL(vrpq_buddy_init(&b, 16), 0);
        CU_ASSERT_EQUAL(b.max_order, 4);
        int64_t a = vrpq_buddy_alloc(&b, 0), c = vrpq_buddy_alloc(&b, 1), d = vrpq_buddy_alloc(&b, 2);
        CU_ASSERT_EQUAL(a, 0);
        CU_ASSERT_EQUAL(c, 2);
        CU_ASSERT_EQUAL(d, 4);
        CU_ASSERT_EQUAL(b.free_units, 16 - 1 - 2 - 4);
        /* Blocks are aligned to their size and never overlap. */
        int64_t e = vrpq_buddy_alloc(&b, 3);
        CU_ASSERT_EQUAL(e, 8);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 3), -1);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 0), 1);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 0), -1);
        CU_ASSERT_EQUAL(b.free_units, 0);
        /* Freed in any order, the whole range merges back. */
        vrpq_buddy_free(&b, 4, 2);
        vrpq_buddy_free(&b, 1, 0);
        vrpq_buddy_free(&b, 8, 3);
        vrpq_buddy_free(&b, 0, 0);
        vrpq_buddy_free(&b, 2, 1);
        CU_ASSERT_EQUAL(b.free_units, 16);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 4), 0);
        vrpq_buddy_fini(&b);
}

static void test_not_pow2(void)
{
        struct vrpq_buddy b;
        /* 3 MiB of PMEM in 4 KiB units: 512 + 256. */
        CU_ASSERT_EQUAL_FATAL(vrpq_buddy_init(&b, 768), 0);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 9), 0);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 9), -1);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 8), 512);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 0), -1);
        vrpq_buddy_free(&b, 512, 8);
        vrpq_buddy_free(&b, 0, 9);
        /* No merge past the end: still 512 + 256, not 1024. */
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 10), -1);
        CU_ASSERT_EQUAL(b.free_units, 768);
        vrpq_buddy_reset(&b);
        /* Units one by one: every unit exactly once. */
        char *seen = calloc(768, 1);
        for (int i = 0; i < 768; i++) {
                int64_t u = vrpq_buddy_alloc(&b, 0);
                CU_ASSERT_FATAL(u >= 0 && u < 768);
                CU_ASSERT_EQUAL(seen[u], 0);
                seen[u] = 1;
        }
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 0), -1);
        for (int i = 767; i >= 0; i--)
                vrpq_buddy_free(&b, (uint32_t)i, 0);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 9), 0);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 8), 512);
        free(seen);
        vrpq_buddy_fini(&b);
}

/* What a channel does when the default share is taken: smaller blocks. */
static void test_fallback(void)
{
        struct vrpq_buddy b;
        CU_ASSERT_EQUAL_FATAL(vrpq_buddy_init(&b, 64), 0);
        unsigned got[16];
        int n = 0;
        for (;; n++) {
                int64_t u = -1;
                for (int o = 3; o >= 0 && u < 0; o--) {
                        u = vrpq_buddy_alloc(&b, (unsigned)o);
                        got[n] = (unsigned)o;
                }
                if (u < 0)
                        break;
                CU_ASSERT_FATAL(n < 15);
        }
        /* 8 blocks of 8 units: the default share; nothing smaller left. */
        CU_ASSERT_EQUAL(n, 8);
        vrpq_buddy_free(&b, 8, 3);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 2), 8);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 2), 12);
        CU_ASSERT_EQUAL(vrpq_buddy_alloc(&b, 0), -1);
        CU_ASSERT_EQUAL(vrpq_log2(1), 0);
        CU_ASSERT_EQUAL(vrpq_log2(4096), 12);
        CU_ASSERT_EQUAL(vrpq_log2(5000), 12);
        (void)got;
        vrpq_buddy_fini(&b);
}

static const struct pvt_test tests[] = {
        { "split and merge", test_split_merge },
        { "a range that is not a power of two", test_not_pow2 },
        { "falling back to smaller blocks", test_fallback },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vrpq-alloc", NULL, NULL, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}
