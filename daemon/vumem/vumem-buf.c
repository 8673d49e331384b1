/* VUMEM, server end: the buffers server programs of this VM hand out,
 * known VM-wide by id (so that client VMs of the same vdev can share
 * them), their export on each vlink that holds them (a grant and a pdev
 * record), and the handles sessions hold. The last handle's release frees
 * the buffer and tells the server program that allocated it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vumem-int.h"

#define REG_BUCKETS 1024

/* Every buffer of this VM, by id. pvd is single-threaded. */
static struct vs_buf *registry[REG_BUCKETS];
static unsigned registry_count;

static struct vs_buf **reg_slot(uint64_t id)
{
        return &registry[(id ^ (id >> 32)) % REG_BUCKETS];
}

struct vs_buf *vs_buf_find(uint64_t id)
{
        for (struct vs_buf *b = *reg_slot(id); b; b = b->hnext)
                if (b->id == id)
                        return b;
        return NULL;
}

static void reg_del(struct vs_buf *b)
{
        for (struct vs_buf **pp = reg_slot(b->id); *pp; pp = &(*pp)->hnext)
                if (*pp == b) {
                        *pp = b->hnext;
                        registry_count--;
                        return;
                }
}

/* ---- buffers, exports, handles -------------------------------------------------- */

void vs_buf_release(struct vs_buf *b)
{
        reg_del(b);
        vs_queue_free(b->owner, b->id, b->vaddr, b->size);
        vs_obj_put(b->obj);
        free(b);
}

void vs_export_release(struct vs_export *x)
{
        struct vs_link *L = x->link;
        struct vs_buf *b = x->buf;
        if (!x->obj_grant)
                pvd_grant_revoke(L->vl, x->gref);
        vs_cells_free(L, x->cell, VUMEM_BUF_CELLS);
        L->nexports--;
        L->export_bytes -= b->size;
        for (struct vs_export **pp = &b->exports; *pp; pp = &(*pp)->next)
                if (*pp == x) {
                        *pp = x->next;
                        break;
                }
        free(x);
}

/* Write a buffer's record and chunk list into the pdev at cell: its pages
 * are at ext_off of grant gref. */
static void pdev_write(struct vs_link *L, const struct vs_buf *b, uint32_t cell, uint32_t gref, uint64_t ext_off)
{
        struct vumem_pdev_rec *rec = vs_cell_ptr(L, cell);
        struct vumem_pdev_ext *ext = vs_cell_ptr(L, cell + 1);
        if (!rec || !ext)
                return;
        *ext = (struct vumem_pdev_ext){ .kind = VUMEM_EXT_KIND, .gref = gref, .offset = ext_off,
                                        .len = b->map_len };
        *rec = (struct vumem_pdev_rec){ .kind = VUMEM_REC_KIND, .flags = b->flags, .id = b->id, .size = b->size,
                                        .pgoff = (uint16_t)b->pgoff, .ext_count = 1, .ext_cell = cell + 1 };
}

/* The buffer's export on L, made if needed (cell: cells reserved for it,
 * or UINT32_MAX to reserve now; consumed in any case). */
int vs_export_get(struct vs_link *L, struct vs_buf *b, uint32_t cell, struct vs_export **out)
{
        for (struct vs_export *x = b->exports; x; x = x->next)
                if (x->link == L) {
                        if (cell != UINT32_MAX)
                                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                        *out = x;
                        return 0;
                }
        if (cell == UINT32_MAX && vs_cells_alloc(L, VUMEM_BUF_CELLS, &cell) < 0)
                return -ENOSPC;
        struct vs_export *x = calloc(1, sizeof(*x));
        if (!x) {
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                return -ENOMEM;
        }
        /* A grant of the buffer's pages only. */
        int rc = pvd_grant(L->vl, &b->obj->mem, b->map_off, b->map_len, &x->gref);
        if (rc < 0) {
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                free(x);
                return rc;
        }
        x->buf = b;
        x->link = L;
        x->cell = cell;
        pdev_write(L, b, cell, x->gref, 0);
        x->next = b->exports;
        b->exports = x;
        L->nexports++;
        L->export_bytes += b->size;
        *out = x;
        return 0;
}

int vs_export_lane(struct vs_link *L, struct vs_buf *b, uint32_t cell, uint32_t gref, struct vs_export **out)
{
        struct vs_export *x = calloc(1, sizeof(*x));
        if (!x) {
                vs_cells_free(L, cell, VUMEM_BUF_CELLS);
                return -ENOMEM;
        }
        x->buf = b;
        x->link = L;
        x->cell = cell;
        x->gref = gref;
        x->obj_grant = true;
        pdev_write(L, b, cell, gref, b->map_off); /* gref: the whole object */
        x->next = b->exports;
        b->exports = x;
        L->nexports++;
        L->export_bytes += b->size;
        *out = x;
        return 0;
}

static struct vs_handle **handle_slot(struct vs_link *L, uint32_t id)
{
        return &L->hb[id % VS_HBUCKETS];
}

struct vs_handle *vs_handle_find(struct vs_link *L, uint32_t id)
{
        for (struct vs_handle *h = *handle_slot(L, id); h; h = h->hnext)
                if (h->id == id)
                        return h;
        return NULL;
}

int vs_handle_new(struct vs_link *L, struct vs_session *s, struct vs_export *x, uint32_t id,
                  struct vs_handle **out)
{
        if (id && vs_handle_find(L, id))
                return -EEXIST;
        struct vs_handle *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->id = id;
        while (!h->id || vs_handle_find(L, h->id) || vs_lane_handle_reserved(L, h->id))
                h->id = L->next_handle++;
        h->s = s;
        h->x = x;
        h->hnext = *handle_slot(L, h->id);
        *handle_slot(L, h->id) = h;
        h->snext = s->handles;
        if (s->handles)
                s->handles->sprev = &h->snext;
        h->sprev = &s->handles;
        s->handles = h;
        s->nhandles++;
        s->bytes += x->buf->size;
        L->nhandles++;
        x->handles++;
        x->buf->refs++;
        *out = h;
        return 0;
}

void vs_handle_release(struct vs_link *L, struct vs_handle *h)
{
        for (struct vs_handle **pp = handle_slot(L, h->id); *pp; pp = &(*pp)->hnext)
                if (*pp == h) {
                        *pp = h->hnext;
                        break;
                }
        *h->sprev = h->snext;
        if (h->snext)
                h->snext->sprev = h->sprev;
        struct vs_session *s = h->s;
        struct vs_export *x = h->x;
        struct vs_buf *b = x->buf;
        s->nhandles--;
        s->bytes -= b->size;
        L->nhandles--;
        free(h);
        if (--x->handles == 0)
                vs_export_release(x);
        if (--b->refs == 0)
                vs_buf_release(b);
}

int vs_buf_new_id(uint64_t *id)
{
        for (int i = 0; i < 16; i++) {
                uint64_t v = pvd_random64();
                if (v && !vs_buf_find(v)) {
                        *id = v;
                        return 0;
                }
        }
        return -EAGAIN;
}


void vs_buf_add(struct vs_buf *b)
{
        b->hnext = *reg_slot(b->id);
        *reg_slot(b->id) = b;
        registry_count++;
}

/* The server program of owner is gone: nobody hears these buffers' FREE. */
void vs_bufs_orphan(struct vs_link *owner)
{
        for (unsigned i = 0; i < REG_BUCKETS; i++)
                for (struct vs_buf *b = registry[i]; b; b = b->hnext)
                        if (b->owner == owner)
                                b->owner = NULL;
}
