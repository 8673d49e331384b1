/* bench-vrpq --sessions N[,N...]: VRPQ with N sessions at once, each with a
 * channel, between a client program in vm3 and a server program in vm2 of
 * a generated platform (one vogl vlink, vrpq-reqs=128K, vrpq-pmem=16M).
 * The client posts batches of 32 requests (4-byte parameter, a vrpqNotify
 * per batch) to its channels in turn; the server waits on every channel's
 * fd with epoll and drains the ready ones with vrpqReceiveTimeout(..., 0),
 * as an event loop would. Printed per N: the aggregate requests per second
 * (first post to the answer of a last call on every channel), and the CPU
 * time both pvds spent meanwhile, per request. Each point runs --rounds
 * times (default 3), interleaved with the others, on a platform of its
 * own; the figures are the medians. Targets: the rate at the largest N at
 * least that at 1; pvd CPU per request not growing with N. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-scale.h"
#include "bench-util.h"
#include "bench-vrpq.h"
#include "pv/vrpq.h"

#define BATCH 32

struct scale_shared {
        volatile int ready, srv_ready, go, done;
        double t0, t1;
        uint64_t posted, received;
        int failed;
        char err[256];          /* the first failure */
};

static struct scale_shared *ss;
static int nsess;
static double secs;

static int fail(const char *what, int diag)
{
        if (!__atomic_exchange_n(&ss->failed, 1, __ATOMIC_SEQ_CST))
                snprintf(ss->err, sizeof(ss->err), "%s: %s (%s)", what, pvStrError(diag), pvLastError());
        return 1;
}

static int server(void *arg)
{
        VrpqSession **s = calloc((size_t)nsess, sizeof(*s));
        VrpqChan **c = calloc((size_t)nsess, sizeof(*c));
        int ep = epoll_create1(EPOLL_CLOEXEC), diag;
        if (!s || !c || ep < 0)
                return fail("server: out of memory", -ENOMEM);
        for (int i = 0; i < nsess; i++) {
                int fd;
                if ((diag = vrpqSessionAccept("vrpq-srv-vogl0", NULL, NULL, &s[i])) ||
                    (diag = vrpqChanAccept(s[i], NULL, NULL, &c[i])) || (diag = vrpqChanFdGet(c[i], &fd)))
                        return fail("server setup", diag);
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                        return fail("server: epoll_ctl", -errno);
        }
        ss->srv_ready = 1;
        uint64_t got = 0;
        int open = nsess;
        VrpqReq *reqs[32];
        struct epoll_event evs[64];
        /* A first look at every channel arms its notification. */
        int n = nsess;
        for (bool first = true; open > 0; first = false) {
                if (!first && (n = epoll_wait(ep, evs, 64, 30000)) <= 0)
                        return fail("server: epoll_wait", n < 0 ? -errno : -ETIMEDOUT);
                for (int k = 0; k < n; k++) {
                        uint32_t idx = first ? (uint32_t)k : evs[k].data.u32;
                        VrpqChan *ch = c[idx];
                        if (!ch)
                                continue;
                        int avail;
                        while ((diag = vrpqReceiveTimeout(ch, reqs, 32, &avail, 0)) == 0) {
                                for (int j = 0; j < avail; j++) {
                                        void *out = vrpqParamOutGet(reqs[j], NULL);
                                        if (out) {
                                                VRPQ_PARAM_WRITE(out, 0, nku32_f, 1);
                                                vrpqReply(ch, reqs[j]);
                                        }
                                }
                                got += (unsigned)avail;
                        }
                        if (diag == -ETIMEDOUT)
                                continue;
                        if (diag != -ECONNRESET)
                                return fail("server: vrpqReceiveTimeout", diag);
                        vrpqChanDestroy(ch);
                        vrpqSessionDestroy(s[idx]);
                        c[idx] = NULL;
                        open--;
                }
        }
        ss->received = got;
        close(ep);
        free(s);
        free(c);
        return 0;
}

static int client(void *arg)
{
        VrpqSession **s = calloc((size_t)nsess, sizeof(*s));
        VrpqChan **c = calloc((size_t)nsess, sizeof(*c));
        int diag;
        void *in, *out;
        if (!s || !c)
                return fail("client: out of memory", -ENOMEM);
        for (int i = 0; i < nsess; i++)
                if ((diag = vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s[i])) ||
                    (diag = vrpqChanCreate(s[i], NULL, 0, &c[i])))
                        return fail("client setup", diag);
        ss->ready = 1;
        while (!ss->go)
                usleep(1000);
        uint64_t n = 0;
        double t0 = bench_now(), until = t0 + secs;
        for (unsigned round = 0;; round++) {
                for (int i = 0; i < nsess; i++) {
                        for (int b = 0; b < BATCH; b++, n++) {
                                if ((diag = vrpqParamAlloc(c[i], 4, 0, &in)))
                                        return fail("vrpqParamAlloc", diag);
                                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)n);
                                if ((diag = vrpqPost(c[i], PROC_INT, in)))
                                        return fail("vrpqPost", diag);
                        }
                        vrpqNotify(c[i]);
                }
                if ((round & 15) == 0 && bench_now() >= until)
                        break;
        }
        /* A call on every channel: each answer comes after every request
         * posted before it was received. */
        for (int i = 0; i < nsess; i++) {
                if ((diag = vrpqParamAlloc(c[i], 4, 4, &in)))
                        return fail("vrpqParamAlloc", diag);
                if ((diag = vrpqCall(c[i], PROC_ECHO, in, &out)))
                        return fail("vrpqCall", diag);
        }
        ss->t0 = t0;
        ss->t1 = bench_now();
        ss->posted = n;
        ss->done = 1;
        for (int i = 0; i < nsess; i++) {
                vrpqChanDestroy(c[i]);
                vrpqSessionDestroy(s[i]);
        }
        free(s);
        free(c);
        return 0;
}

static void run_point(struct bench_scale_point *pt)
{
        struct pvt_platform plat;
        pt->ok = false;
        nsess = pt->n;
        memset(ss, 0, sizeof(*ss));
        if (bench_plat_start(&plat, "\t\t\tvogl_be: vogl@be { compatible = \"vogl\"; info = \"vumem-pdev=4K\", "
                                    "\"vrpq-reqs=128K\", \"vrpq-pmem=16M\"; server; };\n",
                             "\t\t\tvogl@fe { peer-phandle = <&vogl_be>; client; };\n", 1) < 0)
                goto out;
        pid_t srv = pvt_spawn(&plat, "vm2", server, NULL);
        pid_t clt = pvt_spawn(&plat, "vm3", client, NULL);
        /* Every session set up on both sides before the clock starts:
         * pvd's CPU from then on is what the requests cost it. */
        for (int t = 0; t < 3000 && !(ss->ready && ss->srv_ready) && !ss->failed; t++)
                usleep(10000);
        usleep(100000);
        long long cpu0 = bench_pvd_cpu_ns(&plat);
        ss->go = 1;
        /* pvd's CPU up to the last answer: not the sessions' teardown. */
        for (long long end = pvt_now_ms() + (long long)(secs * 1000) + 60000;
             !ss->done && !ss->failed && pvt_now_ms() < end;)
                usleep(1000);
        long long cpu1 = bench_pvd_cpu_ns(&plat);
        int a = pvt_wait(clt, 60000);
        int b = pvt_wait(srv, 30000);
        if (a != 0 || b != 0 || ss->failed || !ss->posted || ss->received != ss->posted + (uint64_t)pt->n) {
                fprintf(stderr, "bench-vrpq: %d sessions failed%s%s (client %d, server %d, %llu posted, %llu "
                        "received)\n", pt->n, ss->err[0] ? ": " : "", ss->err, a, b,
                        (unsigned long long)ss->posted, (unsigned long long)ss->received);
                goto out;
        }
        pt->rate = (double)ss->posted / (ss->t1 - ss->t0);
        pt->pvd_ns = cpu0 >= 0 && cpu1 >= cpu0 ? (double)(cpu1 - cpu0) / (double)ss->posted : -1;
        pt->ok = true;
out:
        pvt_platform_fini(&plat);
}

int vrpq_scale(const char *list, double seconds, int rounds, bool json)
{
        ss = mmap(NULL, sizeof(*ss), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ss == MAP_FAILED)
                return 1;
        secs = seconds;
        struct bench_scale_point pts[BENCH_SCALE_POINTS];
        const struct bench_scale_point *one, *big;
        int k = bench_scale_run("bench-vrpq", list, VRPQ_SCALE_MAX, rounds, run_point, pts, &one, &big);
        if (k < 0) {
                munmap(ss, sizeof(*ss));
                return 2;
        }
        int failed = 0;
        for (int i = 0; i < k; i++)
                failed |= !pts[i].ok;
        if (one && big) {
                char fig[64];
                snprintf(fig, sizeof(fig), "vrpq %d sessions, requests/s", big->n);
                bench_target(fig, big->rate, "vrpq 1 session, requests/s", one->rate, "req/s", true, 1);
                snprintf(fig, sizeof(fig), "vrpq %d sessions, pvd CPU/request", big->n);
                /* "Not growing": within 1.5x (the noise of a shared machine
                 * on a small figure) of the 1-session figure, or of 1 ns
                 * when that is less: pvd is not on VRPQ's data path. */
                bench_target(fig, big->pvd_ns > 0 ? big->pvd_ns : 1e-3,
                             "max(1 session, 1 ns), pvd CPU/request",
                             one->pvd_ns > 1 ? one->pvd_ns : 1, "ns", false, 1.5);
        }
        if (json) {
                printf("{\"bench\": \"vrpq-scale\", \"seconds\": %g, \"rounds\": %d, \"points\": [", seconds,
                       rounds);
                for (int i = 0; i < k; i++)
                        printf("%s\n  {\"sessions\": %d, \"ok\": %s, \"requests_per_s\": %.0f, "
                               "\"requests_per_s_lowest\": %.0f, \"requests_per_s_highest\": %.0f, "
                               "\"pvd_cpu_ns_per_request\": %.2f}", i ? "," : "", pts[i].n,
                               pts[i].ok ? "true" : "false", pts[i].rate, pts[i].rate_lo, pts[i].rate_hi,
                               pts[i].pvd_ns);
                printf("\n], ");
                bench_json_targets();
                printf("}\n");
        } else {
                printf("VRPQ with N sessions at once (a channel each; batches of %d, epoll server), %g s per point\n",
                       BATCH, seconds);
                printf("%10s %16s %22s %12s\n", "sessions", "requests/s", "pvd CPU ns/request", "spread");
                for (int i = 0; i < k; i++) {
                        char sp[32];
                        if (!pts[i].ok)
                                printf("%10d %16s\n", pts[i].n, "failed");
                        else
                                printf("%10d %16.0f %22.2f %12s\n", pts[i].n, pts[i].rate, pts[i].pvd_ns,
                                       bench_scale_spread(&pts[i], sp, sizeof(sp)));
                }
                printf("(medians of %d rounds, interleaved; spread = the lowest and highest round's rate)\n", rounds);
                bench_print_targets();
        }
        munmap(ss, sizeof(*ss));
        return failed;
}
