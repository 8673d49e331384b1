/* VBPIPE: byte pipes between VMs (daemon side).
 * The device nodes exist and accept connections; no operation is served
 * yet, so every request is an unknown operation (connection dropped). */
#include <errno.h>
#include <stdlib.h>

#include "pvd.h"

static size_t vbpipe_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->kind == PV_VLINK_VBPIPE ? 4096 + 2 * cfg->vbpipe_size : 0;
}

static int vbpipe_attach(struct pvd_vlink *vl)
{
        vl->drv[PV_DRV_VBPIPE] = calloc(1, 1);
        return vl->drv[PV_DRV_VBPIPE] ? 0 : -ENOMEM;
}

static void vbpipe_detach(struct pvd_vlink *vl)
{
        free(vl->drv[PV_DRV_VBPIPE]);
        vl->drv[PV_DRV_VBPIPE] = NULL;
}

static void vbpipe_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        pvd_vlink_fail(vl, "vbpipe: unexpected message type %u", type);
}

static int vbpipe_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        return -EPROTO;
}

const struct pvd_driver pvd_drv_vbpipe = {
        .name = "vbpipe",
        .id = PV_DRV_VBPIPE,
        .region = PV_REGION_VBPIPE,
        .region_size = vbpipe_region_size,
        .attach = vbpipe_attach,
        .detach = vbpipe_detach,
        .msg = vbpipe_msg,
        .conn_msg = vbpipe_conn_msg,
};
