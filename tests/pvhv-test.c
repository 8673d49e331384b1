/* Test support for pvhv. See pvhv-test.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pvhv-test.h"

long long pvhvt_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pvhvt_sleep_ms(int ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int pvhvt_fd_count(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                n += e->d_name[0] != '.';
        closedir(d);
        return n - (pid == getpid()); /* the DIR's own fd */
}

int pvhvt_start(struct pvhvt *p, const char *dtb)
{
        memset(p, 0, sizeof(*p));
        const char *tmp = getenv("TMPDIR");
        snprintf(p->dir, sizeof(p->dir), "%s/pvhv-XXXXXX", tmp && *tmp && strlen(tmp) < 48 ? tmp : "/tmp");
        if (!mkdtemp(p->dir))
                return -errno;
        snprintf(p->sock_dir, sizeof(p->sock_dir), "%s/s", p->dir);
        snprintf(p->log, sizeof(p->log), "%s/pvhv.log", p->dir);
        snprintf(p->dtb, sizeof(p->dtb), "%s", dtb);
        const char *bin = getenv("PVHV_BIN");
        if (!bin)
                bin = "pvhv";

        char npath[sizeof(p->dir) + 16];
        snprintf(npath, sizeof(npath), "%s/notify", p->dir);
        int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", npath);
        if (ns < 0 || bind(ns, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = errno;
                if (ns >= 0)
                        close(ns);
                return -e;
        }
        pid_t pid = fork();
        if (pid < 0) {
                close(ns);
                return -errno;
        }
        if (pid == 0) {
                int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                setenv("NOTIFY_SOCKET", npath, 1);
                execl(bin, bin, "--config", p->dtb, "--dir", p->sock_dir, "--log-level", "debug", (char *)NULL);
                _exit(127);
        }
        p->pid = pid;
        int rc = -ETIMEDOUT;
        long long deadline = pvhvt_now_ms() + 10000;
        while (pvhvt_now_ms() < deadline) {
                struct pollfd pf = { .fd = ns, .events = POLLIN };
                if (poll(&pf, 1, 100) == 1) {
                        char buf[256];
                        ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
                        if (n > 0) {
                                buf[n] = 0;
                                if (strstr(buf, "READY=1")) {
                                        rc = 0;
                                        break;
                                }
                        }
                }
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        p->pid = 0;
                        rc = -ECHILD;
                        break;
                }
        }
        close(ns);
        unlink(npath);
        /* Logged once READY=1 is sent and its socket closed: from then on
         * pvhv holds only its own fds (tests count them). */
        if (rc == 0)
                rc = pvhvt_wait_log(p, "serving ", 1, 5000);
        if (rc < 0)
                pvhvt_show_log(p);
        return rc;
}

static int rm_dir(const char *dir)
{
        DIR *d = opendir(dir);
        int left = 0;
        if (!d)
                return 0;
        struct dirent *e;
        char path[512];
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                if (strcmp(e->d_name, "s") == 0) {
                        left += rm_dir(path);
                        continue;
                }
                if (strcmp(e->d_name, "pvhv.log") != 0) {
                        fprintf(stderr, "left behind: %s\n", path);
                        left++;
                }
                unlink(path);
        }
        closedir(d);
        rmdir(dir);
        return left;
}

int pvhvt_stop(struct pvhvt *p)
{
        int problems = 0;
        if (p->pid > 0) {
                kill(p->pid, SIGTERM);
                int st = 0;
                long long deadline = pvhvt_now_ms() + 5000;
                pid_t r;
                while ((r = waitpid(p->pid, &st, WNOHANG)) == 0 && pvhvt_now_ms() < deadline)
                        pvhvt_sleep_ms(10);
                if (r == 0) {
                        fprintf(stderr, "pvhv %d did not stop on SIGTERM: killed\n", (int)p->pid);
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, &st, 0);
                        problems++;
                } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        fprintf(stderr, "pvhv exited with status 0x%x\n", st);
                        problems++;
                }
                p->pid = 0;
        }
        if (problems || getenv("PVT_SHOW_LOGS"))
                pvhvt_show_log(p);
        problems += rm_dir(p->dir);
        return problems;
}

static char *read_log(const struct pvhvt *p)
{
        int fd = open(p->log, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        size_t cap = 65536, n = 0;
        char *buf = malloc(cap);
        for (;;) {
                if (!buf)
                        break;
                if (n + 1 == cap) {
                        char *nb = realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                buf = NULL;
                                break;
                        }
                        buf = nb;
                        cap *= 2;
                }
                ssize_t r = read(fd, buf + n, cap - 1 - n);
                if (r <= 0)
                        break;
                n += (size_t)r;
        }
        close(fd);
        if (buf)
                buf[n] = 0;
        return buf;
}

int pvhvt_log_count(const struct pvhvt *p, const char *needle)
{
        char *log = read_log(p);
        int n = 0;
        for (const char *s = log; s && (s = strstr(s, needle)); s += strlen(needle))
                n++;
        free(log);
        return n;
}

int pvhvt_wait_log(const struct pvhvt *p, const char *needle, int count, int timeout_ms)
{
        long long deadline = pvhvt_now_ms() + timeout_ms;
        for (;;) {
                if (pvhvt_log_count(p, needle) >= count)
                        return 0;
                if (pvhvt_now_ms() >= deadline) {
                        fprintf(stderr, "\n    pvhv log: \"%s\" seen %d times, want %d\n", needle,
                                pvhvt_log_count(p, needle), count);
                        return -ETIMEDOUT;
                }
                pvhvt_sleep_ms(5);
        }
}

void pvhvt_show_log(const struct pvhvt *p)
{
        char *log = read_log(p);
        size_t len = log ? strlen(log) : 0;
        fprintf(stderr, "---- %s ----\n%s", p->log, log ? (len > 32768 ? log + len - 32768 : log) : "(none)\n");
        free(log);
}

const char *pvhvt_sock(const struct pvhvt *p, const char *link, const char *vm, char *buf, size_t len)
{
        snprintf(buf, len, "%s/%s.%s.sock", p->sock_dir, link, vm);
        return buf;
}

int pvhvt_wait_ev(struct ivsock *s, unsigned want, unsigned *got, int timeout_ms)
{
        unsigned acc = 0;
        long long deadline = pvhvt_now_ms() + timeout_ms;
        for (;;) {
                unsigned ev = 0;
                int rc = ivsock_read(s, &ev);
                acc |= ev;
                if (got)
                        *got = acc;
                if (rc < 0)
                        return rc;
                if ((acc & want) == want)
                        return 0;
                long long left = deadline - pvhvt_now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd pf = { .fd = ivsock_fd(s), .events = POLLIN };
                poll(&pf, 1, (int)(left < 50 ? left : 50));
        }
}

int pvhvt_pump(struct ivsock *s)
{
        unsigned acc = 0, ev;
        int rc;
        while ((rc = ivsock_read(s, &ev)) == 0 && ev)
                acc |= ev;
        acc |= ev;
        return rc < 0 ? rc : (int)acc;
}

int pvhvt_join(const struct pvhvt *p, const char *link, const char *vm, struct ivsock **out, int timeout_ms)
{
        char path[256];
        struct ivsock *s;
        pvhvt_sock(p, link, vm, path, sizeof(path));
        long long deadline = pvhvt_now_ms() + timeout_ms;
        int rc;
        /* -EAGAIN: the backlog is full, pvhv is accepting. */
        while ((rc = ivsock_connect(path, &s)) == -EAGAIN && pvhvt_now_ms() < deadline)
                pvhvt_sleep_ms(2);
        if (rc < 0)
                return rc;
        rc = pvhvt_wait_ev(s, IVSOCK_EV_READY, NULL, timeout_ms);
        if (rc < 0) {
                if (rc == -EPROTO)
                        fprintf(stderr, "\n    %s: %s\n", path, ivsock_error(s));
                ivsock_close(s);
                return rc;
        }
        *out = s;
        return 0;
}

uint64_t pvhvt_counter(int efd)
{
        uint64_t v = 0;
        if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v))
                return 0;
        return v;
}

uint64_t pvhvt_wait_ring(int efd, int timeout_ms)
{
        struct pollfd pf = { .fd = efd, .events = POLLIN };
        if (poll(&pf, 1, timeout_ms) != 1)
                return 0;
        return pvhvt_counter(efd);
}

struct pv_ivshm_hdr *pvhvt_map_hdr(struct ivsock *s)
{
        void *m = mmap(NULL, PV_IVSHM_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, ivsock_mem_fd(s), 0);
        return m == MAP_FAILED ? NULL : m;
}

int pvhvt_wait_presence(const struct pv_ivshm_hdr *h, int side, uint32_t want, int timeout_ms)
{
        long long deadline = pvhvt_now_ms() + timeout_ms;
        while (__atomic_load_n(&h->presence[side].present, __ATOMIC_ACQUIRE) != want) {
                if (pvhvt_now_ms() >= deadline)
                        return -ETIMEDOUT;
                pvhvt_sleep_ms(2);
        }
        return 0;
}
