/* VBPIPE semantics across real pvds (test-2clients platform: vbpipe0, with
 * wakeup=250 and whole-count reads, and vbpipe1, flag 'a' and 64 KiB
 * rings, both between vm2 and vm4). Each test runs one program per VM end
 * as forked children: A in vm2, B in vm4 (vbpipe-test.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pv/vbpipe.h"
#include "pvt-run.h"
#include "vbpipe-sem.h"

static uint8_t big[1 << 20];

/* ---- rendezvous, names ------------------------------------------------------------- */

static int rdv_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        vbt_sh->a_opened = 1;
        CK(write(fd, "x", 1) == 1);
        char c;
        CK(read(fd, &c, 1) == 1 && c == 'y');
        close(fd);
        return 0;
}

static int rdv_b(void)
{
        int fd = vbt_open("/dev/" P0, O_RDWR);
        CK(fd >= 0);
        vbt_sh->count = 1;
        char c;
        CK(read(fd, &c, 1) == 1 && c == 'x');
        CK(write(fd, "y", 1) == 1);
        close(fd);
        return 0;
}

/* A blocking open returns only once the other side opens (B starts
 * later); "vbpipe0" and "/dev/vbpipe0" name the same pipe. */
static void test_rendezvous(void)
{
        memset(vbt_sh, 0, sizeof(*vbt_sh));
        pid_t a = vbt_spawn("vm2", rdv_a);
        CU_ASSERT_FATAL(a > 0);
        CU_ASSERT(vbt_wait_state("vm2", P0, "local", "waiting", 10000));
        CU_ASSERT(vbt_wait_state("vm4", P0, "peer", "waiting", 10000));
        usleep(300000);
        CU_ASSERT_EQUAL(vbt_sh->a_opened, 0);              /* still in vbpipeOpen */
        CU_ASSERT_EQUAL(waitpid(a, NULL, WNOHANG), 0);     /* and alive */
        pid_t b = vbt_spawn("vm4", rdv_b);
        CU_ASSERT_EQUAL(pvt_wait(a, 40000), 0);
        CU_ASSERT_EQUAL(pvt_wait(b, 40000), 0);
        CU_ASSERT_EQUAL(vbt_sh->a_opened, 1);
        CU_ASSERT(vbt_idle());

        /* The other way round: the client VM's program waits. */
        memset(vbt_sh, 0, sizeof(*vbt_sh));
        b = vbt_spawn("vm4", rdv_b);
        CU_ASSERT_FATAL(b > 0);
        CU_ASSERT(vbt_wait_state("vm4", P0, "local", "waiting", 10000));
        CU_ASSERT(vbt_wait_state("vm2", P0, "peer", "waiting", 10000));
        usleep(300000);
        CU_ASSERT_EQUAL(vbt_sh->count, 0);
        CU_ASSERT_EQUAL(waitpid(b, NULL, WNOHANG), 0);
        a = vbt_spawn("vm2", rdv_a);
        CU_ASSERT_EQUAL(pvt_wait(a, 40000), 0);
        CU_ASSERT_EQUAL(pvt_wait(b, 40000), 0);
        CU_ASSERT_EQUAL(vbt_sh->count, 1);
        CU_ASSERT(vbt_idle());
}

static void test_unknown_name(void)
{
        pvt_use_vm(&vbt_plat, "vm2");
        static const char *const bad[] = { "vbpipe9", "/dev/vbpipe9", "/dev/nothing" };
        for (int i = 0; i < 3; i++) {
                errno = 0;
                CU_ASSERT_EQUAL(vbpipeOpen(bad[i], O_RDWR), -1);
                CU_ASSERT_EQUAL(errno, ENOENT);
                errno = 0;
                CU_ASSERT_EQUAL(vbpipeOpen(bad[i], O_RDWR | O_NONBLOCK), -1);
                CU_ASSERT_EQUAL(errno, ENOENT);
                CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "vbpipe9") ? "" : strstr(pvLastError(), "nothing"));
        }
        unsetenv("PVD_RUNTIME_DIR");
}

/* ---- O_NONBLOCK open ------------------------------------------------------------------- */

static int nb_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_NONBLOCK);
        CK(fd >= 0);
        /* No peer yet: not writable, nothing to read. */
        CK(!(vbt_poll(fd, POLLOUT, 0) & POLLOUT));
        CK(write(fd, "early", 5) == -1 && errno == EAGAIN);
        char c;
        CK(read(fd, &c, 1) == -1 && errno == EAGAIN);
        usleep(200000);
        CK(!(vbt_poll(fd, POLLOUT, 0) & POLLOUT));
        vbt_tell();
        CK(vbt_poll(fd, POLLOUT, 10000) & POLLOUT);
        CK(write(fd, "hello world", 11) == 11);
        close(fd);
        return 0;
}

static int nb_b(void)
{
        CK(vbt_hear(10000));
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        char buf[64];
        CK(read(fd, buf, 11) == 11 && memcmp(buf, "hello world", 11) == 0);
        CK(read(fd, buf, sizeof(buf)) == 0);   /* EOF: not one byte more */
        close(fd);
        return 0;
}

/* Both sides non-blocking: poll brings the peer. */
static int nb2_a(void)
{
        int fd = vbt_open(P1, O_RDWR | O_NONBLOCK);
        CK(fd >= 0);
        vbt_tell();
        CK(vbt_poll(fd, POLLOUT, 10000) & POLLOUT);
        CK(write(fd, "abc", 3) == 3);
        CK(vbt_poll(fd, POLLIN, 10000) & POLLIN);
        char buf[8];
        CK(read(fd, buf, sizeof(buf)) == 3 && memcmp(buf, "def", 3) == 0);
        close(fd);
        return 0;
}

static int nb2_b(void)
{
        CK(vbt_hear(10000));
        int fd = vbt_open(P1, O_RDWR | O_NONBLOCK);
        CK(fd >= 0);
        CK(vbt_poll(fd, POLLIN, 10000) & POLLIN);
        char buf[8];
        CK(read(fd, buf, sizeof(buf)) == 3 && memcmp(buf, "abc", 3) == 0);
        CK(vbt_poll(fd, POLLOUT, 10000) & POLLOUT);
        CK(write(fd, "def", 3) == 3);
        CK(vbt_poll(fd, POLLIN | POLLRDHUP, 10000) & POLLRDHUP);
        CK(read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        return 0;
}

static void test_nonblock_open(void)
{
        vbt_run(nb_a, nb_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        vbt_run(nb2_a, nb2_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- read counts, EOF, FIONREAD --------------------------------------------------------- */

static int whole_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[1000];
        vbt_fill(buf, sizeof(buf), 1, 0);
        for (int i = 0; i < 20; i++) {
                CK(write(fd, buf + i * 50, 50) == 50);
                usleep(10000);
        }
        CK(vbt_hear(20000));
        close(fd);
        return 0;
}

static int whole_b(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[1000];
        CK(read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));   /* one read: the whole count */
        CK(vbt_check(buf, sizeof(buf), 1, 0));
        vbt_tell();
        CK(read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        return 0;
}

static int any_a(void)
{
        int fd = vbt_open(P1, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[100];
        vbt_fill(buf, sizeof(buf), 2, 0);
        CK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        CK(vbt_hear(20000));
        close(fd);
        return 0;
}

static int any_b(void)
{
        int fd = vbt_open(P1, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[1000];
        size_t got = 0;
        while (got < 100) {
                /* Returns what is there: never waits for 1000 bytes. */
                ssize_t n = read(fd, buf + got, sizeof(buf) - got);
                CK(n > 0 && got + (size_t)n <= 100);
                got += (size_t)n;
        }
        CK(vbt_check(buf, 100, 2, 0));
        vbt_tell();
        CK(read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        return 0;
}

/* Fewer than the count on vbpipe0: in non-blocking mode, and when a
 * signal interrupts the read (no SA_RESTART) after bytes came. */
static void on_usr1(int sig)
{
        (void)sig;
}

static int short_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[100];
        vbt_fill(buf, sizeof(buf), 7, 0);
        CK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        CK(vbt_hear(20000));
        uint64_t before;
        CK(vbt_hear_u64(&before, 20000));
        vbt_fill(buf, sizeof(buf), 8, 0);
        CK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        /* Signal B once vm4's pvd has given it the bytes. */
        uint64_t now = 0;
        long long deadline = pvt_now_ms() + 10000;
        while (vbt_stat_u64("vm4", P0, "from_peer", "bytes", &now) && now < before + 100 && pvt_now_ms() < deadline)
                usleep(5000);
        CK(now >= before + 100);
        usleep(50000);
        CK(kill((pid_t)vbt_sh->count, SIGUSR1) == 0);
        CK(vbt_hear(20000));
        close(fd);
        return 0;
}

static int short_b(void)
{
        vbt_sh->count = (uint64_t)getpid();
        struct sigaction sa = { .sa_handler = on_usr1 };   /* no SA_RESTART */
        sigaction(SIGUSR1, &sa, NULL);
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[1000];
        CK(vbt_poll(fd, POLLIN, 10000) & POLLIN);
        int fl = fcntl(fd, F_GETFL);
        CK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
        size_t got = 0;
        while (got < 100) {
                ssize_t n = read(fd, buf + got, sizeof(buf) - got);
                if (n < 0 && errno == EAGAIN) {
                        CK(vbt_poll(fd, POLLIN, 10000) & POLLIN);
                        continue;
                }
                CK(n > 0 && got + (size_t)n <= 100);
                got += (size_t)n;
        }
        CK(vbt_check(buf, 100, 7, 0));
        CK(read(fd, buf, sizeof(buf)) == -1 && errno == EAGAIN);
        CK(fcntl(fd, F_SETFL, fl) == 0);
        uint64_t before = 0;
        CK(vbt_stat_u64("vm4", P0, "from_peer", "bytes", &before));
        vbt_tell();
        vbt_tell_u64(before);
        /* Blocked for 1000 bytes, 100 came, then the signal. */
        CK(read(fd, buf, sizeof(buf)) == 100);
        CK(vbt_check(buf, 100, 8, 0));
        vbt_tell();
        CK(read(fd, buf, sizeof(buf)) == 0);
        close(fd);
        return 0;
}

static void test_read_counts(void)
{
        vbt_run(whole_a, whole_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        vbt_run(any_a, any_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        vbt_run(short_a, short_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

static const char *eof_pipe;

static int eof_a(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[300];
        vbt_fill(buf, sizeof(buf), 3, 0);
        CK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        close(fd);
        vbt_tell();
        return 0;
}

static int eof_b(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        CK(vbt_hear(10000));
        /* The writer is gone: its bytes are still there, then EOF. */
        CK(vbt_poll(fd, POLLRDHUP, 10000) & POLLRDHUP);
        int avail = -1;
        CK(ioctl(fd, FIONREAD, &avail) == 0 && avail == 300);
        uint8_t buf[1000];
        CK(read(fd, buf, sizeof(buf)) == 300);
        CK(vbt_check(buf, 300, 3, 0));
        CK(read(fd, buf, sizeof(buf)) == 0);
        CK(read(fd, buf, sizeof(buf)) == 0);
        CK(vbt_poll(fd, POLLIN, 0) & POLLIN);
        close(fd);
        return 0;
}

static void test_eof(void)
{
        eof_pipe = P0;
        vbt_run(eof_a, eof_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        eof_pipe = P1;
        vbt_run(eof_a, eof_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

static int fionread_a(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[123];
        vbt_fill(buf, sizeof(buf), 4, 0);
        CK(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        CK(vbt_hear(20000));
        close(fd);
        return 0;
}

static int fionread_b(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        int avail = 0;
        long long deadline = pvt_now_ms() + 10000;
        while (avail < 123 && pvt_now_ms() < deadline) {
                CK(ioctl(fd, FIONREAD, &avail) == 0 && avail <= 123);
                usleep(5000);
        }
        CK(avail == 123);
        uint8_t buf[123];
        CK(read(fd, buf, sizeof(buf)) == 123 && vbt_check(buf, 123, 4, 0));
        CK(ioctl(fd, FIONREAD, &avail) == 0 && avail == 0);
        vbt_tell();
        close(fd);
        return 0;
}

static void test_fionread(void)
{
        eof_pipe = P0;
        vbt_run(fionread_a, fionread_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        eof_pipe = P1;
        vbt_run(fionread_a, fionread_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* A write of more than the pipe holds blocks, and proceeds as the reader
 * drains it, small read by small read (vbpipe1: 64 KiB rings). */
#define BIGW (3u << 20)

static int bigw_a(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        static uint8_t buf[BIGW];
        vbt_fill(buf, BIGW, 6, 0);
        CK(write(fd, buf, BIGW) == (ssize_t)BIGW);
        close(fd);
        return 0;
}

static int bigw_b(void)
{
        int fd = vbt_open(eof_pipe, O_RDWR);
        CK(fd >= 0);
        uint8_t buf[1000];
        uint64_t got = 0;
        for (;;) {
                ssize_t n = read(fd, buf, 1 + got % sizeof(buf));
                CK(n >= 0);
                if (n == 0)
                        break;
                CK(vbt_check(buf, (size_t)n, 6, got));
                got += (uint64_t)n;
        }
        CK(got == BIGW);
        close(fd);
        return 0;
}

static void test_big_write(void)
{
        eof_pipe = P1;
        vbt_run(bigw_a, bigw_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        eof_pipe = P0;
        vbt_run(bigw_a, bigw_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- EPIPE and SIGPIPE ---------------------------------------------------------------- */

static volatile sig_atomic_t got_sigpipe;

static void on_sigpipe(int sig)
{
        (void)sig;
        got_sigpipe++;
}

static int epipe_mode;   /* 0: SIGPIPE ignored, 1: a handler, 2: default */

static int epipe_a(void)
{
        if (epipe_mode == 1)
                signal(SIGPIPE, on_sigpipe);
        else if (epipe_mode == 2)
                signal(SIGPIPE, SIG_DFL);
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        CK(vbt_hear(10000));   /* B closed */
        /* STOP travels to this side: writes succeed until it is there. */
        long long deadline = pvt_now_ms() + 10000;
        ssize_t w;
        while ((w = write(fd, "z", 1)) == 1 && pvt_now_ms() < deadline)
                usleep(5000);
        CK(w == -1 && errno == EPIPE);
        if (epipe_mode == 1)
                CK(got_sigpipe > 0);
        CK(write(fd, "z", 1) == -1 && errno == EPIPE);
        CK(vbt_wait_ev(fd, POLLHUP, 10000) & POLLHUP);
        char c;
        CK(read(fd, &c, 1) == 0);
        close(fd);
        return 0;
}

static int epipe_b(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        close(fd);
        vbt_tell();
        return 0;
}

static void test_epipe(void)
{
        epipe_mode = 0;
        vbt_run(epipe_a, epipe_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        epipe_mode = 1;
        vbt_run(epipe_a, epipe_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
        epipe_mode = 2;
        int sa = -1;
        vbt_run(epipe_a, epipe_b, &sa, NULL);
        CU_ASSERT_EQUAL(sa, 128 + SIGPIPE);
        CU_ASSERT(vbt_idle());
}

/* ---- poll, select, epoll -------------------------------------------------------------------- */

static int sel(int fd, bool *r, bool *w)
{
        fd_set rs, ws;
        FD_ZERO(&rs);
        FD_ZERO(&ws);
        FD_SET(fd, &rs);
        FD_SET(fd, &ws);
        struct timeval tv = { 0, 0 };
        int n = select(fd + 1, &rs, &ws, NULL, &tv);
        *r = FD_ISSET(fd, &rs);
        *w = FD_ISSET(fd, &ws);
        return n;
}

static uint32_t ep_events(int ep, int timeout_ms)
{
        struct epoll_event ev;
        int n = epoll_wait(ep, &ev, 1, timeout_ms);
        return n == 1 ? ev.events : 0;
}

static int ep_new(int fd)
{
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP };
        if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                close(ep);
                return -1;
        }
        return ep;
}

static int poll_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        int ep = ep_new(fd);
        CK(ep >= 0);
        CK(vbt_hear(10000));
        CK(write(fd, "0123456789", 10) == 10);
        CK(vbt_hear(10000));
        /* Fill the pipe: then not writable, by all three. */
        uint64_t n = vbt_fill_pipe(fd, 5);
        CK(n > 0);
        bool r, w;
        CK(!(vbt_poll(fd, POLLOUT, 0) & POLLOUT));
        CK(sel(fd, &r, &w) == 0 && !r && !w);
        CK(!(ep_events(ep, 0) & EPOLLOUT));
        vbt_tell_u64(n);
        /* B drains it: writable again. */
        CK(vbt_poll(fd, POLLOUT, 10000) & POLLOUT);
        CK(sel(fd, &r, &w) == 1 && !r && w);
        CK(ep_events(ep, 10000) == EPOLLOUT);
        CK(vbt_hear(10000));
        vbt_tell(); /* B closes only now: its close would add EPOLLIN/HUP */
        /* B closed: EOF and hang-up. */
        CK(vbt_wait_ev(fd, POLLHUP, 10000) & POLLHUP);
        CK(ep_events(ep, 10000) & (EPOLLIN | EPOLLRDHUP | EPOLLHUP));
        CK(vbt_poll(fd, POLLIN | POLLRDHUP, 0) & POLLRDHUP);
        CK(sel(fd, &r, &w) >= 1 && r);
        char c;
        CK(read(fd, &c, 1) == 0);
        close(ep);
        close(fd);
        return 0;
}

static int poll_b(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        int ep = ep_new(fd);
        CK(ep >= 0);
        /* Open, empty: writable, not readable. */
        bool r, w;
        CK(vbt_poll(fd, POLLIN | POLLOUT | POLLRDHUP, 0) == POLLOUT);
        CK(sel(fd, &r, &w) == 1 && !r && w);
        CK(ep_events(ep, 0) == EPOLLOUT);
        vbt_tell();
        CK(vbt_poll(fd, POLLIN, 10000) == POLLIN);
        CK(ep_events(ep, 10000) == (EPOLLIN | EPOLLOUT));
        CK(sel(fd, &r, &w) == 2 && r && w);
        char buf[10];
        CK(read(fd, buf, 10) == 10 && memcmp(buf, "0123456789", 10) == 0);
        CK(!(vbt_poll(fd, POLLIN, 0) & POLLIN));
        vbt_tell();
        uint64_t n;
        CK(vbt_hear_u64(&n, 20000));
        for (uint64_t got = 0; got < n;) {
                size_t want = n - got < sizeof(big) ? (size_t)(n - got) : sizeof(big);
                CK(vbt_read_n(fd, big, want) == want);
                CK(vbt_check(big, want, 5, got));
                got += want;
        }
        vbt_tell();
        CK(vbt_hear(10000));
        close(ep);
        close(fd);
        return 0;
}

static void test_poll(void)
{
        vbt_run(poll_a, poll_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

static const struct pvt_test tests[] = {
        { "open is a rendezvous; /dev/NAME and NAME", test_rendezvous },
        { "unknown name: ENOENT", test_unknown_name },
        { "O_NONBLOCK open: writable when the peer arrives", test_nonblock_open },
        { "whole-count reads (vbpipe0), what is there (flag a)", test_read_counts },
        { "the rest, then EOF", test_eof },
        { "FIONREAD", test_fionread },
        { "a write larger than the pipe blocks and proceeds", test_big_write },
        { "EPIPE and SIGPIPE", test_epipe },
        { "poll, select, epoll", test_poll },
        { "second open: EBUSY", test_busy },
        { "abandoned opens are no partners", test_abandoned },
        { "new conversations never see old bytes", test_reopen },
        { "two independent pipes", test_independent },
        { "many conversations in a row", test_churn },
        { "O_RDONLY and O_WRONLY", test_one_way },
        { "wakeup= takes wake locks", test_wakeup },
        { "pvctl stat vbpipe", test_stat },
        { "direct: ping-pong", test_direct_pingpong },
        { "direct: 64-byte writes, 64 KiB reads, every byte", test_direct_small_writes },
        { "direct: the rest, then EOF; EPIPE", test_direct_eof },
        { "direct: poll and FIONREAD see the bytes; the socket's come first", test_direct_seen },
        { "direct: a reader in a loop finds its bytes in the ring; when it stops, in the socket", test_direct_loop_reader },
        { "direct: an event loop reading until EAGAIN never waits for pvd to see it stop", test_direct_event_loop_reader },
        { "direct: impossible indices in the direct page: no more direct access, or a reset", test_direct_liar },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vbpipe", vbt_suite_init, vbt_suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}
