/* Messages per second between two processes over a vlink message ring
 * (proto/pv-ring.h, eventfd xIRQs, the full sleep/wake protocol), beside
 * pipe(2) and a SOCK_SEQPACKET socketpair measured in the same run.
 *
 *   bench-ring [--seconds N] [--json]
 *
 * The producer is the parent, the consumer a child; nothing is pinned. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#include <time.h>
#include <unistd.h>

#include "pv-ring.h"
#include "pv-vlink.h"

#define RING_SIZE       PV_CTL_RING_SIZE        /* the size of a vlink's control ring */
#define TAG_DATA        1u
#define TAG_STOP        2u
#define WAIT_MS         10000                   /* a peer silent this long has failed */
#define CHECK_EVERY     256                     /* messages between two looks at the clock */

enum transport { T_RING, T_PIPE, T_SEQPACKET };

struct bench_case {
        const char *name;
        enum transport t;
        uint32_t size;
        uint32_t batch;         /* ring: messages per notification check */
        /* results */
        double msgs_per_s, mb_per_s, xirq_per_msg;
        bool ok;
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

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

/* ---- ring ------------------------------------------------------------------ */

struct ring_end {
        struct pv_ring r;
        int irq_data;   /* producer -> consumer */
        int irq_room;   /* consumer -> producer */
};

static int ring_consume(struct shared *sh, struct ring_end *e, uint32_t batch)
{
        uint8_t buf[1024];
        uint32_t tag = 0, len;
        uint64_t count = 0;

        for (;;) {
                int rc = 0;
                for (uint32_t i = 0; i < batch; i++) {
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
                        if (pv_ring_cons_prepare_sleep(&e->r) && !wait_irq(e->irq_data))
                                return -1;
                } else if (rc < 0) {
                        return -1;
                }
        }
        sh->t_end = now_s();
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
                /* Full: announce what we sent so far, then sleep for room. */
                if (pv_ring_prod_notify(&e->r))
                        kick(e->irq_data);
                if (pv_ring_prod_prepare_sleep(&e->r, pv_ring_room_for(&e->r, size)) && !wait_irq(e->irq_room))
                        return -ETIMEDOUT;
        }
}

static int ring_produce(struct ring_end *e, uint32_t size, uint32_t batch, double until)
{
        uint8_t buf[1024];
        memset(buf, 0x5a, sizeof(buf));

        for (uint64_t n = 0;; n += batch) {
                if (n % CHECK_EVERY < batch && now_s() >= until)
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
        sh->t_end = now_s();
        sh->count = t == T_PIPE ? bytes / size : count;
        return 0;
}

static int fd_produce(int fd, enum transport t, uint32_t size, double until)
{
        uint8_t buf[1024];
        memset(buf, 0x5a, sizeof(buf));
        for (uint64_t n = 0;; n++) {
                if (n % CHECK_EVERY == 0 && now_s() >= until)
                        return 0;
                ssize_t w = t == T_PIPE ? write(fd, buf, size) : send(fd, buf, size, 0);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w != (ssize_t)size)
                        return -1;
        }
}

/* ---- one case ------------------------------------------------------------------ */

static void run_case(struct bench_case *c, double seconds)
{
        struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int fds[2] = { -1, -1 }, ready[2] = { -1, -1 };
        struct ring_end e = { .irq_data = -1, .irq_room = -1 };
        pid_t child = -1;
        int rc = -1;

        c->ok = false;
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
                                  : socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) {
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
                if (c->t != T_RING)
                        close(fds[1]);
                if (write(ready[1], "r", 1) != 1)
                        _exit(1);
                int crc = c->t == T_RING ? ring_consume(sh, &e, c->batch)
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
        double t0 = now_s();
        if (c->t == T_RING) {
                rc = ring_produce(&e, c->size, c->batch, t0 + seconds);
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
        if (rc == 0) {
                double dt = sh->t_end - t0;
                c->msgs_per_s = (double)sh->count / dt;
                c->mb_per_s = c->msgs_per_s * c->size / 1e6;
                c->xirq_per_msg = c->t == T_RING
                        ? (double)(e.r.stats.xirq_sent + sh->xirq_sent) / (double)sh->count : 0;
                c->ok = true;
        }
out:
        if (child > 0) {
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
        }
        if (!c->ok)
                fprintf(stderr, "bench-ring: %s failed%s%s\n", c->name, errno ? ": " : "", errno ? strerror(errno) : "");
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
                if (cs[i].t == t && cs[i].size == size && cs[i].ok)
                        return &cs[i];
        return NULL;
}

static double ratio(const struct bench_case *c, const struct bench_case *base)
{
        return base && c->ok ? c->msgs_per_s / base->msgs_per_s : 0;
}

static void print_table(const struct bench_case *cs, size_t n, double seconds)
{
        printf("%-30s %12s %9s %9s %9s %11s\n", "test", "msgs/s", "MB/s", "xIRQ/msg", "x pipe", "x seqpacket");
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cs[i];
                if (!c->ok) {
                        printf("%-30s %12s\n", c->name, "failed");
                        continue;
                }
                char xirq[16] = "-";
                if (c->t == T_RING)
                        snprintf(xirq, sizeof(xirq), "%.4f", c->xirq_per_msg);
                printf("%-30s %12.0f %9.1f %9s %8.2fx %10.2fx\n", c->name, c->msgs_per_s, c->mb_per_s, xirq,
                       ratio(c, find(cs, n, T_PIPE, c->size)), ratio(c, find(cs, n, T_SEQPACKET, c->size)));
        }
        printf("(%g s per case; producer and consumer in two processes; pipe reader drains up to 64 KiB per read)\n",
               seconds);
}

static void print_json(const struct bench_case *cs, size_t n, double seconds)
{
        printf("{\"seconds\": %g, \"results\": [", seconds);
        for (size_t i = 0; i < n; i++) {
                const struct bench_case *c = &cs[i];
                printf("%s\n  {\"test\": \"%s\", \"size\": %u, \"ok\": %s", i ? "," : "", c->name, c->size,
                       c->ok ? "true" : "false");
                if (c->ok) {
                        printf(", \"msgs_per_s\": %.0f, \"mb_per_s\": %.2f, \"vs_pipe\": %.3f, \"vs_seqpacket\": %.3f",
                               c->msgs_per_s, c->mb_per_s, ratio(c, find(cs, n, T_PIPE, c->size)),
                               ratio(c, find(cs, n, T_SEQPACKET, c->size)));
                        if (c->t == T_RING)
                                printf(", \"xirq_per_msg\": %.6f", c->xirq_per_msg);
                }
                printf("}");
        }
        printf("\n]}\n");
}

static void usage(FILE *f)
{
        fprintf(f, "usage: bench-ring [--seconds N] [--json]\n"
                   "  --seconds N  run each case N seconds (default 1)\n"
                   "  --json       print the results as JSON\n");
}

int main(int argc, char **argv)
{
        double seconds = 1;
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
                { .name = "ring 16 B, notify/msg", .t = T_RING, .size = 16, .batch = 1 },
                { .name = "ring 16 B, notify/32 msgs", .t = T_RING, .size = 16, .batch = 32 },
                { .name = "pipe(2) 16 B", .t = T_PIPE, .size = 16 },
                { .name = "SEQPACKET 16 B", .t = T_SEQPACKET, .size = 16 },
                { .name = "ring 1 KiB, notify/msg", .t = T_RING, .size = 1024, .batch = 1 },
                { .name = "ring 1 KiB, notify/32 msgs", .t = T_RING, .size = 1024, .batch = 32 },
                { .name = "pipe(2) 1 KiB", .t = T_PIPE, .size = 1024 },
                { .name = "SEQPACKET 1 KiB", .t = T_SEQPACKET, .size = 1024 },
        };
        size_t n = sizeof(cases) / sizeof(cases[0]);
        int failed = 0;

        for (size_t i = 0; i < n; i++) {
                errno = 0;
                run_case(&cases[i], seconds);
                failed |= !cases[i].ok;
        }
        if (json)
                print_json(cases, n, seconds);
        else
                print_table(cases, n, seconds);
        return failed;
}
