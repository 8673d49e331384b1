/* VBPIPE when something dies mid-stream, across real pvd processes
 * (test-2clients: vm2 serves, vm4 is the client):
 *   - a program killed with SIGKILL: the other one reads what arrived, then
 *     EOF, and its writes fail with EPIPE; both ends open again;
 *   - the peer VM's pvd killed: the program on the surviving side gets
 *     EOF and EPIPE, never a hang; an open waiting for the dead VM
 *     completes once its pvd is back and a program there opens;
 *   - the local pvd killed under a program: EOF and EPIPE too;
 *   - a program killed while its open waits for the peer: the next open
 *     of that end works.
 * Every byte read is checked against the sender's stream
 * (tests/vbpipe-stream.h): what arrives before the EOF is never garbage.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "pvtest.h"
#include "vbpipe-stream.h"

#define PIPE       "vbpipe0"
#define PROMPT_MS  5000         /* "promptly": EOF and EPIPE come within this */
#define IO_MAX     (64 * 1024)
#define CHILD_S    60           /* a stuck child ends by SIGALRM */
#define CONV_BYTES (1u << 20)

enum mode {
        M_STREAM,               /* write until EPIPE, read and check until EOF */
        M_CONV,                 /* send CONV_BYTES, shut down writing, read to EOF */
        M_HOLD,                 /* open, then wait to be killed */
        M_SEND,                 /* send CONV_BYTES, then wait to be killed (the end stays open) */
        M_READ,                 /* only read and check, until EOF */
};

/* A program's orders and report (shared memory). */
struct prog {
        enum mode mode;
        int from;               /* 0: vm2's stream, 1: vm4's */
        bool nonblock;
        volatile int opened;
        int open_err;
        uint64_t sent, got;
        int werr, rerr;         /* errno that ended writing / reading (0: EOF) */
        int rerr2, werr2;       /* a read and a write after that */
        bool wrong;             /* a byte that is not the sender's */
        uint64_t wrong_at;
        int fd;
};

static struct pvt_platform plat;
static struct prog *pg;         /* [4] */
static int fds_before;

static uint64_t seed_of(int from)
{
        return 0xc0ffee00ull + (uint64_t)from;
}

static void *prog_writer(void *arg)
{
        struct prog *p = arg;
        uint8_t *buf = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = seed_of(p->from) ^ 0x77;
        vbs_init(&st, seed_of(p->from));
        uint64_t limit = p->mode == M_STREAM ? UINT64_MAX : CONV_BYTES;
        while (buf && p->sent < limit) {
                size_t n = vbs_size(&rng, IO_MAX);
                if (n > limit - p->sent)
                        n = (size_t)(limit - p->sent);
                vbs_fill(&st, buf, n);
                for (size_t off = 0; off < n;) {
                        ssize_t w = write(p->fd, buf + off, n - off);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0) {
                                p->werr = w < 0 ? errno : EIO;
                                goto out;
                        }
                        off += (size_t)w;
                        p->sent += (uint64_t)w;
                }
        }
        if (p->mode == M_CONV)
                shutdown(p->fd, SHUT_WR);
out:
        free(buf);
        return NULL;
}

static int program(void *arg)
{
        struct prog *p = arg;
        alarm(CHILD_S);
        signal(SIGPIPE, SIG_IGN);
        p->fd = vbpipeOpen(PIPE, O_RDWR | (p->nonblock ? O_NONBLOCK : 0));
        if (p->fd < 0) {
                p->open_err = errno;
                return 1;
        }
        p->opened = 1;
        if (p->mode == M_SEND)
                prog_writer(p);
        if (p->mode == M_HOLD || p->mode == M_SEND)
                for (;;)
                        pause();
        pthread_t th;
        if (p->mode != M_READ && pthread_create(&th, NULL, prog_writer, p) != 0)
                return 1;
        uint8_t *buf = malloc(IO_MAX), *scratch = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = seed_of(!p->from) ^ 0x99;
        vbs_init(&st, seed_of(!p->from));
        for (;;) {
                ssize_t r = read(p->fd, buf, vbs_size(&rng, IO_MAX));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0) {
                        p->rerr = r < 0 ? errno : 0;
                        break;
                }
                size_t ok = vbs_check(&st, buf, (size_t)r, scratch);
                if (ok != (size_t)r) {
                        p->wrong = true;
                        p->wrong_at = p->got + ok;
                        break;
                }
                p->got += (uint64_t)r;
        }
        /* The reading side ended: the writing one must end too (EPIPE),
         * or the alarm says it hangs. */
        if (p->mode != M_READ)
                pthread_join(th, NULL);
        /* After the first error, the pipe's usual answers. */
        ssize_t r = read(p->fd, buf, 1);
        p->rerr2 = r < 0 ? errno : r > 0 ? EIO : 0;
        p->werr2 = write(p->fd, "x", 1) < 0 ? errno : 0;
        free(buf);
        free(scratch);
        close(p->fd);
        return p->wrong ? 2 : 0;
}

static pid_t run(int i, const char *vm, enum mode mode, bool nonblock)
{
        memset(&pg[i], 0, sizeof(pg[i]));
        pg[i].mode = mode;
        pg[i].from = !strcmp(vm, "vm4");
        pg[i].nonblock = nonblock;
        pid_t pid = pvt_spawn(&plat, vm, program, &pg[i]);
        CU_ASSERT(pid > 0);
        return pid;
}

/* Wait until cond holds (up to ms). */
#define WAIT_FOR(cond, ms)                                                       \
        ({                                                                       \
                long long _end = pvt_now_ms() + (ms);                            \
                while (!(cond) && pvt_now_ms() < _end)                           \
                        usleep(2000);                                            \
                (cond);                                                          \
        })

/* Both programs stream until each has received some bytes. */
static void start_streams(pid_t *a, pid_t *b)
{
        *a = run(0, "vm2", M_STREAM, false);
        *b = run(1, "vm4", M_STREAM, false);
        CU_ASSERT(WAIT_FOR(pg[0].got > (1u << 20) && pg[1].got > (1u << 20), 20000));
}

/* A survivor: the bytes it read were the sender's, then EOF, and its
 * writes failed with EPIPE, all within PROMPT_MS. */
static void check_survivor(pid_t pid, int i, const char *what, bool pvd_died)
{
        int rc = pvt_wait(pid, PROMPT_MS);
        if (rc != 0 || pg[i].rerr || pg[i].werr != EPIPE || pg[i].rerr2 || pg[i].werr2 != EPIPE)
                printf("\n    %s: exit %d, read %llu (errno %d, then %d), wrote %llu (errno %d, then %d)%s ",
                       what, rc, (unsigned long long)pg[i].got, pg[i].rerr, pg[i].rerr2,
                       (unsigned long long)pg[i].sent, pg[i].werr, pg[i].werr2,
                       pg[i].wrong ? ", a wrong byte" : "");
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_FALSE(pg[i].wrong);
        CU_ASSERT(pg[i].got > 0);
        if (pvd_died) {
                /* pvd's socket end closed with the program's bytes unread:
                 * the kernel says so once (ECONNRESET), then EOF / EPIPE. */
                CU_ASSERT(pg[i].rerr == 0 || pg[i].rerr == ECONNRESET);
                CU_ASSERT(pg[i].werr == EPIPE || pg[i].werr == ECONNRESET);
        } else {
                CU_ASSERT_EQUAL(pg[i].rerr, 0);
                CU_ASSERT_EQUAL(pg[i].werr, EPIPE);
        }
        CU_ASSERT_EQUAL(pg[i].rerr2, 0);
        CU_ASSERT_EQUAL(pg[i].werr2, EPIPE);
}

/* A new conversation: both programs send CONV_BYTES, and read them all. */
static void conversation(void)
{
        pid_t a = run(2, "vm2", M_CONV, false), b = run(3, "vm4", M_CONV, false);
        int ra = pvt_wait(a, 20000), rb = pvt_wait(b, 20000);
        CU_ASSERT_EQUAL(ra, 0);
        CU_ASSERT_EQUAL(rb, 0);
        for (int i = 2; i < 4; i++) {
                if (pg[i].open_err)
                        printf("\n    open in %s: %s ", i == 2 ? "vm2" : "vm4", strerror(pg[i].open_err));
                CU_ASSERT_EQUAL(pg[i].open_err, 0);
                CU_ASSERT_EQUAL(pg[i].sent, CONV_BYTES);
                CU_ASSERT_EQUAL(pg[i].got, CONV_BYTES);
                CU_ASSERT_EQUAL(pg[i].werr, 0);
                CU_ASSERT_FALSE(pg[i].wrong);
        }
}

static void test_program_killed(void)
{
        pid_t a, b;
        start_streams(&a, &b);
        kill(a, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(a, PROMPT_MS), 128 + SIGKILL);
        check_survivor(b, 1, "vm4's program after vm2's was killed", false);
        conversation();

        /* The other way round. */
        start_streams(&a, &b);
        kill(b, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(b, PROMPT_MS), 128 + SIGKILL);
        check_survivor(a, 0, "vm2's program after vm4's was killed", false);
        conversation();
}

/* vm4's pvd killed: vm2's program sees the end of the conversation, vm4's
 * sees its own end close; an open in vm2 waits for vm4 to come back. */
static void test_peer_pvd_killed(void)
{
        pid_t a, b;
        start_streams(&a, &b);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm4", SIGKILL) >= 0);
        check_survivor(a, 0, "vm2's program after vm4's pvd was killed", false);
        check_survivor(b, 1, "vm4's program after its pvd was killed", true);

        pid_t w = run(2, "vm2", M_CONV, false);
        usleep(300 * 1000);
        CU_ASSERT_EQUAL(pg[2].opened, 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        usleep(200 * 1000);
        CU_ASSERT_EQUAL(pg[2].opened, 0);   /* still the rendezvous: nobody in vm4 */
        pid_t v = run(3, "vm4", M_CONV, false);
        CU_ASSERT_EQUAL(pvt_wait(w, 20000), 0);
        CU_ASSERT_EQUAL(pvt_wait(v, 20000), 0);
        for (int i = 2; i < 4; i++) {
                CU_ASSERT_EQUAL(pg[i].got, CONV_BYTES);
                CU_ASSERT_FALSE(pg[i].wrong);
        }
        conversation();
}

/* vm2's pvd (the server) killed under its program: the program's end
 * closes (EOF, EPIPE); vm4's program loses its peer. Both come back. */
static void test_local_pvd_killed(void)
{
        pid_t a, b;
        start_streams(&a, &b);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) >= 0);
        check_survivor(a, 0, "vm2's program after its pvd was killed", true);
        check_survivor(b, 1, "vm4's program after vm2's pvd was killed", false);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        conversation();

        /* A program blocked in read, nothing coming, sees it too: what
         * arrived, then EOF. */
        a = run(0, "vm2", M_READ, false);
        b = run(1, "vm4", M_SEND, false);
        CU_ASSERT(WAIT_FOR(pg[1].sent == CONV_BYTES, 10000));
        usleep(200 * 1000);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) >= 0);
        CU_ASSERT_EQUAL(pvt_wait(a, PROMPT_MS), 0);
        CU_ASSERT_EQUAL(pg[0].got, CONV_BYTES);
        CU_ASSERT_EQUAL(pg[0].rerr, 0);
        CU_ASSERT_EQUAL(pg[0].rerr2, 0);
        CU_ASSERT_EQUAL(pg[0].werr2, EPIPE);
        kill(b, SIGKILL);
        pvt_wait(b, PROMPT_MS);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000), 0);
        conversation();
}

/* Programs that open and die before the peer comes: the next opens work. */
static void test_opener_killed(void)
{
        pid_t a = run(0, "vm2", M_HOLD, false);
        usleep(200 * 1000);
        CU_ASSERT_EQUAL(pg[0].opened, 0);   /* blocked: no peer */
        kill(a, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(a, PROMPT_MS), 128 + SIGKILL);
        conversation();

        pid_t b = run(1, "vm4", M_HOLD, true);
        CU_ASSERT(WAIT_FOR(pg[1].opened, 5000));   /* non-blocking: at once */
        kill(b, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(b, PROMPT_MS), 128 + SIGKILL);
        conversation();

        /* Dying on both sides, one after the other, before any pairing. */
        a = run(0, "vm2", M_HOLD, true);
        CU_ASSERT(WAIT_FOR(pg[0].opened, 5000));
        kill(a, SIGKILL);
        pvt_wait(a, PROMPT_MS);
        b = run(1, "vm4", M_HOLD, false);
        usleep(100 * 1000);
        kill(b, SIGKILL);
        pvt_wait(b, PROMPT_MS);
        conversation();
}

static int suite_init(void)
{
        fds_before = pvt_fd_count();
        pg = mmap(NULL, 4 * sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (pg == MAP_FAILED || pvt_platform_init(&plat, "test-2clients") < 0)
                goto fail;
        if (pvt_pvd_start(&plat, "vm2", NULL) < 0 || pvt_pvd_start(&plat, "vm4", NULL) < 0 ||
            pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000) < 0)
                goto fail;
        return 0;
fail:
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        munmap(pg, 4 * sizeof(*pg));
        int fds = pvt_fd_count();
        if (left || fds != fds_before)
                fprintf(stderr, "test-vbpipe-kill: %d leftovers, fds %d -> %d\n", left, fds_before, fds);
        return left || fds != fds_before ? -1 : 0;
}

int main(void)
{
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("vbpipe-kill", suite_init, suite_fini);
        CU_add_test(s, "a program killed mid-stream: EOF and EPIPE for the other, then a new conversation",
                    test_program_killed);
        CU_add_test(s, "the peer's pvd killed mid-stream: EOF and EPIPE; an open waits for its return",
                    test_peer_pvd_killed);
        CU_add_test(s, "the local pvd killed under its program: EOF and EPIPE", test_local_pvd_killed);
        CU_add_test(s, "a program killed before the peer opened: the next open works", test_opener_killed);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return fails ? 1 : 0;
}
