/* VRPQ front end: this VM is the vlink's client VM (its programs create
 * sessions).
 * It relays its programs' sessions and channels to the server end, hands
 * them the region and the channel's xIRQs once the server end has carved
 * the channel, and tells the server end when a program lets go of a
 * channel (CHAN_RELEASE), so that its memory can be reused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vrpq-int.h"

#define LINK(v) ((v)->vl->cfg->link_name)

static void sess_try_free(struct vrpq_sess *s)
{
        if (s->conn || s->waiting || s->chans)
                return;
        vrpq_sess_unlink(s);
        vrpq_sess_mem_drop(s->v, s);
        free(s);
}

/* The program let go of the channel (closed its connection): the server
 * end may reuse the memory once its own program did the same. */
static void chan_release(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        ch->local_dead = true;
        vrpq_chan_mark_closed(v, ch);
        vrpq_send_id(v, VRPQ_M_CHAN_RELEASE, ch->s->sid, ch->cid);
}

static void chan_free(struct vrpq_chan *ch)
{
        struct vrpq_sess *s = ch->s;
        vrpq_chan_unlink(ch);
        free(ch);
        sess_try_free(s);
}

/* ---- programs -------------------------------------------------------------------------- */

static int session_create(struct vrpq_conn *vc, struct pv_msg *m)
{
        struct vrpq_vlink *v = vc->v;
        const void *info;
        uint32_t len;
        int rc = vrpq_get_info(vc, m, &info, &len);
        if (rc == -E2BIG)
                return 0;
        if (rc < 0)
                return rc;
        if (v->vl->state != PV_VLINK_ON) {
                vrpq_conn_reply_err(vc, -ENOTCONN, "%s: the vlink to %s is down (is %s's pvd running?)",
                                    vrpq_node_name(vc), v->vl->peer_vm, v->vl->peer_vm);
                return 0;
        }
        if (v->nsess >= VRPQ_SESSIONS_MAX) {
                vrpq_conn_reply_err(vc, -EMFILE, "%s: vlink %s has %u sessions, the most VRPQ allows "
                                    "(VRPQ_SESSIONS_MAX)", vrpq_node_name(vc), LINK(v), v->nsess);
                return 0;
        }
        struct vrpq_m_open *o = calloc(1, sizeof(*o) + len);
        struct vrpq_sess *s = calloc(1, sizeof(*s));
        if (!o || !s) {
                free(o);
                free(s);
                vrpq_conn_reply_err(vc, -ENOMEM, "%s: pvd is out of memory", vrpq_node_name(vc));
                return 0;
        }
        s->v = v;
        if (++v->next_sid == 0)
                ++v->next_sid;
        s->sid = v->next_sid;
        s->token = pvd_random64();
        s->waiting = true;
        s->conn = vc;
        s->info_len = len;
        s->local_pid = (uint32_t)vc->c->cred.pid;
        snprintf(s->local_comm, sizeof(s->local_comm), "%s", vc->c->comm);
        o->sid = s->sid;
        o->pid = s->local_pid;
        o->info_len = len;
        memcpy(o->comm, vc->c->comm, strnlen(vc->c->comm, VRPQ_COMM_MAX));
        if (len)
                memcpy(o->info, info, len);
        rc = vrpq_send(v, VRPQ_M_SESS_OPEN, o, (uint32_t)(sizeof(*o) + len));
        free(o);
        if (rc < 0) {
                free(s);
                vrpq_conn_reply_err(vc, rc == -ENOTCONN ? -ENOTCONN : -ECONNRESET, "%s: cannot reach %s: %s",
                                    vrpq_node_name(vc), v->vl->peer_vm, strerror(-rc));
                return 0;
        }
        s->next = v->sessions;
        v->sessions = s;
        v->nsess++;
        v->sessions_total++;
        vc->kind = VC_WAIT_SESS;
        vc->s = s;
        return 0;
}

static int chan_create(struct vrpq_conn *vc, struct pv_msg *m)
{
        struct vrpq_vlink *v = vc->v;
        uint64_t sid, token;
        const void *info;
        uint32_t len;
        if (pv_msg_get_u(m, PV_K_ID, &sid) < 0 || pv_msg_get_u(m, PV_K_TOKEN, &token) < 0)
                return -EPROTO;
        int rc = vrpq_get_info(vc, m, &info, &len);
        if (rc == -E2BIG)
                return 0;
        if (rc < 0)
                return rc;
        struct vrpq_sess *s = sid <= UINT32_MAX ? vrpq_sess_find(v, (uint32_t)sid) : NULL;
        if (!s || s->token != token || s->waiting) {
                vrpq_conn_reply_err(vc, -ENOENT, "%s: no session %llu of this program", vrpq_node_name(vc),
                                    (unsigned long long)sid);
                return 0;
        }
        if (s->local_dead || s->peer_dead || !s->conn) {
                vrpq_conn_reply_err(vc, -ECONNRESET, "%s: session %u ended: the server program destroyed it or "
                                    "went away", vrpq_node_name(vc), s->sid);
                return 0;
        }
        if (v->nchan >= VRPQ_CHANNELS_MAX) {
                vrpq_conn_reply_err(vc, -EMFILE, "%s: vlink %s has %u channels, the most VRPQ allows "
                                    "(VRPQ_CHANNELS_MAX)", vrpq_node_name(vc), LINK(v), v->nchan);
                return 0;
        }
        struct vrpq_m_open *o = calloc(1, sizeof(*o) + len);
        struct vrpq_chan *ch = calloc(1, sizeof(*ch));
        if (!o || !ch) {
                free(o);
                free(ch);
                vrpq_conn_reply_err(vc, -ENOMEM, "%s: pvd is out of memory", vrpq_node_name(vc));
                return 0;
        }
        ch->s = s;
        if (++v->next_cid == 0)
                ++v->next_cid;
        ch->cid = v->next_cid;
        ch->fd_req = ch->fd_ans = -1;
        ch->waiting = true;
        ch->conn = vc;
        ch->info_len = len;
        o->sid = s->sid;
        o->cid = ch->cid;
        o->pid = (uint32_t)vc->c->cred.pid;
        o->info_len = len;
        memcpy(o->comm, vc->c->comm, strnlen(vc->c->comm, VRPQ_COMM_MAX));
        if (len)
                memcpy(o->info, info, len);
        rc = vrpq_send(v, VRPQ_M_CHAN_OPEN, o, (uint32_t)(sizeof(*o) + len));
        free(o);
        if (rc < 0) {
                free(ch);
                vrpq_conn_reply_err(vc, -ECONNRESET, "%s: cannot reach %s: %s", vrpq_node_name(vc),
                                    v->vl->peer_vm, strerror(-rc));
                return 0;
        }
        struct vrpq_chan **p = &s->chans;
        while (*p)
                p = &(*p)->next;
        *p = ch;
        v->nchan++;
        v->chans_total++;
        vc->kind = VC_WAIT_CHAN;
        vc->ch = ch;
        return 0;
}

int vrpq_clt_conn_msg(struct vrpq_conn *vc, struct pv_msg *m)
{
        vc->op = pv_msg_op(m);
        pv_msg_get_u(m, PV_K_SEQ, &vc->seq);
        switch (vc->op) {
        case VRPQ_OP_SESSION_CREATE:
                return session_create(vc, m);
        case VRPQ_OP_CHAN_CREATE:
                return chan_create(vc, m);
        default:
                return -EPROTO;
        }
}

/* The program's session ends: its channels end with it. */
static void sess_end_local(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        s->local_dead = true;
        for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next) {
                if (ch->waiting || ch->local_dead)
                        continue;
                ch->local_dead = true;
                if (!ch->peer_dead)
                        vrpq_send_id(v, VRPQ_M_CHAN_CLOSE, s->sid, ch->cid);
                vrpq_chan_mark_closed(v, ch);
                vrpq_conn_hangup(ch->conn);
        }
        if (!s->peer_dead)
                vrpq_send_id(v, VRPQ_M_SESS_CLOSE, s->sid, 0);
}

void vrpq_clt_conn_close(struct vrpq_conn *vc)
{
        struct vrpq_vlink *v = vc->v;
        struct vrpq_sess *s = vc->s;
        struct vrpq_chan *ch = vc->ch;
        switch (vc->kind) {
        case VC_WAIT_SESS:
                /* The answer still comes; the server end learns now. */
                s->conn = NULL;
                if (!s->local_dead)
                        sess_end_local(v, s);
                break;
        case VC_SESS:
                s->conn = NULL;
                if (!s->local_dead)
                        sess_end_local(v, s);
                sess_try_free(s);
                break;
        case VC_WAIT_CHAN:
                /* Released before it was answered: the server end frees it
                 * after creating it; the answer frees our record. */
                ch->conn = NULL;
                vrpq_send_id(v, VRPQ_M_CHAN_RELEASE, ch->s->sid, ch->cid);
                ch->local_dead = ch->local_released = true;
                break;
        case VC_CHAN:
                ch->conn = NULL;
                chan_release(v, ch);
                chan_free(ch);
                break;
        default:
                break;
        }
}

/* ---- the server end's messages -------------------------------------------------------------- */

static void on_sess_ok(struct vrpq_vlink *v, struct vrpq_sess *s, uint32_t gref)
{
        s->waiting = false;
        if (vrpq_sess_mem_take(v, s, gref) < 0) {
                pvd_vlink_fail(v->vl, "vrpq: the server granted session %u memory that is not its session's", s->sid);
                return;
        }
        struct vrpq_conn *vc = s->conn;
        if (!vc) {
                sess_try_free(s);
                return;
        }
        struct pv_msg m;
        vrpq_reply_init(&m, vc);
        pv_msg_set_u(&m, PV_K_ID, s->sid);
        pv_msg_set_u(&m, PV_K_TOKEN, s->token);
        vrpq_reply_region(v, s, &m);
        vc->kind = VC_SESS;
        pv_info("%s: session %u of %s[%d] open to %s", vrpq_node_name(vc), s->sid, vc->c->comm,
                (int)vc->c->cred.pid, v->vl->peer_vm);
        pvd_conn_send(vc->c, &m);
}

static void on_chan_ok(struct vrpq_vlink *v, struct vrpq_chan *ch, const struct vrpq_m_chan_ok *ok)
{
        if (!vrpq_geom_valid(&v->lay, &ok->geom)) {
                pvd_vlink_fail(v->vl, "vrpq: the server gave channel %u rings or ports outside the region", ch->cid);
                return;
        }
        if (pvd_xirq_get(v->vl, ok->xirq_req, &ch->fd_req) < 0 || pvd_xirq_get(v->vl, ok->xirq_ans, &ch->fd_ans) < 0) {
                pvd_vlink_fail(v->vl, "vrpq: the server named xIRQs %u and %u it never gave", ok->xirq_req,
                               ok->xirq_ans);
                return;
        }
        ch->waiting = false;
        ch->g = ok->geom;
        ch->has_geom = true;
        ch->xirq_req = ok->xirq_req;
        ch->xirq_ans = ok->xirq_ans;
        struct vrpq_conn *vc = ch->conn;
        if (!vc) {
                /* Released while waiting: CHAN_RELEASE went already. */
                chan_free(ch);
                return;
        }
        if (ch->s->local_dead || ch->s->peer_dead) {
                vrpq_conn_reply_err(vc, -ECONNRESET, "%s: session %u ended while the channel was being created",
                                    vrpq_node_name(vc), ch->s->sid);
                vc->kind = VC_IDLE;
                vc->ch = NULL;
                ch->conn = NULL;
                chan_release(v, ch);
                chan_free(ch);
                return;
        }
        struct pv_msg m;
        vrpq_reply_init(&m, vc);
        pv_msg_set_u(&m, PV_K_ID2, ch->cid);
        vrpq_geom_put(&m, &ch->g);
        pv_msg_add_fd(&m, ch->fd_req);
        pv_msg_add_fd(&m, ch->fd_ans);
        vc->kind = VC_CHAN;
        pvd_conn_send(vc->c, &m);
}

static void on_err(struct vrpq_vlink *v, const struct vrpq_m_err *e, struct vrpq_conn *vc)
{
        char msg[VRPQ_ERR_MAX];
        memcpy(msg, e->msg, sizeof(msg));
        msg[sizeof(msg) - 1] = 0;
        int diag = e->diag < 0 && e->diag > -4096 ? e->diag : -EPROTO;
        if (vc) {
                vrpq_conn_reply_err(vc, diag, "%s: %s", vrpq_node_name(vc), msg);
                vc->kind = VC_IDLE;
                vc->s = NULL;
                vc->ch = NULL;
        }
}

void vrpq_clt_msg(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len)
{
        const struct vrpq_m_id *id = msg;
        struct vrpq_sess *s;
        struct vrpq_chan *ch;
        switch (type) {
        case VRPQ_M_SESS_OK:
                if (len != sizeof(*id) || !(s = vrpq_sess_find(v, id->sid)) || !s->waiting)
                        break;
                on_sess_ok(v, s, id->cid);
                return;
        case VRPQ_M_SESS_ERR: {
                const struct vrpq_m_err *e = msg;
                if (len != sizeof(*e) || !(s = vrpq_sess_find(v, e->sid)) || !s->waiting)
                        break;
                on_err(v, e, s->conn);
                s->conn = NULL;
                s->waiting = false;
                sess_try_free(s);
                return;
        }
        case VRPQ_M_CHAN_OK: {
                const struct vrpq_m_chan_ok *ok = msg;
                if (len != sizeof(*ok) || !(ch = vrpq_chan_find(v, ok->cid, NULL)) || !ch->waiting)
                        break;
                on_chan_ok(v, ch, ok);
                return;
        }
        case VRPQ_M_CHAN_ERR: {
                const struct vrpq_m_err *e = msg;
                if (len != sizeof(*e) || !(ch = vrpq_chan_find(v, e->cid, NULL)) || !ch->waiting)
                        break;
                on_err(v, e, ch->conn);
                chan_free(ch);
                return;
        }
        case VRPQ_M_CHAN_CLOSE:
                if (len != sizeof(*id))
                        break;
                ch = vrpq_chan_find(v, id->cid, NULL);
                if (!ch || ch->waiting || ch->peer_dead)
                        return;
                ch->peer_dead = true;
                vrpq_chan_mark_closed(v, ch);
                vrpq_conn_hangup(ch->conn);
                return;
        case VRPQ_M_SESS_CLOSE:
                if (len != sizeof(*id))
                        break;
                s = vrpq_sess_find(v, id->sid);
                if (!s || s->waiting || s->peer_dead)
                        return;
                s->peer_dead = true;
                for (ch = s->chans; ch; ch = ch->next) {
                        if (ch->waiting || ch->peer_dead)
                                continue;
                        ch->peer_dead = true;
                        vrpq_chan_mark_closed(v, ch);
                        vrpq_conn_hangup(ch->conn);
                }
                vrpq_conn_hangup(s->conn);
                return;
        default:
                break;
        }
        pvd_vlink_fail(v->vl, "vrpq: malformed or unexpected message %u (%u bytes) from the server", type, len);
}

/* The server VM is gone: every session and channel ends; the programs
 * learn it at once (header, xIRQs, hang-up). */
void vrpq_clt_down(struct vrpq_vlink *v)
{
        while (v->sessions) {
                struct vrpq_sess *s = v->sessions;
                while (s->chans) {
                        struct vrpq_chan *ch = s->chans;
                        vrpq_chan_mark_closed(v, ch);
                        if (ch->conn && ch->waiting)
                                vrpq_conn_reply_err(ch->conn, -ECONNRESET, "%s: the vlink to %s went down",
                                                    vrpq_node_name(ch->conn), v->vl->peer_vm);
                        vrpq_conn_detach(ch->conn);
                        s->chans = ch->next;
                        free(ch);
                }
                if (s->conn && s->waiting)
                        vrpq_conn_reply_err(s->conn, -ECONNRESET, "%s: the vlink to %s went down",
                                            vrpq_node_name(s->conn), v->vl->peer_vm);
                vrpq_conn_detach(s->conn);
                v->sessions = s->next;
                vrpq_sess_mem_drop(v, s);
                free(s);
        }
        v->nsess = v->nchan = 0;
}
