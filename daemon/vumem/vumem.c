/* VUMEM: buffers a server program of one VM allocates and programs of
 * client VMs map without copies (seed 3.2). This file holds the driver's
 * entry points, the pdev region's header and cells, and dispatches to the
 * server end (vumem-be.c) and the client end (vumem-fe.c).
 *
 * The path of a request: client program -> its pvd (vumem-clt-X) ->
 * control ring -> server VM's pvd (vumem-srv-X) -> server program, and the
 * answer back the same way; the memory itself is granted (pvd_grant) to
 * the client VM and mapped by the client program from the fd its pvd
 * passes it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vumem-int.h"

size_t vumem_page(void)
{
        static size_t pg;
        if (!pg)
                pg = (size_t)sysconf(_SC_PAGESIZE);
        return pg;
}

static size_t vumem_region_size(const struct pv_vlink_cfg *cfg)
{
        return cfg->vumem_pdev;
}

/* Server end, fresh memory not yet seen by the client end. */
static void vumem_region_init(struct pvd_vlink *vl)
{
        struct pvd_region *r = &vl->region[PV_REGION_VUMEM];
        struct vumem_pdev_hdr *h = r->base;
        memset(h, 0, sizeof(*h));
        h->magic = VUMEM_PDEV_MAGIC;
        h->version = VUMEM_PDEV_VERSION;
        h->size = (uint32_t)r->size;
        h->cell_size = VUMEM_CELL;
        h->cells_off = VUMEM_PDEV_HDR;
        h->ncells = vumem_pdev_ncells(r->size);
}

/* ---- pdev cells (server end) ---------------------------------------------- */

static bool cell_used(const struct vs_link *L, uint32_t i)
{
        return L->bitmap[i / 8] & (1u << (i % 8));
}

static void cell_set(struct vs_link *L, uint32_t i, bool on)
{
        if (on)
                L->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
        else
                L->bitmap[i / 8] &= (uint8_t)~(1u << (i % 8));
}

/* The header's figures (display only): cells reserved for lane answers
 * are not in use. */
void vs_pdev_hdr_update(struct vs_link *L)
{
        struct vumem_pdev_hdr *h = L->vl->region[PV_REGION_VUMEM].base;
        if (!h)
                return;
        uint32_t resv = vs_lane_resv_cells(L);
        ring_store_relaxed(&h->cells_used, L->used_cells > resv ? L->used_cells - resv : 0);
        ring_store_relaxed(&h->records, L->nexports);
}

/* n contiguous free cells, first fit from a rotating hint. */
int vs_cells_alloc(struct vs_link *L, uint32_t n, uint32_t *first)
{
        if (!L->bitmap || L->used_cells + n > L->ncells)
                return -ENOSPC;
        for (uint32_t pass = 0; pass < 2; pass++) {
                uint32_t start = pass ? 0 : L->hint;
                uint32_t end = pass ? L->hint + n : L->ncells;
                if (end > L->ncells)
                        end = L->ncells;
                uint32_t run = 0;
                for (uint32_t i = start; i < end; i++) {
                        run = cell_used(L, i) ? 0 : run + 1;
                        if (run == n) {
                                uint32_t f = i + 1 - n;
                                for (uint32_t k = 0; k < n; k++)
                                        cell_set(L, f + k, true);
                                L->used_cells += n;
                                L->hint = i + 1 < L->ncells ? i + 1 : 0;
                                *first = f;
                                vs_pdev_hdr_update(L);
                                return 0;
                        }
                }
        }
        return -ENOSPC;
}

void vs_cells_free(struct vs_link *L, uint32_t first, uint32_t n)
{
        if (!L->bitmap || first >= L->ncells || n > L->ncells - first)
                return;
        for (uint32_t k = 0; k < n; k++) {
                if (cell_used(L, first + k)) {
                        cell_set(L, first + k, false);
                        L->used_cells--;
                }
        }
        void *p = vs_cell_ptr(L, first);
        if (p)
                memset(p, 0, (size_t)n * VUMEM_CELL);
        vs_pdev_hdr_update(L);
}

void *vs_cell_ptr(struct vs_link *L, uint32_t cell)
{
        struct pvd_region *r = &L->vl->region[PV_REGION_VUMEM];
        if (!r->base || cell >= L->ncells)
                return NULL;
        return (uint8_t *)r->base + VUMEM_PDEV_HDR + (size_t)cell * VUMEM_CELL;
}

/* ---- driver entry points ----------------------------------------------------- */

static void timer_free(uv_handle_t *h)
{
        free(h);
}

static int vumem_attach(struct pvd_vlink *vl)
{
        struct vumem_link *V = calloc(1, sizeof(*V));
        if (!V)
                return -ENOMEM;
        V->side = vl->side;
        char name[PV_NAME_MAX];
        struct pvd_node *node = NULL;
        if (pv_config_dev_name(vl->cfg, vl->side, "vumem", name, sizeof(name)) == 0)
                node = pvd_node_find(vl->pvd, name);
        if (vl->side == PV_SERVER) {
                V->s.vl = vl;
                V->s.node = node;
                V->s.next_handle = 1;
                V->s.next_req = 1;
                V->s.wait_timer = malloc(sizeof(uv_timer_t));
                if (!V->s.wait_timer) {
                        free(V);
                        return -ENOMEM;
                }
                V->s.free_timer = malloc(sizeof(uv_timer_t));
                if (!V->s.free_timer) {
                        free(V->s.wait_timer);
                        free(V);
                        return -ENOMEM;
                }
                uv_timer_init(vl->pvd->loop, V->s.wait_timer);
                V->s.wait_timer->data = &V->s;
                uv_timer_init(vl->pvd->loop, V->s.free_timer);
                V->s.free_timer->data = &V->s;
        } else {
                V->c.vl = vl;
                V->c.node = node;
                V->c.next_req = 1;
                V->c.free_timer = malloc(sizeof(uv_timer_t));
                if (!V->c.free_timer) {
                        free(V);
                        return -ENOMEM;
                }
                uv_timer_init(vl->pvd->loop, V->c.free_timer);
                V->c.free_timer->data = &V->c;
        }
        vl->drv[PV_DRV_VUMEM] = V;
        return 0;
}

static void vumem_detach(struct pvd_vlink *vl)
{
        struct vumem_link *V = vumem_of(vl);
        if (!V)
                return;
        if (V->side == PV_SERVER) {
                vs_detach(&V->s);
                uv_timer_stop(V->s.wait_timer);
                uv_close((uv_handle_t *)V->s.wait_timer, timer_free);
                uv_timer_stop(V->s.free_timer);
                uv_close((uv_handle_t *)V->s.free_timer, timer_free);
                free(V->s.bitmap);
        } else {
                vc_down(&V->c);
                uv_timer_stop(V->c.free_timer);
                uv_close((uv_handle_t *)V->c.free_timer, timer_free);
        }
        free(V);
        vl->drv[PV_DRV_VUMEM] = NULL;
}

static void vumem_up(struct pvd_vlink *vl)
{
        struct vumem_link *V = vumem_of(vl);
        if (V->side == PV_SERVER) {
                struct vs_link *L = &V->s;
                L->ncells = vumem_pdev_ncells(vl->region[PV_REGION_VUMEM].size);
                free(L->bitmap);
                L->bitmap = calloc((L->ncells + 7) / 8 + 1, 1);
                L->used_cells = 0;
                L->hint = 0;
                if (!L->bitmap)
                        pv_err("vlink %s: vumem: out of memory for the pdev map; allocations will fail",
                               vl->cfg->link_name);
                vs_up(L);
        } else {
                vc_up(&V->c);
        }
}

static void vumem_down(struct pvd_vlink *vl)
{
        struct vumem_link *V = vumem_of(vl);
        if (V->side == PV_SERVER)
                vs_down(&V->s);
        else
                vc_down(&V->c);
}

static void vumem_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct vumem_link *V = vumem_of(vl);
        if (V->side == PV_SERVER)
                vs_msg(&V->s, type, msg, len);
        else
                vc_msg(&V->c, type, msg, len);
}

static int vumem_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        struct vumem_link *V = vumem_of(c->node->vl);
        if (V->side == PV_SERVER)
                return vs_conn_msg(&V->s, c, m);
        return vc_conn_msg(&V->c, c, m);
}

static void vumem_conn_close(struct pvd_conn *c)
{
        struct vumem_link *V = vumem_of(c->node->vl);
        if (!V)
                return;
        if (V->side == PV_SERVER)
                vs_conn_close(&V->s, c);
        else
                vc_conn_close(&V->c, c);
}

static void vumem_stat(struct pvd_vlink *vl, msgpack_packer *pk)
{
        struct vumem_link *V = vumem_of(vl);
        if (V->side == PV_SERVER)
                vs_stat(&V->s, pk);
        else
                vc_stat(&V->c, pk);
}

const struct pvd_driver pvd_drv_vumem = {
        .name = "vumem",
        .id = PV_DRV_VUMEM,
        .region = PV_REGION_VUMEM,
        .region_size = vumem_region_size,
        .region_init = vumem_region_init,
        .attach = vumem_attach,
        .detach = vumem_detach,
        .up = vumem_up,
        .down = vumem_down,
        .msg = vumem_msg,
        .conn_close = vumem_conn_close,
        .conn_msg = vumem_conn_msg,
        .stat = vumem_stat,
};
