/* VBPIPE across real pvds: wakeup= (wake locks written to PVD_WAKE_LOCK)
 * and pvctl stat vbpipe. Part of test-vbpipe. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-sem.h"

#define RING0 262144u   /* vbpipe0: the default ring size */
#define RING1 65536u    /* vbpipe1: 64K */

static char wbuf[4096];

static const char *wake_text(int i)
{
        ssize_t n = pvt_read_file(vbt_wake[i], wbuf, sizeof(wbuf));
        if (n < 0)
                wbuf[0] = 0;
        return wbuf;
}

static bool wait_wake(int i, const char *text, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        do {
                if (strcmp(wake_text(i), text) == 0)
                        return true;
                usleep(10000);
        } while (pvt_now_ms() < deadline);
        fprintf(stderr, "test-vbpipe: wake lock file of %s holds \"%s\"\n", i ? "vm4" : "vm2", wbuf);
        return false;
}

static void wake_reset(void)
{
        for (int i = 0; i < 2; i++)
                CU_ASSERT_EQUAL(truncate(vbt_wake[i], 0), 0);
        /* One wake lock per half period: let the last one run out. */
        usleep(300000);
}

static const char *wake_pipe;

static int wake_a(void)
{
        int fd = vbpipeOpen(wake_pipe, O_RDWR);
        CK(fd >= 0);
        CK(write(fd, "ping", 4) == 4);
        CK(vbt_hear(20000));
        char buf[4];
        CK(read(fd, buf, 4) == 4 && memcmp(buf, "pong", 4) == 0);
        close(fd);
        return 0;
}

static int wake_b(void)
{
        int fd = vbpipeOpen(wake_pipe, O_RDWR);
        CK(fd >= 0);
        char buf[4];
        CK(read(fd, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0);
        /* Bytes went to vm4 only: its pvd took a wake lock, vm2's did not. */
        long long deadline = pvt_now_ms() + 5000;
        while (strcmp(wake_text(1), "pvd-vbpipe0 250000000\n") && pvt_now_ms() < deadline)
                usleep(10000);
        if (strcmp(wake_pipe, "vbpipe0") == 0)
                CK(strcmp(wake_text(1), "pvd-vbpipe0 250000000\n") == 0);
        else
                CK(wake_text(1)[0] == 0);
        CK(wake_text(0)[0] == 0);
        CK(write(fd, "pong", 4) == 4);
        vbt_tell();
        CK(read(fd, buf, 1) == 0);
        close(fd);
        return 0;
}

void test_wakeup(void)
{
        uint64_t taken0 = 0, taken1 = 0, ms = 1;
        CU_ASSERT(vbt_stat_u64("vm4", "vbpipe0", NULL, "wake_locks_taken", &taken0));
        wake_reset();
        wake_pipe = "vbpipe0";
        vbt_run(wake_a, wake_b, NULL, NULL);
        /* ... and then vm2's, for the bytes back. */
        CU_ASSERT(wait_wake(0, "pvd-vbpipe0 250000000\n", 5000));
        CU_ASSERT(vbt_idle());
        char s[256];
        CU_ASSERT(vbt_stat_u64("vm4", "vbpipe0", NULL, "wakeup_ms", &ms) && ms == 250);
        CU_ASSERT(vbt_stat_str("vm4", "vbpipe0", NULL, "wake_lock", s, sizeof(s)) && strcmp(s, "true") == 0);
        CU_ASSERT(vbt_stat_str("vm4", "vbpipe0", NULL, "wake_lock_path", s, sizeof(s)) &&
                  strcmp(s, vbt_wake[1]) == 0);
        CU_ASSERT(vbt_stat_u64("vm4", "vbpipe0", NULL, "wake_locks_taken", &taken1) && taken1 > taken0);

        /* vbpipe1 has no wakeup=: no wake lock. */
        wake_reset();
        wake_pipe = "vbpipe1";
        vbt_run(wake_a, wake_b, NULL, NULL);
        usleep(100000);
        CU_ASSERT_STRING_EQUAL(wake_text(0), "");
        CU_ASSERT(vbt_stat_u64("vm4", "vbpipe1", NULL, "wakeup_ms", &ms) && ms == 0);
        CU_ASSERT(vbt_stat_str("vm4", "vbpipe1", NULL, "wake_lock", s, sizeof(s)) && strcmp(s, "false") == 0);
        CU_ASSERT(vbt_idle());
}

/* A counter of a flow (to_peer, from_peer) or of the pipe. */
static uint64_t stat_n(const char *vm, const char *sub, const char *key)
{
        uint64_t v = UINT64_MAX;
        if (!vbt_stat_u64(vm, "vbpipe0", sub, key, &v))
                fprintf(stderr, "test-vbpipe: %s: no %s.%s\n", vm, sub ? sub : "", key);
        return v;
}

static bool wait_n(const char *vm, const char *sub, const char *key, uint64_t want)
{
        long long deadline = pvt_now_ms() + 10000;
        uint64_t v;
        do {
                v = stat_n(vm, sub, key);
                if (v == want)
                        return true;
                usleep(10000);
        } while (pvt_now_ms() < deadline);
        fprintf(stderr, "test-vbpipe: %s %s.%s is %llu, not %llu\n", vm, sub ? sub : "", key, (unsigned long long)v,
                (unsigned long long)want);
        return false;
}

static void check_pvctl(const char *vm, bool json, const char *const *want)
{
        char out[32768], err[4096];
        const char *argv[] = { getenv("PVCTL_BIN"), "stat", "vbpipe", json ? "--json" : NULL, NULL };
        CU_ASSERT_EQUAL_FATAL(pvt_run(&vbt_plat, vm, argv, out, sizeof(out), err, sizeof(err), 5000), 0);
        if (getenv("VBT_SHOW_STAT"))
                fprintf(stderr, "%s", out);
        for (int i = 0; want[i]; i++)
                if (!strstr(out, want[i])) {
                        fprintf(stderr, "test-vbpipe: pvctl stat vbpipe%s in %s: no \"%s\" in\n%s\n",
                                json ? " --json" : "", vm, want[i], out);
                        CU_FAIL("pvctl stat vbpipe output");
                }
}

void test_stat(void)
{
        char s[64];
        uint64_t v;
        CU_ASSERT(vbt_stat_u64("vm2", "vbpipe0", NULL, "ring_size", &v) && v == RING0);
        CU_ASSERT(vbt_stat_u64("vm2", "vbpipe1", NULL, "ring_size", &v) && v == RING1);
        CU_ASSERT(vbt_stat_str("vm4", "vbpipe1", NULL, "flags", s, sizeof(s)) && strcmp(s, "a") == 0);
        CU_ASSERT(vbt_wait_state("vm2", "vbpipe0", "local", "closed", 1000));
        CU_ASSERT(vbt_wait_state("vm2", "vbpipe0", "peer", "closed", 1000));

        /* This process is the program of both ends: vm2's first, waiting. */
        pvt_use_vm(&vbt_plat, "vm2");
        int a = vbpipeOpen("vbpipe0", O_RDWR | O_NONBLOCK);
        CU_ASSERT_FATAL(a >= 0);
        CU_ASSERT(vbt_wait_state("vm2", "vbpipe0", "local", "waiting", 5000));
        CU_ASSERT(vbt_wait_state("vm4", "vbpipe0", "peer", "waiting", 5000));
        CU_ASSERT(vbt_wait_state("vm4", "vbpipe0", "local", "closed", 5000));
        uint64_t out0 = stat_n("vm2", "to_peer", "bytes"), outw0 = stat_n("vm2", "to_peer", "writes");
        uint64_t in0 = stat_n("vm4", "from_peer", "bytes"), inw0 = stat_n("vm4", "from_peer", "writes");
        uint64_t back0 = stat_n("vm4", "to_peer", "bytes"), backin0 = stat_n("vm2", "from_peer", "bytes");
        uint64_t irq0 = stat_n("vm2", NULL, "xirq_sent") + stat_n("vm2", NULL, "xirq_suppressed");
        pvt_use_vm(&vbt_plat, "vm4");
        int b = vbpipeOpen("vbpipe0", O_RDWR);
        unsetenv("PVD_RUNTIME_DIR");
        CU_ASSERT_FATAL(b >= 0);
        fcntl(a, F_SETFL, 0);   /* blocking from here on */
        static const char *const vms[] = { "vm2", "vm4" };
        for (int i = 0; i < 2; i++) {
                CU_ASSERT(vbt_wait_state(vms[i], "vbpipe0", "local", "open", 5000));
                CU_ASSERT(vbt_wait_state(vms[i], "vbpipe0", "peer", "open", 5000));
        }

        /* Bytes and writes each way. */
        static uint8_t buf[RING0 * 4];
        vbt_fill(buf, 5000, 40, 0);
        for (int i = 0; i < 5; i++)
                CU_ASSERT(vbt_write_all(a, buf + i * 1000, 1000));
        CU_ASSERT(vbt_read_n(b, buf, 5000) == 5000 && vbt_check(buf, 5000, 40, 0));
        CU_ASSERT(wait_n("vm2", "to_peer", "bytes", out0 + 5000));
        CU_ASSERT(wait_n("vm4", "from_peer", "bytes", in0 + 5000));
        v = stat_n("vm2", "to_peer", "writes");
        CU_ASSERT(v > outw0 && v <= outw0 + 5);
        v = stat_n("vm4", "from_peer", "writes");
        CU_ASSERT(v > inw0 && v <= inw0 + 5);
        vbt_fill(buf, 3000, 41, 0);
        CU_ASSERT(vbt_write_all(b, buf, 3000));
        CU_ASSERT(vbt_read_n(a, buf, 3000) == 3000 && vbt_check(buf, 3000, 41, 0));
        CU_ASSERT(wait_n("vm4", "to_peer", "bytes", back0 + 3000));
        CU_ASSERT(wait_n("vm2", "from_peer", "bytes", backin0 + 3000));

        /* Fill now and at peak: nobody reads in vm4, the ring fills. */
        uint64_t n = vbt_fill_pipe(a, 42);
        CU_ASSERT(n > RING0);
        CU_ASSERT(wait_n("vm2", "to_peer", "fill", RING0));
        CU_ASSERT(wait_n("vm2", "to_peer", "peak", RING0));
        CU_ASSERT(wait_n("vm4", "from_peer", "fill", RING0));
        v = stat_n("vm4", "from_peer", "peak");
        CU_ASSERT(v > 0 && v <= RING0);
        check_pvctl("vm4", true, (const char *const[]){ "\"pipe\": \"vbpipe0\"", "\"pipe\": \"vbpipe1\"",
                                                         "\"state\": \"open\"", "\"to_peer\"", "\"from_peer\"",
                                                         "\"bytes\"", "\"writes\"", "\"fill\": 262144",
                                                         "\"peak\"", "\"xirq_sent\"", "\"xirq_suppressed\"",
                                                         "\"wakeup_ms\": 250", "\"wake_lock\": true",
                                                         "\"wake_lock_path\"", "\"wake_lock_left_ms\"",
                                                         "\"wake_locks_taken\"", NULL });
        check_pvctl("vm2", false, (const char *const[]){ "vbpipe0", "vbpipe1", "open: test-vbpipe[", "xIRQs: ",
                                                          "to   vm4", "from vm4", "peak 256.0 KiB",
                                                          "wakeup=250 ms: wake locks in", NULL });
        for (uint64_t got = 0; got < n;) {
                size_t want = n - got < sizeof(buf) ? (size_t)(n - got) : sizeof(buf);
                CU_ASSERT_FATAL(vbt_read_n(b, buf, want) == want);
                CU_ASSERT(vbt_check(buf, want, 42, got));
                got += want;
        }
        CU_ASSERT(wait_n("vm2", "to_peer", "fill", 0));
        CU_ASSERT(wait_n("vm4", "from_peer", "fill", 0));
        CU_ASSERT_EQUAL(stat_n("vm2", "to_peer", "peak"), RING0);
        uint64_t irq1 = stat_n("vm2", NULL, "xirq_sent") + stat_n("vm2", NULL, "xirq_suppressed");
        CU_ASSERT(irq1 > irq0);
        CU_ASSERT(stat_n("vm2", NULL, "xirq_sent") > 0);

        /* One end closes: the other reads EOF, its writes fail, and its
         * end is released at once (pvd cannot tell when the program closes
         * a descriptor it has shut both ways): it shows closed. */
        close(a);
        CU_ASSERT(vbt_wait_state("vm2", "vbpipe0", "local", "closed", 5000));
        CU_ASSERT(vbt_wait_state("vm4", "vbpipe0", "peer", "closed", 5000));
        CU_ASSERT_EQUAL(read(b, buf, 1), 0);
        CU_ASSERT(vbt_wait_state("vm4", "vbpipe0", "local", "closed", 5000));
        errno = 0;
        CU_ASSERT(send(b, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
        close(b);
        CU_ASSERT(vbt_idle());
        check_pvctl("vm4", true, (const char *const[]){ "\"state\": \"closed\"", NULL });
}
