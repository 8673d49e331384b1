/* VBPIPE's data path (daemon side): the pumps that move bytes between the
 * socket pvd keeps of each program's end and the vlink's two byte rings,
 * readv/writev straight into and out of ring memory, and the hot polling
 * that keeps a busy conversation from sleeping between hops. vbpipe.c
 * holds the ends and the program's requests; vbpipe-int.h what they share.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pv-bytering.h"
#include "pvd.h"
#include "vbpipe-int.h"
#include "vbpipe-proto.h"
#include "watch.h"

/* ---- to the peer --------------------------------------------------------------- */

void vbp_fail_corrupt(struct vbp_pipe *p, const char *what)
{
        pvd_vlink_fail(p->vl, "vbpipe %s: %s", p->name, what);
}

void vbp_tx_notify(struct vbp_pipe *p)
{
        if (pv_ring_prod_notify(&p->tx))
                pvd_vlink_notify(p->vl);
}

void vbp_rx_notify(struct vbp_pipe *p)
{
        if (pv_ring_cons_notify(&p->rx))
                pvd_vlink_notify(p->vl);
}

/* wakeup=MS: keep the system awake for MS after the peer's bytes arrive,
 * so that it cannot suspend before the reader runs. One write per half
 * period at most. */
void vbp_wake_hold(struct vbp_pipe *p)
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

/* ---- hot polling ---------------------------------------------------------------- */

/* A conversation is often a quick exchange: a byte out, an answer back.
 * Sleeping between the two costs two wake-ups per pvd per round trip (the
 * program's socket, then the peer's xIRQ), and on a virtual machine each
 * is tens of microseconds. So for spin_ns after bytes moved, the loop does
 * not sleep: an idle handle polls D and the rx ring at every turn (libuv
 * then polls its other fds without waiting, so nothing else waits
 * either), and the peer is told not to send xIRQs for the rx ring (its
 * cons_wait stays 0). When the time is up, the ring is armed again the
 * usual way. PVD_SPIN_US sets the time (0: never); a machine with one CPU
 * never polls, as the poller would only keep the other side from running. */
static void hot_cb(uv_idle_t *h)
{
        struct vbp_pipe *p = h->data;
        if (!vbp_enter(p, CLAIM_TRY)) {
                vbp_pipe_leave(p);   /* the program is at the rings itself */
                return;
        }
        if (!p->on || uv_hrtime() >= p->hot_until_ns) {
                p->hot = false;
                uv_idle_stop(h);
                vbp_rx_pump(p);   /* arms cons_wait if the ring is empty */
        } else {
                if (p->txe && !p->txe->tx_full)
                        vbp_tx_pump(p);
                vbp_rx_pump(p);
                /* A program woken on this CPU runs first: pvd's loop yields
                 * once per turn (pvd_hot), however many pipes poll. */
                if (p->hot)
                        pvd_hot(p->vl->pvd);
        }
        vbp_pipe_leave(p);
}

static void vbp_hot_touch(struct vbp_pipe *p)
{
        if (!p->spin_ns || !p->idle)
                return;
        /* A program with direct access polls the rings itself: pvd would
         * only take a CPU from it. */
        if (p->cur && p->cur->dir && !p->cur->dir_bad)
                return;
        p->hot_until_ns = uv_hrtime() + p->spin_ns;
        if (p->hot)
                return;
        p->hot = true;
        p->hot_spells++;
        uv_idle_start(p->idle, hot_cb);
}

int vbp_hot_init(struct vbp_pipe *p)
{
        p->spin_ns = pvd_spin_ns(VBP_SPIN_US_DEFAULT);
        p->more = malloc(sizeof(*p->more));
        if (!p->more || uv_idle_init(p->vl->pvd->loop, p->more) < 0) {
                free(p->more);
                p->more = NULL;
                return -ENOMEM;
        }
        p->more->data = p;
        if (!p->spin_ns)
                return 0;
        p->idle = malloc(sizeof(*p->idle));
        if (!p->idle || uv_idle_init(p->vl->pvd->loop, p->idle) < 0) {
                free(p->idle);
                p->idle = NULL;
                return -ENOMEM;
        }
        p->idle->data = p;
        return 0;
}

static void idle_closed(uv_handle_t *h)
{
        free(h);
}

void vbp_hot_fini(struct vbp_pipe *p)
{
        if (p->idle)
                uv_close((uv_handle_t *)p->idle, idle_closed);
        if (p->more)
                uv_close((uv_handle_t *)p->more, idle_closed);
        p->idle = NULL;
        p->more = NULL;
        p->hot = false;
}

/* ---- data path ---------------------------------------------------------------- */

static void more_cb(uv_idle_t *h)
{
        struct vbp_pipe *p = h->data;
        uv_idle_stop(h);
        if (vbp_enter(p, CLAIM_WAIT))   /* put off: the doorbell's vbp_refresh pumps */
                vbp_rx_pump(p);
        vbp_pipe_leave(p);
}

/* Program -> peer: read D straight into the tx ring. */
void vbp_tx_pump(struct vbp_pipe *p)
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
                        vbp_fail_corrupt(p, "the peer's consumer index of our ring is impossible");
                        return;
                }
                if (avail == 0) {
                        vbp_tx_notify(p);
                        if (pv_ring_prod_prepare_sleep(&p->tx, 1)) {
                                e->tx_full = true;
                                vbp_end_watch(e);
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
                        vbp_tx_notify(p);
                        vbp_hot_touch(p);
                        if (r < avail)
                                return;   /* D is drained: level-triggered poll brings the rest */
                        continue;
                }
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0 && errno == EAGAIN)
                        return;
                /* EOF: the program closed its end or shut its writing.
                 * Closed, it reads no more either: its STOP goes before
                 * the FIN, so the peer's program cannot see the EOF and
                 * then write as if someone still read. */
                if (p->on && vbp_end_hung_up(e))
                        vbp_end_gone(e);
                vbp_tx_finish(e);
                return;
        }
}

/* Peer -> program: write straight from the rx ring into D. */
void vbp_rx_pump(struct vbp_pipe *p)
{
        if (!p->on)
                return;
        struct vbp_end *e = p->seg.active ? p->seg.to : NULL;
        if (!e || e->rx_blocked || e->rx_done) {
                /* Nobody to deliver to now: still check what the peer wrote. */
                if (pv_bytering_used(&p->rx) < 0)
                        vbp_fail_corrupt(p, "the peer's producer index of its ring is impossible");
                return;
        }
        if (vbp_dir_reading(p, e)) {
                /* The program reads in a loop and comes back for them;
                 * pvd looks out for it (vbpipe-direct.c). */
                if (pv_bytering_used(&p->rx) < 0)
                        vbp_fail_corrupt(p, "the peer's producer index of its ring is impossible");
                return;
        }
        int fd = end_fd(e);
        for (int round = 0; round < VBP_PUMP_ROUNDS; round++) {
                struct iovec iov[2];
                int n;
                int64_t used = pv_bytering_rspan(&p->rx, iov, &n);
                if (used < 0) {
                        vbp_fail_corrupt(p, "the peer's producer index of its ring is impossible");
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
                                vbp_seg_end(p);
                                vbp_end_watch(e);
                                return;
                        }
                        if (iov[0].iov_len >= left) {
                                iov[0].iov_len = left;
                                n = 1;
                        } else if (n == 2 && iov[0].iov_len + iov[1].iov_len > left) {
                                iov[1].iov_len = left - iov[0].iov_len;
                        }
                } else if (used == 0) {
                        vbp_rx_notify(p);
                        if (p->hot) {
                                /* Polled: the peer need not wake us. */
                                ring_store_relaxed(&p->rx.hdr->cons_wait, 0);
                                return;
                        }
                        if (pv_ring_cons_prepare_sleep(&p->rx))
                                return;
                        continue;
                }
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
                ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                        if (e->dir)
                                ring_store_release(&e->dir->rx.sock, 1);
                        pv_bytering_consume(&p->rx, (uint32_t)w);
                        p->in.bytes += (uint64_t)w;
                        p->in.xfers++;
                        vbp_rx_notify(p);
                        vbp_wake_hold(p);
                        vbp_hot_touch(p);
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN) {
                        e->rx_blocked = true;
                        vbp_end_watch(e);
                        vbp_rx_notify(p);
                        return;
                }
                vbp_reader_gone(e);   /* EPIPE: the program closed or shut its reading */
                return;
        }
        /* Bytes may be left, and nothing else brings us back for them: the
         * peer's xIRQ came already (its cons_wait is 0) and D is not
         * watched while it takes more. Go on at the loop's next turn, after
         * the other fds had theirs. */
        if (p->more)
                uv_idle_start(p->more, more_cb);
}

/* After the vlink went down: the bytes saved from the ring, then EOF. */
void vbp_tail_pump(struct vbp_end *e)
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
                        vbp_end_watch(e);
                        return;
                }
                break;   /* the program reads no more */
        }
        free(e->tail);
        e->tail = NULL;
        shutdown(fd, SHUT_WR);
        e->rx_done = true;
        e->rx_blocked = false;
        vbp_end_watch(e);
}

/* After events were put off while the program held a ring: the peer's
 * messages that waited, then everything level-triggered again. */
void vbp_refresh(struct vbp_pipe *p)
{
        vbp_msg_drain(p);
        struct vbp_end *e = p->cur;
        /* An xIRQ put off meanwhile cleared prod_wait: a writer waiting for
         * room must look again (vbp_tx_pump re-arms prod_wait if the ring
         * is still full), or nothing would ever wake it. */
        if (p->txe && p->txe->tx_full)
                p->txe->tx_full = false;
        if (e && e->w)
                vbp_end_watch(e);
        if (p->next && p->next->w)
                vbp_end_watch(p->next);
        if (p->txe && !p->txe->tx_full)
                vbp_tx_pump(p);
        vbp_rx_pump(p);
        vbp_end_check_gone(p->cur);
        vbp_end_check_gone(p->next);
}

void vbp_end_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct vbp_end *e = arg;
        struct vbp_pipe *p = e->p;
        if (!vbp_enter(p, CLAIM_WAIT)) {
                if (!vbp_end_hung_up(e)) {
                        /* The program is at the rings: look again when it
                         * rings the doorbell (vbp_refresh watches D again). */
                        pvd_watch_set(w, 0);
                        vbp_pipe_leave(p);
                        return;
                }
                vbp_dir_claim(p, CLAIM_FORCE);   /* closed: nobody holds them */
        }
        if (status < 0) {
                /* POLLERR on D: the program closed its end with bytes of
                 * the peer unread, which resets D (ECONNRESET), and libuv
                 * stopped watching D. What the program wrote before its
                 * close is still queued on D, and a pipe delivers it: clear
                 * the error, watch again, take the close as a hang-up and
                 * go on moving those bytes (tx_pump finishes at their end,
                 * or at any error reading D). */
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(end_fd(e), SOL_SOCKET, SO_ERROR, &err, &len);
                pvd_watch_set(w, 0);
                vbp_end_gone(e);
                if (e->st == VBP_OPEN && !e->tx_done) {
                        if (p->txe == e)
                                vbp_tx_pump(p);
                        else
                                vbp_tx_finish(e);
                }
                vbp_end_watch(e);
                goto out;
        }
        if (events & UV_WRITABLE) {
                e->rx_blocked = false;
                vbp_end_watch(e);
                if (e->tail)
                        vbp_tail_pump(e);
                else
                        vbp_rx_pump(p);
        }
        if ((events & UV_READABLE) && p->txe == e)
                vbp_tx_pump(p);
        if (!e->gone && ((events & UV_PRIORITIZED) || !(events & (UV_READABLE | UV_WRITABLE))) && vbp_end_hung_up(e))
                vbp_end_gone(e);
out:
        vbp_pipe_leave(p);
}

