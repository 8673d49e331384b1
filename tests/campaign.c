/* Support of the campaign tools (see campaign.h): options, the platform
 * and its honest programs, pvd's resources, figures. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "campaign.h"

const char *const cp_vms[3] = { "vm2", "vm3", "vm4" };
volatile int cp_interrupted;

static void on_interrupt(int sig)
{
        cp_interrupted = sig;
}

static const struct {
        const char *name, *vm;
} progs[CP_NPROGS] = {
        [CP_VRPQ_SRV] = { "VRPQ server", "vm2" },   [CP_VRPQ_CLT] = { "VRPQ client", "vm3" },
        [CP_VUMEM_SRV] = { "VUMEM server", "vm2" }, [CP_VUMEM_CLT] = { "VUMEM client", "vm3" },
        [CP_PIPE_SRV] = { "vbpipe server", "vm2" }, [CP_PIPE_CLT] = { "vbpipe client", "vm4" },
};

const char *cp_prog_vm(enum cp_prog k)
{
        return progs[k].vm;
}

const char *cp_prog_name(enum cp_prog k)
{
        return progs[k].name;
}

int64_t cp_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t cp_rand(uint64_t *state)
{
        /* splitmix64: reproducible from --seed */
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

double cp_median(double *v, size_t n)
{
        if (!n)
                return 0;
        qsort(v, n, sizeof(*v), cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double cp_max(const double *v, size_t n)
{
        double m = 0;
        for (size_t i = 0; i < n; i++)
                m = v[i] > m ? v[i] : m;
        return m;
}

int cp_options(int argc, char **argv, struct cp_options *o, double default_duration, const char *usage)
{
        static const struct option longopts[] = {
                { "duration", required_argument, NULL, 'd' }, { "seed", required_argument, NULL, 's' },
                { "workers", required_argument, NULL, 'w' },  { "help", no_argument, NULL, 'h' },
                { "only", required_argument, NULL, 'o' },     { "keep-logs", no_argument, NULL, 'k' },
                { "all", no_argument, NULL, 'a' },
                { NULL, 0, NULL, 0 },
        };
        *o = (struct cp_options){ .duration_s = default_duration, .seed = (uint64_t)cp_now_ns(), .workers = 2 };
        int c;
        char *end;
        while ((c = getopt_long(argc, argv, "d:s:w:o:kavh", longopts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        o->duration_s = strtod(optarg, &end);
                        if (*end || o->duration_s <= 0) {
                                fprintf(stderr, "--duration wants seconds (> 0), not %s\n", optarg);
                                return 2;
                        }
                        break;
                case 's':
                        o->seed = strtoull(optarg, &end, 0);
                        if (*end) {
                                fprintf(stderr, "--seed wants a number, not %s\n", optarg);
                                return 2;
                        }
                        break;
                case 'w':
                        o->workers = (unsigned)strtoul(optarg, &end, 10);
                        if (*end || o->workers < 1 || o->workers > 16) {
                                fprintf(stderr, "--workers wants 1 to 16, not %s\n", optarg);
                                return 2;
                        }
                        break;
                case 'v':
                        o->verbose = true;
                        break;
                case 'o':
                        o->only = optarg;
                        break;
                case 'a':
                        o->all = true;
                        break;
                case 'k':
                        o->keep_logs = true;
                        setenv("PVT_SHOW_LOGS", "1", 1);
                        break;
                case 'h':
                        printf("%s", usage);
                        exit(0);
                default:
                        fprintf(stderr, "%s", usage);
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "unexpected argument %s\n%s", argv[optind], usage);
                return 2;
        }
        /* A long run stopped by hand still stops its pvds and programs and
         * reports what it ran (children restore the default). */
        struct sigaction sa = { .sa_handler = on_interrupt };
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        return 0;
}

/* ---- the platform and its programs --------------------------------------------------- */

const char *const *cp_pvd_args(void)
{
        static const char *const debug[] = { "--log-level", "debug", NULL };
        const char *e = getenv("PVD_DEBUG");
        return e && *e && strcmp(e, "0") ? debug : NULL;
}

pid_t cp_spawn(struct cp *cp, enum cp_prog k)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                setenv("PVD_RUNTIME_DIR", pvt_vm(&cp->plat, progs[k].vm)->rt, 1);
                _exit(cp_prog_main(cp->sh, k));
        }
        cp->prog[k] = pid > 0 ? pid : 0;
        return pid;
}

/* What pvd says in vm: pvctl with args (status, or stat DRIVER). */
static void show_pvctl(struct cp *cp, const char *vm, const char *a1, const char *a2)
{
        static char out[16384], err[1024];
        const char *pvctl = getenv("PVCTL_BIN");
        const char *argv[] = { pvctl, a1, a2, NULL };
        if (!pvctl)
                return;
        int rc = pvt_run(&cp->plat, vm, argv, out, sizeof(out), err, sizeof(err), 3000);
        fprintf(stderr, "  ---- pvctl %s%s%s in %s (exit %d) ----\n%s%s", a1, a2 ? " " : "", a2 ? a2 : "", vm, rc, out,
                err);
}

/* The driver of program k, as pvctl stat names it. */
static const char *prog_driver(int k)
{
        return k == CP_VRPQ_SRV || k == CP_VRPQ_CLT ? "vrpq" : k == CP_VUMEM_SRV || k == CP_VUMEM_CLT ? "vumem" : "vbpipe";
}

int cp_all_flowing(struct cp *cp, int64_t since_ns, int timeout_ms)
{
        long long start = pvt_now_ms(), end = start + timeout_ms;
        bool told = false;
        for (;;) {
                int stuck = 0;
                for (int k = 0; k < CP_NPROGS; k++)
                        stuck += cp->sh->slot[k].ok_ns <= since_ns;
                if (!stuck) {
                        if (told)
                                fprintf(stderr, "  all working again after %lld ms\n", pvt_now_ms() - start);
                        return 0;
                }
                /* Recovery takes milliseconds: after 5 s, say who waits and
                 * where, while it still waits. */
                if (!told && timeout_ms > 5000 && pvt_now_ms() - start >= 5000) {
                        told = true;
                        for (int k = 0; k < CP_NPROGS; k++) {
                                if (cp->sh->slot[k].ok_ns > since_ns)
                                        continue;
                                fprintf(stderr, "  %s (%s, pid %d) has done no work for 5 s; last error: %s\n",
                                        progs[k].name, progs[k].vm, (int)cp->prog[k], cp->sh->slot[k].last_error);
                                if (cp->prog[k] > 0)
                                        pvt_show_stuck(cp->prog[k]);
                        }
                        pvt_show_waiting(0);
                        /* The vlinks and programs each pvd sees, and the
                         * stuck drivers' sessions, pipes or buffers. */
                        for (int i = 0; i < 3; i++)
                                show_pvctl(cp, cp_vms[i], "status", NULL);
                        for (int k = 0; k < CP_NPROGS; k++)
                                if (cp->sh->slot[k].ok_ns <= since_ns)
                                        show_pvctl(cp, progs[k].vm, "stat", prog_driver(k));
                }
                if (pvt_now_ms() >= end) {
                        for (int k = 0; k < CP_NPROGS; k++)
                                if (cp->sh->slot[k].ok_ns <= since_ns)
                                        fprintf(stderr, "  %s (%s) does no work; last error: %s\n", progs[k].name,
                                                progs[k].vm, cp->sh->slot[k].last_error);
                        return -ETIMEDOUT;
                }
                usleep(2000);
        }
}

int cp_start(struct cp *cp, bool programs)
{
        memset(cp, 0, sizeof(*cp));
        cp->sh = mmap(NULL, sizeof(*cp->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (cp->sh == MAP_FAILED) {
                cp->sh = NULL;
                return -errno;
        }
        memset(cp->sh, 0, sizeof(*cp->sh));
        int rc = pvt_platform_init(&cp->plat, "test-2clients");
        for (int i = 0; !rc && i < 3; i++)
                rc = pvt_pvd_start(&cp->plat, cp_vms[i], cp_pvd_args());
        if (!rc)
                rc = pvt_wait_vlink(&cp->plat, "vm2", "vm2-vm3-vogl0", "ON", 10000);
        if (!rc)
                rc = pvt_wait_vlink(&cp->plat, "vm2", "vm2-vm4-vbpipe0", "ON", 10000);
        if (rc) {
                fprintf(stderr, "the platform did not start: %s\n", strerror(-rc));
                return rc;
        }
        if (!programs)
                return 0;
        int64_t t0 = cp_now_ns();
        for (int k = 0; k < CP_NPROGS; k++)
                if (cp_spawn(cp, (enum cp_prog)k) <= 0)
                        return -errno;
        return cp_all_flowing(cp, t0, 15000);
}

int cp_stop_programs(struct cp *cp)
{
        int bad = 0, st[CP_NPROGS];
        if (!cp->sh)
                return 0;
        cp->sh->stop = 1;
        /* Most end within a wait of theirs; one waiting for a peer that
         * already stopped (a server's accept) is ended with SIGTERM. */
        long long end = pvt_now_ms() + 1500;
        for (int k = 0; k < CP_NPROGS; k++)
                st[k] = -1;
        for (int left = 1; left && pvt_now_ms() < end; usleep(5000)) {
                left = 0;
                for (int k = 0; k < CP_NPROGS; k++) {
                        int w;
                        if (cp->prog[k] <= 0 || st[k] >= 0)
                                continue;
                        if (waitpid(cp->prog[k], &w, WNOHANG) == cp->prog[k])
                                st[k] = WIFEXITED(w) ? WEXITSTATUS(w) : 128 + WTERMSIG(w);
                        else
                                left++;
                }
        }
        for (int k = 0; k < CP_NPROGS; k++) {
                if (cp->prog[k] <= 0)
                        continue;
                if (st[k] < 0) {
                        pvt_kill(cp->prog[k], SIGTERM);
                        st[k] = pvt_wait(cp->prog[k], 3000);
                        if (st[k] == 128 + SIGTERM)
                                st[k] = 0;
                }
                if (st[k] != 0) {
                        fprintf(stderr, "  %s ended with status %d (%s)\n", progs[k].name, st[k],
                                st[k] > 128 ? strsignal(st[k] - 128) : "exit");
                        bad++;
                }
                cp->prog[k] = 0;
        }
        return bad;
}

int cp_stop(struct cp *cp)
{
        int bad = cp_stop_programs(cp);
        bad += pvt_platform_fini(&cp->plat);
        if (cp->sh)
                munmap(cp->sh, sizeof(*cp->sh));
        cp->sh = NULL;
        return bad;
}

const char *cp_prog_died(struct cp *cp)
{
        for (int k = 0; k < CP_NPROGS; k++) {
                int st;
                if (cp->prog[k] > 0 && waitpid(cp->prog[k], &st, WNOHANG) == cp->prog[k]) {
                        fprintf(stderr, "  %s died on its own: %s %d; last error: %s\n", progs[k].name,
                                WIFSIGNALED(st) ? "signal" : "exit status",
                                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), cp->sh->slot[k].last_error);
                        cp->prog[k] = 0;
                        return progs[k].name;
                }
        }
        return NULL;
}

const char *cp_pvd_died(struct cp *cp)
{
        for (int i = 0; i < 3; i++) {
                struct pvt_vm *v = pvt_vm(&cp->plat, cp_vms[i]);
                int st;
                if (v->pid > 0 && waitpid(v->pid, &st, WNOHANG) == v->pid) {
                        fprintf(stderr, "  pvd of %s died on its own: %s %d (log %s)\n", cp_vms[i],
                                WIFSIGNALED(st) ? "signal" : "exit status",
                                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), v->log);
                        v->pid = 0;
                        return cp_vms[i];
                }
        }
        return NULL;
}

/* ---- pvd's resources ------------------------------------------------------------------- */

int cp_res(pid_t pid, struct cp_res *r)
{
        char path[64], buf[4096];
        memset(r, 0, sizeof(*r));
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -errno;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char lp[96], target[256];
                snprintf(lp, sizeof(lp), "/proc/%d/fd/%s", (int)pid, e->d_name);
                ssize_t n = readlink(lp, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = 0;
                r->fds++;
                r->memfds += strncmp(target, "/memfd:", 7) == 0;
        }
        closedir(d);
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (pvt_read_file(path, buf, sizeof(buf)) > 0) {
                const char *p = strstr(buf, "VmRSS:");
                if (p)
                        r->rss_kb = strtol(p + 6, NULL, 10);
        }
        return 0;
}

bool cp_sanitized(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        char line[512];
        bool asan = false;
        while (!asan && fgets(line, sizeof(line), f))
                asan = strstr(line, "libasan") != NULL;
        fclose(f);
        return asan;
}

void cp_show_fds(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char lp[96], target[256];
                snprintf(lp, sizeof(lp), "%s/%s", path, e->d_name);
                ssize_t n = readlink(lp, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = 0;
                fprintf(stderr, "    pvd %d: fd %s -> %s\n", (int)pid, e->d_name, target);
        }
        if (d)
                closedir(d);
}

int cp_res_settle(struct cp *cp, const char *vm, const struct cp_res *base, int timeout_ms, struct cp_res *now)
{
        long long end = pvt_now_ms() + timeout_ms;
        pid_t pid = pvt_vm(&cp->plat, vm)->pid;
        int rc;
        while ((rc = cp_res(pid, now)) == 0 && (now->fds > base->fds || now->memfds > base->memfds) &&
               pvt_now_ms() < end)
                usleep(20000);
        return rc;
}

bool cp_leaked(struct cp *cp, const char *vm, const struct cp_res *base, const struct cp_res *now)
{
        if (now->fds == base->fds && now->memfds == base->memfds)
                return false;
        cp_show_fds(pvt_vm(&cp->plat, vm)->pid);
        return true;
}
