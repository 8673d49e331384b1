/* The one runner of the CUnit suites: selects tests by name, runs each
 * suite's set-up and teardown once, and checks after every test and every
 * suite that no file descriptor and no memfd mapping was left behind (as
 * Wayland's runner does), so no suite copies those checks. A test that
 * cannot run its point on this machine calls pvt_skip() and returns: the
 * program then exits 77 (skipped) unless a test failed, and says why.
 *
 *   static const struct pvt_test tests[] = {
 *           { "open and close", test_open },
 *           { NULL, NULL },
 *   };
 *   static const struct pvt_suite suites[] = {
 *           { "vbpipe", suite_init, suite_fini, tests },
 *           { NULL },
 *   };
 *   int main(int argc, char **argv) { return pvt_main(argc, argv, suites); }
 *
 * Command line: [-t WORD]... [-x WORD]... [-s WORD] [WORD]: run the tests
 * whose name has a -t WORD (a bare WORD is a -t), none with an -x WORD, in
 * the suites whose name has the -s WORD. PVT_NO_LEAK_CHECK=1 turns the
 * per-test checks off (while debugging a test that fails in the middle).
 */
#ifndef PVT_RUN_H
#define PVT_RUN_H

#include <stdbool.h>

struct pvt_test {
        const char *name;
        void (*fn)(void);
};

struct pvt_suite {
        const char *name;
        int (*init)(void);                  /* may be NULL; < 0: the suite fails */
        int (*fini)(void);                  /* may be NULL; < 0: the suite fails */
        const struct pvt_test *tests;       /* ends with { NULL, NULL } */
        /* A test may keep these many more fds than it found (a cache the
         * suite fills once, e.g. its first connection); normally 0. */
        int fd_slack;
};

/* Run the suites (an array ending with { NULL }). Returns the exit status:
 * 0 every selected test passed, 1 a test, set-up or leak check failed, 77
 * no test failed but one was skipped (or none was selected). */
int pvt_main(int argc, char **argv, const struct pvt_suite *suites);

/* In a test: it cannot run its point here (why: printf format). The test
 * returns right after; it counts as skipped, not passed. */
void pvt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether the current test called pvt_skip. */
bool pvt_skipped(void);

/* Entries in /proc/self/fd (the count the runner checks). */
int pvt_run_fd_count(void);
/* Mappings of memfds in this process (/proc/self/maps "/memfd:"). */
int pvt_run_memfd_maps(void);

#endif
