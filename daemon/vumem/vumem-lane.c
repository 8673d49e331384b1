/* VUMEM, server end: the lanes (vumem-proto.h explains them). Here pvd
 * makes a session's lane page and the server library's page, registers the
 * memory objects a server program may answer with, reserves what a lane
 * answer needs (pdev cells, a buffer id, a handle), and turns the library's
 * log of answers into buffers and handles exactly as RESPOND does.
 *
 * The server library runs in this VM but is a program: what it writes in
 * its page is read once and checked; an entry that does not match a
 * reservation is refused (its memory goes back to the server program as a
 * FREE), and a page whose indices go wrong turns the lanes off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv/hv.h"
#include "vumem-int.h"

static const char *node_name(const struct vs_link *L)
{
        return L->node ? L->node->name : "vumem";
}

/* A sealed memfd of size bytes, mapped. */
static int shared_page(const char *name, size_t size, void **base)
{
        int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
                int e = errno;
                close(fd);
                return -e;
        }
        *base = p;
        return fd;
}

/* ---- reservations ---------------------------------------------------------------- */

bool vs_lane_handle_reserved(const struct vs_link *L, uint32_t id)
{
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++)
                if (L->resv[i].used && L->resv[i].handle == id)
                        return true;
        return false;
}

static bool id_reserved(const struct vs_link *L, uint64_t id)
{
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++)
                if (L->resv[i].used && L->resv[i].id == id)
                        return true;
        return false;
}

unsigned vs_lane_resv_cells(const struct vs_link *L)
{
        unsigned n = 0;
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++)
                n += L->resv[i].used && !L->resv[i].stale;
        return n * VUMEM_BUF_CELLS;
}

static void resv_drop(struct vs_link *L, struct vs_resv *r)
{
        r->used = false;
        vs_cells_free(L, r->cell, VUMEM_BUF_CELLS);
}

static void lanes_off(struct vs_link *L, const char *why)
{
        if (L->lanes_off)
                return;
        L->lanes_off = true;
        pv_err("%s: the VUMEM server library's page is inconsistent (%s); allocations go through pvd from now on",
               node_name(L), why);
        for (unsigned i = 0; i < VUMEM_SESSIONS_MAX; i++)
                if (L->slot_s[i])
                        ring_store_release(&L->shm->slots[i], VUMEM_SLOT_WORD(L->slot_gen[i], VUMEM_SLOT_SLOW));
}

/* Fill the ring with what the lane may answer without pvd. */
static void refill(struct vs_link *L)
{
        if (!L->shm || L->lanes_off || !L->server || L->vl->state != PV_VLINK_ON || !L->bitmap)
                return;
        for (;;) {
                uint32_t cons = ring_load_acquire(&L->shm->resv_cons);
                uint32_t queued = L->resv_prod - cons;
                if (queued > VUMEM_RESV_RING) {
                        lanes_off(L, "reservation index out of range");
                        return;
                }
                if (queued == VUMEM_RESV_RING)
                        return;
                struct vs_resv *r = NULL;
                for (unsigned i = 0; i < VUMEM_RESV_RING && !r; i++)
                        if (!L->resv[i].used)
                                r = &L->resv[i];
                if (!r)
                        return; /* all reserved, some taken and not yet logged */
                uint32_t cell;
                if (L->nhandles + vs_lane_resv_cells(L) / VUMEM_BUF_CELLS >= VUMEM_HANDLES_MAX ||
                    vs_cells_alloc(L, VUMEM_BUF_CELLS, &cell) < 0)
                        return;
                uint64_t id;
                do {
                        if (vs_buf_new_id(&id) < 0) {
                                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                                return;
                        }
                } while (id_reserved(L, id));
                uint32_t h;
                do
                        h = L->next_handle++;
                while (!h || vs_handle_find(L, h) || vs_lane_handle_reserved(L, h));
                *r = (struct vs_resv){ .id = id, .handle = h, .cell = cell, .ring = L->resv_prod, .used = true };
                struct vumem_srv_resv *e = &L->shm->resv[L->resv_prod % VUMEM_RESV_RING];
                shm_store64(&e->id, id);
                ring_store_relaxed(&e->handle, h);
                L->resv_prod++;
                ring_store_release(&L->shm->resv_prod, L->resv_prod);
                vs_pdev_hdr_update(L);
        }
}

/* Take back the reservations the library has not taken (their cells are
 * wanted by a request through pvd). True if any came back. */
bool vs_lane_reclaim(struct vs_link *L)
{
        if (!L->shm)
                return false;
        uint32_t cons;
        for (;;) {
                cons = ring_load_acquire(&L->shm->resv_cons);
                if (L->resv_prod - cons > VUMEM_RESV_RING) {
                        lanes_off(L, "reservation index out of range");
                        return false;
                }
                if (cons == L->resv_prod)
                        return false;
                if (ring_cas(&L->shm->resv_cons, cons, L->resv_prod))
                        break;
        }
        bool any = false;
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++) {
                struct vs_resv *r = &L->resv[i];
                if (r->used && !r->stale && r->ring - cons < L->resv_prod - cons) {
                        resv_drop(L, r);
                        any = true;
                }
        }
        return any;
}

/* ---- memory objects ---------------------------------------------------------------- */

static struct vs_obj *obj_find(struct vs_link *L, uint64_t key)
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
        close(o->fd);
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

/* The vlink's state goes: objects still used by buffers held on other
 * vlinks live on alone. */
void vs_lane_detach(struct vs_link *L)
{
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

static int obj_grant(struct vs_link *L, struct vs_obj *o)
{
        if (o->gref)
                return 0;
        return pvd_grant(L->vl, o->fd, 0, o->size, &o->gref);
}

static void on_register(struct vs_link *L, struct pv_msg *m)
{
        uint64_t key = 0, size = 0;
        const char *why = NULL;
        if (pv_msg_get_u(m, PV_K_VALUE, &key) < 0 || pv_msg_get_u(m, PV_K_SIZE, &size) < 0 || m->nfds != 1 ||
            !key || key > UINT32_MAX || key <= ring_load_relaxed(&L->shm->reg_done))
                why = "malformed";
        uint64_t objsize = 0;
        int kind = why ? -EINVAL : vumem_mem_check(m->fds[0], &objsize);
        if (!why && kind < 0)
                why = kind == -EPERM ? "a memfd not sealed against shrinking" : "not a memfd or dma-buf";
        if (!why && (!size || size > objsize))
                why = "a size beyond the memory object";
        struct vs_obj *o = why ? NULL : calloc(1, sizeof(*o));
        if (!why && !o)
                why = "out of memory";
        if (why) {
                pv_warn("%s: memory registration refused (%s); lane answers in it will fail", node_name(L), why);
        } else {
                o->key = (uint32_t)key;
                o->link = L;
                o->fd = m->fds[0];
                m->fds[0] = -1;
                o->size = objsize;
                o->flags = kind == VUMEM_MEM_DMABUF ? VUMEM_BUF_DMABUF : 0;
                o->next = L->objs;
                L->objs = o;
        }
        if (key && key <= UINT32_MAX && key > ring_load_relaxed(&L->shm->reg_done))
                ring_store_release(&L->shm->reg_done, (uint32_t)key);
}

/* ---- the log ----------------------------------------------------------------------- */

static void apply(struct vs_link *L, const struct vumem_srv_log *e)
{
        struct vs_resv *r = NULL;
        for (unsigned i = 0; i < VUMEM_RESV_RING && !r; i++)
                if (L->resv[i].used && L->resv[i].handle == e->handle && L->resv[i].id == e->id)
                        r = &L->resv[i];
        if (!r) {
                pv_warn("%s: the server library logged an allocation pvd did not reserve (handle %u); refused",
                        node_name(L), e->handle);
                if (e->diag == 0)
                        vs_bounce(L, 0, e->vaddr, e->size);
                return;
        }
        uint32_t cell = r->cell;
        r->used = false;
        if (r->stale) {
                /* Reserved before the vlink went down: its session is gone. */
                if (e->diag == 0)
                        vs_bounce(L, 0, e->vaddr, e->size);
                return;
        }
        L->lane_allocs++;
        if (e->diag < 0) {
                L->failed++;
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                return;
        }
        const char *why = NULL;
        struct vs_session *s = vs_session_by_sid(L, e->session);
        struct vs_obj *o = obj_find(L, e->key);
        size_t pg = vumem_page();
        uint64_t map_off = e->offset / pg * pg, pgoff = e->offset - map_off;
        uint64_t map_len = (pgoff + e->size + pg - 1) / pg * pg;
        if (!s)
                why = NULL; /* the session ended meanwhile: hand it back quietly */
        else if (!o)
                why = "no such memory object";
        else if (!e->size || e->size > (1ull << 48) || map_off > o->size || map_len > o->size - map_off)
                why = "a range outside the memory object";
        else if (vs_buf_find(e->id))
                why = "a buffer id in use";
        struct vs_buf *b = NULL;
        if (s && !why) {
                b = calloc(1, sizeof(*b));
                if (b && (b->fd = fcntl(o->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
                        free(b);
                        b = NULL;
                }
                if (!b)
                        why = "out of memory";
        }
        if (!b) {
                if (why) {
                        L->failed++;
                        pv_warn("%s: a lane answer of the server program is refused (%s)", node_name(L), why);
                }
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                vs_bounce(L, 0, e->vaddr, e->size);
                return;
        }
        b->id = e->id;
        b->size = e->size;
        b->map_off = map_off;
        b->map_len = map_len;
        b->pgoff = (uint32_t)pgoff;
        b->flags = o->flags;
        b->vaddr = e->vaddr;
        b->owner = L;
        b->compat = L->vl->cfg->compatible;
        b->obj = o;
        o->users++;
        vs_buf_add(b);
        struct vs_export *x = NULL;
        struct vs_handle *h = NULL;
        int rc = obj_grant(L, o);
        if (rc == 0)
                rc = vs_export_lane(L, b, cell, o->gref, &x);
        else
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
        if (rc == 0) {
                rc = vs_handle_new(L, s, x, e->handle, &h);
                if (rc < 0)
                        vs_export_release(x);
        }
        if (rc < 0) {
                pv_warn("%s: a lane answer cannot become a buffer: %s", node_name(L), strerror(-rc));
                L->failed++;
                vs_buf_release(b); /* no handle: the server program gets its FREE */
                return;
        }
        L->served++;
}

void vs_lane_drain(struct vs_link *L)
{
        if (!L->shm)
                return;
        uint32_t prod = ring_load_acquire(&L->shm->log_prod);
        if (prod - L->log_cons > VUMEM_LOG_RING) {
                lanes_off(L, "log index out of range");
                return;
        }
        bool any = prod != L->log_cons;
        while (L->log_cons != prod) {
                struct vumem_srv_log e;
                memcpy(&e, &L->shm->log[L->log_cons % VUMEM_LOG_RING], sizeof(e));
                L->log_cons++;
                apply(L, &e);
        }
        if (any)
                ring_store_release(&L->shm->log_cons, L->log_cons);
        refill(L);
        if (any)
                vs_pdev_hdr_update(L);
}

void vs_lane_drain_all(struct pvd *pvd)
{
        for (unsigned i = 0; i < pvd->nvlinks; i++) {
                struct vumem_link *V = vumem_of(&pvd->vlinks[i]);
                if (V && V->side == PV_SERVER)
                        vs_lane_drain(&V->s);
        }
}

/* The vlink went down: its grants and pdev are gone. Reservations the
 * library took stay known (stale) until it logs them. */
void vs_lane_down(struct vs_link *L)
{
        vs_lane_drain(L);
        vs_lane_reclaim(L);
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++)
                if (L->resv[i].used && !L->resv[i].stale) {
                        vs_cells_free(L, L->resv[i].cell, VUMEM_BUF_CELLS);
                        L->resv[i].stale = true;
                }
        for (struct vs_obj *o = L->objs; o; o = o->next)
                o->gref = 0;
}

void vs_lane_up(struct vs_link *L)
{
        refill(L);
}

/* ---- the server library's page ------------------------------------------------------ */

int vs_lane_server_open(struct vs_link *L, struct pv_msg *reply)
{
        if (L->shm)
                vs_lane_server_close(L);
        void *p;
        int fd = shared_page("pvd-vumem-server", VUMEM_SHM_SIZE, &p);
        if (fd < 0) {
                pv_warn("%s: no lane page for the server program (%s); allocations go through pvd", node_name(L),
                        strerror(-fd));
                return fd;
        }
        L->shm = p;
        L->shm_fd = fd;
        L->lanes_off = false;
        L->log_cons = L->resv_prod = 0;
        L->shm->version = VUMEM_LANE_VERSION;
        ring_store_release(&L->shm->magic, VUMEM_SHM_MAGIC);
        pv_msg_add_fd(reply, fd);
        refill(L);
        return 0;
}

void vs_lane_server_close(struct vs_link *L)
{
        if (!L->shm)
                return;
        for (unsigned i = 0; i < VUMEM_RESV_RING; i++)
                if (L->resv[i].used) {
                        if (!L->resv[i].stale)
                                vs_cells_free(L, L->resv[i].cell, VUMEM_BUF_CELLS);
                        L->resv[i] = (struct vs_resv){ 0 };
                }
        for (struct vs_obj *o = L->objs, *n; o; o = n) {
                n = o->next;
                if (!o->gone)
                        obj_gone(o);
        }
        munmap(L->shm, VUMEM_SHM_SIZE);
        close(L->shm_fd);
        L->shm = NULL;
        L->shm_fd = -1;
}

/* ---- sessions' lanes ----------------------------------------------------------------- */

static uint32_t slot_state(struct vs_link *L, struct vs_session *s)
{
        struct vs_session *ms = vs_master_of(L);
        return L->lanes_off || (ms && ms != s) ? VUMEM_SLOT_SLOW : VUMEM_SLOT_ALLOC;
}

void vs_lane_rules(struct vs_link *L)
{
        if (!L->shm)
                return;
        for (struct vs_session *s = L->sessions; s; s = s->next)
                if (s->lane)
                        ring_store_release(&L->shm->slots[s->slot], VUMEM_SLOT_WORD(s->gen, slot_state(L, s)));
}

void vs_lane_session_open(struct vs_link *L, struct vs_session *s)
{
        s->lane_fd = -1;
        if (!L->shm || L->lanes_off || !L->server)
                return;
        unsigned slot = 0;
        while (slot < VUMEM_SESSIONS_MAX && L->slot_s[slot])
                slot++;
        if (slot == VUMEM_SESSIONS_MAX)
                return;
        void *p;
        int fd = shared_page("pvd-vumem-lane", VUMEM_LANE_SIZE, &p);
        if (fd < 0) {
                pv_warn("%s: no lane for a session (%s); its allocations go through pvd", node_name(L),
                        strerror(-fd));
                return;
        }
        struct vumem_lane *lane = p;
        lane->version = VUMEM_LANE_VERSION;
        lane->one_kernel = L->vl->pvd->hv->one_kernel ? 1u : 0u;
        ring_store_release(&lane->magic, VUMEM_LANE_MAGIC);
        uint32_t gref;
        int rc = pvd_grant(L->vl, fd, 0, VUMEM_LANE_SIZE, &gref);
        if (rc < 0) {
                munmap(p, VUMEM_LANE_SIZE);
                close(fd);
                return;
        }
        uint32_t gen = (L->slot_gen[slot] + 1) & 0x3fffffffu;
        L->slot_gen[slot] = gen ? gen : 1;
        L->slot_s[slot] = s;
        s->lane = lane;
        s->lane_fd = fd;
        s->lane_gref = gref;
        s->slot = slot;
        s->gen = L->slot_gen[slot];
        ring_store_release(&L->shm->slots[slot], VUMEM_SLOT_WORD(s->gen, slot_state(L, s)));
        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_LANE);
        pv_msg_set_u(&m, PV_K_SEQ, 0);
        pv_msg_set_u(&m, PV_K_ID, slot);
        pv_msg_set_u(&m, PV_K_GEN, s->gen);
        pv_msg_set_u(&m, PV_K_TOKEN, s->sid);
        pv_msg_set_u(&m, PV_K_STATE, s->master);
        pv_msg_set_str(&m, PV_K_NAME, L->vl->peer_vm);
        pv_msg_add_fd(&m, fd);
        pvd_conn_send(L->server, &m);
}

void vs_lane_session_end(struct vs_link *L, struct vs_session *s)
{
        if (!s->lane)
                return;
        ring_store_release(&s->lane->dead, 1);
        if (L->shm)
                ring_store_release(&L->shm->slots[s->slot], VUMEM_SLOT_FREE);
        L->slot_s[s->slot] = NULL;
        pvd_grant_revoke(L->vl, s->lane_gref);
        munmap(s->lane, VUMEM_LANE_SIZE);
        close(s->lane_fd);
        s->lane = NULL;
        s->lane_fd = -1;
}

/* ---- messages ------------------------------------------------------------------------- */

int vs_lane_conn_op(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (c != L->server || !L->shm)
                return -EPROTO;
        switch (pv_msg_op(m)) {
        case VUMEM_OP_REGISTER:
                on_register(L, m);
                return 0;
        case VUMEM_OP_UNREGISTER: {
                uint64_t key;
                if (m->nfds || pv_msg_get_u(m, PV_K_VALUE, &key) < 0)
                        return -EPROTO;
                struct vs_obj *o = obj_find(L, key);
                if (o)
                        obj_gone(o);
                return 0;
        }
        case VUMEM_OP_NUDGE:
                return m->nfds ? -EPROTO : 0; /* drained on the way in */
        case VUMEM_OP_KICK: {
                uint64_t sid;
                if (m->nfds || pv_msg_get_u(m, PV_K_TOKEN, &sid) < 0)
                        return -EPROTO;
                struct vs_session *s = vs_session_by_sid(L, sid);
                if (s && L->vl->state == PV_VLINK_ON) {
                        struct vumem_m_kick k = { .session = s->cid };
                        pvd_vlink_send(L->vl, PV_DRV_VUMEM, VUMEM_MSG_WAKE, &k, sizeof(k));
                }
                return 0;
        }
        default:
                return -EPROTO;
        }
}

void vs_lane_object(struct vs_link *L, const struct vumem_m_object *m)
{
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = m->req;
        struct vs_session *s = NULL;
        for (struct vs_session *t = L->sessions; t && !s; t = t->next)
                if (t->cid == m->session)
                        s = t;
        struct vs_obj *o = s ? obj_find(L, m->key) : NULL;
        int rc = o ? obj_grant(L, o) : 0;
        if (!s) {
                r.diag = -ECONNRESET;
                snprintf(r.msg, sizeof(r.msg), "%s: this session is over (its server program went away)",
                         node_name(L));
        } else if (!o || rc < 0) {
                r.diag = o ? rc : -ENOENT;
                snprintf(r.msg, sizeof(r.msg), "%s: no memory object %llu of the server program%s", node_name(L),
                         (unsigned long long)m->key, o ? ": cannot grant it" : " (it was freed)");
        } else {
                r.rec_cell = o->gref;
                r.size = o->size;
                r.flags = o->flags;
        }
        vs_reply(L, &r);
}

void vs_lane_kick(struct vs_link *L, const struct vumem_m_kick *m)
{
        if (!L->server)
                return;
        for (struct vs_session *s = L->sessions; s; s = s->next)
                if (s->cid == m->session) {
                        if (s->lane) {
                                struct pv_msg w;
                                pv_msg_init(&w, VUMEM_OP_WAKE);
                                pv_msg_set_u(&w, PV_K_SEQ, 0);
                                pv_msg_set_i(&w, PV_K_DIAG, 0);
                                pvd_conn_send(L->server, &w);
                        }
                        return;
                }
}
