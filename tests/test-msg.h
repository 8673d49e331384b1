/* What the pieces of the control-message test program (test-msg*.c) share:
 * fd counting, the checks every decode must pass, and the test lists. */
#ifndef TEST_MSG_H
#define TEST_MSG_H

#include <stdbool.h>
#include <stddef.h>

#include <CUnit/CUnit.h>

#include "pv-msg.h"

/* Entries in /proc/self/fd, or -1. */
int count_fds(void);

/* A test whose body must leave as many fds open as it found (Wayland's
 * habit): a leak on any path of pv_msg_recv shows here. */
#define FD_TEST(name)                                                   \
        static void name##_body(void);                                  \
        static void name(void)                                          \
        {                                                               \
                int before = count_fds();                               \
                CU_ASSERT_NOT_EQUAL(before, -1);                        \
                name##_body();                                          \
                CU_ASSERT_EQUAL(count_fds(), before);                   \
        }                                                               \
        static void name##_body(void)

bool key_known(unsigned k);
/* Every bytes value of m lies inside buf[0, len). */
bool bins_in_buf(const struct pv_msg *m, const void *buf, size_t len);
/* Same keys, same integers, same bytes (wherever they point). */
bool same_values(const struct pv_msg *a, const struct pv_msg *b);

struct test_case {
        const char *name;
        CU_TestFunc fn;
};

extern const struct test_case fuzz_tests[];
extern const struct test_case net_tests[];

#endif
