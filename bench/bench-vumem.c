/* VUMEM figures across two VMs of the emulated platform, beside local peers
 * measured in the same run:
 *   - round trip: vumemBufferAlloc + Map + Unmap + Free of a 64 KiB buffer
 *     by a program in vm3, served by a program in vm2 that carves buffers
 *     from a pool (median and p99), beside memfd_create + ftruncate + mmap +
 *     munmap + close of the same size in one process; the same round trip
 *     with the session's lane turned off (PVCLIENT_VUMEM_LANE=0: every
 *     allocation through both pvds) shows what the lane saves;
 *   - bandwidth: the client writes a 64 MiB mapped buffer (memcpy from its
 *     own memory), then the server program reads it (sums it), beside the
 *     same memcpy and read within one process.
 *
 *   bench-vumem [--iterations N] [--json]
 *
 * It starts its own pvds for vm2 and vm3 of the demo platform in a
 * temporary directory (PVD_BIN and PV_DEMO_DTB override the build's). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"
#include "pv/vumem-server.h"
#include "pv/vumem.h"

#define SMALL (64u << 10)
#define BIG   (64u << 20)
#define POOL  (BIG + (16u << 20))

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
        qsort(v, (size_t)n, sizeof(*v), cmp_double);
        int i = (int)(p * (n - 1) + 0.5);
        return v[i];
}

static uint64_t sum_u64(const void *p, size_t n)
{
        const volatile uint64_t *q = p;
        uint64_t s = 0;
        for (size_t i = 0; i < n / 8; i++)
                s += q[i];
        return s;
}

/* ---- the platform ------------------------------------------------------------ */

static char dir[64];
static pid_t pvd_pid[2];

static void stop_all(void)
{
        for (int i = 0; i < 2; i++)
                if (pvd_pid[i] > 0) {
                        kill(pvd_pid[i], SIGTERM);
                        waitpid(pvd_pid[i], NULL, 0);
                        pvd_pid[i] = 0;
                }
        if (dir[0]) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "bench-vumem: could not remove %s\n", dir);
        }
}

static int start_pvds(void)
{
        const char *bin = getenv("PVD_BIN") ? getenv("PVD_BIN") : PVD_BIN_DEFAULT;
        const char *dtb = getenv("PV_DEMO_DTB") ? getenv("PV_DEMO_DTB") : DEMO_DTB_DEFAULT;
        snprintf(dir, sizeof(dir), "/tmp/bench-vumem-XXXXXX");
        if (!mkdtemp(dir))
                return -errno;
        const char *vms[2] = { "vm2", "vm3" };
        for (int i = 0; i < 2; i++) {
                char rt[128], plat[128];
                snprintf(rt, sizeof(rt), "%s/%s", dir, vms[i]);
                snprintf(plat, sizeof(plat), "%s/platform", dir);
                pid_t pid = fork();
                if (pid == 0) {
                        int fd = open("/dev/null", O_WRONLY);
                        dup2(fd, 2);
                        execl(bin, bin, "--config", dtb, "--vm", vms[i], "--runtime-dir", rt, "--platform-dir", plat,
                              "--log-level", "error", (char *)NULL);
                        _exit(127);
                }
                pvd_pid[i] = pid;
        }
        return 0;
}

static void use_vm(const char *vm)
{
        char rt[128];
        snprintf(rt, sizeof(rt), "%s/%s", dir, vm);
        setenv("PVD_RUNTIME_DIR", rt, 1);
}

/* ---- the server program (vm2) ---------------------------------------------------- */

/* Commands from the bench to the server, outside VUMEM: read the big buffer. */
static int ctl_to_srv[2], ctl_from_srv[2];

static int server(void)
{
        use_vm("vm2");
        VumemServer *srv;
        int rc = -1;
        for (int i = 0; i < 100 && rc; i++) {
                rc = vumemServerCreate("vumem-srv-vogl0", &srv);
                if (rc)
                        usleep(50 * 1000);
        }
        if (rc) {
                fprintf(stderr, "bench-vumem: server: %s\n", pvLastError());
                return 1;
        }
        uint8_t *pool;
        if (vumemServerMemAlloc(srv, POOL, (void **)&pool)) {
                fprintf(stderr, "bench-vumem: server: %s\n", pvLastError());
                return 1;
        }
        /* Small buffers rotate over the first 16 MiB; the big one follows. */
        size_t next = 0;
        uint8_t *big = NULL;
        for (;;) {
                VumemReq req;
                VumemResp resp;
                if (vumemReceive(srv, &req))
                        break;
                resp.header = req.header;
                resp.diag = 0;
                if (req.header.cmd == VUMEM_CMD_BUFFER_ALLOC) {
                        uint32_t size;
                        memcpy(&size, req.bufferAlloc.alloc, sizeof(size));
                        if (size == BIG) {
                                big = pool + (16u << 20);
                                resp.bufferAlloc.vaddr = big;
                        } else {
                                if (next + size > (16u << 20))
                                        next = 0;
                                resp.bufferAlloc.vaddr = pool + next;
                                next += size;
                        }
                        resp.bufferAlloc.size = size;
                        resp.bufferAlloc.allocSize = 0;
                        if (vumemRespond(srv, &resp))
                                fprintf(stderr, "bench-vumem: server: %s\n", pvLastError());
                        if (size == BIG) {
                                /* Read the big buffer each time the client says so. */
                                char c;
                                while (read(ctl_to_srv[0], &c, 1) == 1 && c == 'r') {
                                        double t0 = now_s();
                                        uint64_t s = sum_u64(big, BIG);
                                        double t = now_s() - t0;
                                        if (write(ctl_from_srv[1], &t, sizeof(t)) != sizeof(t) ||
                                            write(ctl_from_srv[1], &s, sizeof(s)) != sizeof(s))
                                                break;
                                }
                        }
                }
        }
        vumemServerDestroy(srv);
        return 0;
}

/* ---- figures ---------------------------------------------------------------------- */

struct figures {
        double rt_med, rt_p99, loc_med, loc_p99, pvd_med, pvd_p99;
        double bw_mapped, bw_memcpy;
};

/* Where the time goes: each step's median, and a SEQPACKET ping-pong
 * between two processes (two hops: what one program <-> daemon exchange
 * costs on this machine at least). */
struct steps {
        double alloc, map, unmap, free, hop_rtt;
        double alloc99, map99, unmap99, free99;
};

static int round_trips(VumemSession *s, int n, double *med, double *p99, struct steps *st)
{
        double *v = calloc((size_t)n * 5, sizeof(double));
        double *va = v + n, *vm = v + 2 * n, *vu = v + 3 * n, *vf = v + 4 * n;
        uint32_t size = SMALL;
        for (int i = -n / 10; i < n; i++) {
                VumemBufferHd b;
                void *p;
                double t0 = now_s();
                int rc = vumemBufferAlloc(s, &size, sizeof(size), &b);
                double t1 = now_s();
                rc = rc ? rc : vumemBufferMap(b, &p);
                double t2 = now_s();
                rc = rc ? rc : vumemBufferUnmap(b);
                double t3 = now_s();
                rc = rc ? rc : vumemBufferFree(b);
                double t4 = now_s();
                if (rc) {
                        fprintf(stderr, "bench-vumem: %s\n", pvLastError());
                        free(v);
                        return -1;
                }
                if (i >= 0) {
                        v[i] = t4 - t0;
                        va[i] = t1 - t0;
                        vm[i] = t2 - t1;
                        vu[i] = t3 - t2;
                        vf[i] = t4 - t3;
                }
        }
        *med = pct(v, n, 0.5);
        *p99 = pct(v, n, 0.99);
        st->alloc99 = pct(va, n, 0.99);
        st->map99 = pct(vm, n, 0.99);
        st->unmap99 = pct(vu, n, 0.99);
        st->free99 = pct(vf, n, 0.99);
        st->alloc = pct(va, n, 0.5);
        st->map = pct(vm, n, 0.5);
        st->unmap = pct(vu, n, 0.5);
        st->free = pct(vf, n, 0.5);
        free(v);
        return 0;
}

static double seqpacket_rtt(int n)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return 0;
        pid_t pid = fork();
        if (pid == 0) {
                close(sv[0]);
                char b[64];
                while (recv(sv[1], b, sizeof(b), 0) > 0)
                        if (send(sv[1], b, 16, 0) < 0)
                                break;
                _exit(0);
        }
        close(sv[1]);
        double *v = calloc((size_t)n, sizeof(double));
        char b[64] = { 0 };
        for (int i = 0; i < n; i++) {
                double t0 = now_s();
                if (send(sv[0], b, 16, 0) < 0 || recv(sv[0], b, sizeof(b), 0) < 0)
                        break;
                v[i] = now_s() - t0;
        }
        close(sv[0]);
        waitpid(pid, NULL, 0);
        double m = pct(v, n, 0.5);
        free(v);
        return m;
}

static void local_memfd(int n, double *med, double *p99)
{
        double *v = calloc((size_t)n, sizeof(double));
        for (int i = -n / 10; i < n; i++) {
                double t0 = now_s();
                int fd = memfd_create("bench", MFD_CLOEXEC);
                if (fd < 0 || ftruncate(fd, SMALL) < 0)
                        abort();
                void *p = mmap(NULL, SMALL, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p == MAP_FAILED)
                        abort();
                munmap(p, SMALL);
                close(fd);
                if (i >= 0)
                        v[i] = now_s() - t0;
        }
        *med = pct(v, n, 0.5);
        *p99 = pct(v, n, 0.99);
        free(v);
}

/* Bandwidth rounds, alternating mapped and local (the median of each: a
 * neighbour's burst on a shared machine moves one round, not the figure). */
#define BW_ROUNDS 11

static int bandwidth(VumemSession *s, struct figures *f)
{
        uint32_t size = BIG;
        VumemBufferHd b;
        uint8_t *p;
        if (vumemBufferAlloc(s, &size, sizeof(size), &b) || vumemBufferMap(b, (void **)&p)) {
                fprintf(stderr, "bench-vumem: %s\n", pvLastError());
                return -1;
        }
        uint8_t *src = malloc(BIG), *dst = malloc(BIG);
        memset(src, 0x5a, BIG);
        memset(dst, 0, BIG);
        memset(p, 0, BIG);
        double mapped[BW_ROUNDS], local[BW_ROUNDS];
        for (int r = -1; r < BW_ROUNDS; r++) {
                src[r + 1] = (uint8_t)r;
                double t0 = now_s();
                memcpy(p, src, BIG);
                vumemBufferCacheOp(b, VUMEM_CACHE_CLEAN, 0, BIG);
                double tw = now_s() - t0, tr;
                uint64_t sum, want = sum_u64(src, BIG);
                if (write(ctl_to_srv[1], "r", 1) != 1 || read(ctl_from_srv[0], &tr, sizeof(tr)) != sizeof(tr) ||
                    read(ctl_from_srv[0], &sum, sizeof(sum)) != sizeof(sum) || sum != want) {
                        fprintf(stderr, "bench-vumem: the server read something else than the client wrote\n");
                        return -1;
                }
                t0 = now_s();
                memcpy(dst, src, BIG);
                uint64_t s2 = sum_u64(dst, BIG);
                double tl = now_s() - t0;
                if (s2 != want)
                        abort();
                if (r >= 0) {
                        mapped[r] = BIG / (tw + tr) / 1e6;
                        local[r] = BIG / tl / 1e6;
                }
        }
        f->bw_mapped = pct(mapped, BW_ROUNDS, 0.5);
        f->bw_memcpy = pct(local, BW_ROUNDS, 0.5);
        free(src);
        free(dst);
        if (write(ctl_to_srv[1], "q", 1) != 1)
                return -1;
        vumemBufferUnmap(b);
        vumemBufferFree(b);
        return 0;
}

int main(int argc, char **argv)
{
        int n = 2000;
        bool json = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
                        n = atoi(argv[++i]);
                else if (strcmp(argv[i], "--json") == 0)
                        json = true;
                else {
                        fprintf(stderr, "usage: bench-vumem [--iterations N] [--json]\n");
                        return 2;
                }
        }
        if (n < 10)
                n = 10;
        if (start_pvds() < 0 || pipe(ctl_to_srv) < 0 || pipe(ctl_from_srv) < 0) {
                perror("bench-vumem");
                return 1;
        }
        fflush(NULL);
        pid_t srv = fork();
        if (srv == 0)
                _exit(server());
        use_vm("vm3");
        VumemSession *s = NULL;
        int rc = -1;
        for (int i = 0; i < 100 && rc; i++) {
                rc = vumemSessionMasterCreate("vumem-clt-vogl0", &s);
                if (rc)
                        usleep(50 * 1000);
        }
        struct figures f;
        struct steps st, st_pvd;
        int status = 1;
        if (rc) {
                fprintf(stderr, "bench-vumem: %s\n", pvLastError());
        } else if (round_trips(s, n, &f.rt_med, &f.rt_p99, &st) == 0 && bandwidth(s, &f) == 0) {
                /* The same through pvd: a session without its lane. */
                vumemSessionDestroy(s);
                setenv("PVCLIENT_VUMEM_LANE", "0", 1);
                rc = vumemSessionMasterCreate("vumem-clt-vogl0", &s);
                unsetenv("PVCLIENT_VUMEM_LANE");
                if (rc) {
                        s = NULL;
                        fprintf(stderr, "bench-vumem: %s\n", pvLastError());
                } else if (round_trips(s, n, &f.pvd_med, &f.pvd_p99, &st_pvd) == 0) {
                        local_memfd(n, &f.loc_med, &f.loc_p99);
                        st.hop_rtt = seqpacket_rtt(n);
                        status = 0;
                }
        }
        if (s)
                vumemSessionDestroy(s);
        kill(srv, SIGTERM);
        waitpid(srv, NULL, 0);
        stop_all();
        if (status)
                return status;
        double rt_ratio = f.rt_med / f.loc_med, bw_ratio = f.bw_mapped / f.bw_memcpy;
        bench_target("vumem alloc+map+unmap+free, median", f.rt_med * 1e6, "memfd+mmap in one process, median",
                     f.loc_med * 1e6, "us", false, 4);
        bench_target("vumem alloc+map+unmap+free, p99", f.rt_p99 * 1e6, "memfd+mmap in one process, p99",
                     f.loc_p99 * 1e6, "us", false, 4);
        bench_target("vumem mapped buffer write+read", f.bw_mapped, "memcpy+read in one process", f.bw_memcpy, "MB/s",
                     true, 0.9);
        if (json) {
                printf("{\"bench\": \"vumem\", \"round_trip_median_us\": %.1f, \"round_trip_p99_us\": %.1f, "
                       "\"memfd_median_us\": %.1f, "
                       "\"memfd_p99_us\": %.1f, \"round_trip_ratio\": %.2f, \"mapped_mb_s\": %.0f, "
                       "\"memcpy_mb_s\": %.0f, \"bandwidth_ratio\": %.2f, \"alloc_us\": %.1f, \"map_us\": %.1f, "
                       "\"unmap_us\": %.1f, \"free_us\": %.1f, \"seqpacket_rtt_us\": %.1f, "
                       "\"via_pvd_median_us\": %.1f, \"via_pvd_p99_us\": %.1f, \"via_pvd_alloc_us\": %.1f, ",
                       f.rt_med * 1e6, f.rt_p99 * 1e6, f.loc_med * 1e6, f.loc_p99 * 1e6, rt_ratio, f.bw_mapped,
                       f.bw_memcpy, bw_ratio, st.alloc * 1e6, st.map * 1e6, st.unmap * 1e6, st.free * 1e6,
                       st.hop_rtt * 1e6, f.pvd_med * 1e6, f.pvd_p99 * 1e6, st_pvd.alloc * 1e6);
                bench_json_targets();
                printf("}\n");
                return 0;
        }
        printf("VUMEM, vm3 -> vm2 on the emulated platform (%d round trips of %u KiB, %u MiB buffer)\n", n,
               SMALL >> 10, BIG >> 20);
        printf("%-58s %10s %10s\n", "", "median", "p99");
        printf("%-58s %8.1f us %7.1f us\n", "alloc+map+unmap+free across VMs", f.rt_med * 1e6, f.rt_p99 * 1e6);
        printf("%-58s %8.1f us %7.1f us\n", "memfd_create+ftruncate+mmap+munmap+close, one process",
               f.loc_med * 1e6, f.loc_p99 * 1e6);
        printf("%-58s %8.2f x  (target <= 4; p99 %.2f x, target <= 4)\n", "ratio", rt_ratio, f.rt_p99 / f.loc_p99);
        printf("  where the time goes (medians): alloc %.1f us (on the session's lane: the client writes the\n"
               "  request in shared memory, the polling server answers there), map %.1f us (mmap of the memory\n"
               "  object the session already holds), unmap %.1f us, free %.1f us (one message to pvd vm3, not\n"
               "  waited for); one SEQPACKET round trip between two processes takes %.1f us here\n",
               st.alloc * 1e6, st.map * 1e6, st.unmap * 1e6, st.free * 1e6, st.hop_rtt * 1e6);
        printf("  each step's p99: alloc %.1f us, map %.1f us, unmap %.1f us, free %.1f us\n", st.alloc99 * 1e6,
               st.map99 * 1e6, st.unmap99 * 1e6, st.free99 * 1e6);
        printf("%-58s %8.1f us %7.1f us\n", "same, lane off (PVCLIENT_VUMEM_LANE=0: through both pvds)",
               f.pvd_med * 1e6, f.pvd_p99 * 1e6);
        printf("  alloc through pvd %.1f us (6 hops: client, pvd vm3, pvd vm2, server, pvd vm2, pvd vm3)\n",
               st_pvd.alloc * 1e6);
        printf("%-58s %8.0f MB/s\n", "client writes the mapped buffer, server reads it", f.bw_mapped);
        printf("%-58s %8.0f MB/s\n", "memcpy + read, one process", f.bw_memcpy);
        printf("%-58s %8.2f x  (target >= 0.9)\n", "ratio", bw_ratio);
        bench_print_targets();
        return 0;
}
