/* Messages per second between two processes over a vlink message ring
 * (proto/pv-ring.h, eventfd xIRQs, the full sleep/wake protocol), beside
 * its limit and its peers measured in the same run:
 *   - the limit: a minimal shared-memory SPSC ring (the same records, ring
 *     size and placement, each side caching the other's index, spinning
 *     when full or empty; no checks, no notification, never sleeps);
 *   - pipe(2) and a SOCK_SEQPACKET socketpair.
 *
 *   bench-ring [--seconds N] [--rounds N] [--json]
 *
 * Each case runs --rounds times (interleaved with the others, so that a
 * neighbour's burst on a shared machine moves one round of each, not one
 * case); the figure is the median, the spread the lowest and highest round.
 * The producer is the parent, the consumer a child; nothing is pinned. The
 * vlink ring's sides spin up to SPIN_US before they sleep, as the
 * libraries' waits do (the consumer notifies once per batch it drains); the
 * producer notifies after every message, or after every 32. Both
 * processes run on one kernel (pv_ring_set_one_kernel), so a side that
 * sleeps rarely, as the consumer of a stream, calls membarrier(2) before
 * its sleeps and the other side's notify checks skip their fence
 * (pv-atomic.h), as in VRPQ and pvd's vlinks on one kernel. The "2 kernels"
 * rows keep full fences, as between VMs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
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
#include "pv-ring.h"
#include "pv-vlink.h"

#define RING_SIZE       PV_CTL_RING_SIZE        /* the size of a vlink's control ring */
#define RING_MASK       (RING_SIZE - 1)
#define TAG_DATA        1u
#define TAG_STOP        2u
#define WAIT_MS         10000                   /* a peer silent this long has failed */
#define CHECK_EVERY     256                     /* messages between two looks at the clock */
#define SPIN_NS         50000                   /* the libraries' default spin */
#define RECV_BATCH      32                      /* consumer: messages between two notify checks */
#define ROUNDS_MAX      64

enum transport { T_MIN, T_RING, T_PIPE, T_SEQPACKET };

struct bench_case {
        const char *name;
        enum transport t;
        uint32_t size;
        uint32_t batch;         /* ring: messages per notification check */
        bool two_kernels;       /* ring: full fences, as between VMs (pv-atomic.h) */
        /* results, per round */
        double rate[ROUNDS_MAX], xirq[ROUNDS_MAX];
        int nr;
        bool failed;
        struct bench_stat s;
        double xirq_per_msg;
};

/* Shared with the child: the ring and what the consumer saw. */
struct shared {
        struct pv_ring_hdr hdr;
        uint64_t count;
        double t_end;
        uint64_t xirq_sent;
        int failed;
        _Alignas(4096) uint8_t data[RING_SIZE];
};

static void kick(int fd)
{
        uint64_t one = 1;
        if (write(fd, &one, sizeof(one)) != sizeof(one))
                return;         /* cannot overflow at these rates */
}

/* Sleeps until the peer's xIRQ; false after WAIT_MS without one. */
static bool wait_irq(int fd)
{
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int n;
        do
                n = poll(&pfd, 1, WAIT_MS);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
                return false;
        uint64_t v;
        return read(fd, &v, sizeof(v)) == sizeof(v);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
}

/* ---- the limit: a minimal SPSC ring -------------------------------------------- */

/* Spins until the peer's index differs from `was` (or, for the producer,
 * leaves `room` bytes); -1 after WAIT_MS. */
static int min_wait(const uint32_t *idx, uint32_t *seen, bool prod_side, uint32_t mine, uint32_t room)
{
        double deadline = 0;
        for (unsigned i = 1;; i++) {
                *seen = ring_load_acquire(idx);
                if (prod_side ? RING_SIZE - (mine - *seen) >= room : *seen != mine)
                        return 0;
                cpu_relax();
                /* Let the other side run if it shares our CPU. */
                if ((i & 1023) == 0) {
                        double t = bench_now();
                        if (!deadline)
                                deadline = t + WAIT_MS / 1000.0;
                        else if (t > deadline)
                                return -1;
                        sched_yield();
                }
        }
}

static int min_consume(struct shared *sh)
{
        uint8_t buf[1024];
        uint32_t cons = 0, prod = 0;
        uint64_t count = 0;
        for (;;) {
                if (cons == prod && min_wait(&sh->hdr.prod, &prod, false, cons, 0) < 0)
                        return -1;
                uint32_t pos = cons & RING_MASK;
                uint32_t l = *(const uint32_t *)(sh->data + pos), t = *(const uint32_t *)(sh->data + pos + 4);
                if (l == PV_RING_PAD) {
                        cons += RING_SIZE - pos;
                        ring_store_release(&sh->hdr.cons, cons);
                        continue;
                }
                memcpy(buf, sh->data + pos + 8, l);
                cons += 8 + pv_ring_align8(l);
                ring_store_release(&sh->hdr.cons, cons);
                if (t == TAG_STOP)
                        break;
                count++;
        }
        sh->t_end = bench_now();
        sh->count = count;
        return 0;
}

struct min_prod {
        uint32_t prod, seen;
};

static int min_send(struct shared *sh, struct min_prod *m, uint32_t tag, const uint8_t *buf, uint32_t len)
{
        uint32_t need = 8 + pv_ring_align8(len), pos = m->prod & RING_MASK, tail = RING_SIZE - pos;
        if (tail < need) {
                if (RING_SIZE - (m->prod - m->seen) < tail &&
                    min_wait(&sh->hdr.cons, &m->seen, true, m->prod, tail) < 0)
                        return -1;
                *(uint32_t *)(sh->data + pos) = PV_RING_PAD;
                m->prod += tail;
                ring_store_release(&sh->hdr.prod, m->prod);
                pos = 0;
        }
        if (RING_SIZE - (m->prod - m->seen) < need && min_wait(&sh->hdr.cons, &m->seen, true, m->prod, need) < 0)
                return -1;
        *(uint32_t *)(sh->data + pos) = len;
        *(uint32_t *)(sh->data + pos + 4) = tag;
        memcpy(sh->data + pos + 8, buf, len);
        m->prod += need;
        ring_store_release(&sh->hdr.prod, m->prod);
        return 0;
}

static int min_produce(struct shared *sh, uint32_t size, double until)
{
        uint8_t buf[1024];
        struct min_prod m = { 0, 0 };
        memset(buf, 0x5a, sizeof(buf));
        for (uint64_t n = 0;; n++) {
                if (n % CHECK_EVERY == 0 && bench_now() >= until)
                        break;
                if (min_send(sh, &m, TAG_DATA, buf, size) < 0)
                        return -1;
        }
        return min_send(sh, &m, TAG_STOP, buf, 0);
}

/* ---- the vlink ring ------------------------------------------------------------------ */

struct ring_end {
        struct pv_ring r;
        int irq_data;   /* producer -> consumer */
        int irq_room;   /* consumer -> producer */
};

/* Polls ready(r, arg) up to SPIN_NS: true once it holds. */
static bool spin(bool (*ready)(struct pv_ring *, uint32_t), struct pv_ring *r, uint32_t arg)
{
        double t0 = 0;
        for (unsigned i = 1;; i++) {
                if (ready(r, arg))
                        return true;
                cpu_relax();
                if ((i & 63) == 0) {
                        double t = bench_now();
                        if (!t0)
                                t0 = t;
                        else if (t - t0 >= SPIN_NS / 1e9)
                                return false;
                }
        }
}

static bool ready_data(struct pv_ring *r, uint32_t unused)
{
        return pv_ring_cons_pending(r);
}

static bool ready_room(struct pv_ring *r, uint32_t need)
{
        int64_t room = pv_ring_prod_free(r);
        return room < 0 || room >= (int64_t)need;  /* an error: the next send says it */
}

static int ring_consume(struct shared *sh, struct ring_end *e)
{
        uint8_t buf[1024];
        uint32_t tag = 0, len;
        uint64_t count = 0;

        for (;;) {
                int rc = 0;
                for (uint32_t i = 0; i < RECV_BATCH; i++) {
                        rc = pv_ring_recv(&e->r, &tag, buf, sizeof(buf), &len);
                        if (rc < 0 || tag == TAG_STOP)
                                break;
                        count++;
                }
                /* Before sleeping too: room we freed may be what the
                 * producer sleeps for. */
                if (pv_ring_cons_notify(&e->r))
                        kick(e->irq_room);
                if (rc == 0 && tag == TAG_STOP)
                        break;
                if (rc == -EAGAIN) {
                        if (!spin(ready_data, &e->r, 0) && pv_ring_cons_prepare_sleep(&e->r) &&
                            !wait_irq(e->irq_data))
                                return -1;
                } else if (rc < 0) {
                        return -1;
                }
        }
        sh->t_end = bench_now();
        sh->count = count;
        sh->xirq_sent = e->r.stats.xirq_sent;
        return 0;
}

static int ring_send1(struct ring_end *e, uint32_t tag, const uint8_t *buf, uint32_t size)
{
        for (;;) {
                int rc = pv_ring_send(&e->r, tag, buf, size);
                if (rc != -EAGAIN)
                        return rc;
                /* Full: announce what we sent so far, then wait for room. */
                if (pv_ring_prod_notify(&e->r))
                        kick(e->irq_data);
                uint32_t need = pv_ring_room_for(&e->r, size);
                if (!spin(ready_room, &e->r, need) && pv_ring_prod_prepare_sleep(&e->r, need) &&
                    !wait_irq(e->irq_room))
                        return -ETIMEDOUT;
        }
}

static int ring_produce(struct ring_end *e, uint32_t size, uint32_t batch, double until)
{
        uint8_t buf[1024];
        memset(buf, 0x5a, sizeof(buf));

        for (uint64_t n = 0;; n += batch) {
                if (n % CHECK_EVERY < batch && bench_now() >= until)
                        break;
                for (uint32_t i = 0; i < batch; i++)
                        if (ring_send1(e, TAG_DATA, buf, size) < 0)
                                return -1;
                if (pv_ring_prod_notify(&e->r))
                        kick(e->irq_data);
        }
        if (ring_send1(e, TAG_STOP, buf, 0) < 0)
                return -1;
        if (pv_ring_prod_notify(&e->r))
                kick(e->irq_data);
        return 0;
}

/* ---- pipe and SEQPACKET ------------------------------------------------------- */

/* Pipe: the reader drains whatever is there, as a byte-stream reader would;
 * messages are bytes / size. SEQPACKET: one recv per message. EOF ends. */
static int fd_consume(struct shared *sh, int fd, enum transport t, uint32_t size)
{
        static uint8_t buf[65536];
        uint64_t bytes = 0, count = 0;
        for (;;) {
                ssize_t n = t == T_PIPE ? read(fd, buf, sizeof(buf)) : recv(fd, buf, size, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                if (n == 0)
                        break;
                bytes += (uint64_t)n;
                count++;
        }
        sh->t_end = bench_now();
        sh->count = t == T_PIPE ? bytes / size : count;
        return 0;
}

static int fd_produce(int fd, enum transport t, uint32_t size, double until)
{
        uint8_t buf[1024];
        memset(buf, 0x5a, sizeof(buf));
        for (uint64_t n = 0;; n++) {
                if (n % CHECK_EVERY == 0 && bench_now() >= until)
                        return 0;
                ssize_t w = t == T_PIPE ? write(fd, buf, size) : send(fd, buf, size, 0);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w != (ssize_t)size)
                        return -1;
        }
}

/* ---- one round of one case ------------------------------------------------------ */

static void run_case(struct bench_case *c, double seconds)
{
        struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int fds[2] = { -1, -1 }, ready[2] = { -1, -1 };
        struct ring_end e = { .irq_data = -1, .irq_room = -1 };
        pid_t child = -1;
        int rc = -1;
        bool ok = false;

        if (sh == MAP_FAILED) {
                sh = NULL;
                goto out;
        }
        if (pipe2(ready, O_CLOEXEC) < 0)
                goto out;
        if (c->t == T_RING) {
                e.irq_data = eventfd(0, EFD_CLOEXEC);
                e.irq_room = eventfd(0, EFD_CLOEXEC);
                if (e.irq_data < 0 || e.irq_room < 0 || pv_ring_init(&e.r, &sh->hdr, sh->data, RING_SIZE, true) < 0)
                        goto out;
        } else if (c->t == T_PIPE ? pipe2(fds, O_CLOEXEC) < 0
                   : c->t == T_SEQPACKET ? socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0 : false) {
                goto out;
        }

        fflush(NULL);
        pid_t parent = getpid();
        child = fork();
        if (child < 0)
                goto out;
        if (child == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                close(ready[0]);
                if (fds[1] >= 0)
                        close(fds[1]);
                /* Each process registers for the membarrier(2) of the
                 * other's sleeps (pv-atomic.h). */
                if (c->t == T_RING)
                        pv_ring_set_one_kernel(&e.r, !c->two_kernels);
                if (write(ready[1], "r", 1) != 1)
                        _exit(1);
                int crc = c->t == T_RING ? ring_consume(sh, &e)
                        : c->t == T_MIN ? min_consume(sh)
                        : fd_consume(sh, fds[0], c->t, c->size);
                sh->failed = crc < 0;
                _exit(crc < 0 ? 1 : 0);
        }

        /* Start the clock once the consumer runs, not at fork. */
        char r;
        close(ready[1]);
        ready[1] = -1;
        if (read(ready[0], &r, 1) != 1)
                goto out;
        if (c->t == T_RING)
                pv_ring_set_one_kernel(&e.r, !c->two_kernels);
        double t0 = bench_now();
        if (c->t == T_RING) {
                rc = ring_produce(&e, c->size, c->batch, t0 + seconds);
        } else if (c->t == T_MIN) {
                rc = min_produce(sh, c->size, t0 + seconds);
        } else {
                close(fds[0]);
                fds[0] = -1;
                rc = fd_produce(fds[1], c->t, c->size, t0 + seconds);
                close(fds[1]);          /* EOF: the consumer stops */
                fds[1] = -1;
        }

        int st;
        if (rc < 0)
                kill(child, SIGKILL);
        if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || sh->failed)
                rc = -1;
        child = -1;
        if (rc == 0 && sh->count) {
                double rate = (double)sh->count / (sh->t_end - t0);
                c->xirq[c->nr] = c->t == T_RING
                        ? (double)(e.r.stats.xirq_sent + sh->xirq_sent) / (double)sh->count : 0;
                c->rate[c->nr++] = rate;
                ok = true;
        }
out:
        if (child > 0) {
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
        }
        if (!ok) {
                c->failed = true;
                fprintf(stderr, "bench-ring: %s failed%s%s\n", c->name, errno ? ": " : "", errno ? strerror(errno) : "");
        }
        for (int i = 0; i < 2; i++) {
                if (fds[i] >= 0)
                        close(fds[i]);
                if (ready[i] >= 0)
                        close(ready[i]);
        }
        if (e.irq_data >= 0)
                close(e.irq_data);
        if (e.irq_room >= 0)
                close(e.irq_room);
        if (sh)
                munmap(sh, sizeof(*sh));
}

/* ---- report ---------------------------------------------------------------------- */

static const struct bench_case *find(const struct bench_case *cs, size_t n, enum transport t, uint32_t size)
{
        for (size_t i = 0; i < n; i++)
                if (cs[i].t == t && cs[i].size == size && !cs[i].failed)
                        return &cs[i];
        return NULL;
}

static double ratio(const struct bench_case *c, const struct bench_case *base)
{
        return base && !c->failed ? c->s.med / base->s.med : 0;
}

static void print_table(const struct bench_case *cs, size_t n, double seconds, int rounds)
{
        printf("%-34s %12s %11s %9s %9s %8s %8s %11s\n", "test", "msgs/s", "spread", "MB/s", "xIRQ/msg", "x limit",
               "x pipe", "x seqpacket");
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cs[i];
                if (c->failed) {
                        printf("%-34s %12s\n", c->name, "failed");
                        continue;
                }
                char xirq[16] = "-", sp[24];
                if (c->t == T_RING)
                        snprintf(xirq, sizeof(xirq), "%.4f", c->xirq_per_msg);
                printf("%-34s %12.0f %11s %9.1f %9s %7.2fx %7.2fx %10.2fx\n", c->name, c->s.med,
                       bench_spread(c->s, sp, sizeof(sp)), c->s.med * c->size / 1e6, xirq,
                       ratio(c, find(cs, n, T_MIN, c->size)), ratio(c, find(cs, n, T_PIPE, c->size)),
                       ratio(c, find(cs, n, T_SEQPACKET, c->size)));
        }
        printf("(median of %d rounds of %g s per case, spread = lowest and highest round; producer and consumer\n"
               " in two processes; limit = a minimal SPSC ring, same records and placement; pipe reader drains\n"
               " up to 64 KiB per read)\n", rounds, seconds);
}

static void print_json(const struct bench_case *cs, size_t n, double seconds, int rounds)
{
        printf("{\"bench\": \"ring\", \"seconds\": %g, \"rounds\": %d, \"results\": [", seconds, rounds);
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cs[i];
                printf("%s\n  {\"test\": \"%s\", \"size\": %u, \"ok\": %s", i ? "," : "", c->name, c->size,
                       c->failed ? "false" : "true");
                if (!c->failed) {
                        printf(", \"msgs_per_s\": %.0f, \"lowest\": %.0f, \"highest\": %.0f, \"mb_per_s\": %.2f, "
                               "\"vs_limit\": %.3f, \"vs_pipe\": %.3f, \"vs_seqpacket\": %.3f",
                               c->s.med, c->s.lo, c->s.hi, c->s.med * c->size / 1e6,
                               ratio(c, find(cs, n, T_MIN, c->size)), ratio(c, find(cs, n, T_PIPE, c->size)),
                               ratio(c, find(cs, n, T_SEQPACKET, c->size)));
                        if (c->t == T_RING)
                                printf(", \"xirq_per_msg\": %.6f", c->xirq_per_msg);
                }
                printf("}");
        }
        printf("\n], ");
        bench_json_targets();
        printf("}\n");
}

static void usage(FILE *f)
{
        fprintf(f, "usage: bench-ring [--seconds N] [--rounds N] [--json]\n"
                   "  --seconds N  run each case N seconds per round (default 0.5)\n"
                   "  --rounds N   rounds of every case, 1 to %d (default 5); figures are medians\n"
                   "  --json       print the results as JSON\n", ROUNDS_MAX);
}

int main(int argc, char **argv)
{
        double seconds = 0.5;
        int rounds = 5;
        bool json = false;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
                        char *end;
                        seconds = strtod(argv[++i], &end);
                        if (*end || !(seconds > 0 && seconds <= 3600)) {
                                fprintf(stderr, "bench-ring: --seconds %s: want a number of seconds in (0, 3600]\n",
                                        argv[i]);
                                return 2;
                        }
                } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
                        rounds = atoi(argv[++i]);
                        if (rounds < 1 || rounds > ROUNDS_MAX) {
                                fprintf(stderr, "bench-ring: --rounds wants 1 to %d\n", ROUNDS_MAX);
                                return 2;
                        }
                } else if (strcmp(argv[i], "--json") == 0) {
                        json = true;
                } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                } else {
                        usage(stderr);
                        return 2;
                }
        }

        struct bench_case cases[] = {
                { .name = "limit: minimal ring 16 B", .t = T_MIN, .size = 16 },
                { .name = "ring 16 B, notify/msg", .t = T_RING, .size = 16, .batch = 1 },
                { .name = "ring 16 B, notify/32 msgs", .t = T_RING, .size = 16, .batch = 32 },
                { .name = "ring 16 B, notify/msg, 2 kernels", .t = T_RING, .size = 16, .batch = 1,
                  .two_kernels = true },
                { .name = "pipe(2) 16 B", .t = T_PIPE, .size = 16 },
                { .name = "SEQPACKET 16 B", .t = T_SEQPACKET, .size = 16 },
                { .name = "limit: minimal ring 1 KiB", .t = T_MIN, .size = 1024 },
                { .name = "ring 1 KiB, notify/msg", .t = T_RING, .size = 1024, .batch = 1 },
                { .name = "ring 1 KiB, notify/32 msgs", .t = T_RING, .size = 1024, .batch = 32 },
                { .name = "ring 1 KiB, notify/msg, 2 kernels", .t = T_RING, .size = 1024, .batch = 1,
                  .two_kernels = true },
                { .name = "pipe(2) 1 KiB", .t = T_PIPE, .size = 1024 },
                { .name = "SEQPACKET 1 KiB", .t = T_SEQPACKET, .size = 1024 },
        };
        size_t n = sizeof(cases) / sizeof(cases[0]);
        int failed = 0;

        for (int r = 0; r < rounds; r++)
                for (size_t i = 0; i < n; i++) {
                        errno = 0;
                        if (!cases[i].failed)
                                run_case(&cases[i], seconds);
                }
        for (size_t i = 0; i < n; i++) {
                struct bench_case *c = &cases[i];
                failed |= c->failed;
                if (c->failed)
                        continue;
                c->s = bench_stat_of(c->rate, c->nr);
                double x[ROUNDS_MAX];
                memcpy(x, c->xirq, sizeof(double) * (size_t)c->nr);
                c->xirq_per_msg = bench_stat_of(x, c->nr).med;
        }

        const struct bench_case *min16 = find(cases, n, T_MIN, 16), *pipe1k = find(cases, n, T_PIPE, 1024);
        const struct bench_case *r16 = find(cases, n, T_RING, 16), *r16b = &cases[2], *r1k = find(cases, n, T_RING, 1024);
        bench_target("ring 16 B, notify/msg", r16 ? r16->s.med : 0, "minimal SPSC ring 16 B",
                     min16 ? min16->s.med : 0, "msg/s", true, 0.5);
        bench_target("ring 16 B, notify/32 msgs", r16b->failed ? 0 : r16b->s.med, "minimal SPSC ring 16 B",
                     min16 ? min16->s.med : 0, "msg/s", true, 0.5);
        bench_target("ring 1 KiB, notify/msg", r1k ? r1k->s.med : 0, "pipe(2) 1 KiB", pipe1k ? pipe1k->s.med : 0,
                     "msg/s", true, 2.0);
        if (json) {
                print_json(cases, n, seconds, rounds);
        } else {
                print_table(cases, n, seconds, rounds);
                bench_print_targets();
        }
        return failed;
}
