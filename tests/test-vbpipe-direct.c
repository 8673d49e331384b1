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
#include <sys/socket.h>
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

/* ---- small writes, large reads ------------------------------------------------------ */

#define SMALL_TOTAL (2u << 20)

/* A writes SMALL_TOTAL pattern bytes in 64-byte direct writes, then shuts
 * its writing and waits for B's close; B reads 64 KiB at a time: every
 * byte, in order, then EOF. */
static int small_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        uint8_t buf[64];
        for (uint64_t off = 0; off < SMALL_TOTAL; off += sizeof(buf)) {
                vbt_fill(buf, sizeof(buf), 7, off);
                CK(vbpipeWrite(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        }
        CK(shutdown(fd, SHUT_WR) == 0);
        uint8_t x;
        CK(vbpipeRead(fd, &x, 1) == 0);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int small_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[65536];
        uint64_t got = 0;
        for (;;) {
                ssize_t n = vbpipeRead(fd, buf, sizeof(buf));
                CK(n >= 0);
                if (n == 0)
                        break;
                CK(vbt_check(buf, (size_t)n, 7, got));
                got += (uint64_t)n;
        }
        if (got != SMALL_TOTAL)
                fprintf(stderr, "small writes: %llu bytes of %u, then EOF\n", (unsigned long long)got, SMALL_TOTAL);
        CK(got == SMALL_TOTAL);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_small_writes(void)
{
        int sa, sb;
        vbt_run(small_a, small_b, &sa, &sb);
        CU_ASSERT_EQUAL(sa, 0);
        CU_ASSERT_EQUAL(sb, 0);
        CU_ASSERT(vbt_idle());
}
