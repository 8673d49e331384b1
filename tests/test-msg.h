/* What the pieces of the control-message test program (test-msg*.c) share:
 * the checks every decode must pass, and the test lists (the runner,
 * pvt-run.h, checks after each test that it leaves no fd open, so a leak on
 * any path of pv_msg_recv shows). */
#ifndef TEST_MSG_H
#define TEST_MSG_H

#include <stdbool.h>
#include <stddef.h>

#include <CUnit/CUnit.h>

#include "pv-msg.h"
#include "pvt-run.h"

bool key_known(unsigned k);
/* Every bytes value of m lies inside buf[0, len). */
bool bins_in_buf(const struct pv_msg *m, const void *buf, size_t len);
/* Same keys, same integers, same bytes (wherever they point). */
bool same_values(const struct pv_msg *a, const struct pv_msg *b);

extern const struct pvt_test fuzz_tests[];
extern const struct pvt_test net_tests[];

#endif
