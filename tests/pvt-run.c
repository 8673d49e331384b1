/* The runner of the CUnit suites (see pvt-run.h): test selection, one
 * report format, skips, and the leak checks every test and suite gets. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <CUnit/TestRun.h>

#include "pvt-run.h"

#define FDS_MAX   4096
#define WORDS_MAX 16

/* What was open when a check began: fd numbers and what they are. */
struct fd_snap {
        int n;
        int maps;
        unsigned char open[FDS_MAX];
};

static struct {
        const struct pvt_suite *suites;
        CU_pSuite cu[64];
        const struct pvt_suite *cur;
        struct fd_snap suite_snap, test_snap;
        bool check;
        bool skip;
        char skip_why[256];
        unsigned passed, failed, skipped, suite_failures;
        char skipped_list[2048];
        const char *include[WORDS_MAX], *exclude[WORDS_MAX], *suite_word;
        int ninclude, nexclude;
} R;

int pvt_run_fd_count(void)
{
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -1;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                n += e->d_name[0] != '.';
        closedir(d);
        return n - 1; /* the DIR's own */
}

int pvt_run_memfd_maps(void)
{
        FILE *f = fopen("/proc/self/maps", "re");
        if (!f)
                return -1;
        char line[512];
        int n = 0;
        while (fgets(line, sizeof(line), f))
                n += strstr(line, "/memfd:") != NULL;
        fclose(f);
        return n;
}

static void snap_take(struct fd_snap *s)
{
        memset(s->open, 0, sizeof(s->open));
        s->n = 0;
        DIR *d = opendir("/proc/self/fd");
        if (d) {
                int self = dirfd(d);
                struct dirent *e;
                while ((e = readdir(d))) {
                        int fd = atoi(e->d_name);
                        if (e->d_name[0] == '.' || fd == self)
                                continue;
                        s->n++;
                        if (fd >= 0 && fd < FDS_MAX)
                                s->open[fd] = 1;
                }
                closedir(d);
        }
        s->maps = pvt_run_memfd_maps();
}

/* Name the fds open now that were not at s, on stderr; their count. */
static int snap_show_new(const struct fd_snap *s, const char *who)
{
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return 0;
        int self = dirfd(d), shown = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                int fd = atoi(e->d_name);
                if (e->d_name[0] == '.' || fd == self || (fd >= 0 && fd < FDS_MAX && s->open[fd]))
                        continue;
                char path[64], target[256];
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = 0;
                fprintf(stderr, "    %s left fd %d open: %s\n", who, fd, target);
                shown++;
        }
        closedir(d);
        return shown;
}

/* Children still running (pvds a suite forgot, programs a test forgot):
 * name them, kill and reap them, so that the machine stays clean; their
 * count. */
static int reap_children(const char *who)
{
        int found = 0;
        DIR *d = opendir("/proc/self/task");
        if (!d)
                return 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char path[96], buf[4096];
                snprintf(path, sizeof(path), "/proc/self/task/%s/children", e->d_name);
                FILE *f = fopen(path, "re");
                if (!f)
                        continue;
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = 0;
                for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
                        pid_t pid = (pid_t)atoi(tok);
                        if (pid <= 0)
                                continue;
                        fprintf(stderr, "    %s left process %d running; killed\n", who, (int)pid);
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                        found++;
                }
        }
        closedir(d);
        return found;
}

void pvt_skip(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(R.skip_why, sizeof(R.skip_why), fmt, ap);
        va_end(ap);
        R.skip = true;
}

bool pvt_skipped(void)
{
        return R.skip;
}

/* ---- per test: CUnit's set-up and teardown ----------------------------------- */

static void test_setup(void)
{
        R.skip = false;
        R.skip_why[0] = 0;
        if (R.check)
                snap_take(&R.test_snap);
}

static void test_teardown(void)
{
        if (!R.check)
                return;
        int slack = R.cur ? R.cur->fd_slack : 0;
        int fds = pvt_run_fd_count(), maps = pvt_run_memfd_maps();
        if (fds > R.test_snap.n + slack) {
                snap_show_new(&R.test_snap, "the test");
                CU_assertImplementation(CU_FALSE, __LINE__, "the test left file descriptors open (listed above)",
                                        __FILE__, "", CU_FALSE);
        }
        if (maps > R.test_snap.maps)
                CU_assertImplementation(CU_FALSE, __LINE__, "the test left memfds mapped", __FILE__, "", CU_FALSE);
}

/* ---- report ------------------------------------------------------------------- */

static void on_suite_start(const CU_pSuite s)
{
        R.cur = NULL;
        for (int i = 0; R.suites[i].name && i < 64; i++)
                if (R.cu[i] == s)
                        R.cur = &R.suites[i];
        printf("\nSuite: %s\n", s->pName);
        fflush(stdout);
        snap_take(&R.suite_snap);
}

static void on_test_start(const CU_pTest t, const CU_pSuite s)
{
        printf("  Test: %s ...", t->pName);
        fflush(stdout);
}

static void on_test_complete(const CU_pTest t, const CU_pSuite s, const CU_pFailureRecord f)
{
        if (f) {
                R.failed++;
                printf("FAILED\n");
                int i = 1;
                for (CU_pFailureRecord r = f; r; r = r->pNext, i++)
                        printf("    %d. %s:%u  - %s\n", i, r->strFileName ? r->strFileName : "",
                               r->uiLineNumber, r->strCondition ? r->strCondition : "");
        } else if (R.skip) {
                R.skipped++;
                printf("skipped: %s\n", R.skip_why);
                size_t len = strlen(R.skipped_list);
                snprintf(R.skipped_list + len, sizeof(R.skipped_list) - len, "  skipped: %s: %s\n", t->pName,
                         R.skip_why);
        } else {
                R.passed++;
                printf("passed\n");
        }
        fflush(stdout);
}

static void on_suite_complete(const CU_pSuite s, const CU_pFailureRecord f)
{
        int fds = pvt_run_fd_count();
        int kids = reap_children("the suite");
        if (fds > R.suite_snap.n) {
                snap_show_new(&R.suite_snap, "the suite");
                printf("  the suite left %d file descriptor(s) open (listed on stderr)\n", fds - R.suite_snap.n);
                R.suite_failures++;
        }
        if (kids) {
                printf("  the suite left %d process(es) running\n", kids);
                R.suite_failures++;
        }
        fflush(stdout);
}

static void on_suite_init_failure(const CU_pSuite s)
{
        printf("  the set-up of suite %s failed: its tests did not run\n", s->pName);
        R.suite_failures++;
        reap_children("the failed set-up");
}

static void on_suite_cleanup_failure(const CU_pSuite s)
{
        printf("  the teardown of suite %s failed (something was left behind, see above)\n", s->pName);
        R.suite_failures++;
}

/* ---- selection ------------------------------------------------------------------- */

static bool selected(const char *name)
{
        for (int i = 0; i < R.nexclude; i++)
                if (strstr(name, R.exclude[i]))
                        return false;
        if (!R.ninclude)
                return true;
        for (int i = 0; i < R.ninclude; i++)
                if (strstr(name, R.include[i]))
                        return true;
        return false;
}

static int parse_args(int argc, char **argv)
{
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if ((!strcmp(a, "-t") || !strcmp(a, "-x") || !strcmp(a, "-s")) && i + 1 < argc) {
                        const char *w = argv[++i];
                        if (a[1] == 's')
                                R.suite_word = w;
                        else if (a[1] == 't' && R.ninclude < WORDS_MAX)
                                R.include[R.ninclude++] = w;
                        else if (a[1] == 'x' && R.nexclude < WORDS_MAX)
                                R.exclude[R.nexclude++] = w;
                } else if (a[0] != '-' && R.ninclude < WORDS_MAX) {
                        R.include[R.ninclude++] = a;
                } else {
                        fprintf(stderr, "usage: %s [-t WORD]... [-x WORD]... [-s WORD] [WORD]\n", argv[0]);
                        return -1;
                }
        }
        return 0;
}

int pvt_main(int argc, char **argv, const struct pvt_suite *suites)
{
        memset(&R, 0, sizeof(R));
        R.suites = suites;
        const char *nl = getenv("PVT_NO_LEAK_CHECK");
        R.check = !(nl && *nl && strcmp(nl, "0"));
        if (parse_args(argc, argv) < 0)
                return 2;
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        unsigned nsel = 0;
        for (int i = 0; suites[i].name && i < 64; i++) {
                const struct pvt_suite *s = &suites[i];
                if (R.suite_word && !strstr(s->name, R.suite_word))
                        continue;
                unsigned n = 0;
                for (const struct pvt_test *t = s->tests; t && t->name; t++)
                        n += selected(t->name);
                if (!n)
                        continue;
                R.cu[i] = CU_add_suite_with_setup_and_teardown(s->name, s->init, s->fini, test_setup, test_teardown);
                if (!R.cu[i]) {
                        CU_cleanup_registry();
                        return 1;
                }
                for (const struct pvt_test *t = s->tests; t && t->name; t++)
                        if (selected(t->name))
                                CU_add_test(R.cu[i], t->name, t->fn);
                nsel += n;
        }
        CU_set_suite_start_handler(on_suite_start);
        CU_set_test_start_handler(on_test_start);
        CU_set_test_complete_handler(on_test_complete);
        CU_set_suite_complete_handler(on_suite_complete);
        CU_set_suite_init_failure_handler(on_suite_init_failure);
        CU_set_suite_cleanup_failure_handler(on_suite_cleanup_failure);
        CU_run_all_tests();
        CU_cleanup_registry();

        printf("\n%u tests: %u passed, %u failed, %u skipped; %u suite set-up, teardown or leak failure(s)\n",
               R.passed + R.failed + R.skipped, R.passed, R.failed, R.skipped, R.suite_failures);
        if (R.skipped_list[0])
                printf("%s", R.skipped_list);
        if (R.failed || R.suite_failures)
                return 1;
        if (!nsel) {
                printf("no test matches the selection: skipped\n");
                return 77;
        }
        return R.skipped ? 77 : 0;
}
