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
 * OPEN, PAIR (the server proposes), ACCEPT (the client's end is still
 * there), STOP (my reader is gone) and FIN (my bytes end here) on the
 * control ring. The peer's bytes of one end are a
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
 * Ends are freed only at the end of an entry point (vbp_pipe_leave): a send to
 * the peer can reset the vlink, and so run vbpipe_down, in the middle of
 * anything.
 *
 * This file holds the ends and the program's requests; the pumps that move
 * the bytes are vbpipe-data.c, the messages between the pvds
 * vbpipe-peer.c, the rings lent to programs vbpipe-direct.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pv-bytering.h"
#include "pvd.h"
#include "vbpipe-int.h"
#include "vbpipe-proto.h"
#include "watch.h"

static void pipe_reap(struct vbp_pipe *p);

void vbp_pipe_enter(struct vbp_pipe *p)
{
        p->depth++;
}

void vbp_pipe_leave(struct vbp_pipe *p)
{
        if (--p->depth == 0) {
                p->depth++;
                pipe_reap(p);
                vbp_dir_grant(p);
                p->depth--;
        }
}

/* ---- to the peer ------------------------------------------------------------ */

/* Send a message to the peer pvd. false if the vlink is not ON afterwards
 * (a failed send resets it): the caller stops there. */
bool vbp_peer_send(struct vbp_pipe *p, uint32_t type, uint32_t gen, uint32_t peer_gen, uint32_t index)
{
        if (!p->on)
                return false;
        struct vbpipe_msg m = { .gen = gen, .peer_gen = peer_gen, .index = index };
        int rc = pvd_vlink_send(p->vl, PV_DRV_VBPIPE, type, &m, sizeof(m));
        if (rc < 0 && p->on)
                pvd_vlink_fail(p->vl, "vbpipe %s: cannot send to the peer (%s)", p->name, strerror(-rc));
        return p->on;
}

/* ---- ends ------------------------------------------------------------------- */

const char *vbp_end_state_name(const struct vbp_end *e)
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
void vbp_end_watch(struct vbp_end *e)
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

bool vbp_end_hung_up(const struct vbp_end *e)
{
        struct pollfd pf = { .fd = end_fd(e), .events = 0 };
        return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR));
}

bool vbp_end_closed(const struct vbp_end *e)
{
        return e->gone || (e->prog_fd < 0 && vbp_end_hung_up(e));
}

void vbp_seg_end(struct vbp_pipe *p)
{
        p->rx_start = p->seg.fin_at;
        p->seg.active = false;
        p->seg.to = NULL;
        if (p->peer == PEER_CLOSING || p->peer == PEER_OPEN)
                p->peer = PEER_CLOSED;
}

/* Nobody reads the segment and its end is known: drop its bytes. */
void vbp_seg_discard(struct vbp_pipe *p)
{
        uint32_t n = p->seg.fin_at - p->rx.cons;
        if (n)
                pv_bytering_consume(&p->rx, n);
        vbp_seg_end(p);
        vbp_rx_notify(p);
}

/* The program reads no more: tell the peer's writer, drop what comes. */
void vbp_reader_gone(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (e->rx_done)
                return;
        e->rx_done = true;
        e->rx_blocked = false;
        free(e->tail);
        e->tail = NULL;
        vbp_end_watch(e);
        if (!p->seg.active || p->seg.to != e)
                return;
        p->seg.to = NULL;
        if (p->seg.fin) {
                vbp_seg_discard(p);
        } else if (!e->stop_sent) {
                /* Even when the peer's reader is gone too: its writer may
                 * wait for room in a ring that only its STOP (our FIN, then
                 * a discard) will empty. */
                e->stop_sent = true;
                vbp_peer_send(p, VBPIPE_MSG_STOP, e->gen, 0, 0);
        }
}

/* No more bytes from the program into the ring: FIN at where they end. */
void vbp_tx_finish(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (e->tx_done)
                return;
        e->tx_done = true;
        e->tx_full = false;
        if (p->txe == e)
                p->txe = NULL;
        vbp_end_watch(e);
        pv_debug("vbpipe %s: end %u: FIN at %u", p->name, e->gen, p->tx.prod);
        vbp_peer_send(p, VBPIPE_MSG_FIN, e->gen, 0, p->tx.prod);
}

/* The program's end is closed (or shut both ways). */
void vbp_end_gone(struct vbp_end *e)
{
        if (e->gone)
                return;
        /* No process holds the end any more: none holds its rings. */
        if (e == e->p->cur)
                vbp_dir_claim(e->p, CLAIM_FORCE);
        e->gone = true;
        pv_debug("vbpipe %s: end %u: the program closed it (tx %d%s, rx %d)", e->p->name, e->gen, e->tx_done,
                 e->tx_full ? " full" : "", e->rx_done);
        if (e->st == VBP_OPEN)
                vbp_reader_gone(e);
        vbp_end_watch(e);
}

/* The program closed its end, or died in its blocking open, whether or
 * not the loop said so yet. The kernel knows at once: a program reaped
 * before its peer opens is never paired with it, however late pvd's
 * loop comes to its hang-up. */
void vbp_end_check_gone(struct vbp_end *e)
{
        if (!e || e->gone)
                return;
        if (e->prog_fd < 0) {
                if (vbp_end_hung_up(e))
                        vbp_end_gone(e);
                return;
        }
        struct pollfd pf = { .fd = e->conn ? e->conn->fd : -1, .events = POLLRDHUP };
        if (e->conn && poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR | POLLRDHUP)))
                vbp_end_gone(e);
}

/* Answer a blocking open: the program gets its end now. */
void vbp_end_answer(struct vbp_end *e, int diag)
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
                pv_msg_set_u(&r, PV_K_GEN, e->gen);
                pv_msg_add_fd(&r, e->prog_fd);
                uint64_t info = vbp_dir_answer_fds(e, &r);
                pv_msg_set_u(&r, PV_K_FLAGS, (e->p->any ? VBPIPE_INFO_ANY : 0) | info);
        } else {
                pv_msg_set_str(&r, PV_K_MSG, "the pipe went away while the open waited (pvd stopping)");
        }
        int rc = pvd_conn_send(c, &r);
        close(e->prog_fd);
        e->prog_fd = -1;
        if (rc < 0)
                e->gone = true;   /* the program never got its end */
        vbp_end_watch(e);
}

/* Read back and drop the filler that kept a non-blocking end unwritable. */
static uint8_t scratch[VBP_FILLER_CHUNK];

static void end_drop_filler(struct vbp_end *e)
{
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

/* Both ends are open: a conversation starts. */
void vbp_end_pair(struct vbp_end *e, uint32_t peer_gen)
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
        p->proposed = false;
        p->peer = PEER_OPEN;
        p->conversations++;
        end_drop_filler(e);
        pv_info("vbpipe %s: %s[%d] and the peer's end in %s are open (conversation %llu)", p->name, e->comm,
                (int)e->pid, p->vl->peer_vm, (unsigned long long)p->conversations);
        vbp_end_answer(e, 0);
        vbp_end_watch(e);
        vbp_tx_pump(p);
        vbp_rx_pump(p);
}

/* Tell the peer that cur is open, or (server) pair it at once. */
void vbp_end_announce(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (!p->on || e->announced || e->gone || e->st != VBP_WAIT)
                return;
        e->announced = true;
        if (p->vl->side == PV_CLIENT)
                p->announced_max = e->gen;
        /* The server pairs in pipe_reap when it can; it announces the end
         * anyway, so that the client can show the server's end waiting. */
        vbp_peer_send(p, VBPIPE_MSG_OPEN, e->gen, 0, 0);
}

static bool end_over(const struct vbp_end *e)
{
        if (e->st == VBP_WAIT)
                return e->gone;
        return e->tx_done && e->rx_done && !e->tail;
}

void vbp_end_free(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
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
        /* Bytes the program wrote that nobody will read (its peer left):
         * drop them first. Closing a socket with unread bytes resets its
         * peer, and the program's read would fail with ECONNRESET instead
         * of returning EOF as a pipe's does. Nothing new comes in: D is
         * shut for reading or the program's writing is over; the bound is
         * for a program that writes on while pvd stops. The shutdown
         * makes sure: its writes fail with EPIPE from here on. */
        if (e->w)
                shutdown(end_fd(e), SHUT_RD);
        for (int i = 0; e->w && i < 64; i++)
                if (recv(end_fd(e), scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
                        break;
        pvd_watch_close(e->w);
        vbp_dir_free(e);
        free(e->tail);
        free(e);
}

/* Free the ends that are over, let a waiting open take the pipe, and
 * (server) pair ends. Runs when the last entry point leaves. */
static void pipe_reap(struct vbp_pipe *p)
{
        for (int guard = 0; guard < 16; guard++) {
                if (p->next && p->next->gone) {
                        vbp_end_free(p->next);
                        p->next = NULL;
                }
                struct vbp_end *e = p->cur;
                if (e && end_over(e)) {
                        if (e->st == VBP_WAIT) {
                                p->cancelled++;
                                pv_debug("vbpipe %s: %s[%d] gave up its open", p->name, e->comm, (int)e->pid);
                                /* An announced end ends like any other: STOP, FIN. */
                                if (e->announced && vbp_peer_send(p, VBPIPE_MSG_STOP, e->gen, 0, 0))
                                        vbp_peer_send(p, VBPIPE_MSG_FIN, e->gen, 0, p->tx.prod);
                        } else {
                                pv_info("vbpipe %s: conversation of %s[%d] closed", p->name, e->comm, (int)e->pid);
                        }
                        p->cur = p->next;
                        p->next = NULL;
                        vbp_end_free(e);
                        if (p->cur)
                                vbp_end_announce(p->cur);
                        continue;
                }
                /* The server offers to pair its waiting end with the client's
                 * once both directions of the previous conversation are
                 * done, and its own program is still there. The
                 * conversation starts at the client's ACCEPT; a client end
                 * that closed meanwhile refuses by its STOP (vbpipe-peer.c). */
                if (p->vl->side == PV_SERVER && p->on && e && e->st == VBP_WAIT && e->announced && !e->gone &&
                    p->peer_waiting && !p->peer_wait_stopped && !p->proposed && !p->seg.active && !p->txe) {
                        vbp_end_check_gone(e);
                        if (e->gone)
                                continue;
                        p->proposed = true;
                        p->proposed_gen = e->gen;
                        vbp_peer_send(p, VBPIPE_MSG_PAIR, e->gen, p->peer_wait_gen, 0);
                        continue;
                }
                break;
        }
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

        /* A program that closes its end and opens again at once may be
         * quicker than the loop's news of the close: look now, so that
         * close-then-open works as on a device instead of failing with
         * EBUSY. */
        vbp_enter(p, CLAIM_WAIT);   /* only a closed end's rings are needed here, and taken */
        vbp_end_check_gone(p->cur);
        vbp_end_check_gone(p->next);
        vbp_pipe_leave(p);

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
                e->w = pvd_watch_new(p->vl->pvd->loop, dfd, 0, vbp_end_cb, e);
        else
                close(dfd);
        if (!e || !e->w) {
                free(e);
                close(pfd);
                pvd_conn_reply_err(c, m, -ENOMEM, "%s: out of memory", p->name);
                return 0;
        }
        vbp_pipe_enter(p);
        e->p = p;
        e->dir_fd = -1;
        if ((flags & VBPIPE_OPEN_DIRECT) && vbp_dir_create(e) < 0)
                pv_info("vbpipe %s: no direct access for this end (no memory for its page)", p->name);
        e->gen = ++p->next_gen;
        e->st = VBP_WAIT;
        e->prog_fd = -1;
        e->pid = c->cred.pid;
        e->uid = c->cred.uid;
        snprintf(e->comm, sizeof(e->comm), "%s", c->comm);
        e->since_ms = uv_now(p->vl->pvd->loop);
        *slot = e;
        if (flags & VBPIPE_OPEN_NONBLOCK) {
                e->filler = fill_program_end(pfd);
                struct pv_msg r;
                pv_msg_init_reply(&r, m, 0);
                pv_msg_set_u(&r, PV_K_SIZE, p->size);
                pv_msg_set_u(&r, PV_K_GEN, e->gen);
                pv_msg_add_fd(&r, pfd);
                uint64_t info = vbp_dir_answer_fds(e, &r);
                pv_msg_set_u(&r, PV_K_FLAGS, (p->any ? VBPIPE_INFO_ANY : 0) | info);
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
        vbp_end_watch(e);
        if (slot == &p->cur)
                vbp_end_announce(e);
        vbp_pipe_leave(p);
        return 0;
}

static void vbpipe_conn_close(struct pvd_conn *c)
{
        struct vbp_end *e = c->priv;
        if (!e)
                return;
        struct vbp_pipe *p = e->p;
        vbp_pipe_enter(p);
        c->priv = NULL;
        e->conn = NULL;
        e->gone = true;
        vbp_pipe_leave(p);
}

const struct pvd_driver pvd_drv_vbpipe = {
        .name = "vbpipe",
        .id = PV_DRV_VBPIPE,
        .region = PV_REGION_VBPIPE,
        .region_size = vbpipe_region_size,
        .region_init = vbpipe_region_init,
        .client_join = vbpipe_client_join,
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

