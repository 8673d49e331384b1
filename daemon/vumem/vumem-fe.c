/* VUMEM front end: this VM is the vlink's client VM (node vumem-clt-X). One session
 * per program connection, forwarded to the server VM's pvd; the answers
 * come back with a pdev record that names the grant holding the buffer.
 * The server VM is not trusted: each record is read once, checked against
 * the answer and against the grant and the memory behind it, and only then
 * is the memory's fd passed to the program. A bad one fails that request
 * with -EPROTO (and the handle is given back to the server VM).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vumem-int.h"

static const char *node_name(const struct vc_link *L)
{
        return L->node ? L->node->name : "vumem";
}

static struct vc_session *session_of(struct pvd_conn *c)
{
        return c->priv;
}

static void session_unlink(struct vc_link *L, struct vc_session *s)
{
        for (struct vc_session **pp = &L->sessions; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        L->nsessions--;
                        return;
                }
}

/* ---- answers to the program ------------------------------------------------ */

static void answer_init(struct pv_msg *r, const struct vc_pending *p, int diag)
{
        pv_msg_init(r, p->op);
        pv_msg_set_u(r, PV_K_SEQ, p->seq);
        pv_msg_set_i(r, PV_K_DIAG, diag);
}

static void answer_err(struct vc_link *L, const struct vc_pending *p, int diag, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void answer_err(struct vc_link *L, const struct vc_pending *p, int diag, const char *fmt, ...)
{
        L->failed++;
        if (!p->c)
                return;
        char text[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        struct pv_msg r;
        answer_init(&r, p, diag);
        pv_msg_set_str(&r, PV_K_MSG, text);
        pvd_conn_send(p->c, &r);
}

/* ---- requests to the server VM ------------------------------------------------- */

static int forward(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m, uint32_t kind, uint32_t handle,
                   void *msg, uint32_t len)
{
        struct vc_session *s = session_of(c);
        if (s && s->npending >= VUMEM_PENDING_MAX) {
                pvd_conn_reply_err(c, m, -EBUSY, "%s: %d requests of this session are already in flight",
                                   node_name(L), VUMEM_PENDING_MAX);
                return 0;
        }
        struct vc_pending *p = calloc(1, sizeof(*p));
        if (!p) {
                pvd_conn_reply_err(c, m, -ENOMEM, "%s: out of memory in pvd", node_name(L));
                return 0;
        }
        p->req = L->next_req++;
        if (!L->next_req)
                L->next_req = 1;
        p->kind = kind;
        p->c = c;
        p->op = pv_msg_op(m);
        pv_msg_get_u(m, PV_K_SEQ, &p->seq);
        p->handle = handle;
        memcpy(msg, &p->req, sizeof(p->req)); /* every request starts with its number */
        int rc = pvd_vlink_send(L->vl, PV_DRV_VUMEM, kind, msg, len);
        if (rc < 0) {
                free(p);
                pvd_conn_reply_err(c, m, -ECONNRESET, "%s: the vlink to %s is down (%s)", node_name(L),
                                   L->vl->peer_vm, strerror(-rc));
                return 0;
        }
        p->next = L->pending;
        L->pending = p;
        if (s)
                s->npending++;
        pvd_hot(L->vl->pvd); /* the answer comes back through here */
        return 0;
}

static int op_session_open(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t flags = 0;
        if (pv_msg_has(m, PV_K_FLAGS) && pv_msg_get_u(m, PV_K_FLAGS, &flags) < 0)
                return -EPROTO;
        if (c->priv) {
                pvd_conn_reply_err(c, m, -EINVAL, "%s: this connection already has a session", node_name(L));
                return 0;
        }
        if (L->vl->state != PV_VLINK_ON) {
                pvd_conn_reply_err(c, m, -ENOTCONN, "%s: the vlink %s to %s is %s; is %s's pvd running?",
                                   node_name(L), L->vl->cfg->link_name, L->vl->peer_vm,
                                   pv_vlink_state_name(L->vl->state), L->vl->peer_vm);
                return 0;
        }
        if (L->nsessions >= VUMEM_SESSIONS_MAX) {
                pvd_conn_reply_err(c, m, -EUSERS, "%s: %d sessions are open, the most a vlink carries", node_name(L),
                                   VUMEM_SESSIONS_MAX);
                return 0;
        }
        struct vc_session *s = calloc(1, sizeof(*s));
        if (!s) {
                pvd_conn_reply_err(c, m, -ENOMEM, "%s: out of memory in pvd", node_name(L));
                return 0;
        }
        s->c = c;
        s->cid = c->id;
        s->master = flags & VUMEM_SESSION_MASTER;
        s->opening = true;
        c->priv = s;
        s->next = L->sessions;
        L->sessions = s;
        L->nsessions++;
        struct vumem_m_session_open msg;
        memset(&msg, 0, sizeof(msg));
        msg.flags = s->master ? VUMEM_SESSION_MASTER : 0;
        msg.session = s->cid;
        msg.pid = (uint32_t)c->cred.pid;
        snprintf(msg.comm, sizeof(msg.comm), "%s", c->comm);
        return forward(L, c, m, VUMEM_MSG_SESSION_OPEN, 0, &msg, sizeof(msg));
}

/* The session of a buffer request, or NULL after answering why not. */
static struct vc_session *open_session(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        struct vc_session *s = session_of(c);
        if (!s || !s->open) {
                pvd_conn_reply_err(c, m, -EINVAL, "%s: no session is open on this connection", node_name(L));
                return NULL;
        }
        return s;
}

static int op_alloc(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        const void *data = NULL;
        uint32_t len = 0;
        if (m->nfds || (pv_msg_has(m, PV_K_DATA) && pv_msg_get_b(m, PV_K_DATA, &data, &len) < 0) ||
            len > VUMEM_ALLOC_MAX)
                return -EPROTO;
        struct vc_session *s = open_session(L, c, m);
        if (!s)
                return 0;
        struct vumem_m_alloc msg;
        memset(&msg, 0, sizeof(msg));
        msg.session = s->cid;
        msg.alloc_size = len;
        if (len)
                memcpy(msg.alloc, data, len);
        return forward(L, c, m, VUMEM_MSG_ALLOC, 0, &msg, sizeof(msg));
}

static struct vc_hent *hent_find(struct vc_session *s, uint32_t handle)
{
        for (unsigned i = 0; i < s->nh; i++)
                if (s->h[i].handle == handle)
                        return &s->h[i];
        return NULL;
}

static int hent_add(struct vc_session *s, uint32_t handle, uint64_t size)
{
        if (s->nh == s->caph) {
                unsigned cap = s->caph ? s->caph * 2 : 16;
                struct vc_hent *h = realloc(s->h, cap * sizeof(*h));
                if (!h)
                        return -ENOMEM;
                s->h = h;
                s->caph = cap;
        }
        s->h[s->nh++] = (struct vc_hent){ .handle = handle, .size = size };
        s->bytes += size;
        return 0;
}

static void free_timer_cb(uv_timer_t *t)
{
        struct vc_link *L = t->data;
        pvd_vlink_flush_notify(L->vl);
}

/* A free is answered here, once it is on the ring: the server VM applies
 * it before any later request of this VM, and a handle this pvd knows
 * cannot fail there (a session reset ends the session anyway). It spares
 * the program a round trip to the server VM. With VUMEM_FREE_NOREPLY
 * (what libpvclient sends) only a failure is answered: the program has
 * gone on, and skips that answer as stale at its next call. */
static int op_free(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint32_t handle;
        uint64_t flags = 0;
        if (m->nfds || pv_msg_get_u32(m, PV_K_ID, &handle) < 0 ||
            (pv_msg_has(m, PV_K_FLAGS) && pv_msg_get_u(m, PV_K_FLAGS, &flags) < 0))
                return -EPROTO;
        struct vc_session *s = open_session(L, c, m);
        if (!s)
                return 0;
        struct vc_hent *h = hent_find(s, handle);
        uint64_t size;
        if (!h && (flags & VUMEM_FREE_NOTE) && handle && pv_msg_get_u(m, PV_K_SIZE, &size) == 0 &&
            s->nh < VUMEM_HANDLES_MAX && hent_add(s, handle, size) == 0) {
                /* A lane's buffer this pvd had not heard of: the server VM
                 * checks the handle, as for any FREE. */
                L->served++;
                h = hent_find(s, handle);
        }
        if (!h) {
                pvd_conn_reply_err(c, m, -ENOENT, "%s: no buffer handle %u in this session", node_name(L), handle);
                return 0;
        }
        struct vumem_m_free msg;
        memset(&msg, 0, sizeof(msg));
        msg.req = 0; /* no answer wanted */
        msg.session = s->cid;
        msg.handle = handle;
        /* Nobody waits for it: it goes on the ring without waking the
         * server VM's pvd, which reads it with the next message, or when
         * free_timer says so (the server program hears of frees late
         * anyway, VUMEM_FREE_DELAY_MS). A program that allocates and frees
         * in a loop on its lane then costs that pvd no wake-up per buffer. */
        int rc = pvd_vlink_send_quiet(L->vl, PV_DRV_VUMEM, VUMEM_MSG_FREE, &msg, sizeof(msg));
        if (rc == 0 && !uv_is_active((uv_handle_t *)L->free_timer))
                uv_timer_start(L->free_timer, free_timer_cb, VUMEM_FREE_DELAY_MS, 0);
        if (rc < 0) {
                pvd_conn_reply_err(c, m, -ECONNRESET, "%s: the vlink to %s is down (%s)", node_name(L),
                                   L->vl->peer_vm, strerror(-rc));
                return 0;
        }
        s->bytes -= h->size;
        *h = s->h[--s->nh];
        L->served++;
        if (!(flags & VUMEM_FREE_NOREPLY))
                pvd_conn_reply_err(c, m, 0, NULL);
        return 0;
}

/* A buffer the session's lane gave: known here so that its FREE goes
 * through as any other (the server VM checks the handle). */
static int op_note(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint32_t handle;
        uint64_t size;
        struct vc_session *s = session_of(c);
        if (m->nfds || pv_msg_get_u32(m, PV_K_ID, &handle) < 0 || pv_msg_get_u(m, PV_K_SIZE, &size) < 0 || !handle)
                return -EPROTO;
        if (!s || !s->open || hent_find(s, handle) || s->nh >= VUMEM_HANDLES_MAX)
                return 0; /* nothing to answer: its FREE will fail if it is not real */
        if (hent_add(s, handle, size) == 0)
                L->served++;
        return 0;
}

/* The program waits on its lane, or posted to a sleeping server library. */
static int op_kick(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        struct vc_session *s = session_of(c);
        if (m->nfds)
                return -EPROTO;
        if (s && s->open && L->vl->state == PV_VLINK_ON) {
                struct vumem_m_kick k = { .session = s->cid };
                pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_KICK, &k, sizeof(k));
        }
        return 0;
}

static int op_object(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t key;
        if (m->nfds || pv_msg_get_u(m, PV_K_VALUE, &key) < 0)
                return -EPROTO;
        struct vc_session *s = open_session(L, c, m);
        if (!s)
                return 0;
        struct vumem_m_object msg;
        memset(&msg, 0, sizeof(msg));
        msg.session = s->cid;
        msg.key = key;
        return forward(L, c, m, VUMEM_MSG_OBJECT, 0, &msg, sizeof(msg));
}

static int op_access(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t id;
        if (m->nfds || pv_msg_get_u(m, PV_K_VALUE, &id) < 0)
                return -EPROTO;
        struct vc_session *s = open_session(L, c, m);
        if (!s)
                return 0;
        struct vumem_m_access msg;
        memset(&msg, 0, sizeof(msg));
        msg.session = s->cid;
        msg.id = id;
        return forward(L, c, m, VUMEM_MSG_ACCESS, 0, &msg, sizeof(msg));
}

int vc_conn_msg(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        switch (pv_msg_op(m)) {
        case VUMEM_OP_SESSION_OPEN:
                if (m->nfds)
                        return -EPROTO;
                return op_session_open(L, c, m);
        case VUMEM_OP_ALLOC:
                return op_alloc(L, c, m);
        case VUMEM_OP_FREE:
                return op_free(L, c, m);
        case VUMEM_OP_ACCESS:
                return op_access(L, c, m);
        case VUMEM_OP_OBJECT:
                return op_object(L, c, m);
        case VUMEM_OP_NOTE:
                return op_note(L, c, m);
        case VUMEM_OP_KICK:
                return op_kick(L, c, m);
        default:
                return -EPROTO;
        }
}

/* ---- answers from the server VM ---------------------------------------------------- */

struct vc_buf {
        int fd;
        uint64_t off, len, pgoff, flags;
};

/* The buffer an answer names: its pdev record and the grant behind it,
 * read once and checked. 0, or -EPROTO with why. */
static int check_buffer(struct vc_link *L, const struct vumem_m_reply *r, struct vc_buf *out, const char **why)
{
        struct pvd_region *reg = &L->vl->region[PV_REGION_VUMEM];
        if (!L->pdev_ok || !reg->base) {
                *why = "the pdev region has a bad header";
                return -EPROTO;
        }
        if (r->rec_cell >= L->ncells) {
                *why = "record cell out of the pdev";
                return -EPROTO;
        }
        const uint8_t *cells = (const uint8_t *)reg->base + VUMEM_PDEV_HDR;
        struct vumem_pdev_rec rec;
        memcpy(&rec, cells + (size_t)r->rec_cell * VUMEM_CELL, sizeof(rec));
        if (rec.kind != VUMEM_REC_KIND || rec.id != r->id || rec.size != r->size || !rec.size) {
                *why = "the record does not match the answer";
                return -EPROTO;
        }
        size_t pg = vumem_page();
        if (rec.ext_count != 1 || rec.ext_cell >= L->ncells || rec.pgoff >= pg || rec.flags & ~VUMEM_BUF_DMABUF) {
                *why = "bad chunk list";
                return -EPROTO;
        }
        struct vumem_pdev_ext ext;
        memcpy(&ext, cells + (size_t)rec.ext_cell * VUMEM_CELL, sizeof(ext));
        struct hv_mem g;
        if (ext.kind != VUMEM_EXT_KIND || pvd_grant_get(L->vl, ext.gref, &g) < 0) {
                *why = "the chunk names no grant of the server VM";
                return -EPROTO;
        }
        /* The backend checked that the grant's memory holds it; the chunk
         * (offset relative to the grant) must lie inside the grant. */
        if (!ext.len || ext.len % pg || ext.offset % pg || ext.offset > g.size || ext.len > g.size - ext.offset ||
            rec.pgoff + rec.size > ext.len) {
                *why = "the chunk lies outside its grant";
                return -EPROTO;
        }
        if (!(g.flags & HV_MEM_DMABUF) != !(rec.flags & VUMEM_BUF_DMABUF)) {
                *why = "the record's dma-buf flag does not match the granted memory";
                return -EPROTO;
        }
        *out = (struct vc_buf){ .fd = g.fd, .off = g.offset + ext.offset, .len = ext.len, .pgoff = rec.pgoff,
                                .flags = rec.flags };
        return 0;
}

/* Give back a handle we cannot use (nobody waits for the answer). */
static void give_back(struct vc_link *L, uint64_t cid, uint32_t handle)
{
        struct vumem_m_free msg;
        memset(&msg, 0, sizeof(msg));
        msg.req = 0;
        msg.session = cid;
        msg.handle = handle;
        pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_FREE, &msg, sizeof(msg));
}

static void on_buffer(struct vc_link *L, struct vc_pending *p, struct vc_session *s, const struct vumem_m_reply *r)
{
        struct vc_buf b;
        const char *why = "";
        if (hent_find(s, r->handle)) {
                answer_err(L, p, -EPROTO, "%s: %s answered with handle %u, already in this session", node_name(L),
                           L->vl->peer_vm, r->handle);
                return;
        }
        if (r->alloc_size > VUMEM_ALLOC_MAX || check_buffer(L, r, &b, &why) < 0) {
                pv_warn("%s: %s's answer for buffer 0x%016llx is corrupt: %s", node_name(L), L->vl->peer_vm,
                        (unsigned long long)r->id, r->alloc_size > VUMEM_ALLOC_MAX ? "alloc too large" : why);
                give_back(L, s->cid, r->handle);
                answer_err(L, p, -EPROTO, "%s: the server VM %s sent a corrupt buffer record (%s); request failed",
                           node_name(L), L->vl->peer_vm, r->alloc_size > VUMEM_ALLOC_MAX ? "alloc too large" : why);
                return;
        }
        if (hent_add(s, r->handle, r->size) < 0) {
                give_back(L, s->cid, r->handle);
                answer_err(L, p, -ENOMEM, "%s: out of memory in pvd", node_name(L));
                return;
        }
        L->served++;
        struct pv_msg a;
        answer_init(&a, p, 0);
        pv_msg_set_u(&a, PV_K_ID, r->handle);
        pv_msg_set_u(&a, PV_K_VALUE, r->id);
        pv_msg_set_u(&a, PV_K_SIZE, r->size);
        pv_msg_set_u(&a, PV_K_OFFSET, b.off);
        pv_msg_set_u(&a, PV_K_SIZE2, b.len);
        pv_msg_set_u(&a, PV_K_OFFSET2, b.pgoff);
        pv_msg_set_u(&a, PV_K_FLAGS, b.flags);
        if (p->kind == VUMEM_MSG_ALLOC)
                pv_msg_set_b(&a, PV_K_DATA, r->alloc, r->alloc_size);
        pv_msg_add_fd(&a, b.fd);
        pvd_conn_send(p->c, &a);
        pvd_hot(L->vl->pvd); /* a program that allocates often asks again soon */
}

/* The session's lane, if the server VM granted one that is what it must
 * be: 0 with *g, or -1. */
static int lane_mem(struct vc_link *L, uint32_t gref, struct hv_mem *g)
{
        if (!gref)
                return -1;
        if (pvd_grant_get(L->vl, gref, g) < 0 || g->size < VUMEM_LANE_SIZE || (g->flags & HV_MEM_DMABUF)) {
                pv_warn("%s: the session lane %s granted is not a page of memory; the session goes through pvd",
                        node_name(L), L->vl->peer_vm);
                return -1;
        }
        return 0;
}

/* A memory object a lane answer named: the whole of grant rec_cell. */
static void on_object(struct vc_link *L, struct vc_pending *p, const struct vumem_m_reply *r)
{
        struct hv_mem g;
        if (pvd_grant_get(L->vl, r->rec_cell, &g) < 0 || !r->size || r->size > g.size ||
            !(g.flags & HV_MEM_DMABUF) != !(r->flags & VUMEM_BUF_DMABUF)) {
                answer_err(L, p, -EPROTO, "%s: the server VM %s named a memory object that its grant does not "
                           "hold", node_name(L), L->vl->peer_vm);
                return;
        }
        L->served++;
        struct pv_msg a;
        answer_init(&a, p, 0);
        pv_msg_set_u(&a, PV_K_SIZE, r->size);
        pv_msg_set_u(&a, PV_K_OFFSET, g.offset);
        pv_msg_set_u(&a, PV_K_FLAGS, r->flags & VUMEM_BUF_DMABUF);
        pv_msg_add_fd(&a, g.fd);
        pvd_conn_send(p->c, &a);
}

static void on_wake(struct vc_link *L, const struct vumem_m_kick *m)
{
        for (struct vc_session *s = L->sessions; s; s = s->next)
                if (s->cid == m->session && s->c && s->open) {
                        struct pv_msg w;
                        pv_msg_init(&w, VUMEM_OP_WAKE);
                        pv_msg_set_u(&w, PV_K_SEQ, 0);
                        pv_msg_set_i(&w, PV_K_DIAG, 0);
                        pvd_conn_send(s->c, &w);
                        return;
                }
}

static void on_reply(struct vc_link *L, const struct vumem_m_reply *r)
{
        struct vc_pending *p = NULL;
        for (struct vc_pending **pp = &L->pending; *pp; pp = &(*pp)->next)
                if ((*pp)->req == r->req) {
                        p = *pp;
                        *pp = p->next;
                        break;
                }
        if (!p) {
                /* The program went away meanwhile (its session close
                 * follows on the ring), or a request given back. */
                pv_debug("%s: answer to request %u that nobody waits for", node_name(L), r->req);
                return;
        }
        struct vc_session *s = p->c ? session_of(p->c) : NULL;
        if (s)
                s->npending--;
        if (r->diag > 0 || r->diag < -4095) {
                answer_err(L, p, -EPROTO, "%s: %s answered with a bad diag %d", node_name(L), L->vl->peer_vm, r->diag);
                goto out;
        }
        if (r->diag < 0) {
                char text[VUMEM_MSG_TEXT];
                vumem_text_copy(text, sizeof(text), r->msg, sizeof(r->msg));
                if (p->kind == VUMEM_MSG_SESSION_OPEN && s) {
                        session_unlink(L, s);
                        p->c->priv = NULL;
                        free(s);
                }
                answer_err(L, p, r->diag, "%s (in %s)", text[0] ? text : strerror(-r->diag), L->vl->peer_vm);
                goto out;
        }
        if (!s)
                goto out;
        switch (p->kind) {
        case VUMEM_MSG_SESSION_OPEN: {
                s->opening = false;
                s->open = true;
                s->sid = r->session_id;
                L->served++;
                struct pv_msg a;
                answer_init(&a, p, 0);
                pv_msg_set_u(&a, PV_K_TOKEN, s->sid);
                /* Whether the lane's CPU hints compare is ours to say. */
                pv_msg_set_u(&a, PV_K_FLAGS,
                             pvd_hv_caps(L->vl->pvd) & HV_CAP_ONE_KERNEL ? VUMEM_LANE_ONE_KERNEL : 0);
                struct hv_mem g;
                if (lane_mem(L, r->lane_gref, &g) == 0) {
                        pv_msg_set_u(&a, PV_K_OFFSET, g.offset);
                        pv_msg_add_fd(&a, g.fd);
                }
                pvd_conn_send(p->c, &a);
                break;
        }
        case VUMEM_MSG_OBJECT:
                on_object(L, p, r);
                break;
        case VUMEM_MSG_ALLOC:
        case VUMEM_MSG_ACCESS:
                on_buffer(L, p, s, r);
                break;
        case VUMEM_MSG_FREE: {
                struct vc_hent *h = hent_find(s, p->handle);
                if (h) {
                        s->bytes -= h->size;
                        *h = s->h[--s->nh];
                }
                L->served++;
                struct pv_msg a;
                answer_init(&a, p, 0);
                pvd_conn_send(p->c, &a);
                break;
        }
        }
out:
        free(p);
}

static void on_session_reset(struct vc_link *L, const struct vumem_m_session_reset *m)
{
        for (struct vc_session *s = L->sessions; s; s = s->next) {
                if (s->cid != m->session || !s->c)
                        continue;
                char text[VUMEM_MSG_TEXT + 16];
                vumem_text_copy(text, sizeof(text), m->msg, sizeof(m->msg));
                struct pv_msg r;
                pv_msg_init(&r, PV_OP_NONE);
                pv_msg_set_i(&r, PV_K_DIAG, -ECONNRESET);
                pv_msg_set_str(&r, PV_K_MSG, text[0] ? text : "the VUMEM server program went away");
                pvd_conn_send(s->c, &r);
                s->reset = true;
                pvd_conn_close(s->c, "its VUMEM server program went away");
                return;
        }
}

void vc_msg(struct vc_link *L, uint32_t type, const void *msg, uint32_t len)
{
        if (type == VUMEM_MSG_REPLY && len == sizeof(struct vumem_m_reply)) {
                struct vumem_m_reply r;
                memcpy(&r, msg, sizeof(r));
                on_reply(L, &r);
                return;
        }
        if (type == VUMEM_MSG_WAKE && len == sizeof(struct vumem_m_kick)) {
                struct vumem_m_kick m;
                memcpy(&m, msg, sizeof(m));
                on_wake(L, &m);
                return;
        }
        if (type == VUMEM_MSG_SESSION_RESET && len == sizeof(struct vumem_m_session_reset)) {
                struct vumem_m_session_reset m;
                memcpy(&m, msg, sizeof(m));
                on_session_reset(L, &m);
                return;
        }
        pv_warn("%s: malformed message (type %u, %u bytes) from %s; ignored", node_name(L), type, len,
                L->vl->peer_vm);
        /* An answer we can attribute fails its request. */
        if (type == VUMEM_MSG_REPLY && len >= sizeof(uint32_t)) {
                struct vumem_m_reply r;
                memset(&r, 0, sizeof(r));
                memcpy(&r.req, msg, sizeof(r.req));
                r.diag = -EPROTO;
                snprintf(r.msg, sizeof(r.msg), "%s: malformed answer from the server VM", node_name(L));
                on_reply(L, &r);
        }
}

/* ---- lifetime -------------------------------------------------------------------------- */

void vc_conn_close(struct vc_link *L, struct pvd_conn *c)
{
        struct vc_session *s = session_of(c);
        for (struct vc_pending *p = L->pending; p; p = p->next)
                if (p->c == c)
                        p->c = NULL;
        if (!s)
                return;
        if (!s->reset && L->vl->state == PV_VLINK_ON) {
                struct vumem_m_session_close m = { .session = s->cid };
                pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_SESSION_CLOSE, &m, sizeof(m));
        }
        session_unlink(L, s);
        c->priv = NULL;
        free(s->h);
        free(s);
}

void vc_up(struct vc_link *L)
{
        struct pvd_region *r = &L->vl->region[PV_REGION_VUMEM];
        const struct vumem_pdev_hdr *h = r->base;
        L->pdev_ok = false;
        L->ncells = vumem_pdev_ncells(r->size);
        if (!h)
                return;
        /* Checked once: from now on only our own geometry is used. */
        if (shm_read32(&h->magic) != VUMEM_PDEV_MAGIC || shm_read32(&h->version) != VUMEM_PDEV_VERSION ||
            shm_read32(&h->size) != r->size || shm_read32(&h->cell_size) != VUMEM_CELL ||
            shm_read32(&h->cells_off) != VUMEM_PDEV_HDR || shm_read32(&h->ncells) != L->ncells) {
                pv_err("%s: the pdev region from %s has a bad header (magic, version or geometry); "
                       "VUMEM buffers of this vlink will fail with EPROTO", node_name(L), L->vl->peer_vm);
                return;
        }
        L->pdev_ok = true;
}

/* The vlink leaves ON: every session fails, every waiting call with it. */
void vc_down(struct vc_link *L)
{
        while (L->pending) {
                struct vc_pending *p = L->pending;
                L->pending = p->next;
                free(p);
        }
        while (L->sessions) {
                struct vc_session *s = L->sessions;
                s->reset = true;
                struct pvd_conn *c = s->c;
                if (!c || c->closing) {
                        session_unlink(L, s);
                        if (c)
                                c->priv = NULL;
                        free(s->h);
                        free(s);
                        continue;
                }
                struct pv_msg r;
                char text[256];
                snprintf(text, sizeof(text), "%s: the vlink to %s went down (its pvd stopped or restarted); this "
                         "session is over (mapped buffers stay valid until unmapped)", node_name(L), L->vl->peer_vm);
                pv_msg_init(&r, PV_OP_NONE);
                pv_msg_set_i(&r, PV_K_DIAG, -ECONNRESET);
                pv_msg_set_str(&r, PV_K_MSG, text);
                pvd_conn_send(c, &r);
                pvd_conn_close(c, "the vlink went down");
        }
}

void vc_stat(struct vc_link *L, msgpack_packer *pk)
{
        uint64_t buffers = 0, bytes = 0, used = 0;
        for (struct vc_session *s = L->sessions; s; s = s->next) {
                buffers += s->nh;
                bytes += s->bytes;
        }
        size_t pdev = L->vl->region[PV_REGION_VUMEM].size;
        const struct vumem_pdev_hdr *h = L->vl->region[PV_REGION_VUMEM].base;
        if (h && L->pdev_ok) {
                /* Written by the server VM: for display only, clamped. */
                uint64_t cells = shm_read32(&h->cells_used);
                used = cells ? VUMEM_PDEV_HDR + cells * VUMEM_CELL : 0;
                if (used > pdev)
                        used = pdev;
        }
        if (!pdev)
                pdev = L->vl->cfg->vumem_pdev;
        unsigned pending = 0;
        for (struct vc_pending *p = L->pending; p; p = p->next)
                pending++;
        msgpack_pack_map(pk, 10);
        pvd_pack_kv_str(pk, "node", node_name(L));
        pvd_pack_kv_str(pk, "side", "client");
        pvd_pack_str(pk, "sessions");
        msgpack_pack_array(pk, L->nsessions);
        for (struct vc_session *s = L->sessions; s; s = s->next) {
                msgpack_pack_map(pk, 7);
                pvd_pack_kv_u64(pk, "id", s->sid);
                pvd_pack_kv_str(pk, "kind", s->master ? "master" : "standard");
                pvd_pack_kv_str(pk, "vm", L->vl->pvd->vm_name);
                bool see = s->c && pvd_viewer_sees(L->vl->pvd, s->c->cred.uid);
                pvd_pack_kv_u64(pk, "pid", see ? (uint64_t)s->c->cred.pid : 0);
                pvd_pack_kv_str(pk, "comm", see ? s->c->comm : "");
                pvd_pack_kv_u64(pk, "buffers", s->nh);
                pvd_pack_kv_u64(pk, "bytes", s->bytes);
        }
        pvd_pack_kv_u64(pk, "buffers", buffers);
        pvd_pack_kv_u64(pk, "bytes", bytes);
        pvd_pack_kv_u64(pk, "pdev_used", used);
        pvd_pack_kv_u64(pk, "pdev_size", pdev);
        pvd_pack_kv_u64(pk, "requests_served", L->served);
        pvd_pack_kv_u64(pk, "requests_failed", L->failed);
        pvd_pack_kv_u64(pk, "pending", pending);
}
