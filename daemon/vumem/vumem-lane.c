/* VUMEM, server end: the lanes (vumem-proto.h explains them). Here pvd
 * makes a session's lane page and the server library's page, reserves what
 * a lane answer needs (pdev cells, a buffer id, a handle), and turns the
 * library's log of answers into buffers and handles exactly as RESPOND does
 * (in the memory objects of vumem-be-prog.c).
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
               vs_node_name(L), why);
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

/* ---- the log ----------------------------------------------------------------------- */

static void apply(struct vs_link *L, const struct vumem_srv_log *e)
{
        struct vs_resv *r = NULL;
        for (unsigned i = 0; i < VUMEM_RESV_RING && !r; i++)
                if (L->resv[i].used && L->resv[i].handle == e->handle && L->resv[i].id == e->id)
                        r = &L->resv[i];
        if (!r) {
                pv_warn("%s: the server library logged an allocation pvd did not reserve (handle %u); refused",
                        vs_node_name(L), e->handle);
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
        struct vs_obj *o = vs_obj_find(L, e->key);
        size_t pg = vumem_page();
        uint64_t map_off = e->offset / pg * pg, pgoff = e->offset - map_off;
        uint64_t map_len = (pgoff + e->size + pg - 1) / pg * pg;
        if (!s)
                why = NULL; /* the session ended meanwhile: hand it back quietly */
        else if (!o)
                why = "no such memory object";
        else if (!e->size || e->size > (1ull << 48) || map_off > o->mem.size || map_len > o->mem.size - map_off)
                why = "a range outside the memory object";
        else if (vs_buf_find(e->id))
                why = "a buffer id in use";
        struct vs_buf *b = NULL;
        if (s && !why) {
                b = calloc(1, sizeof(*b));
                if (!b)
                        why = "out of memory";
        }
        if (!b) {
                if (why) {
                        L->failed++;
                        pv_warn("%s: a lane answer of the server program is refused (%s)", vs_node_name(L), why);
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
        int rc = vs_obj_grant(L, o);
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
                pv_warn("%s: a lane answer cannot become a buffer: %s", vs_node_name(L), strerror(-rc));
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
        void *p = NULL;
        int fd = shared_page("pvd-vumem-server", VUMEM_SHM_SIZE, &p);
        if (fd < 0) {
                pv_warn("%s: no lane page for the server program (%s); allocations go through pvd", vs_node_name(L),
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
        pv_msg_set_u(reply, PV_K_OFFSET, 0);
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
        s->lane_mem.fd = -1;
        if (!L->shm || L->lanes_off || !L->server)
                return;
        unsigned slot = 0;
        while (slot < VUMEM_SESSIONS_MAX && L->slot_s[slot])
                slot++;
        if (slot == VUMEM_SESSIONS_MAX)
                return;
        /* Memory of the backend: the client VM maps it too. */
        struct hv_mem mem;
        int rc = pvd_mem_alloc(L->vl, VUMEM_LANE_SIZE, "pvd-vumem-lane", &mem);
        void *p = MAP_FAILED;
        if (rc == 0) {
                p = mmap(NULL, VUMEM_LANE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mem.fd, (off_t)mem.offset);
                if (p == MAP_FAILED)
                        rc = -errno;
        }
        uint32_t gref = 0;
        if (rc == 0) {
                struct vumem_lane *lane = p;
                lane->version = VUMEM_LANE_VERSION;
                ring_store_release(&lane->magic, VUMEM_LANE_MAGIC);
                rc = pvd_grant(L->vl, &mem, 0, mem.size, &gref);
        }
        if (rc < 0) {
                pv_warn("%s: no lane for a session (%s); its allocations go through pvd", vs_node_name(L),
                        strerror(-rc));
                if (p != MAP_FAILED)
                        munmap(p, VUMEM_LANE_SIZE);
                if (mem.fd >= 0)
                        pvd_mem_free(L->vl->pvd, L->vl, &mem);
                return;
        }
        uint32_t gen = (L->slot_gen[slot] + 1) & 0x3fffffffu;
        L->slot_gen[slot] = gen ? gen : 1;
        L->slot_s[slot] = s;
        s->lane = p;
        s->lane_mem = mem;
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
        pv_msg_set_u(&m, PV_K_FLAGS, pvd_hv_caps(L->vl->pvd) & HV_CAP_ONE_KERNEL ? VUMEM_LANE_ONE_KERNEL : 0);
        pv_msg_set_u(&m, PV_K_OFFSET, mem.offset);
        pv_msg_set_str(&m, PV_K_NAME, L->vl->peer_vm);
        pv_msg_add_fd(&m, mem.fd);
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
        pvd_mem_free(L->vl->pvd, L->vl, &s->lane_mem);
        s->lane = NULL;
}

/* ---- messages ------------------------------------------------------------------------- */

int vs_lane_conn_op(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m)
{
        if (c != L->server || !L->shm)
                return -EPROTO;
        switch (pv_msg_op(m)) {
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
