/* Test support for multi-VM tests. See pvtest.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "pv-msg.h"
#include "hv/emu-proto.h"
#include "pvtest.h"

long long pvt_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int pvt_fd_count(void)
{
        return pvt_fd_count_of(getpid());
}

int pvt_fd_count_of(pid_t pid)
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

long long pvt_cpu_ns(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        long long sum = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char f[128], buf[128];
                snprintf(f, sizeof(f), "%s/%s/schedstat", path, e->d_name);
                if (pvt_read_file(f, buf, sizeof(buf)) > 0)
                        sum += atoll(buf);
        }
        closedir(d);
        return sum;
}

ssize_t pvt_read_file(const char *path, char *buf, size_t cap)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        size_t n = 0;
        while (n + 1 < cap) {
                ssize_t r = read(fd, buf + n, cap - 1 - n);
                if (r <= 0)
                        break;
                n += (size_t)r;
        }
        buf[n] = 0;
        close(fd);
        return (ssize_t)n;
}

/* The last 64 KiB of a pvd log, on stderr. */
void pvt_show_log_tail(const char *path, size_t max)
{
        static char buf[64 * 1024 + 1];
        if (max > sizeof(buf) - 1)
                max = sizeof(buf) - 1;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        off_t end = lseek(fd, 0, SEEK_END);
        ssize_t n = -1;
        if (end >= 0)
                n = pread(fd, buf, max, end > (off_t)max ? end - (off_t)max : 0);
        close(fd);
        if (n <= 0)
                return;
        buf[n] = 0;
        fprintf(stderr, "---- %s%s ----\n%s\n", path, end > (off_t)max ? " (its end)" : "", buf);
}

const char *pvt_conf(const char *file, char *buf, size_t len)
{
        const char *dir = getenv("PV_CONF_DIR");
        snprintf(buf, len, "%s/%s", dir ? dir : "conf", file);
        return buf;
}

const char *pvt_hv(void)
{
        const char *hv = getenv("PVT_HV");
        return hv && *hv ? hv : "emu";
}

void pvt_need_emu(const char *why)
{
        if (strcmp(pvt_hv(), "emu") == 0)
                return;
        printf("skipped on the %s backend: %s\n", pvt_hv(), why);
        fflush(stdout);
        exit(77);
}

void pvt_show_stuck(pid_t pid)
{
        static const char *const what[] = { "wchan", "syscall", "stack" };
        char path[64], buf[2048];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if (pvt_read_file(path, buf, sizeof(buf)) > 0) {
                const char *st = strrchr(buf, ')');
                if (st && st[1] == ' ' && st[2])
                        fprintf(stderr, "  state: %c\n", st[2]);
        }
        for (size_t i = 0; i < sizeof(what) / sizeof(what[0]); i++) {
                snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what[i]);
                if (pvt_read_file(path, buf, sizeof(buf)) > 0)
                        fprintf(stderr, "  %s: %s%s", what[i], buf, buf[strlen(buf) - 1] == '\n' ? "" : "\n");
        }
}

void pvt_show_waiting(pid_t pid)
{
        DIR *d = opendir("/proc");
        struct dirent *de;
        int shown = 0;
        while (d && (de = readdir(d)) && shown < 16) {
                char *end;
                long p = strtol(de->d_name, &end, 10);
                if (*end || p <= 0 || p == pid)
                        continue;
                char path[64], buf[2048];
                snprintf(path, sizeof(path), "/proc/%ld/stat", p);
                if (pvt_read_file(path, buf, sizeof(buf)) <= 0)
                        continue;
                const char *st = strrchr(buf, ')'), *name = strchr(buf, '(');
                if (!st || !name || st[1] != ' ' || st[2] != 'D')
                        continue;
                fprintf(stderr, "  also waiting (D): pid %ld %.*s\n", p, (int)(st - name + 1), name);
                snprintf(path, sizeof(path), "/proc/%ld/stack", p);
                if (pvt_read_file(path, buf, sizeof(buf)) > 0)
                        fprintf(stderr, "%s%s", buf, buf[strlen(buf) - 1] == '\n' ? "" : "\n");
                shown++;
        }
        if (d)
                closedir(d);
        if (!shown)
                fprintf(stderr, "  no other task of this system waits in state D\n");
}

/* Start argv (its output appended to log) with NOTIFY_SOCKET set, and wait
 * for its READY=1 (10 s). The pid, or -errno. */
static pid_t start_ready(const char *dir, const char *tag, const char *const *argv, const char *log, unsigned nofile)
{
        char npath[192];
        snprintf(npath, sizeof(npath), "%s/notify-%s", dir, tag);
        unlink(npath);
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
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, 2);
                        dup2(fd, 1);
                }
                setenv("NOTIFY_SOCKET", npath, 1);
                if (nofile) {
                        struct rlimit rl = { nofile, nofile };
                        setrlimit(RLIMIT_NOFILE, &rl);
                }
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        pid_t rc = -ETIMEDOUT;
        long long deadline = pvt_now_ms() + 10000;
        while (pvt_now_ms() < deadline) {
                struct pollfd pf = { .fd = ns, .events = POLLIN };
                if (poll(&pf, 1, 100) == 1) {
                        char buf[256];
                        ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
                        if (n > 0) {
                                buf[n] = 0;
                                if (strstr(buf, "READY=1")) {
                                        rc = pid;
                                        break;
                                }
                        }
                }
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        pid = 0;
                        rc = -ECHILD;
                        break;
                }
        }
        if (rc < 0 && pid > 0) {
                /* Never ready: say where it is stuck before it goes. */
                fprintf(stderr, "pvtest: %s (pid %d) not ready within 10 s:\n", argv[0], (int)pid);
                pvt_show_stuck(pid);
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        close(ns);
        unlink(npath);
        return rc;
}

int pvt_platform_init(struct pvt_platform *p, const char *dtb_name)
{
        memset(p, 0, sizeof(*p));
        const char *tmp = getenv("TMPDIR");
        snprintf(p->dir, sizeof(p->dir), "%s/pvt-XXXXXX", tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
        if (!mkdtemp(p->dir))
                return -errno;
        snprintf(p->platform_dir, sizeof(p->platform_dir), "%s/platform", p->dir);
        char name[64];
        snprintf(name, sizeof(name), "%s.dtb", dtb_name);
        pvt_conf(name, p->dtb, sizeof(p->dtb));
        if (access(p->dtb, R_OK) < 0)
                return -errno;
        if (strcmp(pvt_hv(), "ivshmem") == 0) {
                const char *bin = getenv("PVHV_BIN");
                char log[192];
                snprintf(log, sizeof(log), "%s/pvhv.log", p->dir);
                const char *argv[] = { bin ? bin : "pvhv", "--config", p->dtb, "--dir", p->platform_dir, NULL };
                pid_t pid = start_ready(p->dir, "pvhv", argv, log, 0);
                if (pid < 0) {
                        fprintf(stderr, "pvtest: pvhv did not start (%s): see %s\n", strerror((int)-pid), log);
                        return (int)pid;
                }
                p->pvhv = pid;
        } else if (strcmp(pvt_hv(), "emu") != 0) {
                fprintf(stderr, "pvtest: PVT_HV=%s: no such backend (emu, ivshmem)\n", pvt_hv());
                return -EINVAL;
        }
        return 0;
}

struct pvt_vm *pvt_vm(struct pvt_platform *p, const char *vm)
{
        for (unsigned i = 0; i < p->nvms; i++)
                if (strcmp(p->vms[i].name, vm) == 0)
                        return &p->vms[i];
        if (p->nvms == PVT_MAX_VMS)
                return NULL;
        /* Built in locals: the arguments may live inside *p. */
        char name[sizeof(p->vms[0].name)], rt[sizeof(p->vms[0].rt)], log[sizeof(p->vms[0].log)];
        snprintf(name, sizeof(name), "%s", vm);
        snprintf(rt, sizeof(rt), "%s/rt-%s", p->dir, name);
        snprintf(log, sizeof(log), "%s/pvd-%s.log", p->dir, name);
        struct pvt_vm *v = &p->vms[p->nvms++];
        memcpy(v->name, name, sizeof(name));
        memcpy(v->rt, rt, sizeof(rt));
        memcpy(v->log, log, sizeof(log));
        return v;
}

void pvt_use_vm(struct pvt_platform *p, const char *vm)
{
        setenv("PVD_RUNTIME_DIR", pvt_vm(p, vm)->rt, 1);
}

int pvt_pvd_start(struct pvt_platform *p, const char *vm, const char *const *extra)
{
        struct pvt_vm *v = pvt_vm(p, vm);
        if (!v || v->pid)
                return -EBUSY;
        const char *bin = getenv("PVD_BIN");
        if (!bin)
                bin = "pvd";

        const char *argv[32];
        int argc = 0;
        argv[argc++] = bin;
        argv[argc++] = "--config";
        argv[argc++] = p->dtb;
        argv[argc++] = "--vm";
        argv[argc++] = vm;
        argv[argc++] = "--runtime-dir";
        argv[argc++] = v->rt;
        if (p->pvhv) {
                argv[argc++] = "--hv";
                argv[argc++] = "ivshmem";
                argv[argc++] = "--ivshmem-dir";
        } else {
                argv[argc++] = "--platform-dir";
        }
        argv[argc++] = p->platform_dir;
        for (int i = 0; extra && extra[i] && argc < 31; i++)
                argv[argc++] = extra[i];
        argv[argc] = NULL;
        /* "Started" means READY=1. */
        pid_t pid = start_ready(p->dir, vm, argv, v->log, p->nofile);
        if (pid < 0)
                return pid == -ECHILD ? -ECHILD : (int)pid;
        v->pid = pid;
        return 0;
}

int pvt_wait(pid_t pid, int timeout_ms)
{
        /* A failed fork's -1 would wait for any child and, on timeout,
         * kill(-1) would kill every process we may signal: the whole
         * machine as root. 0 would be our own process group. */
        if (pid <= 0) {
                fprintf(stderr, "pvtest: pvt_wait(%d): not a child (a failed fork?)\n", (int)pid);
                return -ECHILD;
        }
        long long deadline = pvt_now_ms() + timeout_ms;
        for (;;) {
                int st;
                pid_t r = waitpid(pid, &st, WNOHANG);
                if (r == pid)
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                if (r < 0)
                        return -errno;
                if (pvt_now_ms() >= deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        return -ETIMEDOUT;
                }
                sleep_ms(5);
        }
}

int pvt_kill(pid_t pid, int sig)
{
        if (pid <= 0) {
                fprintf(stderr, "pvtest: not signalling pid %d (a failed fork?)\n", (int)pid);
                return -ESRCH;
        }
        return kill(pid, sig) < 0 ? -errno : 0;
}

int pvt_reap(pid_t pid, int sig, const char *what, int timeout_ms)
{
        long long t0 = pvt_now_ms();
        bool told = false;
        int st;
        while (pvt_now_ms() - t0 < timeout_ms) {
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        if (told)
                                fprintf(stderr, "pvtest: %s ended %lld ms after signal %d\n", what, pvt_now_ms() - t0,
                                        sig);
                        return st;
                }
                /* A process killed goes at once unless the kernel holds it
                 * in a system call that cannot be interrupted: say where. */
                if (!told && sig == SIGKILL && pvt_now_ms() - t0 >= 1000) {
                        fprintf(stderr, "pvtest: %s (pid %d) is still there 1 s after SIGKILL:\n", what, (int)pid);
                        pvt_show_stuck(pid);
                        pvt_show_waiting(pid);
                        told = true;
                }
                sleep_ms(5);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -ETIMEDOUT;
}

int pvt_pvd_stop(struct pvt_platform *p, const char *vm, int sig)
{
        struct pvt_vm *v = pvt_vm(p, vm);
        if (!v || v->pid <= 0)
                return -1;
        kill(v->pid, sig);
        char what[64];
        snprintf(what, sizeof(what), "the pvd of %s", vm);
        int st = pvt_reap(v->pid, sig, what, 5000);
        v->pid = 0;
        return st == -ETIMEDOUT ? -1 : st;
}

static int leftovers;

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        if (S_ISSOCK(st->st_mode)) {
                fprintf(stderr, "pvtest: leftover socket %s\n", path);
                leftovers++;
        }
        return remove(path);
}

void pvt_show_logs(const struct pvt_platform *p, size_t max)
{
        for (unsigned i = 0; i < p->nvms; i++)
                pvt_show_log_tail(p->vms[i].log, max);
        if (p->dir[0]) {
                char log[sizeof(p->dir) + 16];
                snprintf(log, sizeof(log), "%s/pvhv.log", p->dir);
                pvt_show_log_tail(log, max);
        }
}

int pvt_platform_fini(struct pvt_platform *p)
{
        leftovers = 0;
        for (unsigned i = 0; i < p->nvms; i++) {
                if (!p->vms[i].pid)
                        continue;
                if (pvt_pvd_stop(p, p->vms[i].name, SIGTERM) == -1) {
                        fprintf(stderr, "pvtest: pvd of %s had to be killed\n", p->vms[i].name);
                        leftovers++;
                }
        }
        if (p->pvhv) {
                kill(p->pvhv, SIGTERM);
                if (pvt_wait(p->pvhv, 5000) != 0) {
                        fprintf(stderr, "pvtest: pvhv did not stop cleanly\n");
                        leftovers++;
                }
                p->pvhv = 0;
        }
        /* A pvd may log its last lines to the log; show them on failure. */
        if (getenv("PVT_SHOW_LOGS")) {
                pvt_show_logs(p, 64 * 1024);
        }
        if (p->dir[0])
                nftw(p->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        p->dir[0] = 0;
        return leftovers;
}

static int fetch_doc(struct pvt_platform *p, const char *vm, uint32_t op, const char *name, msgpack_zone *zone,
                     msgpack_object *doc)
{
        char *saved = getenv("PVD_RUNTIME_DIR") ? strdup(getenv("PVD_RUNTIME_DIR")) : NULL;
        pvt_use_vm(p, vm);
        struct pv_conn *c;
        int rc = pvc_conn_open("control", &c);
        if (saved) {
                setenv("PVD_RUNTIME_DIR", saved, 1);
                free(saved);
        } else {
                unsetenv("PVD_RUNTIME_DIR");
        }
        if (rc < 0)
                return rc;
        static char buf[PV_MSG_DOC_MAX];
        struct pv_msg req, resp;
        pv_msg_init(&req, op);
        if (name)
                pv_msg_set_str(&req, PV_K_NAME, name);
        rc = pvc_conn_call(c, &req, &resp, buf, sizeof(buf));
        pvc_conn_close(c);
        if (rc < 0)
                return rc;
        const void *d;
        uint32_t len;
        if (pv_msg_get_b(&resp, PV_K_DOC, &d, &len) < 0)
                return -EPROTO;
        /* Copy into the zone so that the document outlives buf. */
        void *copy = msgpack_zone_malloc(zone, len);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, d, len);
        size_t off = 0;
        return msgpack_unpack(copy, len, &off, zone, doc) == MSGPACK_UNPACK_SUCCESS ? 0 : -EPROTO;
}

int pvt_status(struct pvt_platform *p, const char *vm, msgpack_zone *zone, msgpack_object *doc)
{
        return fetch_doc(p, vm, PV_OP_STATUS, NULL, zone, doc);
}

int pvt_stat(struct pvt_platform *p, const char *vm, const char *driver, msgpack_zone *zone, msgpack_object *doc)
{
        return fetch_doc(p, vm, PV_OP_STAT, driver, zone, doc);
}

bool pvt_str_eq(const msgpack_object *o, const char *s)
{
        return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
               memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

const msgpack_object *pvt_get(const msgpack_object *m, const char *key)
{
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < m->via.map.size; i++)
                if (pvt_str_eq(&m->via.map.ptr[i].key, key))
                        return &m->via.map.ptr[i].val;
        return NULL;
}

int pvt_wait_vlink(struct pvt_platform *p, const char *vm, const char *link, const char *state, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        do {
                msgpack_zone zone;
                msgpack_object doc;
                msgpack_zone_init(&zone, 4096);
                bool ok = false;
                if (pvt_status(p, vm, &zone, &doc) == 0) {
                        const msgpack_object *vls = pvt_get(&doc, "vlinks");
                        if (vls && vls->type == MSGPACK_OBJECT_ARRAY) {
                                ok = true;
                                bool found = false;
                                for (uint32_t i = 0; i < vls->via.array.size; i++) {
                                        const msgpack_object *vl = &vls->via.array.ptr[i];
                                        if (link && !pvt_str_eq(pvt_get(vl, "name"), link))
                                                continue;
                                        found = true;
                                        ok &= pvt_str_eq(pvt_get(vl, "state"), state);
                                }
                                ok &= found;
                        }
                }
                msgpack_zone_destroy(&zone);
                if (ok)
                        return 0;
                sleep_ms(20);
        } while (pvt_now_ms() < deadline);
        return -ETIMEDOUT;
}

static void drain_into(int fd, char *buf, size_t cap, size_t *len)
{
        for (;;) {
                char tmp[4096];
                ssize_t n = read(fd, tmp, sizeof(tmp));
                if (n <= 0)
                        return;
                size_t room = cap > *len + 1 ? cap - *len - 1 : 0;
                size_t k = (size_t)n < room ? (size_t)n : room;
                memcpy(buf + *len, tmp, k);
                *len += k;
                buf[*len] = 0;
        }
}

int pvt_run(struct pvt_platform *p, const char *vm, const char *const *argv, char *out, size_t outcap, char *err,
            size_t errcap, int timeout_ms)
{
        int po[2], pe[2];
        if (pipe2(po, O_CLOEXEC) < 0)
                return -errno;
        if (pipe2(pe, O_CLOEXEC) < 0) {
                close(po[0]);
                close(po[1]);
                return -errno;
        }
        pid_t pid = fork();
        if (pid < 0) {
                int e = errno;
                for (int i = 0; i < 2; i++) {
                        close(po[i]);
                        close(pe[i]);
                }
                return -e;
        }
        if (pid == 0) {
                dup2(po[1], 1);
                dup2(pe[1], 2);
                if (vm)
                        setenv("PVD_RUNTIME_DIR", pvt_vm(p, vm)->rt, 1);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(po[1]);
        close(pe[1]);
        size_t ol = 0, el = 0;
        if (out && outcap)
                out[0] = 0;
        if (err && errcap)
                err[0] = 0;
        fcntl(po[0], F_SETFL, O_NONBLOCK);
        fcntl(pe[0], F_SETFL, O_NONBLOCK);
        long long deadline = pvt_now_ms() + timeout_ms;
        int status = -ETIMEDOUT;
        for (;;) {
                struct pollfd pf[2] = { { .fd = po[0], .events = POLLIN }, { .fd = pe[0], .events = POLLIN } };
                poll(pf, 2, 20);
                drain_into(po[0], out, outcap, &ol);
                drain_into(pe[0], err, errcap, &el);
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        drain_into(po[0], out, outcap, &ol);
                        drain_into(pe[0], err, errcap, &el);
                        status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                        break;
                }
                if (pvt_now_ms() > deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        break;
                }
        }
        close(po[0]);
        close(pe[0]);
        return status;
}

pid_t pvt_spawn(struct pvt_platform *p, const char *vm, int (*fn)(void *), void *arg)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
                fprintf(stderr, "pvtest: cannot fork a program for %s: %s\n", vm ? vm : "the test", strerror(errno));
                return -errno;
        }
        if (pid == 0) {
                if (vm)
                        setenv("PVD_RUNTIME_DIR", pvt_vm(p, vm)->rt, 1);
                _exit(fn(arg));
        }
        return pid;
}

int pvt_open_emu_object(pid_t pid, const char *want)
{
        char dir[64], path[128], target[256];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(dir);
        if (!d)
                return -1;
        char best[128] = "";
        unsigned long best_n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                if (n <= 0)
                        continue;
                target[n] = 0;
                const char *at = strstr(target, want);
                if (!at)
                        continue;
                unsigned long k = strtoul(at + strlen(want), NULL, 10);
                if (!best[0] || k > best_n) {
                        snprintf(best, sizeof(best), "%s", path);
                        best_n = k;
                }
        }
        closedir(d);
        return best[0] ? open(best, O_RDWR | O_CLOEXEC) : -1;
}

void *pvt_map_emu_object(int fd, size_t *size)
{
        struct stat st;
        if (fstat(fd, &st) < 0 || (uint64_t)st.st_size <= PV_EMU_MEM_OFFSET)
                return NULL;
        *size = (size_t)st.st_size - PV_EMU_MEM_OFFSET;
        void *p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PV_EMU_MEM_OFFSET);
        return p == MAP_FAILED ? NULL : p;
}
