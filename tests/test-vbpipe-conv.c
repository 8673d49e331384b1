/* VBPIPE across real pvds: one end at a time (EBUSY), opens given up,
 * new conversations, two pipes at once, one-way ends. Part of test-vbpipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-sem.h"

static uint8_t big[1 << 20];

/* ---- EBUSY ------------------------------------------------------------------------ */

static int busy_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_NONBLOCK);
        CK(fd >= 0);
        CK(vbpipeOpen(P0, O_RDWR | O_NONBLOCK) == -1 && errno == EBUSY);
        CK(vbpipeOpen("/dev/" P0, O_RDWR) == -1 && errno == EBUSY);
        /* The other pipe is another end. */
        int fd1 = vbt_open(P1, O_RDWR | O_NONBLOCK);
        CK(fd1 >= 0);
        close(fd1);
        vbt_tell();
        CK(vbt_poll(fd, POLLOUT, 10000) & POLLOUT);
        CK(vbpipeOpen(P0, O_RDWR | O_NONBLOCK) == -1 && errno == EBUSY);
        CK(vbt_hear(10000));
        close(fd);
        return 0;
}

static int busy_b(void)
{
        CK(vbt_hear(10000));
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        CK(vbpipeOpen(P0, O_RDWR | O_NONBLOCK) == -1 && errno == EBUSY);
        vbt_tell();
        char c;
        CK(read(fd, &c, 1) == 0);
        close(fd);
        return 0;
}

static int block_open_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        char c;
        CK(read(fd, &c, 1) == 0);
        close(fd);
        return 0;
}

static int close_at_once(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        close(fd);
        return 0;
}

void test_busy(void)
{
        vbt_run(busy_a, busy_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        /* An end whose blocking open waits is taken too. */
        pid_t a = vbt_spawn("vm2", block_open_a);
        CU_ASSERT(vbt_wait_state("vm2", P0, "local", "waiting", 10000));
        pvt_use_vm(&vbt_plat, "vm2");
        errno = 0;
        CU_ASSERT_EQUAL(vbpipeOpen(P0, O_RDWR | O_NONBLOCK), -1);
        CU_ASSERT_EQUAL(errno, EBUSY);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "open already"));
        unsetenv("PVD_RUNTIME_DIR");
        pid_t b = vbt_spawn("vm4", close_at_once);
        CU_ASSERT_EQUAL(pvt_wait(a, 40000), 0);
        CU_ASSERT_EQUAL(pvt_wait(b, 40000), 0);
        CU_ASSERT(vbt_idle());
}

/* ---- abandoned opens --------------------------------------------------------------------- */

static int abandon_nb(void)
{
        int fd = vbt_open(P0, O_RDWR | O_NONBLOCK);
        CK(fd >= 0);
        close(fd);
        return 0;
}

static int abandon_block(void)
{
        vbpipeOpen(P0, O_RDWR);   /* killed while it waits */
        return 1;
}

static int late_reader(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        vbt_sh->count = 1;
        char buf[8];
        CK(read(fd, buf, 3) == 3 && memcmp(buf, "new", 3) == 0);
        CK(read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        return 0;
}

static int late_writer(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        CK(write(fd, "new", 3) == 3);
        close(fd);
        return 0;
}

/* An open given up (closed before the peer came, or its program killed
 * while it waited) is no partner: the peer's open waits for the next. */
void test_abandoned(void)
{
        for (int round = 0; round < 2; round++) {
                memset(vbt_sh, 0, sizeof(*vbt_sh));
                const char *vm = round ? "vm4" : "vm2", *other = round ? "vm2" : "vm4";
                pid_t a = vbt_spawn(vm, abandon_nb);
                CU_ASSERT_EQUAL(pvt_wait(a, 40000), 0);
                a = vbt_spawn(vm, abandon_block);
                CU_ASSERT(vbt_wait_state(vm, P0, "local", "waiting", 10000));
                pvt_kill(a, SIGKILL);
                CU_ASSERT_EQUAL(pvt_wait(a, 40000), 128 + SIGKILL);
                CU_ASSERT(vbt_idle());
                pid_t b = vbt_spawn(other, late_reader);
                CU_ASSERT(vbt_wait_state(other, P0, "local", "waiting", 10000));
                usleep(300000);
                CU_ASSERT_EQUAL(vbt_sh->count, 0);
                a = vbt_spawn(vm, late_writer);
                CU_ASSERT_EQUAL(pvt_wait(a, 40000), 0);
                CU_ASSERT_EQUAL(pvt_wait(b, 40000), 0);
                CU_ASSERT(vbt_idle());
        }
}

/* ---- new conversations -------------------------------------------------------------------- */

#define ROUNDS 6

static int reopen_a(void)
{
        for (unsigned r = 0; r < ROUNDS; r++) {
                int fd = vbt_open(P0, O_RDWR);
                CK(fd >= 0);
                /* More than B reads; in odd rounds B reads none. */
                vbt_fill(big, 100000, 10 + r, 0);
                ssize_t w = write(fd, big, 100000);
                CK(w > 0 || (w < 0 && errno == EPIPE));
                if (r == ROUNDS - 1)
                        CK(vbt_hear(20000));
                close(fd);
                if (r == ROUNDS - 2)
                        CK(vbt_hear(20000));   /* B closes first this time */
        }
        return 0;
}

static int reopen_b(void)
{
        static uint8_t buf[1000];
        for (unsigned r = 0; r < ROUNDS; r++) {
                int fd = vbt_open(P0, O_RDWR);
                CK(fd >= 0);
                if (r % 2 == 0 || r == ROUNDS - 1) {
                        CK(read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
                        CK(vbt_check(buf, sizeof(buf), 10 + r, 0));
                }
                if (r == ROUNDS - 1) {
                        vbt_tell();
                        size_t got = vbt_read_n(fd, big, 100000 - sizeof(buf));
                        CK(got == 100000 - sizeof(buf) && vbt_check(big, got, 10 + r, sizeof(buf)));
                        CK(read(fd, buf, 1) == 0);
                }
                close(fd);
                if (r == ROUNDS - 2)
                        vbt_tell();
        }
        return 0;
}

void test_reopen(void)
{
        vbt_run(reopen_a, reopen_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- two pipes, one direction ---------------------------------------------------------------- */

static int indep_a(void)
{
        int f0 = vbt_open(P0, O_RDWR), f1 = vbt_open(P1, O_RDWR);
        CK(f0 >= 0 && f1 >= 0);
        /* vbpipe0 full and unread does not hold up vbpipe1. */
        uint64_t n = vbt_fill_pipe(f0, 20);
        CK(n > 0);
        vbt_fill(big, 200000, 21, 0);
        CK(vbt_write_all(f1, big, 200000));
        CK(vbt_read_n(f1, big, 5000) == 5000 && vbt_check(big, 5000, 22, 0));
        vbt_tell_u64(n);
        CK(vbt_hear(20000));
        close(f0);
        close(f1);
        return 0;
}

static int indep_b(void)
{
        int f0 = vbt_open(P0, O_RDWR), f1 = vbt_open(P1, O_RDWR);
        CK(f0 >= 0 && f1 >= 0);
        static uint8_t buf[200000];
        CK(vbt_read_n(f1, buf, sizeof(buf)) == sizeof(buf) && vbt_check(buf, sizeof(buf), 21, 0));
        vbt_fill(buf, 5000, 22, 0);
        CK(vbt_write_all(f1, buf, 5000));
        uint64_t n;
        CK(vbt_hear_u64(&n, 20000));
        for (uint64_t got = 0; got < n;) {
                size_t want = n - got < sizeof(buf) ? (size_t)(n - got) : sizeof(buf);
                CK(vbt_read_n(f0, buf, want) == want && vbt_check(buf, want, 20, got));
                got += want;
        }
        vbt_tell();
        close(f0);
        close(f1);
        return 0;
}

static int oneway_a(void)
{
        int fd = vbt_open(P1, O_WRONLY);
        CK(fd >= 0);
        vbt_fill(big, 5000, 30, 0);
        CK(vbt_write_all(fd, big, 5000));
        char c;
        CK(read(fd, &c, 1) == 0);   /* not opened for reading */
        CK(vbt_hear(20000));
        close(fd);
        return 0;
}

static int oneway_b(void)
{
        int fd = vbt_open(P1, O_RDONLY);
        CK(fd >= 0);
        CK(write(fd, "x", 1) == -1 && errno == EPIPE);   /* not opened for writing */
        CK(vbt_read_n(fd, big, 5000) == 5000 && vbt_check(big, 5000, 30, 0));
        vbt_tell();
        char c;
        CK(read(fd, &c, 1) == 0);
        close(fd);
        return 0;
}

void test_independent(void)
{
        vbt_run(indep_a, indep_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

void test_one_way(void)
{
        vbt_run(oneway_a, oneway_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- many conversations --------------------------------------------------------------------- */

/* Each round: A writes W bytes, B writes W2; each reads some or all of
 * the other's and closes (first when it reads only some), A sometimes opening with
 * O_NONBLOCK. Opens pair in order, so B's r-th end must see only A's
 * r-th bytes, and A's only B's. */
#define CHURN_ROUNDS 40

struct churn {
        uint32_t w, w2, r, r2;
        bool b_all, a_nb, b_first;
};

static struct churn churn_of(unsigned round)
{
        unsigned s = round * 2654435761u + 12345;
        struct churn c;
        c.w = (uint32_t)(rand_r(&s) % 400000);
        c.w2 = (uint32_t)(rand_r(&s) % 30000);
        c.b_all = rand_r(&s) % 2;
        c.r = c.w ? (uint32_t)(rand_r(&s) % (c.w + 1)) : 0;
        c.r2 = c.w2 ? (uint32_t)(rand_r(&s) % (c.w2 + 1)) : 0;
        c.a_nb = rand_r(&s) % 3 == 0;
        c.b_first = !c.b_all;   /* who reads all waits for the EOF */
        return c;
}

static const char *churn_pipe;

static int churn_a(void)
{
        static uint8_t buf[400000];
        for (unsigned r = 0; r < CHURN_ROUNDS; r++) {
                struct churn c = churn_of(r);
                int fd = vbt_open(churn_pipe, O_RDWR | (c.a_nb ? O_NONBLOCK : 0));
                CK(fd >= 0);
                if (c.a_nb) {
                        CK(vbt_wait_ev(fd, POLLOUT, 10000) & POLLOUT);
                        CK(fcntl(fd, F_SETFL, 0) == 0);
                }
                vbt_fill(buf, c.w, 100 + r, 0);
                ssize_t w = write(fd, buf, c.w);
                CK(w == (ssize_t)c.w || (w >= 0 && !c.b_all) || (w < 0 && errno == EPIPE && !c.b_all));
                size_t got = vbt_read_n(fd, buf, c.r2);
                CK(got == c.r2 && vbt_check(buf, got, 500 + r, 0));
                if (c.b_first)
                        CK(vbt_hear(20000));
                close(fd);
                if (!c.b_first)
                        vbt_tell();
        }
        return 0;
}

static int churn_b(void)
{
        static uint8_t buf[400000];
        for (unsigned r = 0; r < CHURN_ROUNDS; r++) {
                struct churn c = churn_of(r);
                int fd = vbt_open(churn_pipe, O_RDWR);
                CK(fd >= 0);
                vbt_fill(buf, c.w2, 500 + r, 0);
                CK(vbt_write_all(fd, buf, c.w2));
                size_t want = c.b_all ? c.w : c.r;
                size_t got = vbt_read_n(fd, buf, want);
                if (got != want)
                        fprintf(stderr, "test-vbpipe: round %u: %zu of %zu bytes (w %u, w2 %u, r2 %u, nb %d)\n", r, got,
                                want, c.w, c.w2, c.r2, c.a_nb);
                CK(got == want && vbt_check(buf, got, 100 + r, 0));
                if (c.b_all)
                        CK(read(fd, buf, 1) == 0);
                if (!c.b_first)
                        CK(vbt_hear(20000));
                close(fd);
                if (c.b_first)
                        vbt_tell();
        }
        return 0;
}

void test_churn(void)
{
        static const char *const pipes[] = { P1, P0 }, *const links[] = { "vm2-vm4-vbpipe1", "vm2-vm4-vbpipe0" };
        for (int i = 0; i < 2; i++) {
                churn_pipe = pipes[i];
                vbt_run(churn_a, churn_b, NULL, NULL);
                CU_ASSERT(vbt_idle());
                /* No protocol error reset the vlink. */
                CU_ASSERT_EQUAL(pvt_wait_vlink(&vbt_plat, "vm2", links[i], "ON", 0), 0);
        }
}
