/* hv/ivshmem.c's program xIRQs, grantable memory and grants: the bits of
 * the doorbell vector that multiplex program xIRQs, page runs of each
 * side's heap, and their announcements on the control ring (checked
 * against the announcing side's heap and bit range). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ivshmem-int.h"
#include "pv-atomic.h"
#include "watch.h"

#define IVS_MAX_GRANTS   65536

void ivs_xirqs_in(struct ivs_link *l)
{
        for (unsigned w = 0; w < PV_IVSHM_XIRQS / 64; w++) {
                uint64_t bits = atomic_exchange_explicit(PV_A64(&l->own->xirq_pending[w]), 0, memory_order_acq_rel);
                while (bits) {
                        unsigned b = w * 64 + (unsigned)__builtin_ctzll(bits);
                        bits &= bits - 1;
                        struct ivs_xirq *x = &l->xirq[b];
                        uint64_t one = 1;
                        /* A bit we do not know, or one of ours to send: ignored. */
                        if (x->fd >= 0 && !x->tx && write(x->fd, &one, sizeof(one)) < 0)
                                (void)0;
                }
        }
}

/* ---- program xIRQs --------------------------------------------------------------------------- */

/* A tx xIRQ's program wrote its eventfd: set its bit on the peer's side. */
static void relay_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct ivs_xirq *x = arg;
        struct ivs_link *l = x->l;
        uint64_t v;
        if (read(pvd_watch_fd(w), &v, sizeof(v)) < 0 || l->vl->state != PV_VLINK_ON)
                return;
        uint64_t bit = 1ull << (x->bit % 64);
        uint64_t was = atomic_fetch_or_explicit(PV_A64(&l->peer_area->xirq_pending[x->bit / 64]), bit,
                                                memory_order_acq_rel);
        if (!(was & bit))
                ivs_ring(l, PV_IVSHM_VEC_XIRQ);
}

/* This side's end of xIRQ bit b, used as dir. */
static int xirq_make(struct ivs_link *l, unsigned b, unsigned dir, bool mine)
{
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0)
                return -errno;
        struct ivs_xirq *x = &l->xirq[b];
        *x = (struct ivs_xirq){ .l = l, .bit = b, .fd = fd, .mine = mine, .tx = dir == HV_XIRQ_TX };
        if (x->tx) {
                /* The watch reads a duplicate: the programs keep the fd. */
                int wfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
                x->relay = wfd >= 0 ? pvd_watch_new(l->vl->pvd->loop, wfd, UV_READABLE, relay_cb, x) : NULL;
                if (!x->relay) {
                        close(fd);
                        *x = (struct ivs_xirq){ .l = l, .bit = b, .fd = -1 };
                        return -ENOMEM;
                }
        }
        return 0;
}

static void xirq_drop(struct ivs_link *l, unsigned b)
{
        struct ivs_xirq *x = &l->xirq[b];
        pvd_watch_close(x->relay);
        if (x->fd >= 0)
                close(x->fd);
        *x = (struct ivs_xirq){ .l = l, .bit = b, .fd = -1 };
}

int ivs_xirq_alloc(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd)
{
        struct ivs_link *l = ivs(vl);
        unsigned base = PV_IVSHM_XIRQ_BASE(l->side), b = base;
        while (b < base + PV_IVSHM_XIRQS / 2 && l->xirq[b].fd >= 0)
                b++;
        if (b == base + PV_IVSHM_XIRQS / 2)
                return -ENOSPC;
        int rc = xirq_make(l, b, dir, true);
        if (rc < 0)
                return rc;
        struct pv_ivshm_ann a = { .id = b + 1, .bit = b, .dir = dir };
        rc = pvd_vlink_send_hv(vl, PV_IVSHM_ANN_XIRQ_NEW, &a, sizeof(a));
        if (rc < 0) {
                xirq_drop(l, b);
                return rc;
        }
        *id = b + 1;
        *fd = l->xirq[b].fd;
        return 0;
}

int ivs_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd)
{
        struct ivs_link *l = ivs(vl);
        unsigned base = PV_IVSHM_XIRQ_BASE(l->other);
        if (id < base + 1 || id > base + PV_IVSHM_XIRQS / 2 || l->xirq[id - 1].fd < 0 || l->xirq[id - 1].mine)
                return -ENOENT;
        *fd = l->xirq[id - 1].fd;
        return 0;
}

void ivs_xirq_free(struct pvd_vlink *vl, uint32_t id)
{
        struct ivs_link *l = ivs(vl);
        if (!l)
                return;
        unsigned base = PV_IVSHM_XIRQ_BASE(l->side);
        if (id < base + 1 || id > base + PV_IVSHM_XIRQS / 2 || l->xirq[id - 1].fd < 0)
                return;
        xirq_drop(l, id - 1);
        struct pv_ivshm_ann a = { .id = id };
        pvd_vlink_send_hv(vl, PV_IVSHM_ANN_XIRQ_FREE, &a, sizeof(a));
}

/* ---- memory ----------------------------------------------------------------------------------- */

int ivs_mem_alloc(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out)
{
        struct ivs_link *l = ivs(vl);
        if (!l->mem)
                return -ENOTCONN;
        uint64_t off;
        int rc = ivs_heap_alloc(&l->heap, size, &off);
        if (rc < 0)
                return rc;
        uint64_t len = ivs_heap_round(size);
        int fd = fcntl(ivs_mem_fd(l), F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
                ivs_heap_free(&l->heap, off, len);
                return -errno;
        }
        memset(l->mem + off, 0, len);
        *out = (struct hv_mem){ .fd = fd, .offset = off, .size = len, .id = (uint32_t)(off / PV_IVSHM_PAGE) };
        return 0;
}

void ivs_mem_free(struct pvd_vlink *vl, struct hv_mem *m)
{
        struct ivs_link *l = vl ? ivs(vl) : NULL;
        if (l && l->mem)
                ivs_heap_free(&l->heap, m->offset, m->size);
        close(m->fd);
        m->fd = -1;
}

static bool in_span(const struct pv_ivshm_span *s, uint64_t off, uint64_t len)
{
        return len && off >= s->offset && off - s->offset <= s->size && len <= s->size - (off - s->offset);
}

int ivs_grant(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref)
{
        struct ivs_link *l = ivs(vl);
        /* Only our own heap of this vlink's memory can be granted (another
         * vlink's has the same layout: its fd tells them apart). */
        struct stat st;
        if (m->flags & HV_MEM_FOREIGN || !in_span(&l->lay.heap[l->side], m->offset + off, len) ||
            (m->offset + off) % PV_IVSHM_PAGE || len % PV_IVSHM_PAGE || fstat(m->fd, &st) < 0 ||
            st.st_dev != l->mem_dev || st.st_ino != l->mem_ino)
                return -EOPNOTSUPP;
        if (l->own_grant.n >= IVS_MAX_GRANTS)
                return -ENOSPC;
        uint32_t id;
        do
                id = ++l->next_grant;
        while (!id || id_table_find(&l->own_grant, id));
        struct pv_ivshm_ann a = { .id = id, .offset = m->offset + off, .size = len };
        int rc = pvd_vlink_send_hv(vl, PV_IVSHM_ANN_GRANT_NEW, &a, sizeof(a));
        if (rc == 0)
                rc = id_table_add(&l->own_grant, &(struct id_ent){ .id = id, .fd = -1, .offset = a.offset,
                                                                   .size = len });
        if (rc < 0)
                return rc;
        l->grants_tx++;
        *gref = id;
        return 0;
}

int ivs_grant_get(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out)
{
        struct ivs_link *l = ivs(vl);
        struct id_ent *e = id_table_find(&l->peer_grant, gref);
        if (!e || !l->mem)
                return -ENOENT;
        *out = (struct hv_mem){ .fd = ivs_mem_fd(l), .offset = e->offset, .size = e->size, .id = gref };
        return 0;
}

void ivs_grant_revoke(struct pvd_vlink *vl, uint32_t gref)
{
        struct ivs_link *l = ivs(vl);
        if (!l || !id_table_del(&l->own_grant, gref))
                return;
        struct pv_ivshm_ann a = { .id = gref };
        pvd_vlink_send_hv(vl, PV_IVSHM_ANN_GRANT_REVOKE, &a, sizeof(a));
}

/* An announcement of the peer's backend, in ring order. */
int ivs_ring_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct ivs_link *l = ivs(vl);
        struct pv_ivshm_ann a;
        if (len != sizeof(a))
                return -EPROTO;
        memcpy(&a, msg, sizeof(a));
        unsigned base = PV_IVSHM_XIRQ_BASE(l->other);
        switch (type) {
        case PV_IVSHM_ANN_GRANT_NEW:
                if (!in_span(&l->lay.heap[l->other], a.offset, a.size) || a.offset % PV_IVSHM_PAGE ||
                    a.size % PV_IVSHM_PAGE || l->peer_grant.n >= IVS_MAX_GRANTS) {
                        ivs_log_once(l, "the peer granted %llu bytes at %llu, outside its heap",
                                     (unsigned long long)a.size, (unsigned long long)a.offset);
                        return -EPROTO;
                }
                l->grants_rx++;
                return id_table_add(&l->peer_grant, &(struct id_ent){ .id = a.id, .fd = -1, .offset = a.offset,
                                                                      .size = a.size }) < 0 ? -EPROTO : 0;
        case PV_IVSHM_ANN_GRANT_REVOKE:
                id_table_del(&l->peer_grant, a.id);
                return 0;
        case PV_IVSHM_ANN_XIRQ_NEW:
                if (a.bit < base || a.bit >= base + PV_IVSHM_XIRQS / 2 || a.id != a.bit + 1 ||
                    (a.dir != HV_XIRQ_TX && a.dir != HV_XIRQ_RX) || l->xirq[a.bit].fd >= 0)
                        return -EPROTO;
                /* Our end is used the other way. */
                return xirq_make(l, a.bit, a.dir == HV_XIRQ_TX ? HV_XIRQ_RX : HV_XIRQ_TX, false) < 0 ? -EPROTO : 0;
        case PV_IVSHM_ANN_XIRQ_FREE:
                if (a.id >= base + 1 && a.id <= base + PV_IVSHM_XIRQS / 2 && !l->xirq[a.id - 1].mine)
                        xirq_drop(l, a.id - 1);
                return 0;
        }
        return -EPROTO;
}


void ivs_xirqs_clear(struct ivs_link *l)
{
        for (unsigned b = 0; b < PV_IVSHM_XIRQS; b++)
                xirq_drop(l, b);
        for (unsigned w = 0; l->own && w < PV_IVSHM_XIRQS / 64; w++)
                atomic_exchange_explicit(PV_A64(&l->own->xirq_pending[w]), 0, memory_order_acq_rel);
}
