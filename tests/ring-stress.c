/* Stress of the vlink rings between two processes: a message ring and a
 * byte ring each way over one memfd, eventfds as xIRQs and the full
 * sleep/notify protocol, with every message and frame checked for loss,
 * duplication, reordering and corruption.
 *
 * PV_STRESS_MSGS sets the messages carried each way (default 3000000); the
 * one-way run and the byte rings carry half as many. Exits non-zero with a sentence on
 * any error, lost wake-up, or 10 s without progress; never leaves the child
 * behind. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pv-bytering.h"
#include "pv-ring.h"

#define MSG_RING_SIZE   (16u * 1024)    /* small, so that it fills, pads and sleeps often */
#define BYTE_RING_SIZE  (8u * 1024)
#define FRAME_HDR       12u             /* seq, len, checksum */
#define FRAME_MAX       3000u
#define STALL_MS        10000
#define POLL_MS         1000
#define PAGE            4096u

enum kind { KIND_MSG, KIND_BYTES };

/* The rings' one_kernel argument: 0 (fences), 1 (one kernel, each sleeper
 * chooses), or this: one kernel, every sleep a membarrier(2). */
#define ALWAYS_BARRIER 2

/* The memfd: ring headers and each side's report on page 0, data after. */
struct report {
        uint64_t sent, recvd, bytes_sent, bytes_recvd;
        uint64_t xirq_sent, xirq_suppressed, sleeps;
};

struct shm {
        struct pv_ring_hdr hdr[2];      /* [0] parent -> child, [1] child -> parent */
        struct report report[2];        /* [0] parent, [1] child */
};

#define DATA_OFF(i, size)  (PAGE + (size_t)(i) * (size))

struct side {
        const char *name;
        enum kind kind;
        struct pv_ring tx, rx;
        int kick_tx_data;       /* we write: the peer's consumer wakes */
        int wait_tx_room;       /* we sleep on: room in tx */
        int wait_rx_data;       /* we sleep on: data in rx */
        int kick_rx_room;       /* we write: the peer's producer wakes */
        pid_t child;            /* parent only: the child, 0 once reaped */
        int peer_pidfd;         /* parent only: the child's exit, else -1 */
        uint64_t tx_total;      /* messages or frames to send */
        uint64_t rx_total;      /* ... and to receive */
        uint64_t sent, recvd, bytes_sent, bytes_recvd, sleeps;
        uint64_t rng;
        /* producer: the message or frame on its way out */
        bool have_next;
        uint32_t next_len;
        uint8_t *stage;
        uint32_t stage_len, stage_off;
        /* consumer: the buffer a message or frame is read into */
        uint8_t *rxbuf;
        uint32_t rx_have;
};

static void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(const char *who, const char *fmt, ...)
{
        va_list ap;
        fprintf(stderr, "ring-stress (%s): ", who);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * 0x2545f4914f6cdd1dull;
}

static uint32_t rnd_below(uint64_t *s, uint32_t n)
{
        return (uint32_t)(rnd(s) % n);
}

static void rnd_fill(uint64_t *s, uint8_t *p, uint32_t len)
{
        while (len >= 8) {
                uint64_t w = rnd(s);
                memcpy(p, &w, 8);
                p += 8;
                len -= 8;
        }
        if (len) {
                uint64_t w = rnd(s);
                memcpy(p, &w, len);
        }
}

/* FNV-1a over 64-bit words, with a fold after each so that a change in any
 * bit reaches the low half: fast enough to check gigabytes. Covers the
 * sequence number and length of the message as well as its n bytes at p. */
static uint32_t checksum(uint32_t seq, uint32_t len, const uint8_t *p, uint32_t n)
{
        const uint64_t prime = 0x100000001b3ull;
        uint64_t h = 0xcbf29ce484222325ull;
        h = (h ^ ((uint64_t)seq << 32 | len)) * prime;
        uint32_t i = 0;
        for (; i + 8 <= n; i += 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                h = (h ^ w) * prime;
                h ^= h >> 32;
        }
        for (; i < n; i++)
                h = (h ^ p[i]) * prime;
        return (uint32_t)(h ^ (h >> 32));
}

static void kick(int fd)
{
        uint64_t one = 1;
        /* eventfd counters do not overflow at our rates; a failed write
         * would show as a lost wake-up and fail the run */
        if (write(fd, &one, sizeof(one)) != sizeof(one))
                return;
}

static void drain(int fd)
{
        uint64_t v;
        if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                return;
}

/* ---- message rings ------------------------------------------------------- */

/* Mostly small, often up to a KiB, some to a few KiB, now and then the
 * largest message the ring takes. */
static uint32_t pick_len(uint64_t *s, uint32_t max)
{
        uint32_t r = rnd_below(s, 1000);
        if (r < 450)
                return rnd_below(s, 65);
        if (r < 800)
                return 65 + rnd_below(s, 960);
        if (r < 990)
                return 1025 + rnd_below(s, 3072);
        return max;
}

/* A message is seq in the tag, then the checksum of (seq, len, the rest)
 * and random bytes; one shorter than a checksum is the checksum's first
 * bytes, so that every message carries something to check. */
static void msg_make(struct side *s, uint32_t seq, uint8_t *p, uint32_t len)
{
        uint32_t c;
        if (len < 4) {
                c = checksum(seq, len, NULL, 0);
                memcpy(p, &c, len);
                return;
        }
        rnd_fill(&s->rng, p + 4, len - 4);
        c = checksum(seq, len, p + 4, len - 4);
        memcpy(p, &c, 4);
}

static int msg_check(struct side *s, uint32_t tag, const uint8_t *p, uint32_t len)
{
        uint32_t want = (uint32_t)s->recvd, c;
        if (tag != want) {
                say(s->name, "message %" PRIu32 " arrived where %" PRIu32 " was due: %s", tag, want,
                    tag < want ? "duplicated or reordered" : "lost or reordered");
                return -1;
        }
        if (len < 4) {
                c = checksum(tag, len, NULL, 0);
                if (memcmp(p, &c, len) == 0)
                        return 0;
        } else {
                memcpy(&c, p, 4);
                if (c == checksum(tag, len, p + 4, len - 4))
                        return 0;
        }
        say(s->name, "message %" PRIu32 " (%" PRIu32 " bytes) is corrupt", tag, len);
        return -1;
}

static int msg_produce(struct side *s, uint32_t batch, bool *progress)
{
        uint32_t max = pv_ring_max_msg(&s->tx);
        for (uint32_t i = 0; i < batch && s->sent < s->tx_total; i++) {
                uint32_t seq = (uint32_t)s->sent;
                int rc;
                if (!s->have_next) {
                        s->next_len = pick_len(&s->rng, max);
                        s->have_next = true;
                        if (seq & 1)    /* half through send(), half in place */
                                msg_make(s, seq, s->stage, s->next_len);
                }
                if (seq & 1) {
                        rc = pv_ring_send(&s->tx, seq, s->stage, s->next_len);
                } else {
                        void *p;
                        rc = pv_ring_reserve(&s->tx, s->next_len, &p);
                        if (rc == 0) {
                                msg_make(s, seq, p, s->next_len);
                                pv_ring_commit(&s->tx, seq);
                        }
                }
                if (rc == -EAGAIN)
                        return 0;
                if (rc < 0) {
                        say(s->name, "send: %s", strerror(-rc));
                        return -1;
                }
                s->bytes_sent += s->next_len;
                s->sent++;
                s->have_next = false;
                *progress = true;
        }
        return 0;
}

static int msg_consume(struct side *s, uint32_t batch, bool *progress)
{
        for (uint32_t i = 0; i < batch && s->recvd < s->rx_total; i++) {
                uint32_t tag, len;
                int rc = pv_ring_recv(&s->rx, &tag, s->rxbuf, pv_ring_max_msg(&s->rx), &len);
                if (rc == -EAGAIN)
                        return 0;
                if (rc < 0) {
                        say(s->name, "recv: %s", strerror(-rc));
                        return -1;
                }
                if (msg_check(s, tag, s->rxbuf, len) < 0)
                        return -1;
                s->bytes_recvd += len;
                s->recvd++;
                *progress = true;
        }
        return 0;
}

/* ---- byte rings: frames {seq, len, checksum, payload} in a byte stream,
 * written and read in pieces of random size that ignore frame bounds -------- */

static void frame_make(struct side *s)
{
        uint32_t seq = (uint32_t)s->sent;
        uint32_t len = rnd_below(&s->rng, 8) ? rnd_below(&s->rng, 512) : rnd_below(&s->rng, FRAME_MAX + 1);
        rnd_fill(&s->rng, s->stage + FRAME_HDR, len);
        uint32_t hdr[3] = { seq, len, checksum(seq, len, s->stage + FRAME_HDR, len) };
        memcpy(s->stage, hdr, FRAME_HDR);
        s->stage_len = FRAME_HDR + len;
        s->stage_off = 0;
        s->have_next = true;
}

static uint32_t piece(uint64_t *rng, uint64_t avail)
{
        uint32_t cap = avail > 2 * FRAME_MAX ? 2 * FRAME_MAX : (uint32_t)avail;
        switch (rnd_below(rng, 4)) {
        case 0: return 1 + rnd_below(rng, cap < 16 ? cap : 16);
        case 1: return cap;
        default: return 1 + rnd_below(rng, cap);
        }
}

static int bytes_produce(struct side *s, uint32_t batch, bool *progress)
{
        for (uint32_t i = 0; i < batch; i++) {
                if (!s->have_next) {
                        if (s->sent == s->tx_total)
                                return 0;
                        frame_make(s);
                }
                struct iovec iov[2];
                int n;
                int64_t room = pv_bytering_wspan(&s->tx, iov, &n);
                if (room < 0) {
                        say(s->name, "byte ring: %s", strerror((int)-room));
                        return -1;
                }
                if (room == 0)
                        return 0;
                uint32_t w = piece(&s->rng, (uint64_t)room);
                if (w > s->stage_len - s->stage_off)
                        w = s->stage_len - s->stage_off;
                for (int k = 0, done = 0; done < (int)w; k++) {
                        uint32_t c = (uint32_t)iov[k].iov_len;
                        if (c > w - (uint32_t)done)
                                c = w - (uint32_t)done;
                        memcpy(iov[k].iov_base, s->stage + s->stage_off + done, c);
                        done += (int)c;
                }
                pv_bytering_produce(&s->tx, w);
                s->stage_off += w;
                s->bytes_sent += w;
                *progress = true;
                if (s->stage_off == s->stage_len) {
                        s->sent++;
                        s->have_next = false;
                }
        }
        return 0;
}

/* Feeds n stream bytes to the frame being assembled. */
static int frame_take(struct side *s, const uint8_t *p, uint32_t n)
{
        while (n) {
                uint32_t hdr[3];
                uint32_t want = FRAME_HDR;
                if (s->rx_have >= FRAME_HDR) {
                        memcpy(hdr, s->rxbuf, FRAME_HDR);
                        want += hdr[1];
                }
                uint32_t c = want - s->rx_have < n ? want - s->rx_have : n;
                memcpy(s->rxbuf + s->rx_have, p, c);
                s->rx_have += c;
                p += c;
                n -= c;
                if (s->rx_have == FRAME_HDR) {
                        memcpy(hdr, s->rxbuf, FRAME_HDR);
                        if (hdr[1] > FRAME_MAX) {
                                say(s->name, "frame %" PRIu64 ": length %" PRIu32 " (stream corrupt)",
                                    s->recvd, hdr[1]);
                                return -1;
                        }
                }
                if (s->rx_have < FRAME_HDR)
                        continue;
                memcpy(hdr, s->rxbuf, FRAME_HDR);
                if (s->rx_have < FRAME_HDR + hdr[1])
                        continue;
                if (hdr[0] != (uint32_t)s->recvd) {
                        say(s->name, "frame %" PRIu32 " arrived where %" PRIu64 " was due", hdr[0], s->recvd);
                        return -1;
                }
                if (hdr[2] != checksum(hdr[0], hdr[1], s->rxbuf + FRAME_HDR, hdr[1])) {
                        say(s->name, "frame %" PRIu32 " (%" PRIu32 " bytes) is corrupt", hdr[0], hdr[1]);
                        return -1;
                }
                s->recvd++;
                s->rx_have = 0;
        }
        return 0;
}

static int bytes_consume(struct side *s, uint32_t batch, bool *progress)
{
        for (uint32_t i = 0; i < batch && s->recvd < s->rx_total; i++) {
                struct iovec iov[2];
                int n;
                int64_t have = pv_bytering_rspan(&s->rx, iov, &n);
                if (have < 0) {
                        say(s->name, "byte ring: %s", strerror((int)-have));
                        return -1;
                }
                if (have == 0)
                        return 0;
                uint32_t r = piece(&s->rng, (uint64_t)have), done = 0;
                for (int k = 0; done < r; k++) {
                        uint32_t c = (uint32_t)iov[k].iov_len < r - done ? (uint32_t)iov[k].iov_len : r - done;
                        if (frame_take(s, iov[k].iov_base, c) < 0)
                                return -1;
                        done += c;
                }
                pv_bytering_consume(&s->rx, r);
                s->bytes_recvd += r;
                *progress = true;
        }
        return 0;
}

/* ---- one side's loop ------------------------------------------------------- */

/* The peer's exit while we still wait: reap it and say why. Parent only. */
static int peer_gone(struct side *s)
{
        int st;
        if (waitpid(s->child, &st, WNOHANG) != s->child)
                return 0;
        s->child = 0;   /* its pid may be reused now: never signal it again */
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                say(s->name, "child finished while %" PRIu64 " of %" PRIu64 " still due here: lost",
                    s->rx_total - s->recvd, s->rx_total);
        else
                say(s->name, "child failed (%s %d)", WIFEXITED(st) ? "exit" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return -1;
}

static int run_side(struct side *s)
{
        int64_t last = now_ms();

        while (s->sent < s->tx_total || s->recvd < s->rx_total) {
                bool progress = false;
                /* Batches of 1 to 48: per-message and batched notification
                 * both get their share. */
                uint32_t batch = rnd_below(&s->rng, 4) ? 1 + rnd_below(&s->rng, 48) : 1;
                int rc = s->kind == KIND_MSG ? msg_produce(s, batch, &progress) : bytes_produce(s, batch, &progress);
                if (rc < 0)
                        return -1;
                /* Notify after every pass, even one that moved nothing: a
                 * -EAGAIN may have published a pad (see pv-ring.h). */
                if (pv_ring_prod_notify(&s->tx))
                        kick(s->kick_tx_data);
                rc = s->kind == KIND_MSG ? msg_consume(s, batch, &progress) : bytes_consume(s, batch, &progress);
                if (rc < 0)
                        return -1;
                if (pv_ring_cons_notify(&s->rx))
                        kick(s->kick_rx_room);
                if (progress) {
                        last = now_ms();
                        continue;
                }

                bool want_tx = s->sent < s->tx_total, want_rx = s->recvd < s->rx_total;
                uint32_t need = s->kind == KIND_MSG ? pv_ring_room_for(&s->tx, s->next_len) : 1;
                if (want_tx && !pv_ring_prod_prepare_sleep(&s->tx, need))
                        continue;
                if (want_rx && !pv_ring_cons_prepare_sleep(&s->rx))
                        continue;
                struct pollfd pfd[3] = {
                        { .fd = want_tx ? s->wait_tx_room : -1, .events = POLLIN },
                        { .fd = want_rx ? s->wait_rx_data : -1, .events = POLLIN },
                        { .fd = s->peer_pidfd, .events = POLLIN },
                };
                s->sleeps++;
                int n = poll(pfd, 3, POLL_MS);
                if (n < 0 && errno != EINTR) {
                        say(s->name, "poll: %s", strerror(errno));
                        return -1;
                }
                if (n > 0) {
                        if (pfd[0].revents)
                                drain(s->wait_tx_room);
                        if (pfd[1].revents)
                                drain(s->wait_rx_data);
                        /* An xIRQ may come with the exit: take it first. */
                        if (pfd[2].revents && !pfd[0].revents && !pfd[1].revents && peer_gone(s) < 0)
                                return -1;
                        continue;
                }
                if (n < 0)
                        continue;
                /* Asleep a whole second, and what we sleep for is there:
                 * the peer published without waking us. */
                if (want_rx && pv_ring_cons_pending(&s->rx)) {
                        say(s->name, "lost wake-up: data waited %d ms without an xIRQ", POLL_MS);
                        return -1;
                }
                if (want_tx && pv_ring_prod_free(&s->tx) >= need) {
                        say(s->name, "lost wake-up: room waited %d ms without an xIRQ", POLL_MS);
                        return -1;
                }
                if (now_ms() - last > STALL_MS) {
                        say(s->name, "no progress for %d s: sent %" PRIu64 " of %" PRIu64 ", received %" PRIu64
                            " of %" PRIu64, STALL_MS / 1000, s->sent, s->tx_total, s->recvd, s->rx_total);
                        return -1;
                }
        }
        return 0;
}

/* ---- two processes ---------------------------------------------------------- */

struct pair {
        int memfd;
        struct shm *shm;
        size_t shm_len;
        int irq_data[2], irq_room[2];   /* per ring, [0] parent -> child */
};

/* me: 0 parent, 1 child. The parent always sends `total`; the child too if
 * both ways, else it only receives. */
static void side_init(struct side *s, struct pair *p, int me, enum kind kind, uint32_t size, uint64_t total,
                      bool both, int one_kernel)
{
        int tx = me, rx = !me;
        uint8_t *base = (uint8_t *)p->shm;

        memset(s, 0, sizeof(*s));
        s->name = me ? "child" : "parent";
        s->kind = kind;
        s->tx_total = me == 0 || both ? total : 0;
        s->rx_total = me == 1 || both ? total : 0;
        s->rng = 0x243f6a8885a308d3ull ^ ((uint64_t)(me + 1) << 40) ^ (uint64_t)kind;
        /* The parent zeroed both headers before the fork: attach only. */
        pv_ring_init(&s->tx, &p->shm->hdr[tx], base + DATA_OFF(tx, size), size, false);
        pv_ring_init(&s->rx, &p->shm->hdr[rx], base + DATA_OFF(rx, size), size, false);
        /* Both sides register for the other's membarrier(2), after the
         * fork. */
        pv_ring_set_one_kernel(&s->tx, one_kernel != 0);
        pv_ring_set_one_kernel(&s->rx, one_kernel != 0);
        if (one_kernel == ALWAYS_BARRIER)
                s->tx.sleeps.light_at = s->rx.sleeps.light_at = 0;
        s->kick_tx_data = p->irq_data[tx];
        s->wait_tx_room = p->irq_room[tx];
        s->wait_rx_data = p->irq_data[rx];
        s->kick_rx_room = p->irq_room[rx];
        s->peer_pidfd = -1;
}

static void pair_close(struct pair *p)
{
        for (int i = 0; i < 2; i++) {
                if (p->irq_data[i] >= 0)
                        close(p->irq_data[i]);
                if (p->irq_room[i] >= 0)
                        close(p->irq_room[i]);
        }
        if (p->shm && p->shm != MAP_FAILED)
                munmap(p->shm, p->shm_len);
        if (p->memfd >= 0)
                close(p->memfd);
}

static int pair_open(struct pair *p, uint32_t size)
{
        memset(p, 0, sizeof(*p));
        p->memfd = -1;
        p->irq_data[0] = p->irq_data[1] = p->irq_room[0] = p->irq_room[1] = -1;
        p->shm_len = DATA_OFF(2, size);
        p->memfd = memfd_create("ring-stress", MFD_CLOEXEC);
        if (p->memfd < 0 || ftruncate(p->memfd, (off_t)p->shm_len) < 0)
                goto fail;
        p->shm = mmap(NULL, p->shm_len, PROT_READ | PROT_WRITE, MAP_SHARED, p->memfd, 0);
        if (p->shm == MAP_FAILED)
                goto fail;
        for (int i = 0; i < 2; i++) {
                p->irq_data[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                p->irq_room[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (p->irq_data[i] < 0 || p->irq_room[i] < 0)
                        goto fail;
        }
        return 0;
fail:
        say("parent", "setting up shared memory and xIRQs: %s", strerror(errno));
        pair_close(p);
        return -1;
}

static void report_fill(struct report *r, const struct side *s)
{
        r->sent = s->sent;
        r->recvd = s->recvd;
        r->bytes_sent = s->bytes_sent;
        r->bytes_recvd = s->bytes_recvd;
        r->xirq_sent = s->tx.stats.xirq_sent + s->rx.stats.xirq_sent;
        r->xirq_suppressed = s->tx.stats.xirq_suppressed + s->rx.stats.xirq_suppressed;
        r->sleeps = s->sleeps;
}

static void side_free(struct side *s)
{
        free(s->stage);
        free(s->rxbuf);
}

static int side_alloc(struct side *s)
{
        size_t n = s->kind == KIND_MSG ? pv_ring_max_msg(&s->tx) : FRAME_HDR + FRAME_MAX;
        s->stage = malloc(n);
        s->rxbuf = malloc(n);
        if (!s->stage || !s->rxbuf) {
                say(s->name, "out of memory");
                return -1;
        }
        return 0;
}

/* Reaps the child: at once by SIGKILL after a failure, else waiting up to
 * ms for it to finish before killing it. 0 if it exited with success. */
static int reap(pid_t child, bool failed, int ms)
{
        int st;
        if (failed)
                kill(child, SIGKILL);
        for (int64_t end = now_ms() + ms;;) {
                pid_t w = waitpid(child, &st, failed ? 0 : WNOHANG);
                if (w == child)
                        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
                if (w < 0 && errno != EINTR)
                        return -1;
                if (now_ms() > end) {
                        say("parent", "child still running after the run: killing it");
                        failed = true;
                        kill(child, SIGKILL);
                }
                if (!failed)
                        usleep(2000);
        }
}

/* Opens the memory and xIRQs of a pair and forks its child: the child's
 * pid in the parent, 0 in the child (which dies with the parent), -1 with
 * nothing left open. */
static pid_t pair_fork(struct pair *p, uint32_t size)
{
        if (pair_open(p, size) < 0)
                return -1;
        /* The creator of the memory resets both headers, once, before the
         * other side can see them. */
        memset(p->shm, 0, sizeof(*p->shm));
        fflush(NULL);
        pid_t parent = getpid(), child = fork();
        if (child < 0) {
                say("parent", "fork: %s", strerror(errno));
                pair_close(p);
                return -1;
        }
        if (child == 0) {
                /* Die with the parent, whatever kills it. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
        }
        return child;
}

static int run_pair(enum kind kind, uint64_t total, bool both, int one_kernel)
{
        uint32_t size = kind == KIND_MSG ? MSG_RING_SIZE : BYTE_RING_SIZE;
        const char *what = kind == KIND_MSG
                ? (both ? (one_kernel == ALWAYS_BARRIER ? "message rings, both ways, every sleep a membarrier"
                           : one_kernel ? "message rings, both ways, one kernel" : "message rings, both ways")
                        : (one_kernel == ALWAYS_BARRIER ? "message ring, one way, every sleep a membarrier"
                           : one_kernel ? "message ring, one way, one kernel" : "message ring, one way"))
                : (both ? "byte rings, both ways" : "byte ring, one way");
        double ways = both ? 2.0 : 1.0;
        struct pair p;
        struct side s;
        int rc = -1;

        pid_t child = pair_fork(&p, size);
        if (child < 0)
                return -1;
        if (child == 0) {
                side_init(&s, &p, 1, kind, size, total, both, one_kernel);
                rc = side_alloc(&s) == 0 ? run_side(&s) : -1;
                report_fill(&p.shm->report[1], &s);
                _exit(rc == 0 ? 0 : 1);
        }

        double t0 = now_s();
        side_init(&s, &p, 0, kind, size, total, both, one_kernel);
        if (one_kernel && !s.tx.one_kernel)
                printf("%s: membarrier(2) refused here: the rings keep their full fences\n", what);
        s.child = child;
        s.peer_pidfd = (int)syscall(SYS_pidfd_open, child, 0);  /* -1 if too old: no early exit check */
        if (side_alloc(&s) == 0)
                rc = run_side(&s);
        if (s.child && reap(s.child, rc < 0, STALL_MS) < 0 && rc == 0) {
                say("parent", "%s: child failed", what);
                rc = -1;
        }
        double dt = now_s() - t0;

        if (rc == 0) {
                const struct report *c = &p.shm->report[1];
                struct report me;
                report_fill(&me, &s);
                double mb = (double)(me.bytes_sent + c->bytes_sent) / 1e6;
                printf("%s: %" PRIu64 " %s%s, %.1f MB, %.2f s, %.0f %s/s, %.1f MB/s\n", what, total,
                       kind == KIND_MSG ? "messages" : "frames", both ? " each way" : "", mb, dt,
                       ways * (double)total / dt, kind == KIND_MSG ? "msgs" : "frames", mb / dt);
                printf("  xIRQs sent %" PRIu64 ", suppressed %" PRIu64 " (%.4f per %s); sleeps %" PRIu64 "\n",
                       me.xirq_sent + c->xirq_sent, me.xirq_suppressed + c->xirq_suppressed,
                       (double)(me.xirq_sent + c->xirq_sent) / (ways * (double)total),
                       kind == KIND_MSG ? "message" : "frame", me.sleeps + c->sleeps);
                if (c->recvd != total || c->sent != (both ? total : 0) || c->bytes_recvd != me.bytes_sent ||
                    me.bytes_recvd != c->bytes_sent) {
                        say("parent", "%s: counts differ between the sides", what);
                        rc = -1;
                }
        }
        if (s.peer_pidfd >= 0)
                close(s.peer_pidfd);
        side_free(&s);
        pair_close(&p);
        return rc;
}

/* ---- ping-pong: where a lost wake-up shows at once ----------------------- */

/* Waits for one message on s->rx, sleeping as soon as a short, random spin
 * finds nothing: a sleep prepared while the peer publishes is the race the
 * fences close. -1 on a lost wake-up (asleep POLL_MS with the message
 * there), a stall, or a bad message. */
static int pp_wait(struct side *s, uint64_t want)
{
        int64_t start = now_ms();
        for (;;) {
                uint32_t tag, len;
                uint64_t v;
                int rc = pv_ring_recv(&s->rx, &tag, &v, sizeof(v), &len);
                if (rc == 0) {
                        if (len != sizeof(v) || v != want) {
                                say(s->name, "ping-pong: message %" PRIu64 " came as %" PRIu64, want, v);
                                return -1;
                        }
                        return 0;
                }
                if (rc != -EAGAIN) {
                        say(s->name, "ping-pong: recv: %s", strerror(-rc));
                        return -1;
                }
                for (uint64_t i = rnd(&s->rng) % 64; i > 0; i--)
                        __asm__ volatile("" ::: "memory");
                if (pv_ring_cons_pending(&s->rx) || !pv_ring_cons_prepare_sleep(&s->rx))
                        continue;
                s->sleeps++;
                struct pollfd pfd = { .fd = s->wait_rx_data, .events = POLLIN };
                int n = poll(&pfd, 1, POLL_MS);
                uint64_t drain;
                if (n > 0 && read(s->wait_rx_data, &drain, sizeof(drain)) < 0) {
                        /* EAGAIN: another wake-up took it */
                }
                if (n == 0 && pv_ring_cons_pending(&s->rx)) {
                        say(s->name, "ping-pong: lost wake-up: message %" PRIu64 " waited %d ms without an xIRQ",
                            want, POLL_MS);
                        return -1;
                }
                if (now_ms() - start > STALL_MS) {
                        say(s->name, "ping-pong: no message %" PRIu64 " for %d ms", want, STALL_MS);
                        return -1;
                }
        }
}

static int pp_send(struct side *s, uint64_t v)
{
        int rc = pv_ring_send(&s->tx, 1, &v, sizeof(v));
        if (rc < 0) {   /* one message in flight: never full */
                say(s->name, "ping-pong: send: %s", strerror(-rc));
                return -1;
        }
        s->sent++;
        if (pv_ring_prod_notify(&s->tx)) {
                uint64_t one = 1;
                if (write(s->kick_tx_data, &one, sizeof(one)) != sizeof(one))
                        return -1;
        }
        return 0;
}

/* The parent sends 0, 2, 4...; the child answers each with the next odd
 * number. */
static int pp_side(struct side *s, bool parent, uint64_t rounds)
{
        for (uint64_t i = 0; i < rounds; i++) {
                if (parent ? pp_send(s, 2 * i) < 0 || pp_wait(s, 2 * i + 1) < 0
                           : pp_wait(s, 2 * i) < 0 || pp_send(s, 2 * i + 1) < 0)
                        return -1;
                s->recvd++;
        }
        return 0;
}

static int run_pingpong(uint64_t rounds, int one_kernel)
{
        const char *what = one_kernel == ALWAYS_BARRIER ? "ping-pong, every sleep a membarrier"
                         : one_kernel ? "ping-pong, one kernel" : "ping-pong";
        struct pair p;
        struct side s;
        int rc = -1;

        pid_t child = pair_fork(&p, MSG_RING_SIZE);
        if (child < 0)
                return -1;
        if (child == 0) {
                side_init(&s, &p, 1, KIND_MSG, MSG_RING_SIZE, rounds, true, one_kernel);
                rc = pp_side(&s, false, rounds);
                report_fill(&p.shm->report[1], &s);
                _exit(rc == 0 ? 0 : 1);
        }
        double t0 = now_s();
        side_init(&s, &p, 0, KIND_MSG, MSG_RING_SIZE, rounds, true, one_kernel);
        rc = pp_side(&s, true, rounds);
        if (reap(child, rc < 0, STALL_MS) < 0 && rc == 0) {
                say("parent", "%s: child failed", what);
                rc = -1;
        }
        if (rc == 0) {
                const struct report *c = &p.shm->report[1];
                printf("%s: %" PRIu64 " round trips, %.2f s; sleeps %" PRIu64 ", xIRQs %" PRIu64 "\n", what, rounds,
                       now_s() - t0, s.sleeps + c->sleeps, s.tx.stats.xirq_sent + c->xirq_sent);
        }
        pair_close(&p);
        return rc;
}

int main(void)
{
        uint64_t msgs = 3000000;
        const char *env = getenv("PV_STRESS_MSGS");
        if (env) {
                char *end;
                unsigned long long v = strtoull(env, &end, 10);
                if (*end || v == 0 || v > UINT32_MAX) {
                        say("parent", "PV_STRESS_MSGS=%s: want a count of messages from 1 to 2^32-1", env);
                        return 1;
                }
                msgs = v;
        }
        /* One way as well as both: traffic the other way wakes a side for
         * its own sake and can hide a lost wake-up. */
        uint64_t half = msgs / 2 ? msgs / 2 : 1;
        /* Then the message rings on one kernel (pv-atomic.h, "asymmetric
         * fences"): as they choose, and with every sleep a membarrier(2),
         * where the other side's notify skips its fence; and a ping-pong,
         * where a lost wake-up stalls at once. */
        uint64_t pp = msgs / 20 ? msgs / 20 : 1;
        if (run_pair(KIND_MSG, msgs, true, 0) < 0 || run_pair(KIND_MSG, half, false, 0) < 0 ||
            run_pair(KIND_BYTES, half, true, 0) < 0 || run_pair(KIND_BYTES, half, false, 0) < 0 ||
            run_pair(KIND_MSG, msgs, true, 1) < 0 || run_pair(KIND_MSG, half, false, ALWAYS_BARRIER) < 0 ||
            run_pingpong(pp, 0) < 0 || run_pingpong(pp, 1) < 0 || run_pingpong(pp, ALWAYS_BARRIER) < 0) {
                say("parent", "FAILED");
                return 1;
        }
        return 0;
}
