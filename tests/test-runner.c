/* Tests of the test machinery itself, which must neither hurt the machine
 * nor let a test pass by accident:
 *   - the runner (pvt-run.c) fails a test that leaves an fd open, a memfd
 *     mapped or a process running, exits 77 for a skipped test and 1 for a
 *     failed one (this program runs itself with --fixture to see it);
 *   - pvt_wait and pvt_kill refuse the pid of a failed fork (-1 would wait
 *     for any child and kill(-1) every process we may signal);
 *   - a fork that fails is a failure for pvt_spawn, pvt_run and vbt_run,
 *     never a program that exited 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "pvtest.h"
#include "vbpipe-sem.h"

/* ---- fixtures: suites that misbehave on purpose ----------------------------- */

static void fx_pass(void)
{
        CU_ASSERT(1);
}

static void fx_leak_fd(void)
{
        int p[2];
        CU_ASSERT(pipe(p) == 0); /* never closed */
}

static void fx_leak_map(void)
{
        int fd = memfd_create("fixture", MFD_CLOEXEC);
        CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, 4096) == 0);
        CU_ASSERT(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED); /* never unmapped */
        close(fd);
}

static void fx_skip(void)
{
        pvt_skip("the fixture lacks what it needs");
}

static void fx_fail(void)
{
        CU_ASSERT_EQUAL(1, 2);
}

static void fx_child(void)
{
        pid_t pid = fork();
        if (pid == 0) {
                pause();
                _exit(0);
        }
        CU_ASSERT(pid > 0); /* never waited for */
}

static const struct pvt_test fx_pass_tests[] = { { "pass", fx_pass }, { NULL, NULL } };
static const struct pvt_test fx_leak_fd_tests[] = { { "leak an fd", fx_leak_fd }, { "pass", fx_pass }, { NULL, NULL } };
static const struct pvt_test fx_leak_map_tests[] = { { "leak a mapping", fx_leak_map }, { NULL, NULL } };
static const struct pvt_test fx_skip_tests[] = { { "skip", fx_skip }, { "pass", fx_pass }, { NULL, NULL } };
static const struct pvt_test fx_fail_tests[] = { { "fail", fx_fail }, { "skip", fx_skip }, { NULL, NULL } };
static const struct pvt_test fx_child_tests[] = { { "leave a child", fx_child }, { NULL, NULL } };

static const struct {
        const char *name;
        const struct pvt_test *tests;
} fixtures[] = {
        { "pass", fx_pass_tests },   { "leak-fd", fx_leak_fd_tests }, { "leak-map", fx_leak_map_tests },
        { "skip", fx_skip_tests },   { "fail", fx_fail_tests },       { "child", fx_child_tests },
};

static int run_fixture(const char *name, int argc, char **argv)
{
        for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
                if (strcmp(fixtures[i].name, name))
                        continue;
                const struct pvt_suite suites[] = {
                        { name, NULL, NULL, fixtures[i].tests, 0 },
                        { NULL, NULL, NULL, NULL, 0 },
                };
                return pvt_main(argc, argv, suites);
        }
        return 2;
}

/* ---- the runner, seen from outside -------------------------------------------- */

static char out[16384], err[16384];

/* Run this program on a fixture; its exit status. */
static int fixture(const char *name, const char *word)
{
        char self[512];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        CU_ASSERT_FATAL(n > 0);
        self[n] = 0;
        const char *argv[] = { self, "--fixture", name, word, NULL };
        return pvt_run(NULL, NULL, argv, out, sizeof(out), err, sizeof(err), 10000);
}

static void test_runner_outcomes(void)
{
        CU_ASSERT_EQUAL(fixture("pass", NULL), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "1 tests: 1 passed, 0 failed, 0 skipped"));

        /* A leak fails the test that leaked, not the next one. */
        CU_ASSERT_EQUAL(fixture("leak-fd", NULL), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "Test: leak an fd ...FAILED"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "left file descriptors open"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "Test: pass ...passed"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "pipe:"));

        CU_ASSERT_EQUAL(fixture("leak-map", NULL), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "left memfds mapped"));

        /* A skip is not a pass: 77, with the reason. */
        CU_ASSERT_EQUAL(fixture("skip", NULL), 77);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "skipped: skip: the fixture lacks what it needs"));
        CU_ASSERT_EQUAL(fixture("skip", "pass"), 0);

        /* A failure wins over a skip. */
        CU_ASSERT_EQUAL(fixture("fail", NULL), 1);

        /* A process left running fails the suite and is killed. */
        CU_ASSERT_EQUAL(fixture("child", NULL), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "left 1 process(es) running"));

        /* Selecting nothing runs nothing: not a pass either. */
        CU_ASSERT_EQUAL(fixture("pass", "no such test"), 77);
}

/* ---- pvt_wait, pvt_kill ---------------------------------------------------------- */

static int sleeper(void *arg)
{
        (void)arg;
        sleep(30);
        return 0;
}

static void test_wait_refuses_bad_pids(void)
{
        /* A child of ours that pvt_wait(-1) would reap, and kill(-1) kill. */
        pid_t sib = pvt_spawn(NULL, NULL, sleeper, NULL);
        CU_ASSERT_FATAL(sib > 0);
        long long t0 = pvt_now_ms();
        CU_ASSERT_EQUAL(pvt_wait(-1, 200), -ECHILD);
        CU_ASSERT_EQUAL(pvt_wait(0, 200), -ECHILD);
        CU_ASSERT_EQUAL(pvt_wait(-EAGAIN, 200), -ECHILD);
        CU_ASSERT(pvt_now_ms() - t0 < 150); /* refused at once, not waited on */
        CU_ASSERT(pvt_kill(-1, SIGKILL) < 0);
        CU_ASSERT(pvt_kill(0, SIGKILL) < 0);
        CU_ASSERT(pvt_kill(-EAGAIN, SIGKILL) < 0);
        /* The sibling is alive and still ours to reap. */
        CU_ASSERT_EQUAL(waitpid(sib, NULL, WNOHANG), 0);
        CU_ASSERT_EQUAL(kill(sib, 0), 0);
        CU_ASSERT_EQUAL(pvt_kill(sib, SIGKILL), 0);
        CU_ASSERT_EQUAL(pvt_wait(sib, 5000), 128 + SIGKILL);
}

/* ---- a fork that fails --------------------------------------------------------------- */

static int fn_ok(void)
{
        return 0;
}

static int fn_ok_arg(void *arg)
{
        (void)arg;
        return 0;
}

/* In a child where fork fails (RLIMIT_NPROC 0, as a user without the
 * privilege to pass it): every helper reports the failure. Exit status: 0
 * when all did, else the number of the check that did not. */
static int forkless(void *arg)
{
        (void)arg;
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
                return 90;
        struct rlimit rl = { 0, 0 };
        if (setrlimit(RLIMIT_NPROC, &rl) < 0)
                return 91;
        if (fork() == 0)
                _exit(0);   /* fork works after all: the point cannot be made */
        else if (errno != EAGAIN)
                return 92;
        pid_t pid = pvt_spawn(NULL, NULL, fn_ok_arg, NULL);
        if (pid >= 0)
                return 1;
        if (pvt_wait(pid, 100) != -ECHILD)
                return 2;
        const char *argv[] = { "/bin/true", NULL };
        if (pvt_run(NULL, NULL, argv, NULL, 0, NULL, 0, 1000) >= 0)
                return 3;
        vbt_sh = mmap(NULL, sizeof(*vbt_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (vbt_sh == MAP_FAILED)
                return 93;
        int sa = 0, sb = 0;
        vbt_run(fn_ok, fn_ok, &sa, &sb);
        if (sa >= 0 || sb >= 0)
                return 4;
        return 0;
}

static void test_failed_fork(void)
{
        pid_t pid = pvt_spawn(NULL, NULL, forkless, NULL);
        CU_ASSERT_FATAL(pid > 0);
        int st = pvt_wait(pid, 10000);
        if (st == 92) {
                pvt_skip("fork does not fail under RLIMIT_NPROC 0 here");
                return;
        }
        if (st)
                fprintf(stderr, "\n    check %d saw a failed fork as a success\n", st);
        CU_ASSERT_EQUAL(st, 0);
}

static const struct pvt_test tests[] = {
        { "the runner fails leaks, skips with 77, reaps what is left", test_runner_outcomes },
        { "pvt_wait and pvt_kill refuse pids <= 0", test_wait_refuses_bad_pids },
        { "a failed fork is a failure for pvt_spawn, pvt_run and vbt_run", test_failed_fork },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "test machinery", NULL, NULL, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        if (argc > 2 && !strcmp(argv[1], "--fixture")) {
                const char *name = argv[2];
                argv[2] = argv[0];
                return run_fixture(name, argc - 2, argv + 2);
        }
        return pvt_main(argc, argv, suites);
}
