/* The grantable heap of one side of an ivshmem vlink (ivshmem-heap.h). */
#include <errno.h>
#include <stdlib.h>

#include "ivshmem-heap.h"
#include "pv-ivshmem.h"

struct ivs_run {
        uint64_t off, len;
        struct ivs_run *next;
};

uint64_t ivs_heap_round(uint64_t size)
{
        return (size + PV_IVSHM_PAGE - 1) / PV_IVSHM_PAGE * PV_IVSHM_PAGE;
}

void ivs_heap_init(struct ivs_heap *h, uint64_t base, uint64_t size)
{
        h->base = base;
        h->size = size;
        h->used = 0;
        h->free = NULL;
        if (!size)
                return;
        h->free = malloc(sizeof(*h->free));
        if (h->free)
                *h->free = (struct ivs_run){ .off = base, .len = size };
}

void ivs_heap_fini(struct ivs_heap *h)
{
        while (h->free) {
                struct ivs_run *r = h->free;
                h->free = r->next;
                free(r);
        }
        h->used = 0;
}

int ivs_heap_alloc(struct ivs_heap *h, uint64_t size, uint64_t *off)
{
        uint64_t len = ivs_heap_round(size);
        if (!len || len < size)
                return -EINVAL;
        for (struct ivs_run **pp = &h->free; *pp; pp = &(*pp)->next) {
                struct ivs_run *r = *pp;
                if (r->len < len)
                        continue;
                *off = r->off;
                r->off += len;
                r->len -= len;
                if (!r->len) {
                        *pp = r->next;
                        free(r);
                }
                h->used += len;
                return 0;
        }
        return -ENOMEM;
}

void ivs_heap_free(struct ivs_heap *h, uint64_t off, uint64_t len)
{
        if (!len || off < h->base || off - h->base > h->size || len > h->size - (off - h->base) || len > h->used)
                return;
        struct ivs_run **pp = &h->free, *prev = NULL;
        while (*pp && (*pp)->off < off) {
                prev = *pp;
                pp = &(*pp)->next;
        }
        struct ivs_run *next = *pp;
        /* Overlapping a free run: not something we gave. */
        if ((prev && prev->off + prev->len > off) || (next && off + len > next->off))
                return;
        h->used -= len;
        if (prev && prev->off + prev->len == off) {
                prev->len += len;
                if (next && prev->off + prev->len == next->off) {
                        prev->len += next->len;
                        prev->next = next->next;
                        free(next);
                }
                return;
        }
        if (next && off + len == next->off) {
                next->off = off;
                next->len += len;
                return;
        }
        struct ivs_run *r = malloc(sizeof(*r));
        if (!r)
                return; /* those pages are lost to this heap until pvd restarts */
        *r = (struct ivs_run){ .off = off, .len = len, .next = next };
        *pp = r;
}
