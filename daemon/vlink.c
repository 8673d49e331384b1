/* Vlinks: state machine, control rings between the two pvds, and the
 * hypervisor services drivers use. The backend (hv/) brings the peer and
 * the memory; this file moves driver messages and tells drivers when the
 * vlink comes and goes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/hv.h"
#include "pvd.h"

/* A control message waiting for room in the ring. */
struct pvd_pending {
        struct pvd_pending *next;
        uint32_t tag;
        uint32_t len;
        uint8_t data[];
};

/* If the peer does not drain this much for us, it is stuck or hostile. */
#define PVD_PENDING_MAX (8u << 20)

const char *pv_vlink_state_name(enum pv_vlink_state st)
{
        switch (st) {
        case PV_VLINK_OFF:
                return "OFF";
        case PV_VLINK_RESET:
                return "RESET";
        case PV_VLINK_ON:
                return "ON";
        }
        return "?";
}

static size_t page_round(size_t n)
{
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        return (n + pg - 1) / pg * pg;
}

void pv_vlink_cfg_region_sizes(const struct pv_vlink_cfg *cfg, size_t sizes[PV_REGION_COUNT])
{
        memset(sizes, 0, sizeof(size_t) * PV_REGION_COUNT);
        sizes[PV_REGION_CTL] = page_round(PV_CTL_REGION_SIZE);
        for (int d = 0; d < PV_DRV_COUNT; d++) {
                const struct pvd_driver *drv = pvd_drivers[d];
                if (drv && drv->region_size)
                        sizes[drv->region] = page_round(drv->region_size(cfg));
        }
}

void pvd_vlink_region_sizes(const struct pvd_vlink *vl, size_t sizes[PV_REGION_COUNT])
{
        pv_vlink_cfg_region_sizes(vl->cfg, sizes);
}

void pvd_vlink_regions_created(struct pvd_vlink *vl)
{
        struct pv_vlink_ctl *ctl = vl->region[PV_REGION_CTL].base;
        ctl->magic = PV_VLINK_MAGIC;
        ctl->version = PV_VLINK_VERSION;
        ctl->ring_size = PV_CTL_RING_SIZE;
        for (int d = 0; d < PV_DRV_COUNT; d++) {
                const struct pvd_driver *drv = pvd_drivers[d];
                if (drv && drv->region_init && vl->region[drv->region].base)
                        drv->region_init(vl);
        }
}

void pvd_vlink_client_join(struct pvd_vlink *vl)
{
        /* Our halves of the control rings: the c2s producer's, the s2c
         * consumer's. The server writes the rings only once it sees us ON
         * (a release store after these). */
        struct pv_vlink_ctl *ctl = vl->region[PV_REGION_CTL].base;
        pv_ring_hdr_rejoin(&ctl->c2s, &ctl->s2c);
        for (int d = 0; d < PV_DRV_COUNT; d++) {
                const struct pvd_driver *drv = pvd_drivers[d];
                if (drv && drv->client_join && vl->drv[d] && vl->region[drv->region].base)
                        drv->client_join(vl);
        }
}

static void pending_clear(struct pvd_vlink *vl)
{
        while (vl->pending_head) {
                struct pvd_pending *p = vl->pending_head;
                vl->pending_head = p->next;
                free(p);
        }
        vl->pending_tail = NULL;
        vl->pending_bytes = 0;
}

static void rings_attach(struct pvd_vlink *vl)
{
        uint8_t *base = vl->region[PV_REGION_CTL].base;
        struct pv_vlink_ctl *ctl = (struct pv_vlink_ctl *)base;
        struct pv_ring *s2c = vl->side == PV_SERVER ? &vl->tx : &vl->rx;
        struct pv_ring *c2s = vl->side == PV_SERVER ? &vl->rx : &vl->tx;
        /* Fresh memory is zero: neither side resets a header the other may
         * already be using. */
        pv_ring_init(s2c, &ctl->s2c, base + PV_CTL_S2C_DATA, PV_CTL_RING_SIZE, false);
        pv_ring_init(c2s, &ctl->c2s, base + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false);
        /* Both pvds on this kernel: a side that sleeps rarely calls
         * membarrier(2) and the other's notify checks skip their fence
         * (pv-atomic.h). pvd mostly sleeps after every short burst, and
         * its rings then keep their fences. */
        bool one = pvd_hv_caps(vl->pvd) & HV_CAP_ONE_KERNEL;
        pv_ring_set_one_kernel(s2c, one);
        pv_ring_set_one_kernel(c2s, one);
}

void pvd_vlink_set_state(struct pvd_vlink *vl, enum pv_vlink_state st)
{
        enum pv_vlink_state old = vl->state;
        if (old == st)
                return;
        vl->state = st;
        const char *peer = vl->peer_vm;
        const char *what = vl->cfg->compatible;

        if (old == PV_VLINK_ON) {
                vl->down_count++;
                for (int d = 0; d < PV_DRV_COUNT; d++) {
                        const struct pvd_driver *drv = pvd_drivers[d];
                        if (drv && vl->drv[d] && drv->down)
                                drv->down(vl);
                }
                pending_clear(vl);
                free(vl->rx_stalled);
                vl->rx_stalled = NULL;
        }
        switch (st) {
        case PV_VLINK_OFF:
                if (vl->pvd->stopping)
                        pv_info("vlink %s<->%s (%s): link OFF", vl->pvd->vm_name, peer, what);
                else
                        pv_notice("vlink %s<->%s (%s): peer gone, link OFF; waiting for %s to return",
                                  vl->pvd->vm_name, peer, what, peer);
                break;
        case PV_VLINK_RESET:
                pv_debug("vlink %s<->%s (%s): RESET, setting up memory", vl->pvd->vm_name, peer, what);
                break;
        case PV_VLINK_ON:
                rings_attach(vl);
                vl->gen++;
                vl->up_count++;
                vl->up_since_ms = uv_now(vl->pvd->loop);
                pv_notice("vlink %s<->%s (%s): link ON", vl->pvd->vm_name, peer, what);
                for (int d = 0; d < PV_DRV_COUNT; d++) {
                        const struct pvd_driver *drv = pvd_drivers[d];
                        if (drv && vl->drv[d] && drv->up)
                                drv->up(vl);
                }
                /* The peer may have written before we got here. */
                if (vl->state == PV_VLINK_ON)
                        pvd_vlink_xirq(vl);
                break;
        }
}

void pvd_vlink_fail(struct pvd_vlink *vl, const char *fmt, ...)
{
        char why[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        pv_err("vlink %s<->%s (%s): %s; resetting the link", vl->pvd->vm_name, vl->peer_vm,
               vl->cfg->compatible, why);
        if (vl->state != PV_VLINK_OFF)
                vl->pvd->hv->reset(vl);
}

int pvd_vlink_notify(struct pvd_vlink *vl)
{
        if (vl->state != PV_VLINK_ON)
                return -ENOTCONN;
        return vl->pvd->hv->notify(vl);
}

static void tx_notify(struct pvd_vlink *vl)
{
        if (pv_ring_prod_notify(&vl->tx))
                vl->pvd->hv->notify(vl);
}

/* Move queued messages into the ring while there is room. */
static void pending_flush(struct pvd_vlink *vl)
{
        if (!vl->pending_head)
                return;
        while (vl->pending_head) {
                struct pvd_pending *p = vl->pending_head;
                int rc = pv_ring_send(&vl->tx, p->tag, p->data, p->len);
                if (rc == -EAGAIN) {
                        /* Notify before sleeping even if nothing moved: the
                         * failed send may have published a pad record
                         * (pv-ring.h, "Sleeping"). */
                        tx_notify(vl);
                        if (pv_ring_prod_prepare_sleep(&vl->tx, pv_ring_room_for(&vl->tx, p->len)))
                                return;
                        continue;
                }
                if (rc < 0) {
                        pvd_vlink_fail(vl, "control ring to the peer is corrupt (%s)", strerror(-rc));
                        return;
                }
                vl->pending_head = p->next;
                if (!vl->pending_head)
                        vl->pending_tail = NULL;
                vl->pending_bytes -= p->len;
                free(p);
        }
        tx_notify(vl);
}

static int send_tag(struct pvd_vlink *vl, uint32_t tag, const void *msg, uint32_t len, bool quiet)
{
        if (vl->state != PV_VLINK_ON)
                return -ENOTCONN;
        if (len > PV_CTL_MSG_MAX)
                return -EMSGSIZE;
        if (!vl->pending_head) {
                int rc = pv_ring_send(&vl->tx, tag, msg, len);
                if (rc == 0) {
                        if (!quiet)
                                tx_notify(vl);
                        return 0;
                }
                if (rc != -EAGAIN) {
                        pvd_vlink_fail(vl, "control ring to the peer is corrupt (%s)", strerror(-rc));
                        return -ENOTCONN;
                }
        }
        if (vl->pending_bytes + len > PVD_PENDING_MAX) {
                pvd_vlink_fail(vl, "the peer has not read its control ring for %zu bytes", vl->pending_bytes);
                return -ENOBUFS;
        }
        struct pvd_pending *p = malloc(sizeof(*p) + len);
        if (!p)
                return -ENOMEM;
        p->next = NULL;
        p->tag = tag;
        p->len = len;
        memcpy(p->data, msg, len);
        if (vl->pending_tail)
                vl->pending_tail->next = p;
        else
                vl->pending_head = p;
        vl->pending_tail = p;
        vl->pending_bytes += len;
        pending_flush(vl);
        return 0;
}

int pvd_vlink_send(struct pvd_vlink *vl, enum pv_drv_id drv, uint32_t type, const void *msg, uint32_t len)
{
        if (drv == PV_DRV_CORE || drv >= PV_DRV_COUNT)
                return -EINVAL;
        return send_tag(vl, PV_TAG(drv, type), msg, len, false);
}

int pvd_vlink_send_quiet(struct pvd_vlink *vl, enum pv_drv_id drv, uint32_t type, const void *msg, uint32_t len)
{
        if (drv == PV_DRV_CORE || drv >= PV_DRV_COUNT)
                return -EINVAL;
        return send_tag(vl, PV_TAG(drv, type), msg, len, true);
}

void pvd_vlink_flush_notify(struct pvd_vlink *vl)
{
        if (vl->state == PV_VLINK_ON)
                tx_notify(vl);
}

int pvd_vlink_send_hv(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        return send_tag(vl, PV_TAG(PV_DRV_CORE, type), msg, len, false);
}

/* One message from the peer: the backend's (PV_DRV_CORE) or a driver's.
 * 0, -EAGAIN (the backend put it off), or < 0 when the vlink was reset. */
static int deliver(struct pvd_vlink *vl, uint32_t tag, const void *buf, uint32_t len)
{
        unsigned d = PV_TAG_DRV(tag);
        if (d == PV_DRV_CORE) {
                int rc = vl->pvd->hv->ring_msg ? vl->pvd->hv->ring_msg(vl, PV_TAG_TYPE(tag), buf, len) : -EPROTO;
                if (rc == -EAGAIN)
                        return rc;
                if (rc < 0) {
                        pvd_vlink_fail(vl, "the peer's hypervisor message %u is malformed", PV_TAG_TYPE(tag));
                        return -EPROTO;
                }
                return vl->state == PV_VLINK_ON ? 0 : -ENOTCONN;
        }
        const struct pvd_driver *drv = d < PV_DRV_COUNT ? pvd_drivers[d] : NULL;
        if (!drv || !vl->drv[d] || !drv->msg) {
                pvd_vlink_fail(vl, "message for unknown driver %u", d);
                return -EPROTO;
        }
        drv->msg(vl, PV_TAG_TYPE(tag), buf, len);
        return vl->state == PV_VLINK_ON ? 0 : -ENOTCONN;
}

/* Keep a message the backend put off; the ring is not read until
 * pvd_vlink_rx_resume() delivers it. */
static void stall(struct pvd_vlink *vl, uint32_t tag, const void *buf, uint32_t len)
{
        struct pvd_pending *p = malloc(sizeof(*p) + len);
        if (!p) {
                pvd_vlink_fail(vl, "out of memory");
                return;
        }
        p->next = NULL;
        p->tag = tag;
        p->len = len;
        memcpy(p->data, buf, len);
        vl->rx_stalled = p;
}

void pvd_vlink_rx_resume(struct pvd_vlink *vl)
{
        struct pvd_pending *p = vl->rx_stalled;
        if (!p || vl->state != PV_VLINK_ON)
                return;
        vl->rx_stalled = NULL;
        int rc = deliver(vl, p->tag, p->data, p->len);
        if (rc == -EAGAIN) {
                vl->rx_stalled = p;
                return;
        }
        free(p);
        if (rc == 0)
                pvd_vlink_xirq(vl);
}

/* Deliver every message waiting from the peer, let drivers poll their own
 * rings, then announce that we sleep (re-checking, so no xIRQ is lost). */
void pvd_vlink_xirq(struct pvd_vlink *vl)
{
        static uint8_t buf[PV_CTL_MSG_MAX];
        vl->ctl_xirq_rx++;
        while (vl->state == PV_VLINK_ON) {
                if (vl->rx_stalled)
                        return; /* the backend resumes us */
                for (;;) {
                        uint32_t tag, len;
                        int rc = pv_ring_recv(&vl->rx, &tag, buf, sizeof(buf), &len);
                        if (rc == -EAGAIN)
                                break;
                        if (rc < 0) {
                                pvd_vlink_fail(vl, "control ring from the peer is corrupt");
                                return;
                        }
                        rc = deliver(vl, tag, buf, len);
                        if (rc == -EAGAIN) {
                                stall(vl, tag, buf, len);
                                if (pv_ring_cons_notify(&vl->rx))
                                        vl->pvd->hv->notify(vl);
                                return;
                        }
                        if (rc < 0)
                                return;
                }
                if (pv_ring_cons_notify(&vl->rx))
                        vl->pvd->hv->notify(vl);
                pending_flush(vl);
                for (int d = 0; d < PV_DRV_COUNT && vl->state == PV_VLINK_ON; d++) {
                        const struct pvd_driver *drv = pvd_drivers[d];
                        if (drv && vl->drv[d] && drv->kick)
                                drv->kick(vl);
                }
                if (vl->state != PV_VLINK_ON || pv_ring_cons_prepare_sleep(&vl->rx))
                        return;
        }
}

int pvd_xirq_alloc(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd)
{
        if (dir != HV_XIRQ_TX && dir != HV_XIRQ_RX)
                return -EINVAL;
        return vl->state == PV_VLINK_ON ? vl->pvd->hv->xirq_alloc(vl, dir, id, fd) : -ENOTCONN;
}

int pvd_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd)
{
        return vl->state == PV_VLINK_ON ? vl->pvd->hv->xirq_get(vl, id, fd) : -ENOTCONN;
}

void pvd_xirq_free(struct pvd_vlink *vl, uint32_t id)
{
        if (vl->hv)
                vl->pvd->hv->xirq_free(vl, id);
}

int pvd_mem_alloc(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out)
{
        if (!size || size > (UINT64_C(1) << 46))
                return -EINVAL;
        return vl->pvd->hv->mem_alloc(vl, size, name, out);
}

int pvd_mem_import(struct pvd_vlink *vl, int fd, uint64_t size, struct hv_mem *out)
{
        if (!(pvd_hv_caps(vl->pvd) & HV_CAP_FOREIGN_MEM) || !vl->pvd->hv->mem_import)
                return -EOPNOTSUPP;
        return vl->pvd->hv->mem_import(vl, fd, size, out);
}

void pvd_mem_free(struct pvd *pvd, struct pvd_vlink *vl, struct hv_mem *m)
{
        if (m->fd >= 0)
                pvd->hv->mem_free(vl, m);
        m->fd = -1;
}

int pvd_grant(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref)
{
        if (vl->state != PV_VLINK_ON)
                return -ENOTCONN;
        if (!len || off > m->size || len > m->size - off)
                return -EINVAL;
        return vl->pvd->hv->grant(vl, m, off, len, gref);
}

int pvd_grant_get(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out)
{
        return vl->state == PV_VLINK_ON ? vl->pvd->hv->grant_get(vl, gref, out) : -ENOTCONN;
}

void pvd_grant_revoke(struct pvd_vlink *vl, uint32_t gref)
{
        if (vl->hv)
                vl->pvd->hv->grant_revoke(vl, gref);
}

unsigned pvd_hv_caps(const struct pvd *pvd)
{
        return pvd->hv_caps;
}
