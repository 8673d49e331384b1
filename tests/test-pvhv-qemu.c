/* pvhv speaks QEMU's own ivshmem server protocol: QEMU (no guest: -S,
 * driven through its monitor) starts with exactly the options
 * `pvhv --qemu-args vm2` prints on the demo platform, and must realize
 * one ivshmem-doorbell device per vlink of vm2; the test's own peers on
 * the other side of those vlinks (the protocol client pvd uses) see QEMU
 * join, through pvhv's messages and the header in shared memory; when QEMU
 * quits, and when it is killed, pvhv marks vm2 OFF and tells them.
 *
 * Skipped (77) where qemu-system-x86_64 is missing or cannot run.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "config.h"
#include "pvhv-test.h"

#define QEMU_WAIT 60000 /* TCG on a loaded 2-core machine */
#define WAIT 10000
#define MAX_ARGS 64

static const char *qemu_bin;
static char demo_dtb[512];
static char tmpdir[128];

/* QEMU with its monitor on stdio. */
struct qemu {
        pid_t pid;
        int in, out;        /* its stdin, its stdout */
        char out_buf[1 << 16];
        size_t len;
        int prompts;        /* "(qemu) " seen so far */
};

static struct qemu *running; /* killed at exit whatever happened */
static struct pvhvt pv;       /* stopped at exit whatever happened */

static int qemu_start(struct qemu *q, const char *const *args, int nargs, const char *log)
{
        int to[2], from[2];
        memset(q, 0, sizeof(*q));
        if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
                return -errno;
        const char *argv[MAX_ARGS + 16];
        int n = 0;
        argv[n++] = qemu_bin;
        for (int i = 0; i < nargs && i < MAX_ARGS; i++)
                argv[n++] = args[i];
        const char *fixed[] = { "-S", "-display", "none", "-monitor", "stdio", "-nodefaults" };
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
                argv[n++] = fixed[i];
        argv[n] = NULL;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                dup2(to[0], 0);
                dup2(from[1], 1);
                if (fd >= 0)
                        dup2(fd, 2);
                execvp(qemu_bin, (char *const *)argv);
                _exit(127);
        }
        close(to[0]);
        close(from[1]);
        q->pid = pid;
        q->in = to[1];
        q->out = from[0];
        running = q;
        return 0;
}

/* Read the monitor until it shows its prompt once more. */
static int qemu_prompt(struct qemu *q, int timeout_ms)
{
        long long deadline = pvhvt_now_ms() + timeout_ms;
        int want = q->prompts + 1;
        for (;;) {
                int n = 0;
                for (const char *s = q->out_buf; (s = strstr(s, "(qemu) ")); s += 7)
                        n++;
                if (n >= want) {
                        q->prompts = n;
                        return 0;
                }
                long long left = deadline - pvhvt_now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd pf = { .fd = q->out, .events = POLLIN };
                if (poll(&pf, 1, (int)left) <= 0)
                        continue;
                if (q->len + 1 >= sizeof(q->out_buf))
                        return -ENOBUFS;
                ssize_t r = read(q->out, q->out_buf + q->len, sizeof(q->out_buf) - 1 - q->len);
                if (r <= 0)
                        return -EPIPE; /* QEMU is gone */
                q->len += (size_t)r;
                q->out_buf[q->len] = 0;
        }
}

/* A monitor command; its output (with the echo) is what follows start. */
static const char *qemu_cmd(struct qemu *q, const char *cmd)
{
        size_t start = q->len;
        char line[128];
        int n = snprintf(line, sizeof(line), "%s\n", cmd);
        if (write(q->in, line, (size_t)n) != n || qemu_prompt(q, QEMU_WAIT) < 0)
                return "";
        return q->out_buf + start;
}

/* Wait for QEMU's end (after quit or a kill): its wait status, or -1. */
static int qemu_wait(struct qemu *q, int timeout_ms)
{
        long long deadline = pvhvt_now_ms() + timeout_ms;
        int st;
        pid_t r;
        while ((r = waitpid(q->pid, &st, WNOHANG)) == 0 && pvhvt_now_ms() < deadline)
                pvhvt_sleep_ms(10);
        if (r != q->pid) {
                kill(q->pid, SIGKILL);
                waitpid(q->pid, &st, 0);
                st = -1;
        }
        close(q->in);
        close(q->out);
        q->pid = 0;
        running = NULL;
        return st;
}

static void kill_running(void)
{
        if (running && running->pid > 0) {
                kill(running->pid, SIGKILL);
                qemu_wait(running, 5000);
        }
}

static int count(const char *hay, const char *needle)
{
        int n = 0;
        for (const char *s = hay; (s = strstr(s, needle)); s += strlen(needle))
                n++;
        return n;
}

static void show_file(const char *path)
{
        char buf[4096];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0)
                close(fd);
        buf[n > 0 ? n : 0] = 0;
        fprintf(stderr, "---- %s ----\n%s\n", path, buf);
}

/* ---- can QEMU run here at all? ------------------------------------------------ */

static bool qemu_runs(char *why, size_t len)
{
        char log[192];
        struct qemu q;
        snprintf(log, sizeof(log), "%s/probe.log", tmpdir);
        if (qemu_start(&q, NULL, 0, log) < 0) {
                snprintf(why, len, "cannot start %s", qemu_bin);
                return false;
        }
        int rc = qemu_prompt(&q, QEMU_WAIT);
        if (rc == 0 && write(q.in, "quit\n", 5) != 5)
                rc = -EPIPE;
        int st = qemu_wait(&q, QEMU_WAIT);
        char buf[512] = "";
        int fd = open(log, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0)
                close(fd);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\n")] = 0;
        unlink(log);
        if (rc < 0 || st != 0) {
                snprintf(why, len, "%s -S -display none -monitor stdio -nodefaults did not run (status 0x%x): %s",
                         qemu_bin, st, buf[0] ? buf : "no message");
                return false;
        }
        return true;
}

/* ---- the test --------------------------------------------------------------------- */

/* `pvhv --qemu-args vm2`, split into words. */
static int qemu_args(const struct pvhvt *p, char *text, size_t cap, const char **args)
{
        int pfd[2];
        const char *bin = getenv("PVHV_BIN");
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                dup2(pfd[1], 1);
                execl(bin, bin, "--config", p->dtb, "--dir", p->sock_dir, "--qemu-args", "vm2", (char *)NULL);
                _exit(127);
        }
        close(pfd[1]);
        size_t n = 0;
        ssize_t r;
        while (n + 1 < cap && (r = read(pfd[0], text + n, cap - 1 - n)) > 0)
                n += (size_t)r;
        text[n] = 0;
        close(pfd[0]);
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return -1;
        int nargs = 0;
        for (char *save, *w = strtok_r(text, " \n", &save); w && nargs < MAX_ARGS; w = strtok_r(NULL, " \n", &save))
                args[nargs++] = w;
        return nargs;
}

/* The test's peers on the other side of vm2's two vlinks. */
static const char *const links[2] = { "vm2-vm3-vogl0", "vm2-vm4-vbpipe0" };
static const char *const others[2] = { "vm3", "vm4" };

static void check_joined(const struct pvhvt *p, struct ivsock *const *peer, struct pv_ivshm_hdr *const *h,
                         uint32_t gen)
{
        for (int i = 0; i < 2; i++) {
                CU_ASSERT_EQUAL(pvhvt_wait_ev(peer[i], IVSOCK_EV_PEER_JOINED, NULL, WAIT), 0);
                uint32_t qemu_id = h[i]->presence[PV_SERVER].peer_id;
                CU_ASSERT_EQUAL(PV_IVSHM_PEER_SIDE(qemu_id), PV_SERVER);
                CU_ASSERT_TRUE(ivsock_peer_present(peer[i], qemu_id));
                CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(peer[i], PV_IVSHM_VEC_LINK), WAIT) > 0, true);
                CU_ASSERT_EQUAL(h[i]->presence[PV_SERVER].present, 1);
                CU_ASSERT_EQUAL(h[i]->presence[PV_SERVER].conn_gen, gen);
                /* QEMU's doorbell eventfds take a ring like any peer's. */
                CU_ASSERT_EQUAL(ivsock_ring(peer[i], qemu_id, PV_IVSHM_VEC_XIRQ), 0);
        }
        CU_ASSERT_EQUAL(pvhvt_wait_log(p, "vm2 joined", 2 * (int)gen, WAIT), 0);
}

static void check_left(const struct pvhvt *p, struct ivsock *const *peer, struct pv_ivshm_hdr *const *h, int times)
{
        for (int i = 0; i < 2; i++) {
                CU_ASSERT_EQUAL(pvhvt_wait_ev(peer[i], IVSOCK_EV_PEER_LEFT, NULL, WAIT), 0);
                CU_ASSERT_EQUAL(ivsock_peers(peer[i], NULL, 0), 0);
                CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(peer[i], PV_IVSHM_VEC_LINK), WAIT) > 0, true);
                CU_ASSERT_EQUAL(pvhvt_wait_presence(h[i], PV_SERVER, 0, WAIT), 0);
                CU_ASSERT_EQUAL(h[i]->presence[PV_CLIENT].present, 1);
        }
        CU_ASSERT_EQUAL(pvhvt_wait_log(p, "vm2 OFF, told the other side", 2 * times, WAIT), 0);
}

static void test_qemu(void)
{
        struct qemu q;
        struct ivsock *peer[2] = { NULL, NULL };
        struct pv_ivshm_hdr *h[2] = { NULL, NULL };
        char text[4096], log[192];
        const char *args[MAX_ARGS];
        snprintf(log, sizeof(log), "%s/qemu.log", tmpdir);

        CU_ASSERT_EQUAL_FATAL(pvhvt_start(&pv, demo_dtb), 0);
        for (int i = 0; i < 2; i++) {
                CU_ASSERT_EQUAL(pvhvt_join(&pv, links[i], others[i], &peer[i], WAIT), 0);
                if (peer[i])
                        h[i] = pvhvt_map_hdr(peer[i]);
                CU_ASSERT_PTR_NOT_NULL(h[i]);
        }
        int nargs = qemu_args(&pv, text, sizeof(text), args);
        CU_ASSERT_EQUAL(nargs, 8); /* -chardev X -device Y, per vlink */
        if (!h[0] || !h[1] || nargs != 8)
                goto out;

        /* QEMU realizes one ivshmem-doorbell per vlink, on pvhv's sockets. */
        CU_ASSERT_EQUAL_FATAL(qemu_start(&q, args, nargs, log), 0);
        if (qemu_prompt(&q, QEMU_WAIT) < 0) {
                show_file(log);
                CU_FAIL("QEMU did not start with pvhv's options");
                kill_running();
                goto out;
        }
        const char *pci = qemu_cmd(&q, "info pci");
        CU_ASSERT_EQUAL(count(pci, "RAM controller: PCI device 1af4:1110"), 2);
        CU_ASSERT_EQUAL(count(pci, "BAR2: 64 bit prefetchable memory"), 2);
        const char *qtree = qemu_cmd(&q, "info qtree");
        CU_ASSERT_EQUAL(count(qtree, "dev: ivshmem-doorbell"), 2);
        CU_ASSERT_EQUAL(count(qtree, "chardev = \"pv-vm2-vm3-vogl0\""), 1);
        CU_ASSERT_EQUAL(count(qtree, "chardev = \"pv-vm2-vm4-vbpipe0\""), 1);
        CU_ASSERT_EQUAL(count(qtree, "vectors = 2 (0x2)"), 2);
        check_joined(&pv, peer, h, 1);

        /* The other sides go and come back while QEMU runs: each time with
         * a new peer id, as QEMU corrupts its heap when an id it saw leave
         * joins again. QEMU takes them all and keeps running. */
        for (int round = 1; round <= 5; round++) {
                for (int i = 0; i < 2; i++) {
                        char left[64];
                        munmap(h[i], PV_IVSHM_PAGE);
                        h[i] = NULL;
                        ivsock_close(peer[i]);
                        peer[i] = NULL;
                        snprintf(left, sizeof(left), "%s left", others[i]);
                        CU_ASSERT_EQUAL_FATAL(pvhvt_wait_log(&pv, left, round, WAIT), 0);
                        CU_ASSERT_EQUAL_FATAL(pvhvt_join(&pv, links[i], others[i], &peer[i], WAIT), 0);
                        h[i] = pvhvt_map_hdr(peer[i]);
                        CU_ASSERT_PTR_NOT_NULL_FATAL(h[i]);
                        CU_ASSERT_EQUAL(ivsock_own_id(peer[i]), (int)(PV_IVSHM_PEER_ID_FIRST(PV_CLIENT) + 2 * round));
                        CU_ASSERT_TRUE(ivsock_peer_present(peer[i], h[i]->presence[PV_SERVER].peer_id));
                        CU_ASSERT_EQUAL(ivsock_ring(peer[i], h[i]->presence[PV_SERVER].peer_id, PV_IVSHM_VEC_XIRQ), 0);
                }
        }
        pci = qemu_cmd(&q, "info pci");
        CU_ASSERT_EQUAL(count(pci, "RAM controller: PCI device 1af4:1110"), 2);
        CU_ASSERT_EQUAL(waitpid(q.pid, NULL, WNOHANG), 0);

        /* QEMU quits: vm2 is OFF on both vlinks and the peers are told. */
        CU_ASSERT_EQUAL(write(q.in, "quit\n", 5), 5);
        CU_ASSERT_EQUAL(qemu_wait(&q, QEMU_WAIT), 0);
        check_left(&pv, peer, h, 1);
        /* QEMU said nothing about pvhv's messages (it reports bad ones on stderr). */
        char qlog[8192];
        int qfd = open(log, O_RDONLY | O_CLOEXEC);
        ssize_t qn = qfd >= 0 ? read(qfd, qlog, sizeof(qlog) - 1) : 0;
        if (qfd >= 0)
                close(qfd);
        qlog[qn > 0 ? qn : 0] = 0;
        if (qlog[0])
                fprintf(stderr, "\n    QEMU said: %s\n", qlog);
        CU_ASSERT_EQUAL(qlog[0], 0);

        /* QEMU again, killed this time: the same. */
        CU_ASSERT_EQUAL_FATAL(qemu_start(&q, args, nargs, log), 0);
        CU_ASSERT_EQUAL(qemu_prompt(&q, QEMU_WAIT), 0);
        check_joined(&pv, peer, h, 2);
        kill(q.pid, SIGKILL);
        qemu_wait(&q, QEMU_WAIT);
        check_left(&pv, peer, h, 2);
out:
        for (int i = 0; i < 2; i++) {
                if (h[i])
                        munmap(h[i], PV_IVSHM_PAGE);
                ivsock_close(peer[i]);
        }
        CU_ASSERT_EQUAL(pvhvt_stop(&pv), 0);
        unlink(log);
}

static bool in_path(const char *name)
{
        if (strchr(name, '/'))
                return access(name, X_OK) == 0;
        const char *path = getenv("PATH");
        char buf[1024];
        for (const char *s = path ? path : "/usr/bin:/bin"; *s;) {
                size_t n = strcspn(s, ":");
                snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, s, name);
                if (access(buf, X_OK) == 0)
                        return true;
                s += n + (s[n] == ':');
        }
        return false;
}

int main(void)
{
        const char *conf = getenv("PV_CONF_DIR");
        if (!conf || !getenv("PVHV_BIN")) {
                fprintf(stderr, "PV_CONF_DIR or PVHV_BIN unset; run via meson test\n");
                return 77;
        }
        snprintf(demo_dtb, sizeof(demo_dtb), "%s/demo.dtb", conf);
        qemu_bin = getenv("QEMU_BIN");
        if (!qemu_bin || !*qemu_bin)
                qemu_bin = "qemu-system-x86_64";
        if (!in_path(qemu_bin)) {
                printf("%s not found: skipped (scripts/setup-deps.sh installs qemu-system-x86)\n", qemu_bin);
                return 77;
        }
        const char *tmp = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/pvhv-qemu-XXXXXX", tmp && *tmp && strlen(tmp) < 64 ? tmp : "/tmp");
        if (!mkdtemp(tmpdir))
                return 1;
        signal(SIGPIPE, SIG_IGN);
        char why[768];
        if (!qemu_runs(why, sizeof(why))) {
                printf("%s: skipped\n", why);
                rmdir(tmpdir);
                return 77;
        }
        int fds_before = pvhvt_fd_count(getpid());
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite suite = CU_add_suite("pvhv-qemu", NULL, NULL);
        if (!suite || !CU_add_test(suite, "QEMU joins with pvhv's options, quits, is killed", test_qemu))
                return 1;
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        kill_running();
        if (pv.pid > 0 && pvhvt_stop(&pv) != 0)
                failed++;
        if (pvhvt_fd_count(getpid()) != fds_before) {
                fprintf(stderr, "fd leak: %d open before, %d after\n", fds_before, pvhvt_fd_count(getpid()));
                failed++;
        }
        if (rmdir(tmpdir) < 0) {
                fprintf(stderr, "%s: %s\n", tmpdir, strerror(errno));
                failed++;
        }
        return failed ? 1 : 0;
}
