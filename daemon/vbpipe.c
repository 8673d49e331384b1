/* VBPIPE: byte pipes between VMs (daemon side).
 *
 * A vbpipe vlink is one pipe with one end in each VM. A program's open gets
 * one end of a socketpair (AF_UNIX, SOCK_STREAM); pvd keeps the other end
 * ("D") and moves bytes between D and two byte rings in vlink memory, one
 * per direction: readv from D straight into the ring, writev from the ring
 * straight into D, with notification suppression both ways. The program
 * thus has a real fd: read, write, poll, epoll, FIONREAD, close.
 *
 * Which end reads which bytes is the protocol of proto/vbpipe-proto.h:
 * OPEN, PAIR (the server decides), STOP (my reader is gone) and FIN (my
 * bytes end here) on the control ring. The peer's bytes of one end are a
 * "segment" of our rx ring, ended by its FIN; a segment nobody reads any
 * more is discarded up to its FIN, never further, so bytes of one
 * conversation are never read as another's.
 *
 * What the program sees:
 *  - open blocks until the peer's end is open (the answer waits); with
 *    O_NONBLOCK the end comes at once, made unwritable by filler bytes pvd
 *    writes through it, and read back and dropped when the peer arrives;
 *  - SO_RCVLOWAT at its maximum on the program's end (unless flag 'a'): a
 *    blocking read returns the whole count, as the seed says;
 *  - the peer's close: STOP makes us shutdown(D, SHUT_RD) (the program's
 *    writes fail with EPIPE), FIN lets us deliver the rest, then
 *    shutdown(D, SHUT_WR) (EOF);
 *  - its own close: EOF on D (after its last bytes) is our FIN; a hang-up
 *    of D, or EPIPE when we write, is our STOP.
 *
 * Ends are freed only at the end of an entry point (pipe_leave): a send to
 * the peer can reset the vlink, and so run vbpipe_down, in the middle of
 * anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pv-bytering.h"
#include "pvd.h"
#include "vbpipe-proto.h"
#include "watch.h"

#define VBP_PUMP_ROUNDS 32            /* readv/writev per callback, for fairness */
#define VBP_FILLER_CHUNK 65536
#define VBP_WAKE_LOCK "/sys/power/wake_lock"

enum vbp_state { VBP_WAIT, VBP_OPEN };

struct vbp_pipe;

struct vbp_end {
        struct vbp_pipe *p;
        uint32_t gen;
        enum vbp_state st;
        struct pvd_watch *w;       /* D, pvd's end of the socketpair */
        int prog_fd;               /* the program's end while pvd holds it (blocking open) */
        struct pvd_conn *conn;     /* a blocking open waiting for its answer */
        uint64_t seq;              /* ... to request seq */
        uint32_t filler;           /* bytes written through the program's end (O_NONBLOCK) */
        pid_t pid;
        char comm[32];
        uint64_t since_ms;
        uint32_t peer_gen;
        bool announced;            /* OPEN sent on this vlink generation */
        bool gone;                 /* the program closed its end or gave up its open */
        bool tx_full;              /* ring full: D unread until the peer makes room */
        bool tx_done;              /* FIN sent (or vlink down): D is not read any more */
        bool rx_blocked;           /* D full: waiting for POLLOUT */
        bool rx_done;              /* EOF given, or the program reads no more */
        bool stop_sent;
        uint8_t *tail;             /* the peer's bytes saved when the vlink went down */
        size_t tail_len, tail_off;
};

enum vbp_peer { PEER_CLOSED, PEER_WAITING, PEER_OPEN, PEER_CLOSING };

struct vbp_flow {
        uint64_t bytes, xfers;     /* bytes moved, and the socket calls that moved them */
        uint32_t peak;             /* highest ring fill seen */
};

struct vbp_pipe {
        struct pvd_vlink *vl;
        const char *name;          /* this end's device name */
        bool any;                  /* flag 'a' */
        uint32_t wakeup_ms;
        uint32_t size;             /* ring bytes per direction */
        bool on;                   /* rings attached (vlink ON) */
        int depth;                 /* entry points on the stack */
        struct pv_ring tx, rx;
        struct vbp_end *cur;       /* the end using the rings (or waiting to) */
        struct vbp_end *next;      /* an open that waits for cur's end */
        struct vbp_end *txe;       /* paired end whose bytes go into tx (FIN not sent) */
        struct {                   /* the peer's bytes now arriving in rx */
                bool active;
                uint32_t gen;      /* the peer's end */
                struct vbp_end *to;/* NULL: nobody reads them (discard up to FIN) */
                bool fin;
                uint32_t fin_at;
                bool stopped;      /* the peer's reader is gone too */
        } seg;
        uint32_t rx_start;         /* where the peer's next segment begins */
        uint32_t next_gen;
        /* The peer's ends as the messages tell (reset at each ON). */
        bool peer_waiting;         /* an announced end without partner */
        uint32_t peer_wait_gen;
        uint32_t peer_max_gen;
        uint32_t paired_max;       /* client: highest own end the server paired */
        uint32_t announced_max;    /* client: highest own end announced */
        enum vbp_peer peer;
        /* Statistics. */
        uint64_t conversations, refused_busy, cancelled;
        struct vbp_flow out, in;   /* program -> peer, peer -> program */
        uint64_t xirq_sent, xirq_suppressed;     /* of rings already detached */
        /* wakeup= */
        int wake_fd;
        char wake_path[128];
        uint64_t wake_until_ms, wake_count, wake_errors;
};

static struct vbp_pipe *pipe_of(const struct pvd_vlink *vl)
{
        return vl->drv[PV_DRV_VBPIPE];
}

static int end_fd(const struct vbp_end *e)
{
        return pvd_watch_fd(e->w);
}

static void pipe_reap(struct vbp_pipe *p);

static void pipe_enter(struct vbp_pipe *p)
{
        p->depth++;
}

static void pipe_leave(struct vbp_pipe *p)
{
        if (--p->depth == 0) {
                p->depth++;
                pipe_reap(p);
                p->depth--;
        }
}

/* ---- to the peer ------------------------------------------------------------ */

/* Send a message to the peer pvd. false if the vlink is not ON afterwards
 * (a failed send resets it): the caller stops there. */
static bool peer_send(struct vbp_pipe *p, uint32_t type, uint32_t gen, uint32_t peer_gen, uint32_t index)
{
        if (!p->on)
                return false;
        struct vbpipe_msg m = { .gen = gen, .peer_gen = peer_gen, .index = index };
        int rc = pvd_vlink_send(p->vl, PV_DRV_VBPIPE, type, &m, sizeof(m));
        if (rc < 0 && p->on)
                pvd_vlink_fail(p->vl, "vbpipe %s: cannot send to the peer (%s)", p->name, strerror(-rc));
        return p->on;
}

static void fail_corrupt(struct vbp_pipe *p, const char *what)
{
        pvd_vlink_fail(p->vl, "vbpipe %s: %s", p->name, what);
}

static void tx_notify(struct vbp_pipe *p)
{
        if (pv_ring_prod_notify(&p->tx))
                pvd_vlink_notify(p->vl);
}

static void rx_notify(struct vbp_pipe *p)
{
        if (pv_ring_cons_notify(&p->rx))
                pvd_vlink_notify(p->vl);
}

/* wakeup=MS: keep the system awake for MS after the peer's bytes arrive,
 * so that it cannot suspend before the reader runs. One write per half
 * period at most. */
static void wake_hold(struct vbp_pipe *p)
{
        if (!p->wakeup_ms)
                return;
        uint64_t now = uv_now(p->vl->pvd->loop);
        if (p->wake_until_ms > now + p->wakeup_ms / 2)
                return;
        p->wake_until_ms = now + p->wakeup_ms;
        if (p->wake_fd < 0)
                return;
        char buf[PV_NAME_MAX + 32];
        int n = snprintf(buf, sizeof(buf), "pvd-%s %llu\n", p->name, (unsigned long long)p->wakeup_ms * 1000000ull);
        if (pwrite(p->wake_fd, buf, (size_t)n, 0) == n) {
                p->wake_count++;
        } else if (p->wake_errors++ == 0) {
                pv_warn("vbpipe %s: cannot take a wake lock in %s: %s", p->name, p->wake_path, strerror(errno));
        }
}

/* ---- ends ------------------------------------------------------------------- */

static const char *end_state_name(const struct vbp_end *e)
{
        if (!e)
                return "closed";
        if (e->st == VBP_WAIT)
                return "waiting";
        return e->gone || e->tx_done || e->rx_done ? "closing" : "open";
}

/* Watch D for what this end needs now. A hang-up (the program closed its
 * end) is watched as UV_PRIORITIZED: unix sockets never raise POLLPRI, and
 * epoll reports POLLHUP whatever is asked, so this sees the hang-up alone
 * even while D stays readable at EOF after a half close. */
static void end_watch(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        int ev = 0;
        if (e->st == VBP_OPEN) {
                if (p->txe == e && !e->tx_full)
                        ev |= UV_READABLE;
                if (e->rx_blocked)
                        ev |= UV_WRITABLE;
        }
        if (!e->gone && e->prog_fd < 0)
                ev |= UV_PRIORITIZED;
        pvd_watch_set(e->w, ev);
}

static bool end_hung_up(const struct vbp_end *e)
{
        struct pollfd pf = { .fd = end_fd(e), .events = 0 };
        return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR));
}

static void seg_end(struct vbp_pipe *p)
{
        p->rx_start = p->seg.fin_at;
        p->seg.active = false;
        p->seg.to = NULL;
        if (p->peer == PEER_CLOSING || p->peer == PEER_OPEN)
                p->peer = PEER_CLOSED;
}

/* Nobody reads the segment and its end is known: drop its bytes. */
static void seg_discard(struct vbp_pipe *p)
{
        uint32_t n = p->seg.fin_at - p->rx.cons;
        if (n)
                pv_bytering_consume(&p->rx, n);
        seg_end(p);
        rx_notify(p);
}

/* The program reads no more: tell the peer's writer, drop what comes. */
static void reader_gone(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (e->rx_done)
                return;
        e->rx_done = true;
        e->rx_blocked = false;
        free(e->tail);
        e->tail = NULL;
        end_watch(e);
        if (!p->seg.active || p->seg.to != e)
                return;
        p->seg.to = NULL;
        if (p->seg.fin) {
                seg_discard(p);
        } else if (!e->stop_sent && !p->seg.stopped) {
                e->stop_sent = true;
                peer_send(p, VBPIPE_MSG_STOP, e->gen, 0, 0);
        }
}

/* No more bytes from the program into the ring: FIN at where they end. */
static void tx_finish(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (e->tx_done)
                return;
        e->tx_done = true;
        e->tx_full = false;
        if (p->txe == e)
                p->txe = NULL;
        end_watch(e);
        peer_send(p, VBPIPE_MSG_FIN, e->gen, 0, p->tx.prod);
}

/* The program's end is closed (or shut both ways). */
static void end_gone(struct vbp_end *e)
{
        if (e->gone)
                return;
        e->gone = true;
        if (e->st == VBP_OPEN)
                reader_gone(e);
        end_watch(e);
}

/* Answer a blocking open: the program gets its end now. */
static void end_answer(struct vbp_end *e, int diag)
{
        struct pvd_conn *c = e->conn;
        if (!c)
                return;
        e->conn = NULL;
        c->priv = NULL;
        struct pv_msg req, r;
        pv_msg_init(&req, PV_OP_VBPIPE_OPEN);
        pv_msg_set_u(&req, PV_K_SEQ, e->seq);
        pv_msg_init_reply(&r, &req, diag);
        if (diag == 0) {
                pv_msg_set_u(&r, PV_K_SIZE, e->p->size);
                pv_msg_set_u(&r, PV_K_FLAGS, e->p->any ? VBPIPE_INFO_ANY : 0);
                pv_msg_set_u(&r, PV_K_GEN, e->gen);
                pv_msg_add_fd(&r, e->prog_fd);
        } else {
                pv_msg_set_str(&r, PV_K_MSG, "the pipe went away while the open waited (pvd stopping)");
        }
        int rc = pvd_conn_send(c, &r);
        close(e->prog_fd);
        e->prog_fd = -1;
        if (rc < 0)
                e->gone = true;   /* the program never got its end */
        end_watch(e);
}

/* Read back and drop the filler that kept a non-blocking end unwritable. */
static void end_drop_filler(struct vbp_end *e)
{
        static uint8_t scratch[VBP_FILLER_CHUNK];
        while (e->filler) {
                size_t want = e->filler < sizeof(scratch) ? e->filler : sizeof(scratch);
                ssize_t n = read(end_fd(e), scratch, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        pv_warn("vbpipe %s: %u filler bytes missing from the program's end", e->p->name, e->filler);
                        break;
                }
                e->filler -= (uint32_t)n;
        }
        e->filler = 0;
}

static void tx_pump(struct vbp_pipe *p);
static void rx_pump(struct vbp_pipe *p);

/* Both ends are open: a conversation starts. */
static void end_pair(struct vbp_end *e, uint32_t peer_gen)
{
        struct vbp_pipe *p = e->p;
        e->st = VBP_OPEN;
        e->peer_gen = peer_gen;
        e->since_ms = uv_now(p->vl->pvd->loop);
        p->txe = e;
        memset(&p->seg, 0, sizeof(p->seg));
        p->seg.active = true;
        p->seg.gen = peer_gen;
        p->seg.to = e;
        p->peer_waiting = false;
        p->peer = PEER_OPEN;
        p->conversations++;
        end_drop_filler(e);
        pv_info("vbpipe %s: %s[%d] and the peer's end in %s are open (conversation %llu)", p->name, e->comm,
                (int)e->pid, p->vl->peer_vm, (unsigned long long)p->conversations);
        end_answer(e, 0);
        end_watch(e);
        tx_pump(p);
        rx_pump(p);
}

/* Tell the peer that cur is open, or (server) pair it at once. */
static void end_announce(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (!p->on || e->announced || e->gone || e->st != VBP_WAIT)
                return;
        e->announced = true;
        if (p->vl->side == PV_CLIENT)
                p->announced_max = e->gen;
        /* The server pairs in pipe_reap when it can; it announces the end
         * anyway, so that the client can show the server's end waiting. */
        peer_send(p, VBPIPE_MSG_OPEN, e->gen, 0, 0);
}

static bool end_over(const struct vbp_end *e)
{
        if (e->st == VBP_WAIT)
                return e->gone;
        return e->tx_done && e->rx_done && !e->tail;
}

/* Drop what the program wrote and nobody will read, so that closing D does
 * not reset the program's end: a socket closed with unread bytes makes the
 * peer's next call fail with ECONNRESET, where a pipe's reader must see EOF
 * and its writer EPIPE. The shutdown first: nothing more can arrive. */
static void end_discard_input(struct vbp_end *e)
{
        static uint8_t scratch[VBP_FILLER_CHUNK];
        int fd = end_fd(e);
        shutdown(fd, SHUT_RD);
        for (;;) {
                ssize_t n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
                if (n > 0 || (n < 0 && errno == EINTR))
                        continue;
                break;
        }
}

static void end_free(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (e->w && e->prog_fd < 0)
                end_discard_input(e);
        if (p->txe == e)
                p->txe = NULL;
        if (p->seg.to == e)
                p->seg.to = NULL;
        if (e->conn) {
                e->conn->priv = NULL;
                e->conn = NULL;
        }
        if (e->prog_fd >= 0)
                close(e->prog_fd);
        pvd_watch_close(e->w);
        free(e->tail);
        free(e);
}

/* Free the ends that are over, let a waiting open take the pipe, and
 * (server) pair ends. Runs when the last entry point leaves. */
static void pipe_reap(struct vbp_pipe *p)
{
        for (int guard = 0; guard < 16; guard++) {
                if (p->next && p->next->gone) {
                        end_free(p->next);
                        p->next = NULL;
                }
                struct vbp_end *e = p->cur;
                if (e && end_over(e)) {
                        if (e->st == VBP_WAIT) {
                                p->cancelled++;
                                pv_debug("vbpipe %s: %s[%d] gave up its open", p->name, e->comm, (int)e->pid);
                                /* An announced end ends like any other: STOP, FIN. */
                                if (e->announced && peer_send(p, VBPIPE_MSG_STOP, e->gen, 0, 0))
                                        peer_send(p, VBPIPE_MSG_FIN, e->gen, 0, p->tx.prod);
                        } else {
                                pv_info("vbpipe %s: conversation of %s[%d] closed", p->name, e->comm, (int)e->pid);
                        }
                        p->cur = p->next;
                        p->next = NULL;
                        end_free(e);
                        if (p->cur)
                                end_announce(p->cur);
                        continue;
                }
                /* The server pairs its waiting end with the client's once
                 * both directions of the previous conversation are done. */
                if (p->vl->side == PV_SERVER && p->on && e && e->st == VBP_WAIT && e->announced && !e->gone &&
                    p->peer_waiting && !p->seg.active && !p->txe) {
                        uint32_t c = p->peer_wait_gen;
                        if (peer_send(p, VBPIPE_MSG_PAIR, e->gen, c, 0))
                                end_pair(e, c);
                        continue;
                }
                break;
        }
}

/* ---- data path ---------------------------------------------------------------- */

/* Program -> peer: read D straight into the tx ring. */
static void tx_pump(struct vbp_pipe *p)
{
        struct vbp_end *e = p->txe;
        if (!e || !p->on || e->tx_full)
                return;
        int fd = end_fd(e);
        for (int round = 0; round < VBP_PUMP_ROUNDS; round++) {
                struct iovec iov[2];
                int n;
                int64_t avail = pv_bytering_wspan(&p->tx, iov, &n);
                if (avail < 0) {
                        fail_corrupt(p, "the peer's consumer index of our ring is impossible");
                        return;
                }
                if (avail == 0) {
                        tx_notify(p);
                        if (pv_ring_prod_prepare_sleep(&p->tx, 1)) {
                                e->tx_full = true;
                                end_watch(e);
                                return;
                        }
                        continue;
                }
                ssize_t r = readv(fd, iov, n);
                if (r > 0) {
                        pv_bytering_produce(&p->tx, (uint32_t)r);
                        p->out.bytes += (uint64_t)r;
                        p->out.xfers++;
                        uint32_t fill = p->size - (uint32_t)avail + (uint32_t)r;
                        if (fill > p->out.peak)
                                p->out.peak = fill;
                        tx_notify(p);
                        if (r < avail)
                                return;   /* D is drained: level-triggered poll brings the rest */
                        continue;
                }
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0 && errno == EAGAIN)
                        return;
                /* EOF: the program closed its end or shut its writing. */
                tx_finish(e);
                if (p->on && end_hung_up(e))
                        end_gone(e);
                return;
        }
}

/* Peer -> program: write straight from the rx ring into D. */
static void rx_pump(struct vbp_pipe *p)
{
        if (!p->on)
                return;
        struct vbp_end *e = p->seg.active ? p->seg.to : NULL;
        if (!e || e->rx_blocked || e->rx_done) {
                /* Nobody to deliver to now: still check what the peer wrote. */
                if (pv_bytering_used(&p->rx) < 0)
                        fail_corrupt(p, "the peer's producer index of its ring is impossible");
                return;
        }
        int fd = end_fd(e);
        for (int round = 0; round < VBP_PUMP_ROUNDS; round++) {
                struct iovec iov[2];
                int n;
                int64_t used = pv_bytering_rspan(&p->rx, iov, &n);
                if (used < 0) {
                        fail_corrupt(p, "the peer's producer index of its ring is impossible");
                        return;
                }
                if ((uint64_t)used > p->in.peak)
                        p->in.peak = (uint32_t)used;
                if (p->seg.fin) {
                        /* Checked against the ring when the FIN came. */
                        uint32_t left = p->seg.fin_at - p->rx.cons;
                        if (left == 0) {
                                shutdown(fd, SHUT_WR);   /* EOF for the program */
                                e->rx_done = true;
                                seg_end(p);
                                end_watch(e);
                                return;
                        }
                        if (iov[0].iov_len >= left) {
                                iov[0].iov_len = left;
                                n = 1;
                        } else if (n == 2 && iov[0].iov_len + iov[1].iov_len > left) {
                                iov[1].iov_len = left - iov[0].iov_len;
                        }
                } else if (used == 0) {
                        rx_notify(p);
                        if (pv_ring_cons_prepare_sleep(&p->rx))
                                return;
                        continue;
                }
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
                ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                        pv_bytering_consume(&p->rx, (uint32_t)w);
                        p->in.bytes += (uint64_t)w;
                        p->in.xfers++;
                        rx_notify(p);
                        wake_hold(p);
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN) {
                        e->rx_blocked = true;
                        end_watch(e);
                        rx_notify(p);
                        return;
                }
                reader_gone(e);   /* EPIPE: the program closed or shut its reading */
                return;
        }
}

/* After the vlink went down: the bytes saved from the ring, then EOF. */
static void tail_pump(struct vbp_end *e)
{
        int fd = end_fd(e);
        while (e->tail_off < e->tail_len) {
                ssize_t w = send(fd, e->tail + e->tail_off, e->tail_len - e->tail_off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                        e->tail_off += (size_t)w;
                        e->p->in.bytes += (uint64_t)w;
                        e->p->in.xfers++;
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN) {
                        e->rx_blocked = true;
                        end_watch(e);
                        return;
                }
                break;   /* the program reads no more */
        }
        free(e->tail);
        e->tail = NULL;
        shutdown(fd, SHUT_WR);
        e->rx_done = true;
        e->rx_blocked = false;
        end_watch(e);
}

static void end_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct vbp_end *e = arg;
        struct vbp_pipe *p = e->p;
        pipe_enter(p);
        if (status < 0) {
                end_gone(e);
                if (e->st == VBP_OPEN && !e->tx_done)
                        tx_finish(e);
                goto out;
        }
        if (events & UV_WRITABLE) {
                e->rx_blocked = false;
                end_watch(e);
                if (e->tail)
                        tail_pump(e);
                else
                        rx_pump(p);
        }
        if ((events & UV_READABLE) && p->txe == e)
                tx_pump(p);
        if (!e->gone && ((events & UV_PRIORITIZED) || !(events & (UV_READABLE | UV_WRITABLE))) && end_hung_up(e))
                end_gone(e);
out:
        pipe_leave(p);
}

/* ---- program requests ------------------------------------------------------------ */

/* Write through the program's end until its buffer is full: its writes
 * then block (or fail with EAGAIN) until the filler is dropped. */
static uint32_t fill_program_end(int pfd)
{
        static const uint8_t zeros[VBP_FILLER_CHUNK];
        uint32_t total = 0;
        for (;;) {
                ssize_t n = send(pfd, zeros, sizeof(zeros), MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0) {
                        total += (uint32_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                break;
        }
        /* Smaller writes fill what a 64 KiB one did not. */
        while (send(pfd, zeros, 512, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
                total += 512;
        while (send(pfd, zeros, 1, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
                total += 1;
        return total;
}

static int vbpipe_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        struct vbp_pipe *p = pipe_of(c->node->vl);
        uint64_t flags = 0, seq = 0;
        if (pv_msg_op(m) != PV_OP_VBPIPE_OPEN || m->nfds || c->priv)
                return -EPROTO;
        if (pv_msg_has(m, PV_K_FLAGS) && pv_msg_get_u(m, PV_K_FLAGS, &flags) < 0)
                return -EPROTO;
        if ((flags & ~(uint64_t)VBPIPE_OPEN_KNOWN) || pv_msg_get_u(m, PV_K_SEQ, &seq) < 0)
                return -EPROTO;

        struct vbp_end **slot = NULL;
        if (!p->cur)
                slot = &p->cur;
        else if (p->cur->gone && !p->next)
                slot = &p->next;   /* the last one is still flushing its bytes */
        if (!slot) {
                const struct vbp_end *o = p->cur->gone ? p->next : p->cur;
                p->refused_busy++;
                pvd_conn_reply_err(c, m, -EBUSY, "%s: this end of the pipe is open already (by %s[%d]); "
                                   "a second open waits until it is closed", p->name, o->comm, (int)o->pid);
                return 0;
        }

        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                int e = errno;
                pvd_conn_reply_err(c, m, -e, "%s: cannot create the pipe's sockets: %s", p->name, strerror(e));
                return 0;
        }
        int pfd = sv[0], dfd = sv[1];
        if (fcntl(dfd, F_SETFL, O_NONBLOCK) < 0) {
                close(pfd);
                close(dfd);
                pvd_conn_reply_err(c, m, -EIO, "%s: cannot set up the pipe's sockets", p->name);
                return 0;
        }
        if (!p->any) {
                /* A blocking read returns the whole count (or less at EOF or
                 * on a signal): the seed's read. */
                int lowat = INT_MAX;
                setsockopt(pfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
        }
        struct vbp_end *e = calloc(1, sizeof(*e));
        if (e)
                e->w = pvd_watch_new(p->vl->pvd->loop, dfd, 0, end_cb, e);
        else
                close(dfd);
        if (!e || !e->w) {
                free(e);
                close(pfd);
                pvd_conn_reply_err(c, m, -ENOMEM, "%s: out of memory", p->name);
                return 0;
        }
        pipe_enter(p);
        e->p = p;
        e->gen = ++p->next_gen;
        e->st = VBP_WAIT;
        e->prog_fd = -1;
        e->pid = c->cred.pid;
        snprintf(e->comm, sizeof(e->comm), "%s", c->comm);
        e->since_ms = uv_now(p->vl->pvd->loop);
        *slot = e;
        if (flags & VBPIPE_OPEN_NONBLOCK) {
                e->filler = fill_program_end(pfd);
                struct pv_msg r;
                pv_msg_init_reply(&r, m, 0);
                pv_msg_set_u(&r, PV_K_SIZE, p->size);
                pv_msg_set_u(&r, PV_K_FLAGS, p->any ? VBPIPE_INFO_ANY : 0);
                pv_msg_set_u(&r, PV_K_GEN, e->gen);
                pv_msg_add_fd(&r, pfd);
                if (pvd_conn_send(c, &r) < 0)
                        e->gone = true;
                close(pfd);
        } else {
                e->prog_fd = pfd;
                e->conn = c;
                e->seq = seq;
                c->priv = e;
        }
        pv_debug("vbpipe %s: %s[%d] opens (end %u%s)", p->name, e->comm, (int)e->pid, e->gen,
                 flags & VBPIPE_OPEN_NONBLOCK ? ", non-blocking" : "");
        end_watch(e);
        if (slot == &p->cur)
                end_announce(e);
        pipe_leave(p);
        return 0;
}

static void vbpipe_conn_close(struct pvd_conn *c)
{
        struct vbp_end *e = c->priv;
        if (!e)
                return;
        struct vbp_pipe *p = e->p;
        pipe_enter(p);
        c->priv = NULL;
        e->conn = NULL;
        e->gone = true;
        pipe_leave(p);
}

/* ---- peer messages --------------------------------------------------------------- */

static bool on_open(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        if (m->peer_gen || m->index || m->gen <= p->peer_max_gen || p->peer_waiting)
                return false;
        p->peer_max_gen = m->gen;
        p->peer_waiting = true;
        p->peer_wait_gen = m->gen;
        p->peer = PEER_WAITING;
        return true;
}

static bool on_pair(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        uint32_t s = m->gen, c = m->peer_gen;
        if (p->vl->side != PV_CLIENT || m->index || p->seg.active)
                return false;
        if (!(p->peer_waiting && s == p->peer_wait_gen) && s <= p->peer_max_gen)
                return false;
        if (c <= p->paired_max || c > p->announced_max)
                return false;
        if (s > p->peer_max_gen)
                p->peer_max_gen = s;
        p->peer_waiting = false;
        p->paired_max = c;
        struct vbp_end *e = p->cur;
        if (e && e->gen == c && e->st == VBP_WAIT && !e->gone) {
                end_pair(e, s);
                return true;
        }
        /* It paired an end of ours that gave up meanwhile: that end's STOP
         * and FIN are on their way; the server's bytes go nowhere. */
        memset(&p->seg, 0, sizeof(p->seg));
        p->seg.active = true;
        p->seg.gen = s;
        p->peer = PEER_OPEN;
        return true;
}

static bool on_stop(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        if (m->peer_gen || m->index || m->gen > p->peer_max_gen)
                return false;
        if (p->seg.active && p->seg.gen == m->gen) {
                p->seg.stopped = true;
                p->peer = PEER_CLOSING;
        }
        struct vbp_end *e = p->txe;
        if (e && e->peer_gen == m->gen) {
                /* The peer reads no more: the program's writes fail with
                 * EPIPE from now on; what it wrote and we did not move is
                 * dropped, as for a pipe whose reader is gone. */
                shutdown(end_fd(e), SHUT_RD);
                tx_finish(e);
        }
        return true;   /* a STOP for an end already finished is stale */
}

static bool on_fin(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        if (m->peer_gen)
                return false;
        if (p->seg.active && p->seg.gen == m->gen) {
                if (p->seg.fin)
                        return false;
                int64_t used = pv_bytering_used(&p->rx);
                if (used < 0 || m->index - p->rx.cons > (uint64_t)used)
                        return false;   /* bytes it never produced */
                p->seg.fin = true;
                p->seg.fin_at = m->index;
                p->peer = p->seg.stopped ? PEER_CLOSED : PEER_CLOSING;
                if (!p->seg.to)
                        seg_discard(p);
                else
                        rx_pump(p);
                return true;
        }
        if (p->peer_waiting && p->peer_wait_gen == m->gen) {
                /* An end that closed before pairing produced nothing. */
                uint32_t expect = p->rx_start;
                if (p->seg.active) {
                        if (!p->seg.fin)
                                return false;
                        expect = p->seg.fin_at;
                }
                if (m->index != expect)
                        return false;
                p->peer_waiting = false;
                p->peer = PEER_CLOSED;
                return true;
        }
        return false;
}

static void vbpipe_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct vbp_pipe *p = pipe_of(vl);
        struct vbpipe_msg m;
        if (len != sizeof(m) || !p->on) {
                pvd_vlink_fail(vl, "vbpipe %s: message of %u bytes (type %u)", p->name, len, type);
                return;
        }
        memcpy(&m, msg, sizeof(m));
        pipe_enter(p);
        bool ok;
        switch (type) {
        case VBPIPE_MSG_OPEN:
                ok = on_open(p, &m);
                break;
        case VBPIPE_MSG_PAIR:
                ok = on_pair(p, &m);
                break;
        case VBPIPE_MSG_STOP:
                ok = on_stop(p, &m);
                break;
        case VBPIPE_MSG_FIN:
                ok = on_fin(p, &m);
                break;
        default:
                ok = false;
        }
        if (!ok && p->on)
                pvd_vlink_fail(vl, "vbpipe %s: impossible message from the peer (type %u, end %u, end %u, index %u)",
                               p->name, type, m.gen, m.peer_gen, m.index);
        pipe_leave(p);
}

static void vbpipe_kick(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p->on)
                return;
        pipe_enter(p);
        struct vbp_end *e = p->txe;
        if (e && e->tx_full) {
                /* The xIRQ cleared prod_wait, whether or not it made room
                 * (the consumer notifies when it is about to sleep too):
                 * pump again, and tx_pump sleeps again, re-arming prod_wait,
                 * if the ring is still full. */
                e->tx_full = false;
                end_watch(e);
                tx_pump(p);
        }
        rx_pump(p);
        pipe_leave(p);
}

/* ---- vlink life --------------------------------------------------------------------- */

static size_t vbpipe_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->kind == PV_VLINK_VBPIPE ? (size_t)vbpipe_region_bytes(cfg->vbpipe_size) : 0;
}

static void vbpipe_region_init(struct pvd_vlink *vl)
{
        struct vbpipe_region *h = vl->region[PV_REGION_VBPIPE].base;
        h->magic = VBPIPE_MAGIC;
        h->version = VBPIPE_VERSION;
        h->ring_size = (uint32_t)vl->cfg->vbpipe_size;
}

static void vbpipe_up(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        struct pvd_region *r = &vl->region[PV_REGION_VBPIPE];
        struct vbpipe_region *h = r->base;
        if (!h || r->size < vbpipe_region_bytes(p->size)) {
                pvd_vlink_fail(vl, "vbpipe %s: no vbpipe memory on the vlink", p->name);
                return;
        }
        if (vl->side == PV_CLIENT) {
                uint32_t magic = shm_read32(&h->magic), version = shm_read32(&h->version);
                uint32_t size = shm_read32(&h->ring_size);
                if (magic != VBPIPE_MAGIC || version != VBPIPE_VERSION || size != p->size) {
                        pvd_vlink_fail(vl, "vbpipe %s: the server's memory has magic %#x, version %u, ring size %u "
                                       "(expected %#x, %u, %u)", p->name, magic, version, size, VBPIPE_MAGIC,
                                       VBPIPE_VERSION, p->size);
                        return;
                }
        }
        uint8_t *base = r->base;
        struct pv_ring_hdr *s2c = &h->s2c, *c2s = &h->c2s;
        uint8_t *s2c_data = base + vbpipe_s2c_data(p->size), *c2s_data = base + vbpipe_c2s_data(p->size);
        bool server = vl->side == PV_SERVER;
        /* Fresh memory is zero: neither side resets what the other may use. */
        pv_ring_init(&p->tx, server ? s2c : c2s, server ? s2c_data : c2s_data, p->size, false);
        pv_ring_init(&p->rx, server ? c2s : s2c, server ? c2s_data : s2c_data, p->size, false);
        memset(&p->seg, 0, sizeof(p->seg));
        p->rx_start = 0;
        p->txe = NULL;
        p->peer_waiting = false;
        p->peer_max_gen = p->paired_max = p->announced_max = 0;
        p->peer = PEER_CLOSED;
        p->on = true;
        pipe_enter(p);
        if (p->cur)
                end_announce(p->cur);
        pipe_leave(p);
}

/* The peer VM is gone: every conversation ends as if its program had
 * closed (the bytes that arrived are still read, then EOF; writes fail
 * with EPIPE). Waiting opens stay and are announced again when it returns. */
static void vbpipe_down(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p->on)
                return;
        pipe_enter(p);
        struct vbp_end *e = p->cur;
        if (e && e->st == VBP_OPEN) {
                if (!e->tx_done) {
                        shutdown(end_fd(e), SHUT_RD);
                        e->tx_done = true;
                        e->tx_full = false;
                }
                if (!e->rx_done && !e->tail) {
                        size_t have = 0;
                        struct iovec iov[2];
                        int n;
                        int64_t used = p->seg.active && p->seg.to == e ? pv_bytering_rspan(&p->rx, iov, &n) : 0;
                        if (used > 0) {
                                size_t limit = p->seg.fin ? p->seg.fin_at - p->rx.cons : (size_t)used;
                                e->tail = malloc(limit);
                                for (int i = 0; e->tail && i < n && have < limit; i++) {
                                        size_t k = iov[i].iov_len < limit - have ? iov[i].iov_len : limit - have;
                                        memcpy(e->tail + have, iov[i].iov_base, k);
                                        have += k;
                                }
                        }
                        e->tail_len = have;
                        e->tail_off = 0;
                        e->rx_blocked = false;
                        if (e->tail)
                                tail_pump(e);
                        else {
                                shutdown(end_fd(e), SHUT_WR);
                                e->rx_done = true;
                        }
                }
                end_watch(e);
                pv_notice("vbpipe %s: %s went away: the conversation of %s[%d] ends", p->name, vl->peer_vm, e->comm,
                          (int)e->pid);
        }
        if (e && e->st == VBP_WAIT)
                e->announced = false;
        if (p->next)
                p->next->announced = false;
        p->xirq_sent += p->tx.stats.xirq_sent + p->rx.stats.xirq_sent;
        p->xirq_suppressed += p->tx.stats.xirq_suppressed + p->rx.stats.xirq_suppressed;
        memset(&p->tx, 0, sizeof(p->tx));
        memset(&p->rx, 0, sizeof(p->rx));
        memset(&p->seg, 0, sizeof(p->seg));
        p->txe = NULL;
        p->peer_waiting = false;
        p->peer = PEER_CLOSED;
        p->on = false;
        pipe_leave(p);
}

static int vbpipe_attach(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        const struct pv_info *in = &vl->cfg->info[vl->side];
        p->vl = vl;
        p->name = vl->cfg->pipe_name[vl->side];
        p->any = in->vbpipe_any;
        p->wakeup_ms = in->wakeup_ms;
        p->size = (uint32_t)vl->cfg->vbpipe_size;
        p->wake_fd = -1;
        if (!pv_ring_size_valid(p->size)) {
                pv_err("vbpipe %s: ring size %u is not a power of two", p->name, p->size);
                free(p);
                return -EINVAL;
        }
        /* PVD_WAKE_LOCK names another file (tests, or a system that keeps
         * wake locks elsewhere). */
        const char *wl = getenv("PVD_WAKE_LOCK");
        snprintf(p->wake_path, sizeof(p->wake_path), "%s", wl && *wl ? wl : VBP_WAKE_LOCK);
        if (p->wakeup_ms) {
                p->wake_fd = open(p->wake_path, O_WRONLY | O_CLOEXEC);
                if (p->wake_fd < 0)
                        pv_info("vbpipe %s: wakeup=%u accepted, but %s is not writable (%s): no wake locks", p->name,
                                p->wakeup_ms, p->wake_path, strerror(errno));
        }
        vl->drv[PV_DRV_VBPIPE] = p;
        return 0;
}

static void vbpipe_detach(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p)
                return;
        p->depth++;   /* nothing is reaped any more: everything goes here */
        if (p->next) {
                end_answer(p->next, -ECONNRESET);
                end_free(p->next);
        }
        if (p->cur) {
                end_answer(p->cur, -ECONNRESET);
                end_free(p->cur);
        }
        if (p->wake_fd >= 0)
                close(p->wake_fd);
        free(p);
        vl->drv[PV_DRV_VBPIPE] = NULL;
}

/* ---- pvctl stat vbpipe ------------------------------------------------------------------- */

static const char *peer_state_name(const struct vbp_pipe *p)
{
        if (!p->on)
                return "unknown";
        switch (p->peer) {
        case PEER_WAITING:
                return "waiting";
        case PEER_OPEN:
                return "open";
        case PEER_CLOSING:
                return "closing";
        case PEER_CLOSED:
                break;
        }
        return "closed";
}

static void pack_flow(msgpack_packer *pk, const char *key, const struct vbp_flow *f, int64_t fill)
{
        pvd_pack_str(pk, key);
        msgpack_pack_map(pk, 4);
        pvd_pack_kv_u64(pk, "bytes", f->bytes);
        pvd_pack_kv_u64(pk, "writes", f->xfers);
        pvd_pack_kv_u64(pk, "fill", fill > 0 ? (uint64_t)fill : 0);
        pvd_pack_kv_u64(pk, "peak", f->peak);
}

static void vbpipe_stat(struct pvd_vlink *vl, msgpack_packer *pk)
{
        struct vbp_pipe *p = pipe_of(vl);
        const struct vbp_end *e = p->cur;
        uint64_t now = uv_now(vl->pvd->loop);
        int64_t tx_free = p->on ? pv_ring_prod_free(&p->tx) : p->size;
        int64_t tx_fill = tx_free >= 0 ? (int64_t)p->size - tx_free : 0;
        int64_t rx_fill = p->on ? pv_bytering_used(&p->rx) : 0;
        uint64_t sent = p->xirq_sent + p->tx.stats.xirq_sent + p->rx.stats.xirq_sent;
        uint64_t saved = p->xirq_suppressed + p->tx.stats.xirq_suppressed + p->rx.stats.xirq_suppressed;
        char reason[192] = "";
        if (p->wakeup_ms && p->wake_fd < 0)
                snprintf(reason, sizeof(reason), "%s is not writable here: wakeup= is accepted and ignored",
                         p->wake_path);

        msgpack_pack_map(pk, 17);
        pvd_pack_kv_str(pk, "pipe", p->name);
        pvd_pack_kv_str(pk, "flags", p->any ? "a" : "");
        pvd_pack_kv_u64(pk, "ring_size", p->size);
        pvd_pack_str(pk, "local");
        msgpack_pack_map(pk, 6);
        pvd_pack_kv_str(pk, "state", end_state_name(e));
        pvd_pack_kv_u64(pk, "end", e ? e->gen : 0);
        pvd_pack_kv_u64(pk, "pid", e ? (uint64_t)e->pid : 0);
        pvd_pack_kv_str(pk, "program", e ? e->comm : "");
        pvd_pack_kv_u64(pk, "since_ms", e ? now - e->since_ms : 0);
        pvd_pack_kv_bool(pk, "queued_open", p->next != NULL);
        pvd_pack_str(pk, "peer");
        msgpack_pack_map(pk, 1);
        pvd_pack_kv_str(pk, "state", peer_state_name(p));
        pvd_pack_kv_u64(pk, "conversations", p->conversations);
        pvd_pack_kv_u64(pk, "refused_busy", p->refused_busy);
        pvd_pack_kv_u64(pk, "abandoned_opens", p->cancelled);
        pack_flow(pk, "to_peer", &p->out, tx_fill);
        pack_flow(pk, "from_peer", &p->in, rx_fill);
        pvd_pack_kv_u64(pk, "xirq_sent", sent);
        pvd_pack_kv_u64(pk, "xirq_suppressed", saved);
        pvd_pack_kv_u64(pk, "wakeup_ms", p->wakeup_ms);
        pvd_pack_kv_bool(pk, "wake_lock", p->wake_fd >= 0);
        pvd_pack_kv_str(pk, "wake_lock_path", p->wake_path);
        pvd_pack_kv_u64(pk, "wake_locks_taken", p->wake_count);
        pvd_pack_kv_str(pk, "wake_lock_note", reason);
}

const struct pvd_driver pvd_drv_vbpipe = {
        .name = "vbpipe",
        .id = PV_DRV_VBPIPE,
        .region = PV_REGION_VBPIPE,
        .region_size = vbpipe_region_size,
        .region_init = vbpipe_region_init,
        .attach = vbpipe_attach,
        .detach = vbpipe_detach,
        .up = vbpipe_up,
        .down = vbpipe_down,
        .msg = vbpipe_msg,
        .kick = vbpipe_kick,
        .conn_msg = vbpipe_conn_msg,
        .conn_close = vbpipe_conn_close,
        .stat = vbpipe_stat,
};
