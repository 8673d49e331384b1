/* Throughput and round trip of a vbpipe between programs in two VMs, through
 * real pvd processes (the emulated platform: vm2 and vm4 of
 * conf/test-2clients.dts, started in a temporary directory), beside pipe(2)
 * and a UNIX stream socketpair between two processes measured in the same
 * run.
 *
 *   bench-vbpipe [--mib N] [--round-trips N] [--rounds N] [--json]
 *
 * Throughput: a writer process writes N MiB in writes of 64 KiB, 4 KiB or
 * 64 B; a reader process reads them in 64 KiB reads; MB/s = 10^6 bytes per
 * second from the first write to the last byte read. Round trip: one byte
 * back and forth, --round-trips times after a warm-up; median and 99th
 * percentile in microseconds. Every case runs --rounds times, interleaved;
 * the figures are the medians of the rounds. Nothing is pinned: on a shared
 * machine these are figures, not pass/fail.
 *
 * Environment: PVD_BIN and PV_CONF_DIR as for the tests; by default the
 * pvd and the platform of the build tree this program was built in.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"
#include "bench-vbpipe.h"
#include "pv/vbpipe.h"
#include "pvtest.h"

#define READ_CHUNK  65536
#define PIPE_NAME   "vbpipe0"
#define WAIT_MS     120000

/* vbpipe: opened with O_DIRECT, moved with vbpipeRead/vbpipeWrite (what
 * programs under pvrun get for read and write); vbpipe-fd: plain read and
 * write on the end's socket, every byte through both pvds. */
enum transport { T_VBPIPE, T_VBPIPE_FD, T_PIPE, T_SOCKET, T_COUNT };
static const char *const tname[T_COUNT] = { "vbpipe", "vbpipe-fd", "pipe(2)", "socketpair" };

static bool is_vb(enum transport t)
{
        return t == T_VBPIPE || t == T_VBPIPE_FD;
}

/* The calls each transport's programs make. */
static ssize_t xread(enum transport t, int fd, void *buf, size_t n)
{
        return t == T_VBPIPE ? vbpipeRead(fd, buf, n) : read(fd, buf, n);
}

static ssize_t xwrite(enum transport t, int fd, const void *buf, size_t n)
{
        return t == T_VBPIPE ? vbpipeWrite(fd, buf, n) : write(fd, buf, n);
}

/* What the children report. */
struct shared {
        double t_start, t_end;
        uint64_t got;
        int failed;
        double rtt_us[];
};

static struct pvt_platform plat;
static bool have_plat;

#define now_s bench_now

static int vb_open(const char *vm, enum transport t)
{
        pvt_use_vm(&plat, vm);
        int fd = vbpipeOpen(PIPE_NAME, O_RDWR | (t == T_VBPIPE ? O_DIRECT : 0));
        if (fd < 0)
                fprintf(stderr, "bench-vbpipe: %s: vbpipeOpen: %s\n", vm, pvLastError());
        return fd;
}

static bool write_all(enum transport t, int fd, const uint8_t *p, size_t n)
{
        while (n) {
                ssize_t w = xwrite(t, fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                p += w;
                n -= (size_t)w;
        }
        return true;
}

/* Two connected fds of a transport, for the two children (a: writer or
 * pinger, b: reader or ponger). For a vbpipe each child opens its own end. */
struct chan {
        int a_rd, a_wr, b_rd, b_wr;
};

static int chan_make(enum transport t, struct chan *c)
{
        int p1[2], p2[2];
        switch (t) {
        case T_VBPIPE:
        case T_VBPIPE_FD:
                *c = (struct chan){ -1, -1, -1, -1 };
                return 0;
        case T_PIPE:
                if (pipe2(p1, O_CLOEXEC) < 0)
                        return -1;
                if (pipe2(p2, O_CLOEXEC) < 0) {
                        close(p1[0]);
                        close(p1[1]);
                        return -1;
                }
                *c = (struct chan){ .a_wr = p1[1], .b_rd = p1[0], .b_wr = p2[1], .a_rd = p2[0] };
                return 0;
        case T_SOCKET:
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p1) < 0)
                        return -1;
                *c = (struct chan){ .a_rd = p1[0], .a_wr = p1[0], .b_rd = p1[1], .b_wr = p1[1] };
                return 0;
        default:
                return -1;
        }
}

static void chan_close(struct chan *c)
{
        int fds[4] = { c->a_rd, c->a_wr, c->b_rd, c->b_wr };
        for (int i = 0; i < 4; i++) {
                bool dup = false;
                for (int j = 0; j < i; j++)
                        dup |= fds[j] == fds[i];
                if (fds[i] >= 0 && !dup)
                        close(fds[i]);
        }
}

/* Child side: its two fds (opening the vbpipe end for T_VBPIPE). */
static bool child_fds(enum transport t, struct chan *c, bool is_a, int *rd, int *wr)
{
        if (is_vb(t)) {
                int fd = vb_open(is_a ? "vm2" : "vm4", t);
                *rd = *wr = fd;
                return fd >= 0;
        }
        *rd = is_a ? c->a_rd : c->b_rd;
        *wr = is_a ? c->a_wr : c->b_wr;
        /* Drop the other child's fds: its close must be our EOF. */
        int other[2] = { is_a ? c->b_rd : c->a_rd, is_a ? c->b_wr : c->a_wr };
        for (int i = 0; i < 2; i++)
                if (other[i] != *rd && other[i] != *wr && (i == 0 || other[1] != other[0]))
                        close(other[i]);
        return true;
}

static pid_t fork_child(void)
{
        fflush(NULL);
        return fork();
}

/* ---- throughput ------------------------------------------------------------ */

static double throughput(enum transport t, size_t wsize, uint64_t total)
{
        struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        struct chan c;
        if (sh == MAP_FAILED || chan_make(t, &c) < 0)
                return -1;
        pid_t w = fork_child();
        if (w == 0) {
                int rd, wr;
                if (!child_fds(t, &c, true, &rd, &wr))
                        _exit(1);
                static uint8_t buf[READ_CHUNK];
                memset(buf, 0x5a, sizeof(buf));
                sh->t_start = now_s();
                for (uint64_t sent = 0; sent < total; sent += wsize)
                        if (!write_all(t, wr, buf, wsize))
                                _exit(2);
                if (is_vb(t)) {
                        /* Wait for the reader's goodbye, so that closing
                         * does not race the last bytes. */
                        shutdown(wr, SHUT_WR);
                        char x;
                        while (xread(t, rd, &x, 1) > 0)
                                ;
                }
                _exit(0);
        }
        pid_t r = fork_child();
        if (r == 0) {
                int rd, wr;
                if (!child_fds(t, &c, false, &rd, &wr))
                        _exit(1);
                static uint8_t buf[READ_CHUNK];
                uint64_t got = 0;
                while (got < total) {
                        size_t want = total - got < READ_CHUNK ? (size_t)(total - got) : READ_CHUNK;
                        ssize_t n = xread(t, rd, buf, want);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0) {
                                fprintf(stderr, "bench-vbpipe: %s reader: %s after %llu bytes\n", tname[t],
                                        n ? strerror(errno) : "end of file", (unsigned long long)got);
                                break;
                        }
                        got += (uint64_t)n;
                }
                sh->t_end = now_s();
                sh->got = got;
                _exit(got == total ? 0 : 3);
        }
        chan_close(&c);
        int s1 = pvt_wait(w, WAIT_MS), s2 = pvt_wait(r, WAIT_MS);
        double mbs = -1;
        if (s1 == 0 && s2 == 0 && sh->t_end > sh->t_start)
                mbs = (double)total / (sh->t_end - sh->t_start) / 1e6;
        else
                fprintf(stderr, "bench-vbpipe: %s %zu B writes failed (writer %d, reader %d, %llu bytes)\n", tname[t],
                        wsize, s1, s2, (unsigned long long)sh->got);
        munmap(sh, 4096);
        return mbs;
}

/* ---- round trip ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static bool round_trip(enum transport t, int rounds, double *median, double *p99)
{
        int warm = rounds / 10 + 100;
        size_t len = sizeof(struct shared) + sizeof(double) * (size_t)rounds;
        struct shared *sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        struct chan c;
        if (sh == MAP_FAILED || chan_make(t, &c) < 0)
                return false;
        pid_t a = fork_child();
        if (a == 0) {
                int rd, wr;
                if (!child_fds(t, &c, true, &rd, &wr))
                        _exit(1);
                char x = 'p';
                for (int i = 0; i < warm + rounds; i++) {
                        double t0 = now_s();
                        ssize_t w = xwrite(t, wr, &x, 1), r = w == 1 ? xread(t, rd, &x, 1) : 0;
                        if (w != 1 || r != 1) {
                                fprintf(stderr, "bench-vbpipe: %s ping %d: write %zd, read %zd (%s)\n", tname[t], i, w, r,
                                        strerror(errno));
                                _exit(2);
                        }
                        if (i >= warm)
                                sh->rtt_us[i - warm] = (now_s() - t0) * 1e6;
                }
                if (is_vb(t)) {
                        shutdown(wr, SHUT_WR);
                        while (xread(t, rd, &x, 1) > 0)
                                ;
                }
                _exit(0);
        }
        pid_t b = fork_child();
        if (b == 0) {
                int rd, wr;
                if (!child_fds(t, &c, false, &rd, &wr))
                        _exit(1);
                char x;
                for (;;) {
                        ssize_t n = xread(t, rd, &x, 1);
                        if (n <= 0)
                                break;
                        ssize_t w = xwrite(t, wr, &x, 1);
                        if (w != 1) {
                                fprintf(stderr, "bench-vbpipe: %s pong: write %zd (%s)\n", tname[t], w, strerror(errno));
                                _exit(2);
                        }
                }
                _exit(0);
        }
        chan_close(&c);
        int s1 = pvt_wait(a, WAIT_MS), s2 = pvt_wait(b, WAIT_MS);
        bool ok = s1 == 0 && s2 == 0;
        if (ok) {
                qsort(sh->rtt_us, (size_t)rounds, sizeof(double), cmp_double);
                *median = sh->rtt_us[rounds / 2];
                *p99 = sh->rtt_us[(size_t)rounds * 99 / 100];
        } else {
                fprintf(stderr, "bench-vbpipe: %s round trip failed (%d, %d)\n", tname[t], s1, s2);
        }
        munmap(sh, len);
        return ok;
}

/* ---- platform --------------------------------------------------------------- */

/* Defaults for running from the build tree: <build>/bench/bench-vbpipe. */
static void default_env(void)
{
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return;
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (!slash)
                return;
        *slash = 0;
        char path[PATH_MAX + 32];
        if (!getenv("PVD_BIN")) {
                snprintf(path, sizeof(path), "%s/../daemon/pvd", exe);
                setenv("PVD_BIN", path, 1);
        }
        if (!getenv("PV_CONF_DIR")) {
                snprintf(path, sizeof(path), "%s/../conf", exe);
                setenv("PV_CONF_DIR", path, 1);
        }
}

static bool platform_up(void)
{
        default_env();
        if (pvt_platform_init(&plat, "test-2clients") < 0) {
                fprintf(stderr, "bench-vbpipe: no platform %s/test-2clients.dtb\n", getenv("PV_CONF_DIR"));
                return false;
        }
        have_plat = true;
        const char *quiet[] = { "--log-level", "warning", NULL };
        if (pvt_pvd_start(&plat, "vm2", quiet) < 0 || pvt_pvd_start(&plat, "vm4", quiet) < 0 ||
            pvt_wait_vlink(&plat, "vm2", "vm2-vm4-vbpipe0", "ON", 10000) < 0) {
                fprintf(stderr, "bench-vbpipe: the pvds of vm2 and vm4 did not start (%s)\n", plat.dir);
                return false;
        }
        return true;
}

#define ROUNDS_MAX 16
#define NSIZES 3

static const size_t wsizes[NSIZES] = { 65536, 4096, 64 };

/* Per round of every case: throughput, then round trip median and p99. */
struct results {
        double mbs[NSIZES][T_COUNT][ROUNDS_MAX];
        double med[T_COUNT][ROUNDS_MAX], p99[T_COUNT][ROUNDS_MAX];
        int nr;
        bool failed;
};

static struct bench_stat stat_of(const double *v, int n)
{
        return bench_stat_of(v, n);
}

static void add_targets(const struct results *r)
{
        struct bench_stat m[NSIZES][T_COUNT], med[T_COUNT], p99[T_COUNT];
        for (int t = 0; t < T_COUNT; t++) {
                for (int s = 0; s < NSIZES; s++)
                        m[s][t] = stat_of(r->mbs[s][t], r->nr);
                med[t] = stat_of(r->med[t], r->nr);
                p99[t] = stat_of(r->p99[t], r->nr);
        }
        bench_target("vbpipe direct, 64 KiB writes", m[0][T_VBPIPE].med, "pipe(2), 64 KiB writes", m[0][T_PIPE].med,
                     "MB/s", true, 0.5);
        bench_target("vbpipe direct, 4 KiB writes", m[1][T_VBPIPE].med, "pipe(2), 4 KiB writes", m[1][T_PIPE].med,
                     "MB/s", true, 1);
        bench_target("vbpipe direct, 64 B writes", m[2][T_VBPIPE].med, "pipe(2), 64 B writes", m[2][T_PIPE].med,
                     "MB/s", true, 1);
        bench_target("vbpipe through pvd, 4 KiB writes", m[1][T_VBPIPE_FD].med, "pipe(2), 4 KiB writes",
                     m[1][T_PIPE].med, "MB/s", true, 0.5);
        bench_target("vbpipe direct round trip, median", med[T_VBPIPE].med, "pipe(2) round trip, median",
                     med[T_PIPE].med, "us", false, 3);
        bench_target("vbpipe direct round trip, p99", p99[T_VBPIPE].med, "pipe(2) round trip, p99", p99[T_PIPE].med,
                     "us", false, 2);
}

static void print_json(const struct results *r, uint64_t mib, int rounds)
{
        printf("{\"bench\": \"vbpipe\", \"mib\": %llu, \"rounds\": %d, \"throughput_mb_s\": {", (unsigned long long)mib,
               rounds);
        for (int s = 0; s < NSIZES; s++) {
                printf("%s\"%zu\": {", s ? ", " : "", wsizes[s]);
                for (int t = 0; t < T_COUNT; t++) {
                        struct bench_stat st = stat_of(r->mbs[s][t], r->nr);
                        printf("%s\"%s\": {\"median\": %.1f, \"lowest\": %.1f, \"highest\": %.1f}", t ? ", " : "",
                               tname[t], st.med, st.lo, st.hi);
                }
                printf("}");
        }
        printf("}, \"round_trip_us\": {");
        for (int t = 0; t < T_COUNT; t++) {
                struct bench_stat md = stat_of(r->med[t], r->nr), pp = stat_of(r->p99[t], r->nr);
                printf("%s\"%s\": {\"median\": %.2f, \"p99\": %.2f, \"p99_lowest\": %.2f, \"p99_highest\": %.2f}",
                       t ? ", " : "", tname[t], md.med, pp.med, pp.lo, pp.hi);
        }
        printf("}, ");
        bench_json_targets();
        printf("}\n");
}

static void print_table(const struct results *r, uint64_t mib, int rounds, int nrt)
{
        char sp[24];
        printf("vbpipe between vm2 and vm4 (two pvds, 256 KiB rings) vs pipe(2) and a UNIX socketpair\n");
        printf("vbpipe: O_DIRECT, vbpipeRead/vbpipeWrite (as under pvrun); vbpipe-fd: read/write through pvd\n\n");
        printf("%-20s %10s %10s %10s %10s %8s %8s %8s %11s\n", "throughput (MB/s)", "vbpipe", "vbpipe-fd", "pipe(2)",
               "socketpair", "vs pipe", "vs sock", "fd/pipe", "spread");
        for (int s = 0; s < NSIZES; s++) {
                struct bench_stat st[T_COUNT];
                for (int t = 0; t < T_COUNT; t++)
                        st[t] = stat_of(r->mbs[s][t], r->nr);
                char label[32];
                snprintf(label, sizeof(label), "%zu B writes", wsizes[s]);
                printf("%-20s %10.1f %10.1f %10.1f %10.1f %7.2fx %7.2fx %7.2fx %11s\n", label, st[T_VBPIPE].med,
                       st[T_VBPIPE_FD].med, st[T_PIPE].med, st[T_SOCKET].med, st[T_VBPIPE].med / st[T_PIPE].med,
                       st[T_VBPIPE].med / st[T_SOCKET].med, st[T_VBPIPE_FD].med / st[T_PIPE].med,
                       bench_spread(st[T_VBPIPE], sp, sizeof(sp)));
        }
        struct bench_stat md[T_COUNT], pp[T_COUNT];
        for (int t = 0; t < T_COUNT; t++) {
                md[t] = stat_of(r->med[t], r->nr);
                pp[t] = stat_of(r->p99[t], r->nr);
        }
        printf("\n%-20s %10s %10s %10s %10s %8s %8s %8s %11s\n", "round trip 1 B (us)", "vbpipe", "vbpipe-fd",
               "pipe(2)", "socketpair", "vs pipe", "vs sock", "fd/pipe", "spread");
        printf("%-20s %10.1f %10.1f %10.1f %10.1f %7.2fx %7.2fx %7.2fx %11s\n", "median", md[T_VBPIPE].med,
               md[T_VBPIPE_FD].med, md[T_PIPE].med, md[T_SOCKET].med, md[T_VBPIPE].med / md[T_PIPE].med,
               md[T_VBPIPE].med / md[T_SOCKET].med, md[T_VBPIPE_FD].med / md[T_PIPE].med,
               bench_spread(md[T_VBPIPE], sp, sizeof(sp)));
        printf("%-20s %10.1f %10.1f %10.1f %10.1f %7.2fx %7.2fx %7.2fx %11s\n", "p99", pp[T_VBPIPE].med,
               pp[T_VBPIPE_FD].med, pp[T_PIPE].med, pp[T_SOCKET].med, pp[T_VBPIPE].med / pp[T_PIPE].med,
               pp[T_VBPIPE].med / pp[T_SOCKET].med, pp[T_VBPIPE_FD].med / pp[T_PIPE].med,
               bench_spread(pp[T_VBPIPE], sp, sizeof(sp)));
        printf("\n(medians of %d rounds, spread = the vbpipe column's lowest and highest round; %llu MiB per 64 KiB\n"
               " run, %d round trips per round)\n", rounds, (unsigned long long)mib, nrt);
        bench_print_targets();
}

int main(int argc, char **argv)
{
        uint64_t mib = 64;
        int nrt = 20000, rounds = 3;
        bool json = false;
        const char *sessions = NULL;
        double scale_secs = 1;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--mib") && i + 1 < argc)
                        mib = strtoull(argv[++i], NULL, 0);
                else if (!strcmp(argv[i], "--round-trips") && i + 1 < argc)
                        nrt = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
                        rounds = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--json"))
                        json = true;
                else if (!strcmp(argv[i], "--sessions") && i + 1 < argc)
                        sessions = argv[++i];
                else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
                        scale_secs = strtod(argv[++i], NULL);
                else {
                        fprintf(stderr, "usage: bench-vbpipe [--mib N] [--round-trips N] [--rounds N] [--json]\n"
                                        "       bench-vbpipe --sessions N,... [--seconds S] [--json]\n"
                                        "  --mib N          MiB per 64 KiB-write run (default 64; 4 KiB writes carry\n"
                                        "                   half, 64 B writes a sixteenth)\n"
                                        "  --round-trips N  1-byte round trips per round (default 20000)\n"
                                        "  --rounds N       rounds of every case, 1 to %d (default 3); figures are medians\n"
                                        "  --sessions N,... scaling instead: N pipes at once (e.g. 1,16,256), S seconds each,\n"
                                        "                   --rounds rounds of every point\n",
                                ROUNDS_MAX);
                        return 2;
                }
        }
        if (mib < 1 || nrt < 100 || rounds < 1 || rounds > ROUNDS_MAX) {
                fprintf(stderr, "bench-vbpipe: --mib >= 1, --round-trips >= 100, --rounds 1 to %d\n", ROUNDS_MAX);
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        if (sessions) {
                default_env();
                if (!(scale_secs > 0 && scale_secs <= 600)) {
                        fprintf(stderr, "bench-vbpipe: --seconds wants a number in (0, 600]\n");
                        return 2;
                }
                return vbpipe_scale(sessions, scale_secs, rounds, json);
        }
        int status = 0;
        static struct results r;
        if (!platform_up()) {
                status = 1;
                goto out;
        }
        for (int k = 0; k < rounds && !r.failed; k++) {
                for (int s = 0; s < NSIZES; s++) {
                        /* Small writes cost per call: fewer bytes keep the run short. */
                        uint64_t total = (mib << 20) / (wsizes[s] == 64 ? 16 : wsizes[s] == 4096 ? 2 : 1);
                        total -= total % wsizes[s];
                        for (int t = 0; t < T_COUNT; t++) {
                                r.mbs[s][t][k] = throughput((enum transport)t, wsizes[s], total);
                                r.failed |= r.mbs[s][t][k] < 0;
                        }
                }
                for (int t = 0; t < T_COUNT; t++)
                        r.failed |= !round_trip((enum transport)t, nrt, &r.med[t][k], &r.p99[t][k]);
                r.nr = k + 1;
        }
        if (r.failed) {
                status = 1;
                goto out;
        }
        add_targets(&r);
        if (json)
                print_json(&r, mib, rounds);
        else
                print_table(&r, mib, rounds, nrt);
out:
        if (have_plat)
                pvt_platform_fini(&plat);
        return status;
}
