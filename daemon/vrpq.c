/* VRPQ: remote procedure queues (daemon side).
 * The device nodes exist and accept connections; no operation is served
 * yet, so every request is an unknown operation (connection dropped). */
#include <errno.h>
#include <stdlib.h>

#include "pvd.h"

static size_t vrpq_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->vrpq_reqs ? 4096 + (size_t)cfg->vrpq_reqs * 64 + cfg->vrpq_pmem : 0;
}

static int vrpq_attach(struct pvd_vlink *vl)
{
        vl->drv[PV_DRV_VRPQ] = calloc(1, 1);
        return vl->drv[PV_DRV_VRPQ] ? 0 : -ENOMEM;
}

static void vrpq_detach(struct pvd_vlink *vl)
{
        free(vl->drv[PV_DRV_VRPQ]);
        vl->drv[PV_DRV_VRPQ] = NULL;
}

static void vrpq_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        pvd_vlink_fail(vl, "vrpq: unexpected message type %u", type);
}

static int vrpq_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        return -EPROTO;
}

const struct pvd_driver pvd_drv_vrpq = {
        .name = "vrpq",
        .id = PV_DRV_VRPQ,
        .region = PV_REGION_VRPQ,
        .region_size = vrpq_region_size,
        .attach = vrpq_attach,
        .detach = vrpq_detach,
        .msg = vrpq_msg,
        .conn_msg = vrpq_conn_msg,
};
