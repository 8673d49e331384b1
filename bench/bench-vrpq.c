/* VRPQ figures between two "VMs" of a temporary demo platform (real pvd
 * processes): asynchronous requests per second (a notify per request, and
 * per batch of 32) and the synchronous call round trip (median, p99), each
 * beside its limit and peers measured in the same run between two
 * processes:
 *   - the limit: a minimal shared-memory SPSC ring of the same 32-byte
 *     descriptors, each with its 4-byte parameter in a parallel array (each
 *     side caching the other's index, spinning when full or empty; no
 *     checks, no notification);
 *   - a UNIX SOCK_SEQPACKET socket (one-way messages per second,
 *     request/response round trip) and an eventfd ping-pong (the floor of
 *     a blocking wake-up).
 *
 *   bench-vrpq [--seconds N] [--rounds N] [--sessions N] [--json]
 *
 * Each case runs --rounds times, interleaved; figures are medians of the
 * rounds and the spread their lowest and highest. Requests carry the seed's
 * 4-byte int, which the server reads. Asynchronous rates count from the
 * first post until a last synchronous call returns (every request before it
 * was received). --sessions N measures scaling instead (bench-vrpq-scale.c).
 * Nothing is pinned; the machine may be shared, so these are figures, not
 * pass/fail tests. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-util.h"
#include "bench-vrpq.h"
#include "pv-atomic.h"
#include "pv/vrpq.h"
#include "pvtest.h"
#include "vrpq-proto.h"

#define LAT_MAX    (1u << 22)   /* round trips kept for percentiles */
#define ROUNDS_MAX 32
#define MIN_CAP    16384u       /* the demo channel's request ring: an eighth of vrpq-reqs=128K */

enum kind { K_MIN, K_ASYNC, K_SYNC, K_SEQ_STREAM, K_SEQ_RR, K_EVENTFD };

struct bench_case {
        const char *name;
        enum kind kind;
        unsigned batch;         /* async: requests per notify */
        bool nospin;            /* sync: PVCLIENT_VRPQ_SPIN_US=0 */
        /* results, per round */
        double per_s[ROUNDS_MAX], med[ROUNDS_MAX], p99[ROUNDS_MAX];
        int nr;
        bool failed;
        bool skip;              /* not asked for (--case) */
        struct bench_stat s_rate, s_med, s_p99;
};

/* Shared with the children. */
struct shared {
        volatile int go;
        double t0, t1;
        uint64_t count;
        uint64_t sum;
        int failed;
        char err[256];
        uint32_t nlat;
        float lat_us[LAT_MAX];
};

static struct shared *sh;
static double seconds = 0.5;

static int child_fail(const char *what, int diag)
{
        snprintf(sh->err, sizeof(sh->err), "%s: %s (%s)", what, pvStrError(diag), pvLastError());
        sh->failed = 1;
        return 1;
}

static void record(double dt)
{
        if (sh->nlat < LAT_MAX)
                sh->lat_us[sh->nlat++] = (float)(dt * 1e6);
}

/* ---- VRPQ -------------------------------------------------------------------------- */

static const struct bench_case *cur;

static int vrpq_server(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[32];
        void *shm;
        int avail, diag;
        uint64_t n = 0, sum = 0;
        if ((diag = vrpqSessionAccept("vrpq-srv-vogl0", NULL, NULL, &s)) ||
            (diag = vrpqChanAccept(s, NULL, NULL, &c)) || (diag = vrpqShmMap(s, &shm)))
                return child_fail("server setup", diag);
        while ((diag = vrpqReceive(c, reqs, 32, &avail)) == 0) {
                for (int i = 0; i < avail; i++) {
                        const void *in = vrpqParamInGet(reqs[i], shm);
                        if (!in)
                                continue;
                        nku32_f v = VRPQ_PARAM_READ(in, 0, nku32_f);
                        sum += v;
                        if (reqs[i]->procId == PROC_ECHO) {
                                VRPQ_PARAM_WRITE(vrpqParamOutGet(reqs[i], shm), 0, nku32_f, v);
                                vrpqReply(c, reqs[i]);
                        }
                }
                n += (unsigned)avail;
        }
        sh->sum = sum;
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return diag == -ECONNRESET ? 0 : child_fail("vrpqReceive", diag);
}

static int call_echo(VrpqChan *c, nku32_f v)
{
        void *in, *out;
        int diag;
        if ((diag = vrpqParamAlloc(c, 4, 4, &in)))
                return child_fail("vrpqParamAlloc", diag);
        VRPQ_PARAM_WRITE(in, 0, nku32_f, v);
        if ((diag = vrpqCall(c, PROC_ECHO, in, &out)))
                return child_fail("vrpqCall", diag);
        if (VRPQ_PARAM_READ(out, 0, nku32_f) != v)
                return child_fail("vrpqCall: wrong answer", -EPROTO);
        return 0;
}

static int vrpq_client(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *in;
        int diag;
        if ((diag = vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s)) || (diag = vrpqChanCreate(s, NULL, 0, &c)))
                return child_fail("client setup", diag);
        while (!sh->go)
                usleep(1000);
        uint64_t n = 0;
        if (cur->kind == K_ASYNC) {
                /* A first call: the server is awake and the clock starts
                 * with the stream, not with a wake-up. */
                if (call_echo(c, 0))
                        return 1;
                double t0 = bench_now(), until = t0 + seconds;
                const unsigned batch = cur->batch;
                for (;;) {
                        if (batch == 1) {
                                if ((diag = vrpqParamAlloc(c, 4, 0, &in)))
                                        return child_fail("vrpqParamAlloc", diag);
                                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)n);
                                if ((diag = vrpqPostAndNotify(c, PROC_INT, in)))
                                        return child_fail("vrpqPostAndNotify", diag);
                                n++;
                        } else {
                                for (unsigned i = 0; i < batch; i++, n++) {
                                        if ((diag = vrpqParamAlloc(c, 4, 0, &in)))
                                                return child_fail("vrpqParamAlloc", diag);
                                        VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)n);
                                        if ((diag = vrpqPost(c, PROC_INT, in)))
                                                return child_fail("vrpqPost", diag);
                                }
                                vrpqNotify(c);
                        }
                        if ((n & 1023) < batch && bench_now() >= until)
                                break;
                }
                if (call_echo(c, 0))
                        return 1;
                sh->t0 = t0;
                sh->t1 = bench_now();
                sh->count = n;
        } else {
                double t = bench_now(), until = t + seconds;
                while (t < until) {
                        if (call_echo(c, (nku32_f)n))
                                return 1;
                        double t2 = bench_now();
                        record(t2 - t);
                        t = t2;
                        n++;
                }
                sh->count = n;
        }
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

/* One round; the rate, or -1. */
static double run_vrpq(struct pvt_platform *p, struct bench_case *c)
{
        cur = c;
        if (c->nospin)
                setenv("PVCLIENT_VRPQ_SPIN_US", "0", 1);
        pid_t srv = pvt_spawn(p, "vm2", vrpq_server, NULL);
        usleep(50000);
        pid_t clt = pvt_spawn(p, "vm3", vrpq_client, NULL);
        unsetenv("PVCLIENT_VRPQ_SPIN_US");
        usleep(50000);
        sh->go = 1;
        int a = pvt_wait(clt, (int)(seconds * 1000) + 20000);
        int b = pvt_wait(srv, 20000);
        if (a != 0 || b != 0 || sh->failed || !sh->count)
                return -1;
        if (c->kind == K_ASYNC) {
                uint64_t n = sh->count;
                if (sh->sum != n * (n - 1) / 2)   /* every parameter arrived, once */
                        return -1;
                return (double)n / (sh->t1 - sh->t0);
        }
        return (double)sh->count / seconds;
}

/* ---- the limit: a minimal SPSC ring of descriptors ------------------------------------ */

struct min_ring {
        _Alignas(64) uint32_t prod;
        _Alignas(64) uint32_t cons;
        _Alignas(4096) struct vrpq_desc ring[MIN_CAP];
        uint64_t param[MIN_CAP];
};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
}

/* Spin until the peer's index satisfies the wait; false after 10 s. */
static bool min_wait(const uint32_t *idx, uint32_t *seen, uint32_t mine, bool prod_side)
{
        for (unsigned i = 1;; i++) {
                *seen = ring_load_acquire(idx);
                if (prod_side ? mine - *seen < MIN_CAP : *seen != mine)
                        return true;
                cpu_relax();
                /* Let the other side run if it shares our CPU. */
                if ((i & 1023) == 0) {
                        sched_yield();
                        if (i > 1024u * 1000000u)
                                return false;
                }
        }
}

static int min_consumer(struct min_ring *m)
{
        uint32_t cons = 0, prod = 0;
        uint64_t n = 0, sum = 0;
        for (;;) {
                if (cons == prod && !min_wait(&m->prod, &prod, cons, false))
                        return 1;
                const struct vrpq_desc *d = &m->ring[cons & (MIN_CAP - 1)];
                uint32_t proc = d->proc_id;
                sum += *(const uint32_t *)((const uint8_t *)m->param + d->in_off);
                cons++;
                ring_store_release(&m->cons, cons);
                if (proc == 0)
                        break;
                n++;
        }
        sh->t1 = bench_now();
        sh->count = n;
        sh->sum = sum;
        return 0;
}

static int min_post(struct min_ring *m, uint32_t *prod, uint32_t *seen, uint32_t proc, uint32_t v)
{
        if (*prod - *seen >= MIN_CAP && !min_wait(&m->cons, seen, *prod, true))
                return -1;
        uint32_t slot = *prod & (MIN_CAP - 1);
        *(uint32_t *)&m->param[slot] = v;
        struct vrpq_desc *d = &m->ring[slot];
        d->proc_id = proc;
        d->flags = 0;
        d->in_off = slot * 8;
        d->in_size = 4;
        d->out_off = 0;
        d->out_size = 0;
        d->pend = slot * 8 + 8;
        d->reserved = 0;
        ring_store_release(&m->prod, ++*prod);
        return 0;
}

static double run_min(void)
{
        struct min_ring *m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
                return -1;
        fflush(NULL);
        pid_t child = fork();
        if (child == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                _exit(min_consumer(m));
        }
        uint32_t prod = 0, seen = 0;
        uint64_t n = 0;
        double t0 = bench_now(), until = t0 + seconds;
        int rc = 0;
        for (;; n++) {
                if ((n & 1023) == 0 && bench_now() >= until)
                        break;
                if ((rc = min_post(m, &prod, &seen, PROC_INT, (uint32_t)n)) < 0)
                        break;
        }
        if (rc == 0)
                rc = min_post(m, &prod, &seen, 0, 0);
        if (rc < 0)
                kill(child, SIGKILL);
        int st = pvt_wait(child, 20000);
        munmap(m, sizeof(*m));
        if (rc < 0 || st != 0 || sh->count != n || sh->sum != n * (n - 1) / 2)
                return -1;
        return (double)n / (sh->t1 - t0);
}

/* ---- peers -------------------------------------------------------------------------- */

static int peer_child(int fd, enum kind k)
{
        char buf[64];
        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n <= 0)
                        return n == 0 ? 0 : 1;
                if (k == K_SEQ_RR && send(fd, buf, (size_t)n, 0) != n)
                        return 1;
        }
}

/* eventfd ping-pong: two eventfds, each side writes the other's and reads
 * its own with a blocking read. */
static int efd_child(int ping, int pong)
{
        uint64_t v;
        for (;;) {
                if (read(ping, &v, 8) != 8)
                        return 1;
                if (v == 2)
                        return 0;
                v = 1;
                if (write(pong, &v, 8) != 8)
                        return 1;
        }
}

static double run_peer(struct bench_case *c)
{
        int fds[2] = { -1, -1 }, ping = -1, pong = -1;
        if (c->kind == K_EVENTFD) {
                ping = eventfd(0, EFD_CLOEXEC);
                pong = eventfd(0, EFD_CLOEXEC);
        } else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) {
                return -1;
        }
        fflush(NULL);
        pid_t child = fork();
        if (child == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (c->kind == K_EVENTFD)
                        _exit(efd_child(ping, pong));
                close(fds[1]);
                _exit(peer_child(fds[0], c->kind));
        }
        if (fds[0] >= 0)
                close(fds[0]);
        char buf[16] = { 0 };
        uint64_t n = 0, v = 1;
        double t0 = bench_now(), until = t0 + seconds, t = t0;
        if (c->kind == K_SEQ_STREAM) {
                for (;; n++) {
                        if ((n & 255) == 0 && bench_now() >= until)
                                break;
                        if (send(fds[1], buf, sizeof(buf), 0) != sizeof(buf))
                                break;
                }
                shutdown(fds[1], SHUT_WR);
        } else {
                while (t < until) {
                        if (c->kind == K_EVENTFD) {
                                if (write(ping, &v, 8) != 8 || read(pong, &v, 8) != 8)
                                        break;
                        } else if (send(fds[1], buf, sizeof(buf), 0) != sizeof(buf) ||
                                   recv(fds[1], buf, sizeof(buf), 0) != sizeof(buf)) {
                                break;
                        }
                        double t2 = bench_now();
                        record(t2 - t);
                        t = t2;
                        n++;
                }
                if (c->kind == K_EVENTFD) {
                        v = 2;
                        if (write(ping, &v, 8) != 8)
                                kill(child, SIGKILL);
                } else {
                        shutdown(fds[1], SHUT_WR);
                }
        }
        int st;
        waitpid(child, &st, 0);
        double t1 = bench_now();
        if (fds[1] >= 0)
                close(fds[1]);
        if (ping >= 0)
                close(ping);
        if (pong >= 0)
                close(pong);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !n)
                return -1;
        return (double)n / (t1 - t0);
}

/* ---- report ------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
        float x = *(const float *)a, y = *(const float *)b;
        return (x > y) - (x < y);
}

static const struct bench_case *find(const struct bench_case *cs, size_t n, enum kind k, unsigned batch)
{
        for (size_t i = 0; i < n; i++)
                if (cs[i].kind == k && !cs[i].failed && (!batch || cs[i].batch == batch) && !cs[i].nospin)
                        return &cs[i];
        return NULL;
}

static void print_results(const struct bench_case *cases, size_t n, bool json, int rounds)
{
        const struct bench_case *stream = find(cases, n, K_SEQ_STREAM, 0), *rr = find(cases, n, K_SEQ_RR, 0),
                                *efd = find(cases, n, K_EVENTFD, 0), *lim = find(cases, n, K_MIN, 0);
        if (json)
                printf("{\"bench\": \"vrpq\", \"seconds\": %g, \"rounds\": %d, \"results\": [", seconds, rounds);
        else
                printf("%-32s %12s %11s %10s %10s %9s %9s %9s\n", "test", "per second", "spread", "median us",
                       "p99 us", "x limit", "x seqpkt", "x eventfd");
        bool first = true;
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cases[i];
                double x_lim = 0, x_sock = 0, x_efd = 0;
                bool lat = c->kind == K_SYNC || c->kind == K_SEQ_RR || c->kind == K_EVENTFD;
                if (!c->failed && (c->kind == K_ASYNC || c->kind == K_MIN) && lim)
                        x_lim = c->s_rate.med / lim->s_rate.med;
                if (!c->failed && (c->kind == K_ASYNC || c->kind == K_MIN) && stream)
                        x_sock = c->s_rate.med / stream->s_rate.med;
                if (!c->failed && lat && rr)
                        x_sock = c->s_med.med / rr->s_med.med;
                if (!c->failed && lat && efd)
                        x_efd = c->s_med.med / efd->s_med.med;
                if (json) {
                        if (c->skip)
                                continue;
                        printf("%s\n  {\"test\": \"%s\", \"ok\": %s, \"per_s\": %.0f, \"lowest\": %.0f, "
                               "\"highest\": %.0f, \"median_us\": %.2f, \"p99_us\": %.2f, \"vs_limit\": %.3f, "
                               "\"vs_seqpacket\": %.3f, \"vs_eventfd\": %.3f}",
                               first ? "" : ",", c->name, c->failed ? "false" : "true", c->s_rate.med, c->s_rate.lo,
                               c->s_rate.hi, c->s_med.med, c->s_p99.med, x_lim, x_sock, x_efd);
                        first = false;
                        continue;
                }
                if (c->failed) {
                        printf("%-32s %12s\n", c->name, c->skip ? "not run" : "failed");
                        continue;
                }
                char med[16] = "-", p99[16] = "-", xl[16] = "-", xs[16] = "-", xe[16] = "-", sp[24];
                if (lat) {
                        snprintf(med, sizeof(med), "%.2f", c->s_med.med);
                        snprintf(p99, sizeof(p99), "%.2f", c->s_p99.med);
                }
                if (x_lim)
                        snprintf(xl, sizeof(xl), "%.2fx", x_lim);
                if (x_sock)
                        snprintf(xs, sizeof(xs), x_sock < 0.1 ? "%.3fx" : "%.2fx", x_sock);
                if (x_efd)
                        snprintf(xe, sizeof(xe), x_efd < 0.1 ? "%.3fx" : "%.2fx", x_efd);
                printf("%-32s %12.0f %11s %10s %10s %9s %9s %9s\n", c->name, c->s_rate.med,
                       bench_spread(c->s_rate, sp, sizeof(sp)), med, p99, xl, xs, xe);
        }
        if (json) {
                printf("\n], ");
                bench_json_targets();
                printf("}\n");
                return;
        }
        printf("(median of %d rounds of %g s per case, spread = lowest and highest round. Async: requests/s\n"
               " received by the server; limit = a minimal SPSC ring of the same descriptors and parameters.\n"
               " Round trips: x = median / the peer's median.)\n", rounds, seconds);
        bench_print_targets();
}

static void add_targets(const struct bench_case *cases, size_t n)
{
        const struct bench_case *lim = find(cases, n, K_MIN, 0), *a1 = find(cases, n, K_ASYNC, 1),
                                *stream = find(cases, n, K_SEQ_STREAM, 0), *sync = find(cases, n, K_SYNC, 0),
                                *efd = find(cases, n, K_EVENTFD, 0);
#define MED(c, f) ((c) ? (c)->f.med : 0)
        bench_target("vrpq async, notify/request", MED(a1, s_rate), "minimal SPSC ring", MED(lim, s_rate),
                     "req/s", true, 0.5);
        bench_target("vrpq async, notify/request", MED(a1, s_rate), "SEQPACKET one-way", MED(stream, s_rate),
                     "req/s", true, 10);
        bench_target("vrpq sync call, median", MED(sync, s_med), "eventfd ping-pong, median", MED(efd, s_med),
                     "us", false, 1.3);
        bench_target("vrpq sync call, p99", MED(sync, s_p99), "eventfd ping-pong, p99", MED(efd, s_p99), "us",
                     false, 2);
#undef MED
}

int main(int argc, char **argv)
{
        bool json = false;
        int rounds = 5;
        bool rounds_given = false;
        const char *only = NULL, *sessions = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
                        seconds = strtod(argv[++i], NULL);
                        if (!(seconds > 0 && seconds <= 600)) {
                                fprintf(stderr, "bench-vrpq: --seconds wants a number in (0, 600]\n");
                                return 2;
                        }
                } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
                        rounds = atoi(argv[++i]);
                        rounds_given = true;
                        if (rounds < 1 || rounds > ROUNDS_MAX) {
                                fprintf(stderr, "bench-vrpq: --rounds wants 1 to %d\n", ROUNDS_MAX);
                                return 2;
                        }
                } else if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
                        only = argv[++i];
                } else if (strcmp(argv[i], "--sessions") == 0 && i + 1 < argc) {
                        sessions = argv[++i];
                } else if (strcmp(argv[i], "--json") == 0) {
                        json = true;
                } else {
                        fprintf(stderr, "usage: bench-vrpq [--seconds N] [--rounds N] [--case TEXT] [--sessions N,...] [--json]\n"
                                        "  --case TEXT  only the cases whose name contains TEXT (several: A,B)\n"
                                        "  --sessions N,...  scaling instead: N sessions at once (e.g. 1,16,256);\n"
                                        "                    --rounds rounds of every point (default 3)\n");
                        return strcmp(argv[i], "--help") ? 2 : 0;
                }
        }
        if (!getenv("PVD_BIN"))
                setenv("PVD_BIN", PVD_BIN_DEFAULT, 1);
        if (!getenv("PV_CONF_DIR"))
                setenv("PV_CONF_DIR", PV_CONF_DIR_DEFAULT, 1);
        if (sessions)
                return vrpq_scale(sessions, seconds, rounds_given ? rounds : 3, json);
        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 1;

        struct bench_case cases[] = {
                { .name = "limit: minimal SPSC ring", .kind = K_MIN },
                { .name = "vrpq async, notify/request", .kind = K_ASYNC, .batch = 1 },
                { .name = "vrpq async, notify/32 requests", .kind = K_ASYNC, .batch = 32 },
                { .name = "SEQPACKET one-way 16 B", .kind = K_SEQ_STREAM },
                { .name = "vrpq sync call", .kind = K_SYNC },
                { .name = "vrpq sync call, no spinning", .kind = K_SYNC, .nospin = true },
                { .name = "SEQPACKET request/response", .kind = K_SEQ_RR },
                { .name = "eventfd ping-pong", .kind = K_EVENTFD },
        };
        size_t n = sizeof(cases) / sizeof(cases[0]);
        for (size_t i = 0; only && i < n; i++)
                cases[i].skip = !bench_case_wanted(cases[i].name, only);

        struct pvt_platform plat;
        if (pvt_platform_init(&plat, "demo") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0) {
                fprintf(stderr, "bench-vrpq: cannot start the demo platform (PVD_BIN=%s, PV_CONF_DIR=%s)\n",
                        getenv("PVD_BIN"), getenv("PV_CONF_DIR"));
                pvt_platform_fini(&plat);
                return 1;
        }
        for (int r = 0; r < rounds; r++) {
                for (size_t i = 0; i < n; i++) {
                        struct bench_case *c = &cases[i];
                        if (c->failed || c->skip)
                                continue;
                        memset(sh, 0, offsetof(struct shared, lat_us));
                        double rate = c->kind == K_MIN ? run_min()
                                      : c->kind == K_ASYNC || c->kind == K_SYNC ? run_vrpq(&plat, c)
                                      : run_peer(c);
                        if (rate <= 0) {
                                c->failed = true;
                                fprintf(stderr, "bench-vrpq: %s failed%s%s\n", c->name, sh->err[0] ? ": " : "",
                                        sh->err);
                                continue;
                        }
                        c->per_s[c->nr] = rate;
                        if (sh->nlat) {
                                qsort(sh->lat_us, sh->nlat, sizeof(float), cmp_float);
                                c->med[c->nr] = sh->lat_us[sh->nlat / 2];
                                c->p99[c->nr] = sh->lat_us[(uint64_t)sh->nlat * 99 / 100];
                        }
                        c->nr++;
                }
        }
        pvt_platform_fini(&plat);

        int failed = 0;
        for (size_t i = 0; i < n; i++) {
                struct bench_case *c = &cases[i];
                c->failed |= c->skip;
                failed |= c->failed && !c->skip;
                if (c->failed)
                        continue;
                c->s_rate = bench_stat_of(c->per_s, c->nr);
                c->s_med = bench_stat_of(c->med, c->nr);
                c->s_p99 = bench_stat_of(c->p99, c->nr);
        }
        add_targets(cases, n);
        print_results(cases, n, json, rounds);
        return failed;
}
