/* VBPIPE daemon side: the messages between the two pvds (OPEN, PAIR, STOP,
 * FIN of proto/vbpipe-proto.h), the peer's xIRQ, and the vlink's life
 * (attach, up, down, detach). See vbpipe.c for how the driver works. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vbpipe-int.h"
#include "vbpipe-proto.h"

static bool on_open(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        if (m->peer_gen || m->index || m->gen <= p->peer_max_gen || p->peer_waiting)
                return false;
        p->peer_max_gen = m->gen;
        p->peer_waiting = true;
        p->peer_wait_gen = m->gen;
        p->peer_wait_stopped = false;
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
        if (s > p->peer_max_gen) {
                p->peer_max_gen = s;
                p->peer_waiting = true;   /* a PAIR announces the server's end too */
                p->peer_wait_gen = s;
                p->peer_wait_stopped = false;
        }
        p->paired_max = c;
        struct vbp_end *e = p->cur;
        vbp_end_check_gone(e);
        if (e && e->gen == c && e->st == VBP_WAIT && !e->gone) {
                if (vbp_peer_send(p, VBPIPE_MSG_ACCEPT, c, s, 0))
                        vbp_end_pair(e, s);
                return true;
        }
        /* The end it offers to pair closed meanwhile (its program may be
         * dead without the loop knowing yet): no conversation. That end's
         * STOP and FIN, sent or on their way, tell the server, whose end
         * waits on for our next one. */
        pv_debug("vbpipe %s: the server's end %u offered a conversation to our end %u, which is closed", p->name,
                 s, c);
        return true;
}

/* Server: the client's end took ours; what the server's program is
 * answered only now. */
static bool on_accept(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        uint32_t c = m->gen, s = m->peer_gen;
        if (p->vl->side != PV_SERVER || m->index || !p->proposed || !p->peer_waiting || c != p->peer_wait_gen ||
            s != p->proposed_gen || p->seg.active || p->txe)
                return false;
        p->proposed = false;
        struct vbp_end *e = p->cur;
        if (e && e->gen == s && e->st == VBP_WAIT && !e->gone) {
                vbp_end_pair(e, c);
                return true;
        }
        /* Our end closed after the PAIR went: its STOP and FIN are on
         * their way (pipe_reap); the client's bytes go nowhere. */
        p->peer_waiting = false;
        memset(&p->seg, 0, sizeof(p->seg));
        p->seg.active = true;
        p->seg.gen = c;
        p->peer = PEER_OPEN;
        return true;
}

static bool on_stop(struct vbp_pipe *p, const struct vbpipe_msg *m)
{
        if (m->peer_gen || m->index || m->gen > p->peer_max_gen)
                return false;
        if (p->peer_waiting && p->peer_wait_gen == m->gen) {
                /* A waiting end closed: never pair with it (its FIN
                 * follows). A PAIR offered to it is refused. */
                p->peer_wait_stopped = true;
                if (p->proposed) {
                        p->proposed = false;
                        p->pair_refused++;
                        pv_debug("vbpipe %s: the peer's end %u closed before it took ours", p->name, m->gen);
                }
                return true;
        }
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
                vbp_tx_finish(e);
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
                        vbp_seg_discard(p);
                else
                        vbp_rx_pump(p);
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
                p->proposed = false;   /* a PAIR offered to it is refused (its STOP said so already) */
                p->peer = PEER_CLOSED;
                return true;
        }
        return false;
}

/* A peer message that waits while the program holds a ring. */
struct vbp_qmsg {
        struct vbp_qmsg *next;
        uint32_t type;
        struct vbpipe_msg m;
};

void vbp_msg_queue(struct vbp_pipe *p, uint32_t type, const struct vbpipe_msg *m)
{
        struct vbp_qmsg *q = malloc(sizeof(*q));
        if (!q) {
                pvd_vlink_fail(p->vl, "vbpipe %s: out of memory for a message from the peer", p->name);
                return;
        }
        q->next = NULL;
        q->type = type;
        q->m = *m;
        if (p->q_tail)
                p->q_tail->next = q;
        else
                p->q_head = q;
        p->q_tail = q;
}

/* The messages that waited, in order (the rings are pvd's now). */
void vbp_msg_drain(struct vbp_pipe *p)
{
        while (p->q_head && p->on) {
                struct vbp_qmsg *q = p->q_head;
                p->q_head = q->next;
                if (!p->q_head)
                        p->q_tail = NULL;
                vbp_msg_handle(p, q->type, &q->m);
                free(q);
        }
        vbp_msg_drop(p);
}

void vbp_msg_drop(struct vbp_pipe *p)
{
        while (p->q_head) {
                struct vbp_qmsg *q = p->q_head;
                p->q_head = q->next;
                free(q);
        }
        p->q_tail = NULL;
}

void vbpipe_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct vbp_pipe *p = pipe_of(vl);
        struct vbpipe_msg m;
        if (len != sizeof(m) || !p->on) {
                pvd_vlink_fail(vl, "vbpipe %s: message of %u bytes (type %u)", p->name, len, type);
                return;
        }
        memcpy(&m, msg, sizeof(m));
        pv_debug("vbpipe %s: message %u from the peer (end %u, end %u, index %u)", p->name, type, m.gen, m.peer_gen,
                 m.index);
        if (!vbp_enter(p, CLAIM_WAIT)) {
                vbp_msg_queue(p, type, &m);   /* handled when the program lets go */
                vbp_pipe_leave(p);
                return;
        }
        vbp_msg_drain(p);
        vbp_msg_handle(p, type, &m);
        vbp_pipe_leave(p);
}

void vbp_msg_handle(struct vbp_pipe *p, uint32_t type, const struct vbpipe_msg *mp)
{
        struct pvd_vlink *vl = p->vl;
        struct vbpipe_msg m = *mp;
        if (!p->on)
                return;
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
        case VBPIPE_MSG_ACCEPT:
                ok = on_accept(p, &m);
                break;
        default:
                ok = false;
        }
        if (!ok && p->on)
                pvd_vlink_fail(vl, "vbpipe %s: impossible message from the peer (type %u, end %u, end %u, index %u)",
                               p->name, type, m.gen, m.peer_gen, m.index);
}

void vbpipe_kick(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p->on)
                return;
        if (!vbp_enter(p, CLAIM_WAIT)) {
                vbp_pipe_leave(p);   /* the doorbell brings us back */
                return;
        }
        vbp_msg_drain(p);
        struct vbp_end *e = p->txe;
        if (e && e->tx_full) {
                /* The xIRQ cleared prod_wait, whether or not it made room
                 * (the consumer notifies when it is about to sleep too):
                 * pump again, and vbp_tx_pump sleeps again, re-arming prod_wait,
                 * if the ring is still full. */
                e->tx_full = false;
                vbp_end_watch(e);
                vbp_tx_pump(p);
        }
        vbp_rx_pump(p);
        vbp_pipe_leave(p);
}

/* ---- vlink life --------------------------------------------------------------------- */

size_t vbpipe_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->kind == PV_VLINK_VBPIPE ? (size_t)vbpipe_region_bytes(cfg->vbpipe_size) : 0;
}

void vbpipe_region_init(struct pvd_vlink *vl)
{
        struct vbpipe_region *h = vl->region[PV_REGION_VBPIPE].base;
        h->magic = VBPIPE_MAGIC;
        h->version = VBPIPE_VERSION;
        h->ring_size = (uint32_t)vl->cfg->vbpipe_size;
}

void vbpipe_client_join(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        struct pvd_region *r = &vl->region[PV_REGION_VBPIPE];
        if (r->size < vbpipe_region_bytes(p->size))
                return;   /* vbpipe_up says so */
        struct vbpipe_region *h = r->base;
        pv_ring_hdr_rejoin(&h->c2s, &h->s2c);
}

void vbpipe_up(struct pvd_vlink *vl)
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
        p->peer_waiting = p->peer_wait_stopped = p->proposed = false;
        p->peer_max_gen = p->paired_max = p->announced_max = 0;
        p->peer = PEER_CLOSED;
        p->on = true;
        vbp_pipe_enter(p);
        if (p->cur)
                vbp_end_announce(p->cur);
        vbp_pipe_leave(p);
}

/* The peer VM is gone: every conversation ends as if its program had
 * closed (the bytes that arrived are still read, then EOF; writes fail
 * with EPIPE). Waiting opens stay and are announced again when it returns. */
void vbpipe_down(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p->on)
                return;
        vbp_pipe_enter(p);
        /* The memory goes: the program's reads and writes go through its
         * socket from now on (what it copies into the old memory meanwhile
         * is lost with the peer, as bytes in flight in any pipe). */
        bool rx_final = vbp_dir_withdraw(p);
        vbp_msg_drop(p);
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
                        int64_t used = rx_final && p->seg.active && p->seg.to == e ? pv_bytering_rspan(&p->rx, iov, &n)
                                                                                    : 0;
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
                                vbp_tail_pump(e);
                        else {
                                shutdown(end_fd(e), SHUT_WR);
                                e->rx_done = true;
                        }
                }
                vbp_end_watch(e);
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
        p->peer_waiting = p->peer_wait_stopped = p->proposed = false;
        p->peer = PEER_CLOSED;
        p->on = false;
        vbp_pipe_leave(p);
}

int vbpipe_attach(struct pvd_vlink *vl)
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
        if (vbp_hot_init(p) < 0 || vbp_dir_init(p) < 0) {
                vbp_hot_fini(p);
                if (p->wake_fd >= 0)
                        close(p->wake_fd);
                free(p);
                return -ENOMEM;
        }
        vl->drv[PV_DRV_VBPIPE] = p;
        return 0;
}

void vbpipe_detach(struct pvd_vlink *vl)
{
        struct vbp_pipe *p = pipe_of(vl);
        if (!p)
                return;
        p->depth++;   /* nothing is reaped any more: everything goes here */
        vbp_dir_claim(p, CLAIM_FORCE);
        vbp_msg_drop(p);
        if (p->next) {
                vbp_end_answer(p->next, -ECONNRESET);
                vbp_end_free(p->next);
        }
        if (p->cur) {
                vbp_end_answer(p->cur, -ECONNRESET);
                vbp_end_free(p->cur);
        }
        if (p->wake_fd >= 0)
                close(p->wake_fd);
        vbp_hot_fini(p);
        vbp_dir_fini(p);
        free(p);
        vl->drv[PV_DRV_VBPIPE] = NULL;
}
