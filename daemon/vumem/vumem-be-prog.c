/* VUMEM back end, the server program's side: its connection (one per node),
 * the requests pushed to it and its answers (RESPOND), and the memory
 * objects it may answer with: memory of the hypervisor backend it asked pvd
 * for (vumemServerMemAlloc) or its own memfds and dma-bufs, where the
 * backend can share memory it did not make (vumemServerFdRegister). Answers
 * name an object by key and an offset in it; pvd checks both and grants the
 * pages to the client VM.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vumem-int.h"

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

/* FREEs from the head of the queue, as many as credit and one message
 * allow, in one VUMEM_OP_FREES. */
static void give_frees(struct vs_link *L)
{
        struct vumem_free_ent e[VUMEM_FREES_MAX];
        uint32_t n = 0;
        while (L->queue && L->queue->cmd == VUMEM_CMD_BUFFER_FREE && n < VUMEM_FREES_MAX && n < L->credit) {
                struct vs_req *q = L->queue;
                L->queue = q->next;
                if (!L->queue)
                        L->queue_tail = NULL;
                e[n++] = (struct vumem_free_ent){ .id = q->id, .buf_id = q->buf_id, .vaddr = q->vaddr,
                                                  .size = q->size };
                free(q);
        }
        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_FREES);
        pv_msg_set_u(&m, PV_K_SEQ, 0);
        pv_msg_set_str(&m, PV_K_NAME, L->vl->peer_vm);
        pv_msg_set_b(&m, PV_K_DATA, e, n * (uint32_t)sizeof(e[0]));
        L->credit -= n;
        pvd_conn_send(L->server, &m);
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
                if (L->server_frees && L->queue->cmd == VUMEM_CMD_BUFFER_FREE && L->queue->next &&
                    L->queue->next->cmd == VUMEM_CMD_BUFFER_FREE && L->credit > 1) {
                        give_frees(L);
                        continue;
                }
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

void vs_enqueue(struct vs_link *L, struct vs_req *q)
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
                       vs_node_name(owner), (unsigned long long)id);
                return;
        }
        q->cmd = VUMEM_CMD_BUFFER_FREE;
        q->buf_id = id;
        q->vaddr = vaddr;
        q->size = size;
        vs_enqueue(owner, q);
}

/* ---- memory objects ------------------------------------------------------------- */

struct vs_obj *vs_obj_find(struct vs_link *L, uint64_t key)
{
        for (struct vs_obj *o = L->objs; o; o = o->next)
                if (!o->gone && o->key == key)
                        return o;
        return NULL;
}

static void obj_free(struct vs_obj *o)
{
        struct vs_link *L = o->link;
        if (L) {
                for (struct vs_obj **pp = &L->objs; *pp; pp = &(*pp)->next)
                        if (*pp == o) {
                                *pp = o->next;
                                break;
                        }
                if (o->gref)
                        pvd_grant_revoke(L->vl, o->gref);
        }
        pvd_mem_free(o->pvd, L ? L->vl : NULL, &o->mem);
        free(o);
}

void vs_obj_put(struct vs_obj *o)
{
        if (--o->users == 0 && o->gone)
                obj_free(o);
}

static void obj_gone(struct vs_obj *o)
{
        o->gone = true;
        if (!o->users)
                obj_free(o);
}

/* The server program is gone: its objects live while buffers in them do. */
static void objs_gone(struct vs_link *L)
{
        for (struct vs_obj *o = L->objs, *n; o; o = n) {
                n = o->next;
                if (!o->gone)
                        obj_gone(o);
        }
}

/* The vlink went down: its grants went with it. */
void vs_objs_down(struct vs_link *L)
{
        for (struct vs_obj *o = L->objs; o; o = o->next)
                o->gref = 0;
}

/* The whole object, granted once to the client VM (lane answers name
 * buffers inside it). */
int vs_obj_grant(struct vs_link *L, struct vs_obj *o)
{
        if (o->gref)
                return 0;
        return pvd_grant(L->vl, &o->mem, 0, o->mem.size, &o->gref);
}

static struct vs_obj *obj_new(struct vs_link *L, const struct hv_mem *mem)
{
        struct vs_obj *o = calloc(1, sizeof(*o));
        if (!o)
                return NULL;
        do
                o->key = ++L->next_key;
        while (!o->key || vs_obj_find(L, o->key));
        o->pvd = L->vl->pvd;
        o->link = L;
        o->mem = *mem;
        o->flags = mem->flags & HV_MEM_DMABUF ? VUMEM_BUF_DMABUF : 0;
        o->next = L->objs;
        L->objs = o;
        return o;
}

/* VUMEM_OP_MEM_ALLOC: memory of the backend, registered at once. */
static int on_mem_alloc(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t size;
        if (m->nfds || pv_msg_get_u(m, PV_K_SIZE, &size) < 0)
                return -EPROTO;
        if (!size || size > (1ull << 40))
                return pvd_conn_reply_err(c, m, -EINVAL, "vumemServerMemAlloc: %llu bytes is not a size VUMEM "
                                          "can allocate (1 byte to 1 TiB)", (unsigned long long)size);
        struct hv_mem mem;
        char name[64];
        snprintf(name, sizeof(name), "pvd-vumem-%.40s", vs_node_name(L));
        int rc = pvd_mem_alloc(L->vl, size, name, &mem);
        if (rc < 0)
                return pvd_conn_reply_err(c, m, rc, "vumemServerMemAlloc: the %s hypervisor backend has no %llu "
                                          "bytes of shareable memory for %s: %s", L->vl->pvd->hv->name,
                                          (unsigned long long)size, vs_node_name(L), strerror(-rc));
        struct vs_obj *o = obj_new(L, &mem);
        if (!o) {
                pvd_mem_free(L->vl->pvd, L->vl, &mem);
                return pvd_conn_reply_err(c, m, -ENOMEM, "vumemServerMemAlloc: out of memory in pvd");
        }
        struct pv_msg r;
        pv_msg_init_reply(&r, m, 0);
        pv_msg_set_u(&r, PV_K_VALUE, o->key);
        pv_msg_set_u(&r, PV_K_OFFSET, o->mem.offset);
        pv_msg_set_u(&r, PV_K_SIZE, o->mem.size);
        pv_msg_set_u(&r, PV_K_FLAGS, o->flags);
        pv_msg_add_fd(&r, o->mem.fd);
        pvd_conn_send(c, &r);
        return 0;
}

/* VUMEM_OP_REGISTER: the program's own memory, where the backend can
 * share it. */
static int on_register(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        uint64_t size;
        if (m->nfds != 1 || pv_msg_get_u(m, PV_K_SIZE, &size) < 0)
                return -EPROTO;
        struct hv_mem mem;
        int rc = size && size <= (1ull << 46) ? pvd_mem_import(L->vl, m->fds[0], size, &mem) : -EINVAL;
        if (rc == -EOPNOTSUPP)
                return pvd_conn_reply_err(c, m, rc, "vumemServerFdRegister: the %s hypervisor backend cannot share "
                                          "memory it did not make with another VM; allocate buffers in "
                                          "vumemServerMemAlloc memory instead", L->vl->pvd->hv->name);
        if (rc == -EPERM)
                return pvd_conn_reply_err(c, m, rc, "vumemServerFdRegister: the memfd is not sealed against "
                                          "shrinking (a client's mapping could lose its pages)");
        if (rc < 0)
                return pvd_conn_reply_err(c, m, rc, "vumemServerFdRegister: %llu bytes of fd %d are not memory VUMEM "
                                          "can share (a sealed memfd or a dma-buf that holds them)",
                                          (unsigned long long)size, m->fds[0]);
        struct vs_obj *o = obj_new(L, &mem);
        if (!o) {
                pvd_mem_free(L->vl->pvd, L->vl, &mem);
                return pvd_conn_reply_err(c, m, -ENOMEM, "vumemServerFdRegister: out of memory in pvd");
        }
        struct pv_msg r;
        pv_msg_init_reply(&r, m, 0);
        pv_msg_set_u(&r, PV_K_VALUE, o->key);
        pv_msg_set_u(&r, PV_K_FLAGS, o->flags);
        pvd_conn_send(c, &r);
        return 0;
}

/* VUMEM_MSG_OBJECT from the client VM: grant an object whole. */
void vs_object(struct vs_link *L, const struct vumem_m_object *m)
{
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = m->req;
        struct vs_session *s = vs_session_find(L, m->session);
        struct vs_obj *o = s ? vs_obj_find(L, m->key) : NULL;
        int rc = o ? vs_obj_grant(L, o) : 0;
        if (!s) {
                r.diag = -ECONNRESET;
                snprintf(r.msg, sizeof(r.msg), "%s: this session is over (its server program went away)",
                         vs_node_name(L));
        } else if (!o || rc < 0) {
                r.diag = o ? rc : -ENOENT;
                snprintf(r.msg, sizeof(r.msg), "%s: no memory object %llu of the server program%s", vs_node_name(L),
                         (unsigned long long)m->key, o ? ": cannot grant it" : " (it was freed)");
        } else {
                r.rec_cell = o->gref;
                r.size = o->mem.size;
                r.flags = o->flags;
        }
        vs_reply(L, &r);
}


/* ---- the server program ---------------------------------------------------------------- */

static int on_server_open(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (L->server && L->server != c) {
                pvd_conn_reply_err(c, m, -EBUSY, "%s: a server program already serves this node (%s, pid %d); one at a time",
                                   vs_node_name(L), L->server->comm, (int)L->server->cred.pid);
                return 0;
        }
        L->server = c;
        L->credit = 0;
        L->server_starts++;
        pv_notice("%s: server program %s[%d] serves %s's sessions", vs_node_name(L), c->comm, (int)c->cred.pid,
                  L->vl->peer_vm);
        struct pv_msg r;
        pv_msg_init_reply(&r, m, 0);
        pv_msg_set_str(&r, PV_K_NAME, vs_node_name(L));
        uint64_t flags = 0;
        pv_msg_get_u(m, PV_K_FLAGS, &flags);
        L->server_frees = flags & VUMEM_SERVER_FREES;
        if (flags & VUMEM_SERVER_LANES)
                vs_lane_server_open(L, &r); /* its page with pvd, if it can be made */
        else
                vs_lane_server_close(L);
        pvd_conn_send(c, &r);
        vs_session_accept_parked(L);
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
        uint64_t id, vaddr = 0, size = 0, key = 0, off = 0, pgoff = 0;
        int64_t diag;
        if (c != L->server || m->nfds || pv_msg_get_u(m, PV_K_ID, &id) < 0 || pv_msg_get_i(m, PV_K_DIAG, &diag) < 0 ||
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
                    pv_msg_get_u(m, PV_K_VALUE, &key) < 0 || pv_msg_get_u(m, PV_K_OFFSET, &off) < 0 ||
                    pv_msg_get_u(m, PV_K_OFFSET2, &pgoff) < 0 ||
                    (pv_msg_has(m, PV_K_DATA) && pv_msg_get_b(m, PV_K_DATA, &data, &dlen) < 0) ||
                    dlen > VUMEM_ALLOC_MAX) {
                        free(q);
                        return -EPROTO;
                }
        }
        uint32_t creq = q->creq;
        struct vs_session *s = q->cancelled ? NULL : vs_session_find(L, q->cid);
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
                vs_reply_err(L, creq, (int)diag, "%s: the server program refused the allocation: %s", vs_node_name(L),
                             text[0] ? text : strerror((int)-diag));
                return 0;
        }

        /* The range must lie in an object the program registered. */
        size_t pg = vumem_page();
        struct vs_obj *o = vs_obj_find(L, key);
        uint64_t map_len = (pgoff + size + pg - 1) / pg * pg;
        const char *why = NULL;
        if (!o)
                why = "no such memory object";
        else if (!size || size > (1ull << 48) || pgoff >= pg || off % pg || off > o->mem.size ||
                 map_len > o->mem.size - off)
                why = "a range outside the memory object";
        uint64_t bid = 0;
        if (!why && vs_buf_new_id(&bid) < 0)
                why = "no buffer id available";
        struct vs_buf *b = why ? NULL : calloc(1, sizeof(*b));
        if (!b) {
                bounce(L, vaddr, size);
                vs_cells_free(L, q->cell, VUMEM_BUF_CELLS);
                free(q);
                if (why)
                        vs_reply_err(L, creq, -EFAULT, "%s: the server program answered with memory VUMEM cannot "
                                     "share (%s)", vs_node_name(L), why);
                else
                        vs_reply_err(L, creq, -ENOMEM, "%s: out of memory", vs_node_name(L));
                return 0;
        }
        b->id = bid;
        b->size = size;
        b->map_off = off;
        b->map_len = map_len;
        b->pgoff = (uint32_t)pgoff;
        b->flags = o->flags;
        b->vaddr = vaddr;
        b->obj = o;
        o->users++;
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
                vs_reply_err(L, creq, rc, "%s: cannot grant the buffer to %s: %s", vs_node_name(L), L->vl->peer_vm,
                             strerror(-rc));
                return 0;
        }
        vs_reply_buffer(L, creq, h, q);
        free(q);
        return 0;
}

int vs_conn_msg(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (c == L->server)
                vs_lane_drain(L);
        switch (pv_msg_op(m)) {
        case VUMEM_OP_MEM_ALLOC:
                return c == L->server ? on_mem_alloc(L, c, m) : -EPROTO;
        case VUMEM_OP_REGISTER:
                return c == L->server ? on_register(L, c, m) : -EPROTO;
        case VUMEM_OP_UNREGISTER: {
                uint64_t key;
                if (c != L->server || m->nfds || pv_msg_get_u(m, PV_K_VALUE, &key) < 0)
                        return -EPROTO;
                struct vs_obj *o = vs_obj_find(L, key);
                if (o)
                        obj_gone(o);
                return 0;
        }
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
        pv_notice("%s: server program %s[%d] gone; resetting %u session(s) of %s", vs_node_name(L), c->comm,
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
                         "valid until unmapped)", vs_node_name(L), L->vl->pvd->vm_name);
                if (L->vl->state == PV_VLINK_ON)
                        pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_SESSION_RESET, &r, sizeof(r));
                vs_session_end(L, s);
        }
        vs_lane_server_close(L);
        objs_gone(L);
}

/* pvd stops: the server program is dropped, buffers still held on other
 * vlinks forget their owner, objects still used by them live on alone. */
void vs_prog_detach(struct vs_link *L)
{
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
        vs_bufs_orphan(L);
        vs_lane_server_close(L);
        while (L->objs) {
                struct vs_obj *o = L->objs;
                L->objs = o->next;
                o->link = NULL;
                o->gone = true;
                if (!o->users)
                        obj_free(o);
        }
}

