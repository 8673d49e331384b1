/* VRPQ back end: this VM is the vlink's server VM (its programs accept
 * sessions).
 * It owns the vlink's VRPQ region: channels get their rings from the slot
 * pool and their ports from PMEM here, and their xIRQs. Sessions and
 * channels the client end opens wait in queues until a program accepts
 * them; accepts wait until something comes.
 *
 * A channel's memory is reused only when both programs let go of it: the
 * client end says so with CHAN_RELEASE, the server program by closing its
 * channel connection (or never having accepted the channel).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vrpq-int.h"

#define LINK(v) ((v)->vl->cfg->link_name)

/* ---- memory ------------------------------------------------------------------------ */

/* Take 2^want units, or fewer down to one unit when the pool is short. */
static int64_t take(struct vrpq_buddy *b, unsigned want, unsigned *got)
{
        for (int o = (int)want; o >= 0; o--) {
                int64_t u = vrpq_buddy_alloc(b, (unsigned)o);
                if (u >= 0) {
                        *got = (unsigned)o;
                        return u;
                }
        }
        return -1;
}

/* Rings and ports for a channel: the default share is an eighth of the
 * vlink's slots and PMEM (callbacks an eighth of that), then smaller
 * blocks. 0, or -ENOSPC with why. */
static int chan_carve(struct vrpq_vlink *v, struct vrpq_chan *ch, char *why, size_t len)
{
        struct vrpq_chan_geom *g = &ch->g;
        uint32_t slot_units = v->lay.reqs / VRPQ_RING_MIN;
        uint32_t pmem_units = (uint32_t)(v->lay.pmem_size / VRPQ_PORT_MIN);
        unsigned ring_want = slot_units >= 8 ? vrpq_log2(slot_units / 8) : 0;
        unsigned port_want = pmem_units >= 8 ? vrpq_log2(pmem_units / 8) : 0;
        int64_t r = -1, cb = -1, p = -1, cp = -1;

        r = take(&v->slots, ring_want, &ch->ring_order);
        if (r >= 0)
                cb = take(&v->slots, ch->ring_order >= 3 ? ch->ring_order - 3 : 0, &ch->cb_order);
        if (r < 0 || cb < 0) {
                snprintf(why, len, "vlink %s: vrpq-reqs=%u request slots are taken by its %u channels; "
                         "destroy channels or raise vrpq-reqs", LINK(v), v->lay.reqs, v->nchan);
                goto fail;
        }
        p = take(&v->pmem, port_want, &ch->port_order);
        if (p >= 0)
                cp = take(&v->pmem, ch->port_order >= 3 ? ch->port_order - 3 : 0, &ch->cbport_order);
        if (p < 0 || cp < 0) {
                snprintf(why, len, "vlink %s: vrpq-pmem=%llu bytes of PMEM are taken by the ports of its %u "
                         "channels; destroy channels or raise vrpq-pmem", LINK(v),
                         (unsigned long long)v->lay.pmem_size, v->nchan);
                goto fail;
        }
        g->req_slot = (uint32_t)r * VRPQ_RING_MIN;
        g->req_cap = VRPQ_RING_MIN << ch->ring_order;
        g->cb_slot = (uint32_t)cb * VRPQ_RING_MIN;
        g->cb_cap = VRPQ_RING_MIN << ch->cb_order;
        g->port_off = (uint32_t)p * VRPQ_PORT_MIN;
        g->port_size = VRPQ_PORT_MIN << ch->port_order;
        g->cbport_off = (uint32_t)cp * VRPQ_PORT_MIN;
        g->cbport_size = VRPQ_PORT_MIN << ch->cbport_order;
        return 0;
fail:
        if (r >= 0)
                vrpq_buddy_free(&v->slots, (uint32_t)r, ch->ring_order);
        if (cb >= 0)
                vrpq_buddy_free(&v->slots, (uint32_t)cb, ch->cb_order);
        if (p >= 0)
                vrpq_buddy_free(&v->pmem, (uint32_t)p, ch->port_order);
        return -ENOSPC;
}

static void chan_uncarve(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        const struct vrpq_chan_geom *g = &ch->g;
        vrpq_buddy_free(&v->slots, g->req_slot / VRPQ_RING_MIN, ch->ring_order);
        vrpq_buddy_free(&v->slots, g->cb_slot / VRPQ_RING_MIN, ch->cb_order);
        vrpq_buddy_free(&v->pmem, g->port_off / VRPQ_PORT_MIN, ch->port_order);
        vrpq_buddy_free(&v->pmem, g->cbport_off / VRPQ_PORT_MIN, ch->cbport_order);
}

/* ---- freeing ---------------------------------------------------------------------- */

static void sess_try_free(struct vrpq_sess *s)
{
        if (s->conn || s->chans || s->chan_waiters || !(s->local_dead || s->peer_dead))
                return;
        vrpq_sess_unlink(s);
        vrpq_sess_mem_drop(s->v, s);
        free(s->info);
        free(s);
}

/* Both programs let go: the memory and xIRQs go back. The caller then
 * tries to free the session. */
static void chan_try_free(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        if (!ch->local_released || !ch->peer_released)
                return;
        struct vrpq_chan_hdr *h = vrpq_hdr(v, ch);
        if (h)
                ring_store_release(&h->state, VRPQ_CHAN_FREE);
        chan_uncarve(v, ch);
        v->by_hdr[ch->g.hdr_index] = NULL;
        pvd_xirq_free(v->vl, ch->xirq_req);
        pvd_xirq_free(v->vl, ch->xirq_ans);
        vrpq_chan_unlink(ch);
        free(ch->info);
        free(ch);
}

/* This side ends the channel (its program destroyed it or the session, or
 * died): tell the client end once. A program still holding the channel's
 * connection sees it hang up; its close (vrpq_srv_conn_close) releases the
 * memory. */
static void chan_end_local(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        if (!ch->local_dead) {
                ch->local_dead = true;
                if (!ch->peer_dead)
                        vrpq_send_id(v, VRPQ_M_CHAN_CLOSE, ch->s->sid, ch->cid);
                vrpq_chan_mark_closed(v, ch);
        }
        if (!ch->accepted)
                ch->local_released = true;
        vrpq_conn_hangup(ch->conn);
}

/* Requests wait in the channel's ring (read once; a lie only keeps the
 * channel queued until the session ends). */
static bool chan_has_requests(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        struct vrpq_chan_hdr *h = vrpq_hdr(v, ch);
        return h && shm_read32(&h->req_p.prod) != shm_read32(&h->req_c.cons);
}

/* The client end ended the channel. A channel no program accepted yet
 * stays queued, so that the requests the client posted before it left are
 * still delivered (like a connection in a listen queue). */
static void chan_end_peer(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        ch->peer_dead = true;
        ch->local_dead = true; /* nothing to tell the client any more */
        vrpq_chan_mark_closed(v, ch);
        vrpq_conn_hangup(ch->conn);
}

static void fail_chan_waiters(struct vrpq_sess *s, const char *why)
{
        while (s->chan_waiters) {
                struct vrpq_conn *w = s->chan_waiters;
                s->chan_waiters = w->next;
                vrpq_conn_reply_err(w, -ECONNRESET, "%s: %s", vrpq_node_name(w), why);
                vrpq_conn_detach(w);
        }
}

/* Free the channels both programs let go of, then the session if it can. */
static void sess_reap(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        for (struct vrpq_chan *ch = s->chans, *next; ch; ch = next) {
                next = ch->next;
                if (ch->local_released && ch->peer_released)
                        chan_try_free(v, ch);
        }
}

/* The server program's session ended (closed, died). */
static void sess_end_local(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        if (s->local_dead)
                return;
        s->local_dead = true;
        for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next)
                chan_end_local(v, ch);
        fail_chan_waiters(s, "the session was destroyed");
        if (!s->peer_dead)
                vrpq_send_id(v, VRPQ_M_SESS_CLOSE, s->sid, 0);
        vrpq_conn_hangup(s->conn);
}

/* ---- binding waiting programs ---------------------------------------------------------- */

static void bind_session(struct vrpq_vlink *v, struct vrpq_sess *s, struct vrpq_conn *w)
{
        struct pv_msg m;
        vrpq_reply_init(&m, w);
        pv_msg_set_u(&m, PV_K_ID, s->sid);
        pv_msg_set_u(&m, PV_K_TOKEN, s->token);
        if (s->info_len)
                pv_msg_set_b(&m, PV_K_INFO, s->info, s->info_len);
        vrpq_reply_region(v, s, &m);
        if (pvd_conn_send(w->c, &m) < 0)
                return; /* the program is gone: its close comes next */
        s->accepted = true;
        s->conn = w;
        if (s->peer_dead)
                vrpq_conn_hangup(w); /* it gets the channels and requests left */
        s->local_pid = (uint32_t)w->c->cred.pid;
        snprintf(s->local_comm, sizeof(s->local_comm), "%s", w->c->comm);
        w->kind = VC_SESS;
        w->s = s;
        free(s->info);
        s->info = NULL;
        pv_info("%s: session %u from %s %s[%u] accepted by %s[%d]", vrpq_node_name(w), s->sid, v->vl->peer_vm,
                s->peer_comm, s->peer_pid, w->c->comm, (int)w->c->cred.pid);
}

static void bind_chan(struct vrpq_vlink *v, struct vrpq_chan *ch, struct vrpq_conn *w)
{
        struct pv_msg m;
        vrpq_reply_init(&m, w);
        pv_msg_set_u(&m, PV_K_ID2, ch->cid);
        vrpq_geom_put(&m, &ch->g);
        if (ch->info_len)
                pv_msg_set_b(&m, PV_K_INFO, ch->info, ch->info_len);
        pv_msg_add_fd(&m, ch->fd_req);
        pv_msg_add_fd(&m, ch->fd_ans);
        if (pvd_conn_send(w->c, &m) < 0)
                return;
        ch->accepted = true;
        ch->conn = w;
        if (ch->peer_dead)
                vrpq_conn_hangup(w); /* it receives what is left, then -ECONNRESET */
        w->kind = VC_CHAN;
        w->ch = ch;
        free(ch->info);
        ch->info = NULL;
}

/* A queued session for a waiting accept, or the reverse. */
static void match_sessions(struct vrpq_vlink *v)
{
        if (v->vl->state != PV_VLINK_ON)
                return;
        for (struct vrpq_sess *s = v->sessions; s && v->accept_waiters; s = s->next) {
                if (s->accepted)
                        continue;
                struct vrpq_conn *w = v->accept_waiters;
                v->accept_waiters = w->next;
                w->next = NULL;
                bind_session(v, s, w);
        }
}

static void match_chans(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        for (struct vrpq_chan *ch = s->chans; ch && s->chan_waiters; ch = ch->next) {
                if (ch->accepted || ch->local_released)
                        continue;
                struct vrpq_conn *w = s->chan_waiters;
                s->chan_waiters = w->next;
                w->next = NULL;
                bind_chan(v, ch, w);
        }
}

static void waiters_append(struct vrpq_conn **head, struct vrpq_conn *vc)
{
        struct vrpq_conn **p = head;
        while (*p)
                p = &(*p)->next;
        vc->next = NULL;
        *p = vc;
}

static void waiters_remove(struct vrpq_conn **head, struct vrpq_conn *vc)
{
        for (struct vrpq_conn **p = head; *p; p = &(*p)->next)
                if (*p == vc) {
                        *p = vc->next;
                        return;
                }
}

/* ---- programs ------------------------------------------------------------------------------ */

int vrpq_srv_conn_msg(struct vrpq_conn *vc, struct pv_msg *m)
{
        struct vrpq_vlink *v = vc->v;
        vc->op = pv_msg_op(m);
        pv_msg_get_u(m, PV_K_SEQ, &vc->seq);
        switch (vc->op) {
        case VRPQ_OP_SESSION_ACCEPT:
                vc->kind = VC_WAIT_SESS;
                waiters_append(&v->accept_waiters, vc);
                match_sessions(v);
                return 0;
        case VRPQ_OP_CHAN_ACCEPT: {
                uint64_t sid, token;
                if (pv_msg_get_u(m, PV_K_ID, &sid) < 0 || pv_msg_get_u(m, PV_K_TOKEN, &token) < 0)
                        return -EPROTO;
                struct vrpq_sess *s = sid <= UINT32_MAX ? vrpq_sess_find(v, (uint32_t)sid) : NULL;
                if (!s || !s->accepted || s->token != token) {
                        vrpq_conn_reply_err(vc, -ENOENT, "%s: no session %llu of this program", vrpq_node_name(vc),
                                            (unsigned long long)sid);
                        return 0;
                }
                vc->kind = VC_WAIT_CHAN;
                vc->s = s;
                waiters_append(&s->chan_waiters, vc);
                match_chans(v, s);
                /* Nothing queued and nothing will come. */
                if (s->chan_waiters && (s->local_dead || s->peer_dead))
                        fail_chan_waiters(s, "the session ended: the client destroyed it or went away");
                return 0;
        }
        default:
                return -EPROTO;
        }
}

void vrpq_srv_conn_close(struct vrpq_conn *vc)
{
        struct vrpq_vlink *v = vc->v;
        switch (vc->kind) {
        case VC_WAIT_SESS:
                waiters_remove(&v->accept_waiters, vc);
                break;
        case VC_WAIT_CHAN:
                waiters_remove(&vc->s->chan_waiters, vc);
                sess_try_free(vc->s);
                break;
        case VC_SESS: {
                struct vrpq_sess *s = vc->s;
                s->conn = NULL;
                sess_end_local(v, s);
                sess_reap(v, s);
                sess_try_free(s);
                break;
        }
        case VC_CHAN: {
                struct vrpq_chan *ch = vc->ch;
                struct vrpq_sess *s = ch->s;
                ch->conn = NULL;
                chan_end_local(v, ch);
                ch->local_released = true;
                chan_try_free(v, ch);
                sess_try_free(s);
                break;
        }
        default:
                break;
        }
}

/* ---- the client end's messages --------------------------------------------------------------- */

static bool open_msg(struct vrpq_vlink *v, const void *msg, uint32_t len, const struct vrpq_m_open **o)
{
        if (len < sizeof(struct vrpq_m_open))
                return false;
        *o = msg;
        return (*o)->info_len <= VRPQ_INFO_MAX && len == sizeof(struct vrpq_m_open) + (*o)->info_len;
}

static void send_err(struct vrpq_vlink *v, uint32_t type, uint32_t sid, uint32_t cid, int diag, const char *why)
{
        struct vrpq_m_err e = { .sid = sid, .cid = cid, .diag = diag };
        snprintf(e.msg, sizeof(e.msg), "%s", why);
        vrpq_send(v, type, &e, sizeof(e));
}

static void on_sess_open(struct vrpq_vlink *v, const struct vrpq_m_open *o)
{
        if (vrpq_sess_find(v, o->sid)) {
                pvd_vlink_fail(v->vl, "vrpq: the client opened session %u twice", o->sid);
                return;
        }
        if (v->nsess >= VRPQ_SESSIONS_MAX) {
                char why[VRPQ_ERR_MAX];
                snprintf(why, sizeof(why), "vlink %s has %u sessions, the most VRPQ allows (VRPQ_SESSIONS_MAX)",
                         LINK(v), v->nsess);
                pv_notice("%s; refusing a session of %s", why, v->vl->peer_vm);
                v->refused_total++;
                send_err(v, VRPQ_M_SESS_ERR, o->sid, 0, -EMFILE, why);
                return;
        }
        struct vrpq_sess *s = calloc(1, sizeof(*s));
        if (!s || (o->info_len && !(s->info = malloc(o->info_len)))) {
                free(s);
                send_err(v, VRPQ_M_SESS_ERR, o->sid, 0, -ENOMEM, "the server VM's pvd is out of memory");
                return;
        }
        s->v = v;
        s->sid = o->sid;
        s->token = pvd_random64();
        s->info_len = o->info_len;
        if (o->info_len)
                memcpy(s->info, o->info, o->info_len);
        s->peer_pid = o->pid;
        memcpy(s->peer_comm, o->comm, VRPQ_COMM_MAX);
        s->peer_comm[VRPQ_COMM_MAX] = 0;
        int rc = vrpq_sess_mem_make(v, s);
        if (rc < 0) {
                char why[VRPQ_ERR_MAX];
                snprintf(why, sizeof(why), "vlink %s: no memory for the session's rings and PMEM (%s)", LINK(v),
                         strerror(-rc));
                free(s->info);
                free(s);
                send_err(v, VRPQ_M_SESS_ERR, o->sid, 0, rc == -ENOMEM ? -ENOMEM : -ENOSPC, why);
                return;
        }
        /* Appended: accepts take sessions in the order they came. */
        struct vrpq_sess **p = &v->sessions;
        while (*p)
                p = &(*p)->next;
        *p = s;
        v->nsess++;
        v->sessions_total++;
        vrpq_send_id(v, VRPQ_M_SESS_OK, s->sid, s->gref); /* cid: the session memory's grant */
        match_sessions(v);
}

static void chan_init_hdr(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        struct vrpq_chan_hdr *h = vrpq_hdr(v, ch);
        memset(h, 0, VRPQ_CHAN_HDR_SIZE);
        h->magic = VRPQ_CHAN_MAGIC;
        h->sid = ch->s->sid;
        h->cid = ch->cid;
        h->geom = ch->g;
        ring_store_release(&h->state, VRPQ_CHAN_OPEN);
}

static void on_chan_open(struct vrpq_vlink *v, const struct vrpq_m_open *o)
{
        char why[VRPQ_ERR_MAX];
        if (vrpq_chan_find(v, o->cid, NULL)) {
                pvd_vlink_fail(v->vl, "vrpq: the client opened channel %u twice", o->cid);
                return;
        }
        struct vrpq_sess *s = vrpq_sess_find(v, o->sid);
        if (!s || s->local_dead || s->peer_dead) {
                send_err(v, VRPQ_M_CHAN_ERR, o->sid, o->cid, -ECONNRESET,
                         "the session ended: the server program destroyed it or went away");
                return;
        }
        if (v->nchan >= VRPQ_CHANNELS_MAX) {
                snprintf(why, sizeof(why), "vlink %s has %u channels, the most VRPQ allows (VRPQ_CHANNELS_MAX)",
                         LINK(v), v->nchan);
                pv_notice("%s; refusing a channel of %s", why, v->vl->peer_vm);
                v->refused_total++;
                send_err(v, VRPQ_M_CHAN_ERR, o->sid, o->cid, -EMFILE, why);
                return;
        }
        struct vrpq_chan *ch = calloc(1, sizeof(*ch));
        if (!ch || (o->info_len && !(ch->info = malloc(o->info_len)))) {
                free(ch);
                send_err(v, VRPQ_M_CHAN_ERR, o->sid, o->cid, -ENOMEM, "the server VM's pvd is out of memory");
                return;
        }
        ch->s = s;
        ch->cid = o->cid;
        ch->fd_req = ch->fd_ans = -1;
        ch->peer_pid = o->pid;
        memcpy(ch->peer_comm, o->comm, VRPQ_COMM_MAX);
        uint32_t idx = 0;
        while (idx < VRPQ_CHANNELS_MAX && v->by_hdr[idx])
                idx++;
        int rc = chan_carve(v, ch, why, sizeof(why));
        if (rc < 0) {
                v->refused_total++;
                pv_notice("%s", why);
                send_err(v, VRPQ_M_CHAN_ERR, o->sid, o->cid, rc, why);
                free(ch->info);
                free(ch);
                return;
        }
        ch->g.hdr_index = idx;
        ch->has_geom = true;
        rc = pvd_xirq_alloc(v->vl, HV_XIRQ_RX, &ch->xirq_req, &ch->fd_req); /* the client kicks */
        if (rc == 0) {
                rc = pvd_xirq_alloc(v->vl, HV_XIRQ_TX, &ch->xirq_ans, &ch->fd_ans); /* we kick */
                if (rc < 0)
                        pvd_xirq_free(v->vl, ch->xirq_req);
        }
        if (rc < 0) {
                chan_uncarve(v, ch);
                snprintf(why, sizeof(why), "vlink %s: cannot allocate the channel's xIRQs (%s)", LINK(v), strerror(-rc));
                send_err(v, VRPQ_M_CHAN_ERR, o->sid, o->cid, rc, why);
                free(ch->info);
                free(ch);
                return;
        }
        ch->info_len = o->info_len;
        if (o->info_len)
                memcpy(ch->info, o->info, o->info_len);
        v->by_hdr[idx] = ch;
        struct vrpq_chan **p = &s->chans;
        while (*p)
                p = &(*p)->next;
        *p = ch;
        v->nchan++;
        v->chans_total++;
        chan_init_hdr(v, ch);
        struct vrpq_m_chan_ok ok = { .sid = s->sid, .cid = ch->cid, .xirq_req = ch->xirq_req,
                                     .xirq_ans = ch->xirq_ans, .geom = ch->g };
        vrpq_send(v, VRPQ_M_CHAN_OK, &ok, sizeof(ok));
        match_chans(v, s);
}

void vrpq_srv_msg(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len)
{
        const struct vrpq_m_open *o;
        const struct vrpq_m_id *id = msg;
        struct vrpq_sess *s;
        struct vrpq_chan *ch;
        switch (type) {
        case VRPQ_M_SESS_OPEN:
                if (!open_msg(v, msg, len, &o))
                        break;
                on_sess_open(v, o);
                return;
        case VRPQ_M_CHAN_OPEN:
                if (!open_msg(v, msg, len, &o))
                        break;
                on_chan_open(v, o);
                return;
        case VRPQ_M_SESS_CLOSE:
                if (len != sizeof(*id))
                        break;
                s = vrpq_sess_find(v, id->sid);
                if (!s || s->peer_dead)
                        return;
                s->peer_dead = true;
                for (ch = s->chans; ch; ch = ch->next)
                        if (!ch->peer_dead)
                                chan_end_peer(v, ch);
                fail_chan_waiters(s, "the client destroyed the session or went away");
                vrpq_conn_hangup(s->conn);
                sess_reap(v, s);
                sess_try_free(s);
                return;
        case VRPQ_M_CHAN_CLOSE:
        case VRPQ_M_CHAN_RELEASE:
                if (len != sizeof(*id))
                        break;
                ch = vrpq_chan_find(v, id->cid, NULL);
                if (!ch)
                        return;
                if (!ch->peer_dead)
                        chan_end_peer(v, ch);
                if (type == VRPQ_M_CHAN_RELEASE) {
                        s = ch->s;
                        ch->peer_released = true;
                        /* Unaccepted and empty: nothing to deliver. */
                        if (!ch->accepted && !chan_has_requests(v, ch))
                                ch->local_released = true;
                        chan_try_free(v, ch);
                        sess_try_free(s);
                }
                return;
        default:
                break;
        }
        pvd_vlink_fail(v->vl, "vrpq: malformed or unexpected message %u (%u bytes) from the client", type, len);
}

/* ---- vlink state ----------------------------------------------------------------------------- */

void vrpq_srv_up(struct vrpq_vlink *v)
{
        vrpq_buddy_reset(&v->slots);
        vrpq_buddy_reset(&v->pmem);
        memset(v->by_hdr, 0, sizeof(v->by_hdr));
}

/* The client VM is gone: everything that crossed the vlink ends. Waiting
 * session accepts stay: sessions come again when the vlink does. */
void vrpq_srv_down(struct vrpq_vlink *v)
{
        while (v->sessions) {
                struct vrpq_sess *s = v->sessions;
                while (s->chans) {
                        struct vrpq_chan *ch = s->chans;
                        vrpq_chan_mark_closed(v, ch);
                        ch->fd_req = ch->fd_ans = -1; /* the backend closes them */
                        vrpq_conn_detach(ch->conn);
                        s->chans = ch->next;
                        free(ch->info);
                        free(ch);
                }
                fail_chan_waiters(s, "the vlink to the client VM went down");
                vrpq_conn_detach(s->conn);
                v->sessions = s->next;
                vrpq_sess_mem_drop(v, s);
                free(s->info);
                free(s);
        }
        v->nsess = v->nchan = 0;
        memset(v->by_hdr, 0, sizeof(v->by_hdr));
}
