/* VUMEM: buffers shared between VMs (daemon side).
 * The device nodes exist and accept connections; no operation is served
 * yet, so every request is an unknown operation (connection dropped). */
#include <errno.h>
#include <stdlib.h>

#include "pvd.h"

static size_t vumem_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->vumem_pdev;
}

static int vumem_attach(struct pvd_vlink *vl)
{
        vl->drv[PV_DRV_VUMEM] = calloc(1, 1);
        return vl->drv[PV_DRV_VUMEM] ? 0 : -ENOMEM;
}

static void vumem_detach(struct pvd_vlink *vl)
{
        free(vl->drv[PV_DRV_VUMEM]);
        vl->drv[PV_DRV_VUMEM] = NULL;
}

static void vumem_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        pvd_vlink_fail(vl, "vumem: unexpected message type %u", type);
}

static int vumem_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        return -EPROTO;
}

const struct pvd_driver pvd_drv_vumem = {
        .name = "vumem",
        .id = PV_DRV_VUMEM,
        .region = PV_REGION_VUMEM,
        .region_size = vumem_region_size,
        .attach = vumem_attach,
        .detach = vumem_detach,
        .msg = vumem_msg,
        .conn_msg = vumem_conn_msg,
};
