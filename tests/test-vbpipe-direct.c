/* VBPIPE direct access across real pvds: ends opened with O_DIRECT and moved
 * with vbpipeRead/vbpipeWrite copy to and from the rings themselves. Part
 * of test-vbpipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-sem.h"

#define ROUNDS 2000

/* ---- ping-pong ------------------------------------------------------------------- */

static int pp_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        for (unsigned i = 0; i < ROUNDS; i++) {
                uint8_t x = (uint8_t)i, y = 0;
                CK(vbpipeWrite(fd, &x, 1) == 1);
                CK(vbpipeRead(fd, &y, 1) == 1);
                CK(y == (uint8_t)(x + 1));
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int pp_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        for (;;) {
                uint8_t x;
                ssize_t n = vbpipeRead(fd, &x, 1);
                if (n == 0)
                        break;
                CK(n == 1);
                x++;
                CK(vbpipeWrite(fd, &x, 1) == 1);
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_pingpong(void)
{
        int sa, sb;
        vbt_run(pp_a, pp_b, &sa, &sb);
        CU_ASSERT_EQUAL(sa, 0);
        CU_ASSERT_EQUAL(sb, 0);
        CU_ASSERT(vbt_idle());
}
