/* VRPQ figures between two "VMs" of a temporary demo platform (real pvd
 * processes): asynchronous requests per second (a notify per request, and
 * per batch of 32) and the synchronous call round trip (median, p99), each
 * beside peers measured in the same run between two processes: a UNIX
 * SOCK_SEQPACKET socket (one-way messages per second, request/response
 * round trip) and an eventfd ping-pong (the floor of a blocking wake-up).
 *
 *   bench-vrpq [--seconds N] [--json]
 *
 * Targets: synchronous round trip within 1.3x the eventfd ping-pong,
 * asynchronous requests at least 10x the socket's messages per second.
 * Requests carry the seed's 4-byte int. Nothing is pinned; the machine may
 * be shared, so these are figures, not pass/fail tests. */
#include <errno.h>
#include <poll.h>
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
#include <time.h>
#include <unistd.h>

#include "pv/vrpq.h"
#include "pvtest.h"

#define LAT_MAX   (1u << 22)    /* round trips kept for percentiles */
#define PROC_INT  VRPQ_PROC_ID(2, 2)
#define PROC_ECHO VRPQ_PROC_ID(2, 3)

enum kind { K_ASYNC, K_SYNC, K_SEQ_STREAM, K_SEQ_RR, K_EVENTFD };

struct bench_case {
        const char *name;
        enum kind kind;
        unsigned batch;         /* async: requests per notify */
        bool nospin;            /* sync: PVCLIENT_VRPQ_SPIN_US=0 */
        /* results */
        bool ok;
        double per_s;           /* requests (or messages, or round trips) per second */
        double med_us, p99_us;  /* round trips */
        double xirq_per_req;
};

/* Shared with the children. */
struct shared {
        volatile int go;
        double t0, t1;
        uint64_t count;
        int failed;
        char err[256];
        uint32_t nlat;
        float lat_us[LAT_MAX];
};

static struct shared *sh;
static double seconds = 1;

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
        uint64_t n = 0;
        if ((diag = vrpqSessionAccept("vrpq-srv-vogl0", NULL, NULL, &s)) ||
            (diag = vrpqChanAccept(s, NULL, NULL, &c)) || (diag = vrpqShmMap(s, &shm)))
                return child_fail("server setup", diag);
        while ((diag = vrpqReceive(c, reqs, 32, &avail)) == 0) {
                if (n == 0)
                        sh->t0 = now_s();
                for (int i = 0; i < avail; i++) {
                        const void *in = vrpqParamInGet(reqs[i], shm);
                        if (in && reqs[i]->procId == PROC_ECHO) {
                                VRPQ_PARAM_WRITE(vrpqParamOutGet(reqs[i], shm), 0, nku32_f,
                                                 VRPQ_PARAM_READ(in, 0, nku32_f));
                                vrpqReply(c, reqs[i]);
                        }
                }
                n += (unsigned)avail;
                sh->t1 = now_s();
        }
        sh->count = n;
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return diag == -ECONNRESET ? 0 : child_fail("vrpqReceive", diag);
}

static int vrpq_client(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *in, *out;
        int diag;
        if ((diag = vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s)) || (diag = vrpqChanCreate(s, NULL, 0, &c)))
                return child_fail("client setup", diag);
        while (!sh->go)
                usleep(1000);
        double until = now_s() + seconds;
        uint64_t n = 0;
        if (cur->kind == K_ASYNC) {
                for (;;) {
                        for (unsigned i = 0; i < cur->batch; i++) {
                                if ((diag = vrpqParamAlloc(c, 4, 0, &in)))
                                        return child_fail("vrpqParamAlloc", diag);
                                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)n);
                                if ((diag = vrpqPost(c, PROC_INT, in)))
                                        return child_fail("vrpqPost", diag);
                                n++;
                        }
                        vrpqNotify(c);
                        if ((n & 1023) < cur->batch && now_s() >= until)
                                break;
                }
        } else {
                double t = now_s();
                while (t < until) {
                        if ((diag = vrpqParamAlloc(c, 4, 4, &in)))
                                return child_fail("vrpqParamAlloc", diag);
                        VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)n);
                        if ((diag = vrpqCall(c, PROC_ECHO, in, &out)))
                                return child_fail("vrpqCall", diag);
                        if (VRPQ_PARAM_READ(out, 0, nku32_f) != (nku32_f)n)
                                return child_fail("vrpqCall: wrong answer", -EPROTO);
                        double t2 = now_s();
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

static void run_vrpq(struct pvt_platform *p, struct bench_case *c)
{
        cur = c;
        if (c->nospin)
                setenv("PVCLIENT_VRPQ_SPIN_US", "0", 1);
        pid_t srv = pvt_spawn(p, "vm2", vrpq_server, NULL);
        usleep(100000);
        pid_t clt = pvt_spawn(p, "vm3", vrpq_client, NULL);
        unsetenv("PVCLIENT_VRPQ_SPIN_US");
        usleep(100000);
        sh->go = 1;
        int a = pvt_wait(clt, (int)(seconds * 1000) + 20000);
        int b = pvt_wait(srv, 20000);
        c->ok = a == 0 && b == 0 && !sh->failed && sh->count;
        if (!c->ok)
                return;
        c->per_s = c->kind == K_ASYNC ? (double)sh->count / (sh->t1 - sh->t0) : (double)sh->count / seconds;
}

/* ---- peers -------------------------------------------------------------------------- */

static int peer_child(int fd, enum kind k)
{
        char buf[64];
        uint64_t v;
        for (;;) {
                if (k == K_EVENTFD) {
                        struct pollfd pf = { .fd = fd, .events = POLLIN };
                        if (poll(&pf, 1, 5000) <= 0 || read(fd, &v, 8) != 8)
                                return 1;
                        if (v == 1000000)
                                return 0;
                        continue;
                }
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

static void run_peer(struct bench_case *c)
{
        int fds[2] = { -1, -1 }, ping = -1, pong = -1;
        if (c->kind == K_EVENTFD) {
                ping = eventfd(0, EFD_CLOEXEC);
                pong = eventfd(0, EFD_CLOEXEC);
        } else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) {
                return;
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
        double t0 = now_s(), until = t0 + seconds, t = t0;
        sh->nlat = 0;
        if (c->kind == K_SEQ_STREAM) {
                for (;; n++) {
                        if ((n & 255) == 0 && now_s() >= until)
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
                        double t2 = now_s();
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
        double t1 = now_s();
        c->ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && n > 0;
        c->per_s = (double)n / (t1 - t0);
        if (fds[1] >= 0)
                close(fds[1]);
        if (ping >= 0)
                close(ping);
        if (pong >= 0)
                close(pong);
}

/* ---- report ------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
        float x = *(const float *)a, y = *(const float *)b;
        return (x > y) - (x < y);
}

static void percentiles(struct bench_case *c)
{
        if (!sh->nlat)
                return;
        qsort(sh->lat_us, sh->nlat, sizeof(float), cmp_float);
        c->med_us = sh->lat_us[sh->nlat / 2];
        c->p99_us = sh->lat_us[(uint64_t)sh->nlat * 99 / 100];
}

static const struct bench_case *find(const struct bench_case *cs, size_t n, enum kind k)
{
        for (size_t i = 0; i < n; i++)
                if (cs[i].kind == k && cs[i].ok)
                        return &cs[i];
        return NULL;
}

int main(int argc, char **argv)
{
        bool json = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
                        seconds = strtod(argv[++i], NULL);
                        if (!(seconds > 0 && seconds <= 600)) {
                                fprintf(stderr, "bench-vrpq: --seconds wants a number in (0, 600]\n");
                                return 2;
                        }
                } else if (strcmp(argv[i], "--json") == 0) {
                        json = true;
                } else {
                        fprintf(stderr, "usage: bench-vrpq [--seconds N] [--json]\n");
                        return strcmp(argv[i], "--help") ? 2 : 0;
                }
        }
        if (!getenv("PVD_BIN"))
                setenv("PVD_BIN", PVD_BIN_DEFAULT, 1);
        if (!getenv("PV_CONF_DIR"))
                setenv("PV_CONF_DIR", PV_CONF_DIR_DEFAULT, 1);
        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 1;

        struct bench_case cases[] = {
                { .name = "vrpq async, notify/request", .kind = K_ASYNC, .batch = 1 },
                { .name = "vrpq async, notify/32 requests", .kind = K_ASYNC, .batch = 32 },
                { .name = "SEQPACKET one-way 16 B", .kind = K_SEQ_STREAM },
                { .name = "vrpq sync call", .kind = K_SYNC },
                { .name = "vrpq sync call, no spinning", .kind = K_SYNC, .nospin = true },
                { .name = "SEQPACKET request/response", .kind = K_SEQ_RR },
                { .name = "eventfd ping-pong", .kind = K_EVENTFD },
        };
        size_t n = sizeof(cases) / sizeof(cases[0]);

        struct pvt_platform plat;
        if (pvt_platform_init(&plat, "demo") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0) {
                fprintf(stderr, "bench-vrpq: cannot start the demo platform (PVD_BIN=%s, PV_CONF_DIR=%s)\n",
                        getenv("PVD_BIN"), getenv("PV_CONF_DIR"));
                pvt_platform_fini(&plat);
                return 1;
        }
        int failed = 0;
        for (size_t i = 0; i < n; i++) {
                struct bench_case *c = &cases[i];
                memset(sh, 0, offsetof(struct shared, lat_us));
                if (c->kind == K_ASYNC || c->kind == K_SYNC)
                        run_vrpq(&plat, c);
                else
                        run_peer(c);
                if (c->ok)
                        percentiles(c);
                else
                        fprintf(stderr, "bench-vrpq: %s failed%s%s\n", c->name, sh->err[0] ? ": " : "", sh->err);
                failed |= !c->ok;
        }
        pvt_platform_fini(&plat);

        const struct bench_case *stream = find(cases, n, K_SEQ_STREAM), *rr = find(cases, n, K_SEQ_RR),
                                *efd = find(cases, n, K_EVENTFD);
        if (json)
                printf("{\"seconds\": %g, \"results\": [", seconds);
        else
                printf("%-32s %12s %10s %10s %12s %12s\n", "test", "per second", "median us", "p99 us",
                       "x seqpacket", "x eventfd");
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cases[i];
                double x_sock = 0, x_efd = 0;
                if (c->ok && c->kind == K_ASYNC && stream)
                        x_sock = c->per_s / stream->per_s;
                if (c->ok && c->med_us && rr && c->kind != K_SEQ_STREAM)
                        x_sock = c->med_us / rr->med_us;
                if (c->ok && c->med_us && efd)
                        x_efd = c->med_us / efd->med_us;
                if (json) {
                        printf("%s\n  {\"test\": \"%s\", \"ok\": %s, \"per_s\": %.0f, \"median_us\": %.2f, "
                               "\"p99_us\": %.2f, \"vs_seqpacket\": %.3f, \"vs_eventfd\": %.3f}",
                               i ? "," : "", c->name, c->ok ? "true" : "false", c->per_s, c->med_us, c->p99_us,
                               x_sock, x_efd);
                        continue;
                }
                if (!c->ok) {
                        printf("%-32s %12s\n", c->name, "failed");
                        continue;
                }
                char med[16] = "-", p99[16] = "-", xs[16] = "-", xe[16] = "-";
                if (c->med_us) {
                        snprintf(med, sizeof(med), "%.2f", c->med_us);
                        snprintf(p99, sizeof(p99), "%.2f", c->p99_us);
                }
                if (x_sock)
                        snprintf(xs, sizeof(xs), x_sock < 0.1 ? "%.3fx" : "%.2fx", x_sock);
                if (x_efd)
                        snprintf(xe, sizeof(xe), x_efd < 0.1 ? "%.3fx" : "%.2fx", x_efd);
                printf("%-32s %12.0f %10s %10s %12s %12s\n", c->name, c->per_s, med, p99, xs, xe);
        }
        if (json) {
                printf("\n]}\n");
        } else {
                printf("(%g s per case. Async: requests/s received by the server, x = / SEQPACKET one-way "
                       "messages/s, target >= 10x.\n Round trips: x = median / the peer's median; sync call "
                       "target <= 1.3x the eventfd ping-pong.)\n", seconds);
        }
        return failed;
}
