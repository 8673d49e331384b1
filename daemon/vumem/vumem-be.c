/* VUMEM back end: this VM is the vlink's server VM (node vumem-srv-X). The server
 * program's connection, the client VM's sessions, the buffers the server
 * program hands out (VM-wide registry, reference counted across vlinks),
 * their grants and pdev records.
 *
 * Rules:
 *   - one server program per node at a time (a second gets -EBUSY);
 *   - a session is bound to the server program present when it opens (it
 *     waits up to VUMEM_SERVER_WAIT_MS for one); that program's end resets
 *     the session (the client's calls fail with -ECONNRESET);
 *   - while a master session exists on the node, only it allocates;
 *   - a buffer lives while any handle on any vlink refers to it; when the
 *     last goes, the server program that allocated it gets exactly one
 *     VUMEM_CMD_BUFFER_FREE (if it still runs);
 *   - every successful RESPOND to an ALLOC that does not become a buffer
 *     (the client went away, the pdev is full, the memory is refused) also
 *     comes back to the server program as a FREE.
 * Everything the client end sends is checked; a bad request fails alone.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vumem-int.h"

static const char *node_name(const struct vs_link *L)
{
        return L->node ? L->node->name : "vumem";
}

/* ---- messages to the client end -------------------------------------------- */

void vs_reply(struct vs_link *L, struct vumem_m_reply *r)
{
        if (r->diag < 0)
                L->failed++;
        else
                L->served++;
        pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_REPLY, r, sizeof(*r));
}

static void reply_err(struct vs_link *L, uint32_t req, int diag, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void reply_err(struct vs_link *L, uint32_t req, int diag, const char *fmt, ...)
{
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = req;
        r.diag = diag;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r.msg, sizeof(r.msg), fmt, ap);
        va_end(ap);
        pv_debug("%s: request %u fails: %s", node_name(L), req, r.msg);
        vs_reply(L, &r);
}

/* ---- the server program's queue ---------------------------------------------- */

/* Requests are pushed to the server program as long as it has credit
 * (it asks for more with NEXT before it runs out), so that a request costs
 * one message each way. A FREE alone waits VUMEM_FREE_DELAY_MS: it goes
 * with the next ALLOC, so that a busy server wakes once for both. */
static void give(struct vs_link *L, struct vs_req *q)
{
        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_REQUEST);
        pv_msg_set_u(&m, PV_K_SEQ, 0);
        pv_msg_set_u(&m, PV_K_ID, q->id);
        pv_msg_set_u(&m, PV_K_COUNT, q->cmd);
        pv_msg_set_u(&m, PV_K_TOKEN, q->sid);
        pv_msg_set_u(&m, PV_K_STATE, q->master);
        pv_msg_set_str(&m, PV_K_NAME, L->vl->peer_vm);
        if (q->cmd == VUMEM_CMD_BUFFER_ALLOC) {
                pv_msg_set_b(&m, PV_K_DATA, q->alloc, q->alloc_size);
        } else {
                pv_msg_set_u(&m, PV_K_VALUE, q->buf_id);
                pv_msg_set_u(&m, PV_K_VALUE2, q->vaddr);
                pv_msg_set_u(&m, PV_K_SIZE, q->size);
        }
        L->credit--;
        if (q->cmd == VUMEM_CMD_BUFFER_ALLOC) {
                q->next = L->given;
                L->given = q;
        } else {
                free(q);
        }
        pvd_conn_send(L->server, &m);
        pvd_hot(L->vl->pvd); /* its answer comes back through here */
}

/* Push what the server program has credit for; FREEs alone only if
 * frees_too. */
static void pump(struct vs_link *L, bool frees_too)
{
        if (!L->server)
                return;
        if (!frees_too) {
                for (struct vs_req *q = L->queue; q && !frees_too; q = q->next)
                        frees_too = q->cmd == VUMEM_CMD_BUFFER_ALLOC;
                if (!frees_too)
                        return;
        }
        while (L->queue && L->credit && L->server) {
                struct vs_req *q = L->queue;
                L->queue = q->next;
                if (!L->queue)
                        L->queue_tail = NULL;
                give(L, q);
        }
        if (!L->queue)
                uv_timer_stop(L->free_timer);
}

static void free_timer_cb(uv_timer_t *t)
{
        pump(t->data, true);
}

static void enqueue(struct vs_link *L, struct vs_req *q)
{
        q->id = L->next_req++;
        if (!L->next_req || L->next_req >= VUMEM_LANE_REQ_BIT)
                L->next_req = 1; /* lane requests are numbered above */
        q->next = NULL;
        if (L->queue_tail)
                L->queue_tail->next = q;
        else
                L->queue = q;
        L->queue_tail = q;
        if (q->cmd == VUMEM_CMD_BUFFER_ALLOC)
                pump(L, true);
        else if (!uv_is_active((uv_handle_t *)L->free_timer))
                uv_timer_start(L->free_timer, free_timer_cb, VUMEM_FREE_DELAY_MS, 0);
}

/* Tell the server program of owner that a buffer it answered with is free. */
void vs_queue_free(struct vs_link *owner, uint64_t id, uint64_t vaddr, uint64_t size)
{
        if (!owner || !owner->server)
                return;
        struct vs_req *q = calloc(1, sizeof(*q));
        if (!q) {
                pv_err("%s: out of memory: the server program will not hear of the free of buffer 0x%llx",
                       node_name(owner), (unsigned long long)id);
                return;
        }
        q->cmd = VUMEM_CMD_BUFFER_FREE;
        q->buf_id = id;
        q->vaddr = vaddr;
        q->size = size;
        enqueue(owner, q);
}

/* ---- sessions ------------------------------------------------------------------------ */

static struct vs_session *session_find(struct vs_link *L, uint64_t cid)
{
        for (struct vs_session *s = L->sessions; s; s = s->next)
                if (s->cid == cid)
                        return s;
        return NULL;
}

struct vs_session *vs_session_by_sid(struct vs_link *L, uint64_t sid)
{
        for (struct vs_session *s = L->sessions; s; s = s->next)
                if (s->sid == sid)
                        return s;
        return NULL;
}

struct vs_session *vs_master_of(struct vs_link *L)
{
        for (struct vs_session *s = L->sessions; s; s = s->next)
                if (s->master)
                        return s;
        return NULL;
}

/* The session ends: its handles go, its requests are answered by nobody. */
static void session_end(struct vs_link *L, struct vs_session *s)
{
        vs_lane_session_end(L, s);
        while (s->handles)
                vs_handle_release(L, s->handles);
        for (struct vs_req **pp = &L->queue; *pp;) {
                struct vs_req *q = *pp;
                if (q->cmd == VUMEM_CMD_BUFFER_ALLOC && q->cid == s->cid) {
                        *pp = q->next;
                        vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                        free(q);
                        continue;
                }
                pp = &q->next;
        }
        L->queue_tail = NULL;
        for (struct vs_req *q = L->queue; q; q = q->next)
                L->queue_tail = q;
        for (struct vs_req *q = L->given; q; q = q->next)
                if (q->cid == s->cid)
                        q->cancelled = true;
        for (struct vs_session **pp = &L->sessions; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        break;
                }
        L->nsessions--;
        bool master = s->master;
        free(s);
        if (master)
                vs_lane_rules(L); /* the others may allocate again */
}

static void session_accept(struct vs_link *L, const struct vumem_m_session_open *m)
{
        static uint64_t next_sid;
        bool master = m->flags & VUMEM_SESSION_MASTER;
        struct vs_session *ms = vs_master_of(L);
        if (master && ms) {
                reply_err(L, m->req, -EBUSY,
                          "%s: a master session already exists (pid %u, %s, in %s); only one at a time",
                          node_name(L), ms->pid, ms->comm, L->vl->peer_vm);
                return;
        }
        struct vs_session *s = calloc(1, sizeof(*s));
        if (!s) {
                reply_err(L, m->req, -ENOMEM, "%s: out of memory in %s's pvd", node_name(L), L->vl->pvd->vm_name);
                return;
        }
        s->cid = m->session;
        s->sid = ++next_sid;
        s->master = master;
        s->pid = m->pid;
        vumem_text_copy(s->comm, sizeof(s->comm), m->comm, sizeof(m->comm));
        s->next = L->sessions;
        L->sessions = s;
        L->nsessions++;
        vs_lane_session_open(L, s);
        if (master)
                vs_lane_rules(L); /* before the answer: from now on only it allocates */
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = m->req;
        r.session_id = s->sid;
        r.lane_gref = s->lane ? s->lane_gref : 0;
        vs_reply(L, &r);
        pv_info("%s: %s session of %s[%u] in %s opened", node_name(L), master ? "master" : "standard", s->comm,
                s->pid, L->vl->peer_vm);
}

static void parked_accept_all(struct vs_link *L)
{
        while (L->parked) {
                struct vs_park *p = L->parked;
                L->parked = p->next;
                session_accept(L, &p->m);
                free(p);
        }
        uv_timer_stop(L->wait_timer);
}

static void wait_timer_cb(uv_timer_t *t)
{
        struct vs_link *L = t->data;
        uint64_t now = uv_now(L->vl->pvd->loop);
        for (struct vs_park **pp = &L->parked; *pp;) {
                struct vs_park *p = *pp;
                if (p->deadline > now) {
                        pp = &p->next;
                        continue;
                }
                *pp = p->next;
                reply_err(L, p->m.req, -ECONNREFUSED,
                          "%s: no VUMEM server program serves this node in %s (waited %d ms); start the server "
                          "program (vumemServerCreate(\"%s\"))",
                          node_name(L), L->vl->pvd->vm_name, VUMEM_SERVER_WAIT_MS, node_name(L));
                free(p);
        }
        if (!L->parked)
                uv_timer_stop(t);
}

/* ---- requests from the client end ------------------------------------------------------ */

static void on_session_open(struct vs_link *L, const struct vumem_m_session_open *m)
{
        if (session_find(L, m->session)) {
                reply_err(L, m->req, -EPROTO, "%s: session 0x%llx is already open", node_name(L),
                          (unsigned long long)m->session);
                return;
        }
        unsigned nparked = 0;
        for (struct vs_park *p = L->parked; p; p = p->next) {
                nparked++;
                if (p->m.session == m->session) {
                        reply_err(L, m->req, -EPROTO, "%s: session 0x%llx is already opening", node_name(L),
                                  (unsigned long long)m->session);
                        return;
                }
        }
        if (L->nsessions + nparked >= VUMEM_SESSIONS_MAX) {
                reply_err(L, m->req, -EUSERS, "%s: %d sessions are open, the most a node serves", node_name(L),
                          VUMEM_SESSIONS_MAX);
                return;
        }
        if (L->server) {
                session_accept(L, m);
                return;
        }
        struct vs_park *p = calloc(1, sizeof(*p));
        if (!p) {
                reply_err(L, m->req, -ENOMEM, "%s: out of memory", node_name(L));
                return;
        }
        p->m = *m;
        p->deadline = uv_now(L->vl->pvd->loop) + VUMEM_SERVER_WAIT_MS;
        p->next = L->parked;
        L->parked = p;
        if (!uv_is_active((uv_handle_t *)L->wait_timer))
                uv_timer_start(L->wait_timer, wait_timer_cb, 50, 50);
}

static void on_session_close(struct vs_link *L, const struct vumem_m_session_close *m)
{
        for (struct vs_park **pp = &L->parked; *pp; pp = &(*pp)->next)
                if ((*pp)->m.session == m->session) {
                        struct vs_park *p = *pp;
                        *pp = p->next;
                        free(p);
                        return;
                }
        struct vs_session *s = session_find(L, m->session);
        if (!s)
                return;
        pv_info("%s: session of %s[%u] in %s closed (%u buffer handles released)", node_name(L), s->comm, s->pid,
                L->vl->peer_vm, s->nhandles);
        session_end(L, s);
}

/* The session of a request, or NULL after answering why not. */
static struct vs_session *request_session(struct vs_link *L, uint32_t req, uint64_t cid)
{
        struct vs_session *s = session_find(L, cid);
        if (!s)
                reply_err(L, req, -ECONNRESET, "%s: this session is over (its server program went away)",
                          node_name(L));
        return s;
}

static bool handles_full(struct vs_link *L, uint32_t req)
{
        if (L->nhandles < VUMEM_HANDLES_MAX)
                return false;
        reply_err(L, req, -ENOSPC, "%s: %d buffer handles are open on this vlink, the most it holds", node_name(L),
                  VUMEM_HANDLES_MAX);
        return true;
}

static void reply_pdev_full(struct vs_link *L, uint32_t req)
{
        reply_err(L, req, -ENOSPC,
                  "%s: vumem-pdev of vlink %s (%zu bytes) is full with %u buffer records; raise vumem-pdev in the "
                  "vlink's info in the platform device tree",
                  node_name(L), L->vl->cfg->link_name, L->vl->region[PV_REGION_VUMEM].size, L->nexports);
}

static void on_alloc(struct vs_link *L, const struct vumem_m_alloc *m)
{
        struct vs_session *s = request_session(L, m->req, m->session);
        if (!s)
                return;
        if (m->alloc_size > VUMEM_ALLOC_MAX) {
                reply_err(L, m->req, -EPROTO, "%s: alloc of %u bytes (at most %d)", node_name(L), m->alloc_size,
                          VUMEM_ALLOC_MAX);
                return;
        }
        struct vs_session *ms = vs_master_of(L);
        if (ms && ms != s) {
                reply_err(L, m->req, -EPERM,
                          "%s: a master session (pid %u, %s, in %s) exists: only it may allocate; a standard "
                          "session may use its buffers with vumemBufferAccess",
                          node_name(L), ms->pid, ms->comm, L->vl->peer_vm);
                return;
        }
        if (handles_full(L, m->req))
                return;
        uint32_t cell;
        if (vs_cells_alloc(L, VUMEM_BUF_CELLS, &cell) < 0 &&
            (!vs_lane_reclaim(L) || vs_cells_alloc(L, VUMEM_BUF_CELLS, &cell) < 0)) {
                reply_pdev_full(L, m->req);
                return;
        }
        struct vs_req *q = calloc(1, sizeof(*q));
        if (!q) {
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                reply_err(L, m->req, -ENOMEM, "%s: out of memory", node_name(L));
                return;
        }
        q->cmd = VUMEM_CMD_BUFFER_ALLOC;
        q->cid = s->cid;
        q->sid = s->sid;
        q->master = s->master;
        q->creq = m->req;
        q->cell = cell;
        q->alloc_size = m->alloc_size;
        memcpy(q->alloc, m->alloc, m->alloc_size);
        enqueue(L, q);
}

static void reply_buffer(struct vs_link *L, uint32_t req, struct vs_handle *h, const struct vs_req *q)
{
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = req;
        r.handle = h->id;
        r.rec_cell = h->x->cell;
        r.id = h->x->buf->id;
        r.size = h->x->buf->size;
        r.flags = h->x->buf->flags;
        if (q) {
                r.alloc_size = q->alloc_size;
                memcpy(r.alloc, q->alloc, q->alloc_size);
        }
        vs_reply(L, &r);
}

/* req 0: the client end answered its program itself; no reply. */
static void on_free(struct vs_link *L, const struct vumem_m_free *m)
{
        struct vs_session *s = session_find(L, m->session);
        struct vs_handle *h = s ? vs_handle_find(L, m->handle) : NULL;
        if (!h || h->s != s) {
                if (m->req)
                        reply_err(L, m->req, s ? -ENOENT : -ECONNRESET, "%s: no buffer handle %u in this session",
                                  node_name(L), m->handle);
                else
                        L->failed++;
                return;
        }
        vs_handle_release(L, h);
        if (!m->req) {
                L->served++;
                return;
        }
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = m->req;
        vs_reply(L, &r);
}

static void on_access(struct vs_link *L, const struct vumem_m_access *m)
{
        struct vs_session *s = request_session(L, m->req, m->session);
        if (!s)
                return;
        struct vs_buf *b = vs_buf_find(m->id);
        if (!b) {
                /* Perhaps a lane answer of another vlink not read yet. */
                vs_lane_drain_all(L->vl->pvd);
                b = vs_buf_find(m->id);
        }
        if (!b || strcmp(b->compat, L->vl->cfg->compatible) != 0) {
                reply_err(L, m->req, -ENOENT, "%s: no buffer with id 0x%016llx (never allocated, or freed)",
                          node_name(L), (unsigned long long)m->id);
                return;
        }
        if (handles_full(L, m->req))
                return;
        struct vs_export *x;
        int rc = vs_export_get(L, b, UINT32_MAX, &x);
        if (rc == -ENOSPC && vs_lane_reclaim(L))
                rc = vs_export_get(L, b, UINT32_MAX, &x);
        if (rc == -ENOSPC) {
                reply_pdev_full(L, m->req);
                return;
        }
        if (rc < 0) {
                reply_err(L, m->req, rc, "%s: cannot grant buffer 0x%016llx to %s: %s", node_name(L),
                          (unsigned long long)m->id, L->vl->peer_vm, strerror(-rc));
                return;
        }
        struct vs_handle *h;
        rc = vs_handle_new(L, s, x, 0, &h);
        if (rc < 0) {
                if (!x->handles)
                        vs_export_release(x);
                reply_err(L, m->req, rc, "%s: out of memory", node_name(L));
                return;
        }
        reply_buffer(L, m->req, h, NULL);
}

void vs_msg(struct vs_link *L, uint32_t type, const void *msg, uint32_t len)
{
        /* What the lanes answered comes first: a request may name it. */
        vs_lane_drain(L);
        /* Copies in locals: msg is the core's buffer, already a private copy. */
        switch (type) {
        case VUMEM_MSG_OBJECT: {
                struct vumem_m_object m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                vs_lane_object(L, &m);
                return;
        }
        case VUMEM_MSG_KICK: {
                struct vumem_m_kick m;
                if (len != sizeof(m))
                        return;
                memcpy(&m, msg, sizeof(m));
                vs_lane_kick(L, &m);
                return;
        }
        case VUMEM_MSG_SESSION_OPEN: {
                struct vumem_m_session_open m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                on_session_open(L, &m);
                return;
        }
        case VUMEM_MSG_SESSION_CLOSE: {
                struct vumem_m_session_close m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                on_session_close(L, &m);
                return;
        }
        case VUMEM_MSG_ALLOC: {
                struct vumem_m_alloc m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                on_alloc(L, &m);
                return;
        }
        case VUMEM_MSG_FREE: {
                struct vumem_m_free m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                on_free(L, &m);
                return;
        }
        case VUMEM_MSG_ACCESS: {
                struct vumem_m_access m;
                if (len != sizeof(m))
                        break;
                memcpy(&m, msg, sizeof(m));
                on_access(L, &m);
                return;
        }
        default:
                break;
        }
        /* Every request starts with its number: answer it if we can. */
        pv_warn("%s: malformed message (type %u, %u bytes) from %s; refused", node_name(L), type, len,
                L->vl->peer_vm);
        if (len >= sizeof(uint32_t) && type != VUMEM_MSG_SESSION_CLOSE) {
                uint32_t req;
                memcpy(&req, msg, sizeof(req));
                reply_err(L, req, -EPROTO, "%s: malformed request (type %u, %u bytes)", node_name(L), type, len);
        }
}

/* ---- the server program ---------------------------------------------------------------- */

static int on_server_open(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (L->server && L->server != c) {
                pvd_conn_reply_err(c, m, -EBUSY, "%s: a server program already serves this node (%s, pid %d); one at a time",
                                   node_name(L), L->server->comm, (int)L->server->cred.pid);
                return 0;
        }
        L->server = c;
        L->credit = 0;
        L->server_starts++;
        pv_notice("%s: server program %s[%d] serves %s's sessions", node_name(L), c->comm, (int)c->cred.pid,
                  L->vl->peer_vm);
        struct pv_msg r;
        pv_msg_init_reply(&r, m, 0);
        pv_msg_set_str(&r, PV_K_NAME, node_name(L));
        uint64_t flags = 0;
        pv_msg_get_u(m, PV_K_FLAGS, &flags);
        if (flags & VUMEM_SERVER_LANES)
                vs_lane_server_open(L, &r); /* its page with pvd, if it can be made */
        else
                vs_lane_server_close(L);
        pvd_conn_send(c, &r);
        parked_accept_all(L);
        return 0;
}

static int on_next(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t n;
        if (c != L->server || pv_msg_get_u(m, PV_K_COUNT, &n) < 0)
                return -EPROTO;
        L->credit = n > VUMEM_CREDIT_MAX - L->credit ? VUMEM_CREDIT_MAX : L->credit + (uint32_t)n;
        pump(L, true);
        return 0;
}

/* A successful answer that will not become a buffer: hand it back. */
void vs_bounce(struct vs_link *L, uint64_t id, uint64_t vaddr, uint64_t size)
{
        vs_queue_free(L, id, vaddr, size);
}

static void bounce(struct vs_link *L, uint64_t vaddr, uint64_t size)
{
        vs_bounce(L, 0, vaddr, size);
}

static int on_respond(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t id, vaddr = 0, size = 0, off = 0, pgoff = 0;
        int64_t diag;
        if (c != L->server || pv_msg_get_u(m, PV_K_ID, &id) < 0 || pv_msg_get_i(m, PV_K_DIAG, &diag) < 0 ||
            diag > 0 || diag < -4095)
                return -EPROTO;
        struct vs_req *q = NULL;
        for (struct vs_req **pp = &L->given; *pp; pp = &(*pp)->next)
                if ((*pp)->id == id) {
                        q = *pp;
                        *pp = q->next;
                        break;
                }
        if (!q)
                return -EPROTO;
        const void *data = NULL;
        uint32_t dlen = 0;
        if (diag == 0) {
                if (pv_msg_get_u(m, PV_K_VALUE2, &vaddr) < 0 || pv_msg_get_u(m, PV_K_SIZE, &size) < 0 ||
                    pv_msg_get_u(m, PV_K_OFFSET, &off) < 0 || pv_msg_get_u(m, PV_K_OFFSET2, &pgoff) < 0 ||
                    m->nfds != 1 || (pv_msg_has(m, PV_K_DATA) && pv_msg_get_b(m, PV_K_DATA, &data, &dlen) < 0) ||
                    dlen > VUMEM_ALLOC_MAX) {
                        free(q);
                        return -EPROTO;
                }
        }
        uint32_t creq = q->creq;
        struct vs_session *s = q->cancelled ? NULL : session_find(L, q->cid);
        if (!s) {
                if (diag == 0)
                        bounce(L, vaddr, size);
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
                return 0;
        }
        if (diag < 0) {
                char text[VUMEM_MSG_TEXT] = "";
                const void *t;
                uint32_t tlen;
                if (pv_msg_get_b(m, PV_K_MSG, &t, &tlen) == 0)
                        vumem_text_copy(text, sizeof(text), t, tlen);
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
                reply_err(L, creq, (int)diag, "%s: the server program refused the allocation: %s", node_name(L),
                          text[0] ? text : strerror((int)-diag));
                return 0;
        }

        /* Check the memory before anyone maps it. */
        size_t pg = vumem_page();
        uint64_t objsize = 0;
        int kind = vumem_mem_check(m->fds[0], &objsize);
        uint64_t map_len = (pgoff + size + pg - 1) / pg * pg;
        const char *why = NULL;
        if (kind < 0)
                why = kind == -EPERM ? "a memfd not sealed against shrinking" : "not a memfd or dma-buf";
        else if (!size || size > (1ull << 48) || pgoff >= pg || off % pg || off > objsize || map_len > objsize - off)
                why = "a range outside the memory object";
        uint64_t bid = 0;
        if (!why && vs_buf_new_id(&bid) < 0)
                why = "no buffer id available";
        if (why) {
                bounce(L, vaddr, size);
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
                reply_err(L, creq, -EFAULT, "%s: the server program answered with memory VUMEM cannot share (%s)",
                          node_name(L), why);
                return 0;
        }
        struct vs_buf *b = calloc(1, sizeof(*b));
        if (!b) {
                bounce(L, vaddr, size);
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
                reply_err(L, creq, -ENOMEM, "%s: out of memory", node_name(L));
                return 0;
        }
        b->id = bid;
        b->size = size;
        b->map_off = off;
        b->map_len = map_len;
        b->pgoff = (uint32_t)pgoff;
        b->flags = kind == VUMEM_MEM_DMABUF ? VUMEM_BUF_DMABUF : 0;
        b->vaddr = vaddr;
        b->fd = m->fds[0];
        m->fds[0] = -1;
        b->owner = L;
        b->compat = L->vl->cfg->compatible;
        vs_buf_add(b);
        if (dlen) {
                q->alloc_size = dlen;
                memcpy(q->alloc, data, dlen);
        } else {
                q->alloc_size = 0;
        }

        struct vs_export *x;
        int rc = vs_export_get(L, b, q->cell, &x);
        struct vs_handle *h = NULL;
        if (rc == 0) {
                rc = vs_handle_new(L, s, x, 0, &h);
                if (rc < 0 && !x->handles)
                        vs_export_release(x);
        }
        if (rc < 0) {
                vs_buf_release(b); /* refs 0: the server program gets its FREE */
                free(q);
                reply_err(L, creq, rc, "%s: cannot grant the buffer to %s: %s", node_name(L), L->vl->peer_vm,
                          strerror(-rc));
                return 0;
        }
        reply_buffer(L, creq, h, q);
        free(q);
        return 0;
}

int vs_conn_msg(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (c == L->server)
                vs_lane_drain(L);
        switch (pv_msg_op(m)) {
        case VUMEM_OP_REGISTER:
        case VUMEM_OP_UNREGISTER:
        case VUMEM_OP_NUDGE:
        case VUMEM_OP_KICK:
                return vs_lane_conn_op(L, c, m);
        case VUMEM_OP_SERVER_OPEN:
                if (m->nfds)
                        return -EPROTO;
                return on_server_open(L, c, m);
        case VUMEM_OP_NEXT:
                if (m->nfds)
                        return -EPROTO;
                return on_next(L, c, m);
        case VUMEM_OP_RESPOND:
                return on_respond(L, c, m);
        default:
                return -EPROTO;
        }
}

/* The server program is gone: its sessions end, its buffers live on
 * where other vlinks hold them, but nobody will hear their FREE. */
void vs_conn_close(struct vs_link *L, struct pvd_conn *c)
{
        if (c != L->server)
                return;
        vs_lane_drain(L); /* what its lanes answered becomes buffers, as any answer */
        pv_notice("%s: server program %s[%d] gone; resetting %u session(s) of %s", node_name(L), c->comm,
                  (int)c->cred.pid, L->nsessions, L->vl->peer_vm);
        L->server = NULL;
        L->credit = 0;
        uv_timer_stop(L->free_timer);
        vs_bufs_orphan(L);
        while (L->queue) {
                struct vs_req *q = L->queue;
                L->queue = q->next;
                if (q->cmd == VUMEM_CMD_BUFFER_ALLOC)
                        vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
        }
        L->queue_tail = NULL;
        while (L->given) {
                struct vs_req *q = L->given;
                L->given = q->next;
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
        }
        while (L->sessions) {
                struct vs_session *s = L->sessions;
                struct vumem_m_session_reset r;
                memset(&r, 0, sizeof(r));
                r.session = s->cid;
                r.diag = -ECONNRESET;
                snprintf(r.msg, sizeof(r.msg),
                         "%s: the VUMEM server program in %s went away; this session is over (mapped buffers stay "
                         "valid until unmapped)", node_name(L), L->vl->pvd->vm_name);
                if (L->vl->state == PV_VLINK_ON)
                        pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_SESSION_RESET, &r, sizeof(r));
                session_end(L, s);
        }
        vs_lane_server_close(L);
}

void vs_up(struct vs_link *L)
{
        vs_lane_up(L);
}

/* The client VM is gone: its sessions end (the server program gets the
 * FREEs of what they held), pending allocations are cancelled. */
void vs_down(struct vs_link *L)
{
        vs_lane_drain(L);
        while (L->parked) {
                struct vs_park *p = L->parked;
                L->parked = p->next;
                free(p);
        }
        uv_timer_stop(L->wait_timer);
        while (L->sessions)
                session_end(L, L->sessions);
        vs_lane_down(L);
}

void vs_detach(struct vs_link *L)
{
        vs_down(L);
        if (L->server)
                vs_conn_close(L, L->server);
        while (L->queue) {
                struct vs_req *q = L->queue;
                L->queue = q->next;
                free(q);
        }
        while (L->given) {
                struct vs_req *q = L->given;
                L->given = q->next;
                free(q);
        }
        /* Buffers still held elsewhere forget their owner. */
        vs_bufs_orphan(L);
        vs_lane_detach(L);
}

void vs_stat(struct vs_link *L, msgpack_packer *pk)
{
        vs_lane_drain(L);
        size_t pdev = L->vl->region[PV_REGION_VUMEM].size;
        if (!pdev)
                pdev = L->vl->cfg->vumem_pdev;
        msgpack_pack_map(pk, 14);
        pvd_pack_kv_str(pk, "node", node_name(L));
        pvd_pack_kv_str(pk, "side", "server");
        pvd_pack_str(pk, "server");
        if (L->server) {
                msgpack_pack_map(pk, 3);
                pvd_pack_kv_bool(pk, "running", true);
                bool see = pvd_viewer_sees(L->vl->pvd, L->server->cred.uid);
                pvd_pack_kv_u64(pk, "pid", see ? (uint64_t)L->server->cred.pid : 0);
                pvd_pack_kv_str(pk, "comm", see ? L->server->comm : "");
        } else {
                msgpack_pack_map(pk, 1);
                pvd_pack_kv_bool(pk, "running", false);
        }
        pvd_pack_kv_u64(pk, "server_starts", L->server_starts);
        pvd_pack_str(pk, "sessions");
        msgpack_pack_array(pk, L->nsessions);
        for (struct vs_session *s = L->sessions; s; s = s->next) {
                msgpack_pack_map(pk, 7);
                pvd_pack_kv_u64(pk, "id", s->sid);
                pvd_pack_kv_str(pk, "kind", s->master ? "master" : "standard");
                pvd_pack_kv_str(pk, "vm", L->vl->peer_vm);
                bool see = pvd_viewer_sees(L->vl->pvd, PVD_UID_PEER);
                pvd_pack_kv_u64(pk, "pid", see ? s->pid : 0);
                pvd_pack_kv_str(pk, "comm", see ? s->comm : "");
                pvd_pack_kv_u64(pk, "buffers", s->nhandles);
                pvd_pack_kv_u64(pk, "bytes", s->bytes);
        }
        pvd_pack_kv_u64(pk, "buffers", L->nexports);
        pvd_pack_kv_u64(pk, "bytes", L->export_bytes);
        pvd_pack_kv_u64(pk, "handles", L->nhandles);
        /* In use: records; cells reserved for lane answers are not. */
        uint32_t used = L->used_cells - vs_lane_resv_cells(L);
        pvd_pack_kv_u64(pk, "pdev_used", used ? VUMEM_PDEV_HDR + (uint64_t)used * VUMEM_CELL : 0);
        pvd_pack_kv_u64(pk, "pdev_size", pdev);
        pvd_pack_kv_u64(pk, "requests_served", L->served);
        pvd_pack_kv_u64(pk, "requests_failed", L->failed);
        pvd_pack_kv_u64(pk, "lane_allocs", L->lane_allocs);
        unsigned pending = 0;
        for (struct vs_req *q = L->queue; q; q = q->next)
                pending++;
        for (struct vs_req *q = L->given; q; q = q->next)
                pending++;
        pvd_pack_kv_u64(pk, "pending", pending);
}
