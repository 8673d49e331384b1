/* Idle costs nothing: the demo platform (pvds of vm2, vm3 and vm4) with
 * every example program connected, each having moved some traffic, then
 * left idle. Over 5 s the pvds and all the programs together must use under
 * 1% of one CPU: no side may poll, spin or keep a timer busy without
 * traffic. CPU time comes from each task's schedstat (nanoseconds of CPU),
 * so neighbours on a shared machine do not change the figure.
 *
 *   test-idle PVRUN VRPQ-SERVER VRPQ-SYNC VRPQ-CALLBACK VUMEM-SERVER VUMEM-CLIENT
 *             VBPIPE-ECHO-SERVER VBPIPE-CHAT-CLIENT
 *
 * The VRPQ servers are served by idle clients of this test (the example
 * clients post and leave): each opens a session and a channel, posts
 * requests and a call of a procedure every server ignores or prints, then
 * sleeps. The chat client's stdin is a pipe the test holds open after one
 * line, so that it waits for the next. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vrpq.h"
#include "pvt-run.h"
#include "pvtest.h"

#define SETTLE_MS  1500         /* spins, hot polling and delayed frees end well before */
#define MEASURE_MS 5000
#define BUDGET     0.01         /* of one CPU */
#define NPROC_MAX  24

enum { A_PVRUN = 1, A_VRPQ_SERVER, A_VRPQ_SYNC, A_VRPQ_CALLBACK, A_VUMEM_SERVER, A_VUMEM_CLIENT, A_ECHO, A_CHAT,
       A_COUNT };

static char **args;
static struct pvt_platform plat;

struct proc {
        const char *what;
        pid_t pid;
};

static struct proc procs[NPROC_MAX];
static int nprocs;

static void add_proc(const char *what, pid_t pid)
{
        if (pid > 0 && nprocs < NPROC_MAX)
                procs[nprocs++] = (struct proc){ what, pid };
}

/* Start argv in vm, with stdin from in_fd (-1: /dev/null) and its output
 * discarded (errors shown on failure by the checks, not the logs). */
static pid_t start(const char *vm, const char *const argv[], int in_fd)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid != 0)
                return pid;
        pvt_use_vm(&plat, vm);
        /* Sanitized programs under pvrun: libpvrun (built without
         * sanitizers) is preloaded, so the ASan runtime cannot come first. */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        dup2(in_fd >= 0 ? in_fd : null, 0);
        dup2(null, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
}

/* An idle VRPQ client: a session and a channel, ten requests and a
 * synchronous call of procedure (2,2) with an int (printed by
 * vrpq-server, ignored by the other servers), then sleep until killed. */
static int idle_vrpq_client(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *in;
        if (vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s) || vrpqChanCreate(s, NULL, 0, &c))
                return 1;
        for (int i = 0; i < 10; i++) {
                if (vrpqParamAlloc(c, 4, 0, &in))
                        return 2;
                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)i);
                if (vrpqPostAndNotify(c, VRPQ_PROC_ID(2, 2), in))
                        return 3;
        }
        if (vrpqParamAlloc(c, 4, 0, &in))
                return 4;
        VRPQ_PARAM_WRITE(in, 0, nku32_f, 10u);
        if (vrpqCall(c, VRPQ_PROC_ID(2, 2), in, NULL))
                return 5;
        for (;;)
                pause();
}

/* The contrast: a child that polls for 300 ms of CPU (at most 4 s on a
 * crowded machine), as a spinning side would, then sleeps until killed. */
static int spinner(void *arg)
{
        long long end = pvt_now_ms() + 4000;
        struct timespec ts;
        do
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        while (ts.tv_sec * 1000 + ts.tv_nsec / 1000000 < 300 && pvt_now_ms() < end);
        while (pause() < 0)
                ;
        return 0;
}

static bool all_alive(void)
{
        bool ok = true;
        for (int i = 0; i < nprocs; i++)
                if (waitpid(procs[i].pid, NULL, WNOHANG) != 0) {
                        fprintf(stderr, "test-idle: %s (pid %d) is gone\n", procs[i].what, (int)procs[i].pid);
                        ok = false;
                }
        return ok;
}

static void test_idle(void)
{
        int fds0 = pvt_fd_count(), chat_in[2] = { -1, -1 };
        bool up = pvt_platform_init(&plat, "demo") == 0 && pvt_pvd_start(&plat, "vm2", NULL) == 0 &&
                  pvt_pvd_start(&plat, "vm3", NULL) == 0 && pvt_pvd_start(&plat, "vm4", NULL) == 0 &&
                  pvt_wait_vlink(&plat, "vm3", NULL, "ON", 10000) == 0 &&
                  pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000) == 0 && pipe2(chat_in, O_CLOEXEC) == 0;
        CU_ASSERT(up);
        if (!up)
                goto out;
        for (unsigned i = 0; i < plat.nvms; i++)
                add_proc("pvd", plat.vms[i].pid);

        /* VRPQ: three servers in vm2, each served by an idle client in vm3. */
        const char *srv[][3] = {
                { args[A_VRPQ_SERVER], NULL, NULL },
                { args[A_VRPQ_SYNC], "server", NULL },
                { args[A_VRPQ_CALLBACK], "server", NULL },
        };
        for (int i = 0; i < 3; i++) {
                add_proc(strrchr(srv[i][0], '/') ? strrchr(srv[i][0], '/') + 1 : srv[i][0], start("vm2", srv[i], -1));
                usleep(200000);
                add_proc("idle VRPQ client", pvt_spawn(&plat, "vm3", idle_vrpq_client, NULL));
        }

        /* VUMEM: the server in vm2; the client allocates, maps and writes a
         * buffer, then holds it past the measurement. */
        const char *vs[] = { args[A_VUMEM_SERVER], NULL };
        add_proc("vumem-server", start("vm2", vs, -1));
        usleep(300000);
        char hold[16];
        snprintf(hold, sizeof(hold), "%d", SETTLE_MS + MEASURE_MS + 5000);
        const char *vc[] = { args[A_VUMEM_CLIENT], "/dev/vumem-clt-vogl0", hold, NULL };
        add_proc("vumem-client", start("vm3", vc, -1));

        /* VBPIPE: the seed's echo server and chat client under pvrun
         * (direct access), one line echoed, then waiting for the next. */
        const char *es[] = { args[A_PVRUN], args[A_ECHO], NULL };
        const char *cc[] = { args[A_PVRUN], args[A_CHAT], NULL };
        add_proc("vbpipe-echo-server", start("vm2", es, -1));
        add_proc("vbpipe-chat-client", start("vm4", cc, chat_in[0]));
        close(chat_in[0]);
        chat_in[0] = -1;
        CU_ASSERT(write(chat_in[1], "hello\n", 6) == 6);

        usleep(SETTLE_MS * 1000);
        CU_ASSERT(all_alive());
        long long before[NPROC_MAX], after[NPROC_MAX];
        for (int i = 0; i < nprocs; i++)
                before[i] = pvt_cpu_ns(procs[i].pid);
        long long t0 = pvt_now_ms();
        /* The measure must see a spinner's 300 ms of CPU. */
        pid_t spin = pvt_spawn(&plat, NULL, spinner, NULL);
        long long spin0 = pvt_cpu_ns(spin);
        usleep(MEASURE_MS * 1000);
        long long spin1 = pvt_cpu_ns(spin);
        kill(spin, SIGKILL);
        CU_ASSERT(pvt_wait(spin, 5000) == 128 + SIGKILL);
        CU_ASSERT(spin0 >= 0 && spin1 - spin0 >= 250 * 1000000LL);
        long long dt_ms = pvt_now_ms() - t0;
        long long total = 0;
        for (int i = 0; i < nprocs; i++) {
                after[i] = pvt_cpu_ns(procs[i].pid);
                CU_ASSERT(before[i] >= 0 && after[i] >= before[i]);
                total += after[i] - before[i];
        }
        double share = (double)total / 1e6 / (double)dt_ms;
        printf("\n    idle for %lld ms: %.3f%% of one CPU in all (budget %.1f%%)\n", dt_ms, share * 100, BUDGET * 100);
        for (int i = 0; i < nprocs; i++)
                printf("      %-26s pid %-7d %8.3f ms (%.1f ms since it started)\n", procs[i].what,
                       (int)procs[i].pid, (double)(after[i] - before[i]) / 1e6, (double)after[i] / 1e6);
        CU_ASSERT(share < BUDGET);
        CU_ASSERT(all_alive());

out:
        for (int i = 0; i < 2; i++)
                if (chat_in[i] >= 0)
                        close(chat_in[i]);
        for (int i = nprocs - 1; i >= 0; i--)
                if (strcmp(procs[i].what, "pvd") != 0) {
                        kill(procs[i].pid, SIGTERM);
                        CU_ASSERT(pvt_wait(procs[i].pid, 5000) >= 0);
                }
        CU_ASSERT_EQUAL(pvt_platform_fini(&plat), 0);
        CU_ASSERT_EQUAL(pvt_fd_count(), fds0);
}

static const struct pvt_test tests[] = {
        { "every example connected and idle: under 1% of a CPU over 5 s", test_idle },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "idle", NULL, NULL, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        if (argc != A_COUNT) {
                fprintf(stderr, "usage: test-idle PVRUN VRPQ-SERVER VRPQ-SYNC VRPQ-CALLBACK VUMEM-SERVER VUMEM-CLIENT "
                                "VBPIPE-ECHO-SERVER VBPIPE-CHAT-CLIENT\n");
                return 2;
        }
        if (access("/proc/self/schedstat", R_OK) != 0) {
                printf("test-idle: skipped: this kernel has no /proc/PID/schedstat to read CPU time from\n");
                return 77;
        }
        args = argv;
        return pvt_main(1, argv, suites);
}
