/* VUMEM back end: this VM is the vlink's server VM (node vumem-srv-X).
 * This file holds the client VM's side: its sessions and their requests
 * (ALLOC, FREE, ACCESS, OBJECT) as they come on the control ring, and the
 * answers. The server program's side is vumem-be-prog.c, the buffers
 * (VM-wide registry, reference counted across vlinks, grants and pdev
 * records) vumem-buf.c, the lanes vumem-lane.c.
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

const char *vs_node_name(const struct vs_link *L)
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

void vs_reply_err(struct vs_link *L, uint32_t req, int diag, const char *fmt, ...)
{
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = req;
        r.diag = diag;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r.msg, sizeof(r.msg), fmt, ap);
        va_end(ap);
        pv_debug("%s: request %u fails: %s", vs_node_name(L), req, r.msg);
        vs_reply(L, &r);
}

/* ---- sessions ------------------------------------------------------------------------ */

struct vs_session *vs_session_find(struct vs_link *L, uint64_t cid)
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
void vs_session_end(struct vs_link *L, struct vs_session *s)
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
                vs_reply_err(L, m->req, -EBUSY,
                          "%s: a master session already exists (pid %u, %s, in %s); only one at a time",
                          vs_node_name(L), ms->pid, ms->comm, L->vl->peer_vm);
                return;
        }
        struct vs_session *s = calloc(1, sizeof(*s));
        if (!s) {
                vs_reply_err(L, m->req, -ENOMEM, "%s: out of memory in %s's pvd", vs_node_name(L), L->vl->pvd->vm_name);
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
        pv_info("%s: %s session of %s[%u] in %s opened", vs_node_name(L), master ? "master" : "standard", s->comm,
                s->pid, L->vl->peer_vm);
}

void vs_session_accept_parked(struct vs_link *L)
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
                vs_reply_err(L, p->m.req, -ECONNREFUSED,
                          "%s: no VUMEM server program serves this node in %s (waited %d ms); start the server "
                          "program (vumemServerCreate(\"%s\"))",
                          vs_node_name(L), L->vl->pvd->vm_name, VUMEM_SERVER_WAIT_MS, vs_node_name(L));
                free(p);
        }
        if (!L->parked)
                uv_timer_stop(t);
}

/* ---- requests from the client end ------------------------------------------------------ */

static void on_session_open(struct vs_link *L, const struct vumem_m_session_open *m)
{
        if (vs_session_find(L, m->session)) {
                vs_reply_err(L, m->req, -EPROTO, "%s: session 0x%llx is already open", vs_node_name(L),
                          (unsigned long long)m->session);
                return;
        }
        unsigned nparked = 0;
        for (struct vs_park *p = L->parked; p; p = p->next) {
                nparked++;
                if (p->m.session == m->session) {
                        vs_reply_err(L, m->req, -EPROTO, "%s: session 0x%llx is already opening", vs_node_name(L),
                                  (unsigned long long)m->session);
                        return;
                }
        }
        if (L->nsessions + nparked >= VUMEM_SESSIONS_MAX) {
                vs_reply_err(L, m->req, -EUSERS, "%s: %d sessions are open, the most a node serves", vs_node_name(L),
                          VUMEM_SESSIONS_MAX);
                return;
        }
        if (L->server) {
                session_accept(L, m);
                return;
        }
        struct vs_park *p = calloc(1, sizeof(*p));
        if (!p) {
                vs_reply_err(L, m->req, -ENOMEM, "%s: out of memory", vs_node_name(L));
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
        struct vs_session *s = vs_session_find(L, m->session);
        if (!s)
                return;
        pv_info("%s: session of %s[%u] in %s closed (%u buffer handles released)", vs_node_name(L), s->comm, s->pid,
                L->vl->peer_vm, s->nhandles);
        vs_session_end(L, s);
}

/* The session of a request, or NULL after answering why not. */
static struct vs_session *request_session(struct vs_link *L, uint32_t req, uint64_t cid)
{
        struct vs_session *s = vs_session_find(L, cid);
        if (!s)
                vs_reply_err(L, req, -ECONNRESET, "%s: this session is over (its server program went away)",
                          vs_node_name(L));
        return s;
}

static bool handles_full(struct vs_link *L, uint32_t req)
{
        if (L->nhandles < VUMEM_HANDLES_MAX)
                return false;
        vs_reply_err(L, req, -ENOSPC, "%s: %d buffer handles are open on this vlink, the most it holds", vs_node_name(L),
                  VUMEM_HANDLES_MAX);
        return true;
}

static void reply_pdev_full(struct vs_link *L, uint32_t req)
{
        vs_reply_err(L, req, -ENOSPC,
                  "%s: vumem-pdev of vlink %s (%zu bytes) is full with %u buffer records; raise vumem-pdev in the "
                  "vlink's info in the platform device tree",
                  vs_node_name(L), L->vl->cfg->link_name, L->vl->region[PV_REGION_VUMEM].size, L->nexports);
}

static void on_alloc(struct vs_link *L, const struct vumem_m_alloc *m)
{
        struct vs_session *s = request_session(L, m->req, m->session);
        if (!s)
                return;
        if (m->alloc_size > VUMEM_ALLOC_MAX) {
                vs_reply_err(L, m->req, -EPROTO, "%s: alloc of %u bytes (at most %d)", vs_node_name(L), m->alloc_size,
                          VUMEM_ALLOC_MAX);
                return;
        }
        struct vs_session *ms = vs_master_of(L);
        if (ms && ms != s) {
                vs_reply_err(L, m->req, -EPERM,
                          "%s: a master session (pid %u, %s, in %s) exists: only it may allocate; a standard "
                          "session may use its buffers with vumemBufferAccess",
                          vs_node_name(L), ms->pid, ms->comm, L->vl->peer_vm);
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
                vs_reply_err(L, m->req, -ENOMEM, "%s: out of memory", vs_node_name(L));
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
        vs_enqueue(L, q);
}

void vs_reply_buffer(struct vs_link *L, uint32_t req, struct vs_handle *h, const struct vs_req *q)
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
        struct vs_session *s = vs_session_find(L, m->session);
        struct vs_handle *h = s ? vs_handle_find(L, m->handle) : NULL;
        if (!h || h->s != s) {
                if (m->req)
                        vs_reply_err(L, m->req, s ? -ENOENT : -ECONNRESET, "%s: no buffer handle %u in this session",
                                  vs_node_name(L), m->handle);
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
                vs_reply_err(L, m->req, -ENOENT, "%s: no buffer with id 0x%016llx (never allocated, or freed)",
                          vs_node_name(L), (unsigned long long)m->id);
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
        if (rc == -EOPNOTSUPP && b->obj->link && b->obj->link != L) {
                vs_reply_err(L, m->req, rc, "%s: buffer 0x%016llx lies in the memory of vlink %s, which the %s "
                             "hypervisor backend shares with %s only", vs_node_name(L), (unsigned long long)m->id,
                             b->obj->link->vl->cfg->link_name, L->vl->pvd->hv->name, b->obj->link->vl->peer_vm);
                return;
        }
        if (rc < 0) {
                vs_reply_err(L, m->req, rc, "%s: cannot grant buffer 0x%016llx to %s: %s", vs_node_name(L),
                          (unsigned long long)m->id, L->vl->peer_vm, strerror(-rc));
                return;
        }
        struct vs_handle *h;
        rc = vs_handle_new(L, s, x, 0, &h);
        if (rc < 0) {
                if (!x->handles)
                        vs_export_release(x);
                vs_reply_err(L, m->req, rc, "%s: out of memory", vs_node_name(L));
                return;
        }
        vs_reply_buffer(L, m->req, h, NULL);
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
                vs_object(L, &m);
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
        pv_warn("%s: malformed message (type %u, %u bytes) from %s; refused", vs_node_name(L), type, len,
                L->vl->peer_vm);
        if (len >= sizeof(uint32_t) && type != VUMEM_MSG_SESSION_CLOSE) {
                uint32_t req;
                memcpy(&req, msg, sizeof(req));
                vs_reply_err(L, req, -EPROTO, "%s: malformed request (type %u, %u bytes)", vs_node_name(L), type, len);
        }
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
                vs_session_end(L, L->sessions);
        vs_lane_down(L);
        vs_objs_down(L);
}

void vs_detach(struct vs_link *L)
{
        vs_down(L);
        vs_prog_detach(L);
}

void vs_stat(struct vs_link *L, msgpack_packer *pk)
{
        vs_lane_drain(L);
        size_t pdev = L->vl->region[PV_REGION_VUMEM].size;
        if (!pdev)
                pdev = L->vl->cfg->vumem_pdev;
        msgpack_pack_map(pk, 14);
        pvd_pack_kv_str(pk, "node", vs_node_name(L));
        pvd_pack_kv_str(pk, "side", "server");
        pvd_pack_str(pk, "server");
        if (L->server) {
                msgpack_pack_map(pk, 3);
                pvd_pack_kv_bool(pk, "running", true);
                pvd_pack_kv_u64(pk, "pid", (uint64_t)L->server->cred.pid);
                pvd_pack_kv_str(pk, "comm", L->server->comm);
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
                pvd_pack_kv_u64(pk, "pid", s->pid);
                pvd_pack_kv_str(pk, "comm", s->comm);
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
