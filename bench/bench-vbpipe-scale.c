/* bench-vbpipe --sessions N[,N...]: N vbpipes at once between a writer
 * program in vm3 and a reader program in vm2 of a generated platform (N
 * vbpipe vlinks, 64 KiB rings), every byte through both pvds (plain read
 * and write: pvd's share of the work is what scales or not). The writer
 * writes bursts of up to 16 writes of 4 KiB to each end in turn
 * (non-blocking; it waits in poll when every end is full), so that each
 * pipe carries what one busy pipe does, whatever N; the reader drains the
 * ends epoll finds readable.
 * Printed per N: the aggregate writes per second and MB/s (first write to
 * the last byte read), and the CPU time both pvds spent meanwhile, per
 * write. Each point runs --rounds times (default 3), interleaved with the
 * others, on a platform of its own; the figures are the medians. Targets:
 * the rate at the largest N at least that at 1; pvd CPU per write not
 * growing with N. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench-scale.h"
#include "bench-util.h"
#include "bench-vbpipe.h"
#include "pv/vbpipe.h"

#define WSIZE 4096
#define BURST 16        /* writes to one end before the next: 64 KiB, as one busy pipe gets */
#define RSIZE 65536

struct scale_shared {
        volatile int ready_w, ready_r, go, done;
        double t0, t1;
        uint64_t written, read;
        int failed;
        char err[256];
};

static struct scale_shared *ss;
static int npipes;
static double secs;

static int fail(const char *what, int e)
{
        if (!__atomic_exchange_n(&ss->failed, 1, __ATOMIC_SEQ_CST))
                snprintf(ss->err, sizeof(ss->err), "%s: %s (%s)", what, strerror(e), pvLastError());
        return 1;
}

/* The ends of pipes 0..n-1, in order (each open is a rendezvous with the
 * other program, which opens in the same order), made non-blocking. */
static int *open_ends(void)
{
        int *fd = calloc((size_t)npipes, sizeof(int));
        for (int i = 0; fd && i < npipes; i++) {
                char name[32];
                snprintf(name, sizeof(name), "vbp%d", i);
                fd[i] = vbpipeOpen(name, O_RDWR);
                if (fd[i] < 0 || fcntl(fd[i], F_SETFL, O_NONBLOCK) < 0) {
                        fail("vbpipeOpen", errno);
                        return NULL;
                }
        }
        return fd;
}

static int reader(void *arg)
{
        int *fd = open_ends(), ep = epoll_create1(EPOLL_CLOEXEC);
        static uint8_t buf[RSIZE];
        if (!fd || ep < 0)
                return 1;
        for (int i = 0; i < npipes; i++) {
                struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) < 0)
                        return fail("epoll_ctl", errno);
        }
        ss->ready_r = 1;
        uint64_t got = 0;
        int open = npipes;
        struct epoll_event evs[64];
        while (open > 0) {
                int n = epoll_wait(ep, evs, 64, 30000);
                if (n <= 0)
                        return fail("reader: epoll_wait", n < 0 ? errno : ETIMEDOUT);
                for (int k = 0; k < n; k++) {
                        int f = fd[evs[k].data.u32];
                        ssize_t r;
                        while ((r = read(f, buf, sizeof(buf))) > 0)
                                got += (uint64_t)r;
                        if (r == 0) {
                                epoll_ctl(ep, EPOLL_CTL_DEL, f, NULL);
                                open--;
                        } else if (errno != EAGAIN && errno != EINTR) {
                                return fail("reader: read", errno);
                        }
                }
        }
        ss->t1 = bench_now();
        ss->read = got;
        ss->done = 1;
        for (int i = 0; i < npipes; i++)
                close(fd[i]);
        close(ep);
        free(fd);
        return 0;
}

static int writer(void *arg)
{
        int *fd = open_ends();
        static uint8_t buf[WSIZE];
        struct pollfd *pf = calloc((size_t)npipes, sizeof(*pf));
        if (!fd || !pf)
                return 1;
        memset(buf, 0x5a, sizeof(buf));
        ss->ready_w = 1;
        while (!ss->go)
                usleep(1000);
        uint64_t n = 0;
        double t0 = bench_now(), until = t0 + secs;
        while (bench_now() < until) {
                int moved = 0;
                for (int i = 0; i < npipes; i++) {
                        for (int b = 0; b < BURST; b++) {
                                ssize_t w = write(fd[i], buf, WSIZE);
                                if (w == WSIZE) {
                                        n++;
                                        moved++;
                                        continue;
                                }
                                if (w >= 0 || (errno != EAGAIN && errno != EINTR))
                                        return fail("writer: write", w >= 0 ? EIO : errno);
                                break;
                        }
                }
                if (moved)
                        continue;
                for (int i = 0; i < npipes; i++)
                        pf[i] = (struct pollfd){ .fd = fd[i], .events = POLLOUT };
                if (poll(pf, (nfds_t)npipes, 100) < 0 && errno != EINTR)
                        return fail("writer: poll", errno);
        }
        ss->t0 = t0;
        ss->written = n;
        /* The reader sees every end's EOF after its last byte. */
        for (int i = 0; i < npipes; i++)
                shutdown(fd[i], SHUT_WR);
        while (!ss->done && !ss->failed)
                usleep(1000);
        for (int i = 0; i < npipes; i++)
                close(fd[i]);
        free(fd);
        free(pf);
        return 0;
}

static void run_point(struct bench_scale_point *pt)
{
        struct pvt_platform plat;
        pt->ok = false;
        npipes = pt->n;
        memset(ss, 0, sizeof(*ss));
        size_t cap = (size_t)npipes * 160 + 64;
        char *be = malloc(cap), *fe = malloc(cap);
        if (!be || !fe)
                goto out;
        be[0] = fe[0] = 0;
        for (int i = 0; i < npipes; i++) {
                snprintf(be + strlen(be), cap - strlen(be),
                         "\t\t\tp%d: vbpipe@be%d { compatible = \"vbpipe\"; info = \";64K;;name=vbp%d\"; };\n", i, i, i);
                snprintf(fe + strlen(fe), cap - strlen(fe),
                         "\t\t\tvbpipe@fe%d { peer-phandle = <&p%d>; info = \";64K;;name=vbp%d\"; };\n", i, i, i);
        }
        if (bench_plat_start(&plat, be, fe, npipes) < 0)
                goto out;
        pid_t r = pvt_spawn(&plat, "vm2", reader, NULL);
        pid_t w = pvt_spawn(&plat, "vm3", writer, NULL);
        for (int t = 0; t < 6000 && !(ss->ready_r && ss->ready_w) && !ss->failed; t++)
                usleep(10000);
        long long cpu0 = bench_pvd_cpu_ns(&plat);
        ss->go = 1;
        for (long long end = pvt_now_ms() + (long long)(secs * 1000) + 60000;
             !ss->done && !ss->failed && pvt_now_ms() < end;)
                usleep(1000);
        long long cpu1 = bench_pvd_cpu_ns(&plat);
        int a = pvt_wait(w, 60000), b = pvt_wait(r, 60000);
        if (a != 0 || b != 0 || ss->failed || !ss->written || ss->read != ss->written * WSIZE) {
                fprintf(stderr, "bench-vbpipe: %d pipes failed%s%s (writer %d, reader %d, %llu writes, %llu bytes "
                        "read)\n", pt->n, ss->err[0] ? ": " : "", ss->err, a, b, (unsigned long long)ss->written,
                        (unsigned long long)ss->read);
                goto out;
        }
        double dt = ss->t1 - ss->t0;
        pt->rate = (double)ss->written / dt;
        pt->mb_per_s = (double)ss->read / dt / 1e6;
        pt->pvd_ns = cpu0 >= 0 && cpu1 >= cpu0 ? (double)(cpu1 - cpu0) / (double)ss->written : -1;
        pt->ok = true;
out:
        free(be);
        free(fe);
        pvt_platform_fini(&plat);
}

int vbpipe_scale(const char *list, double seconds, int rounds, bool json)
{
        ss = mmap(NULL, sizeof(*ss), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ss == MAP_FAILED)
                return 1;
        secs = seconds;
        struct bench_scale_point pts[BENCH_SCALE_POINTS];
        const struct bench_scale_point *one, *big;
        int k = bench_scale_run("bench-vbpipe", list, VBPIPE_SCALE_MAX, rounds, run_point, pts, &one, &big);
        if (k < 0) {
                munmap(ss, sizeof(*ss));
                return 2;
        }
        int failed = 0;
        for (int i = 0; i < k; i++)
                failed |= !pts[i].ok;
        if (one && big) {
                char fig[64];
                snprintf(fig, sizeof(fig), "vbpipe %d pipes, 4 KiB writes/s", big->n);
                bench_target(fig, big->rate, "vbpipe 1 pipe, 4 KiB writes/s", one->rate, "wr/s",
                             true, 1);
                snprintf(fig, sizeof(fig), "vbpipe %d pipes, pvd CPU/write", big->n);
                /* "Not growing": within 1.5x, the noise of a shared machine. */
                bench_target(fig, big->pvd_ns, "vbpipe 1 pipe, pvd CPU/write", one->pvd_ns, "ns",
                             false, 1.5);
        }
        if (json) {
                printf("{\"bench\": \"vbpipe-scale\", \"seconds\": %g, \"rounds\": %d, \"points\": [", seconds,
                       rounds);
                for (int i = 0; i < k; i++)
                        printf("%s\n  {\"pipes\": %d, \"ok\": %s, \"writes_per_s\": %.0f, "
                               "\"writes_per_s_lowest\": %.0f, \"writes_per_s_highest\": %.0f, \"mb_per_s\": %.1f, "
                               "\"pvd_cpu_ns_per_write\": %.1f}", i ? "," : "", pts[i].n,
                               pts[i].ok ? "true" : "false", pts[i].rate, pts[i].rate_lo, pts[i].rate_hi,
                               pts[i].mb_per_s, pts[i].pvd_ns);
                printf("\n], ");
                bench_json_targets();
                printf("}\n");
        } else {
                printf("VBPIPE with N pipes at once (4 KiB writes through both pvds, epoll reader), %g s per point\n",
                       seconds);
                printf("%10s %16s %10s %20s %12s\n", "pipes", "writes/s", "MB/s", "pvd CPU ns/write", "spread");
                for (int i = 0; i < k; i++) {
                        char sp[32];
                        if (!pts[i].ok)
                                printf("%10d %16s\n", pts[i].n, "failed");
                        else
                                printf("%10d %16.0f %10.1f %20.0f %12s\n", pts[i].n, pts[i].rate, pts[i].mb_per_s,
                                       pts[i].pvd_ns, bench_scale_spread(&pts[i], sp, sizeof(sp)));
                }
                printf("(medians of %d rounds, interleaved; spread = the lowest and highest round's rate)\n", rounds);
                bench_print_targets();
        }
        munmap(ss, sizeof(*ss));
        return failed;
}
