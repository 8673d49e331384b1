/* The grantable heap of one side of an ivshmem vlink: page runs of the
 * vlink's memory, handed out first fit and merged back when freed. The
 * bookkeeping is pvd's own (never in shared memory). */
#ifndef PVD_IVSHMEM_HEAP_H
#define PVD_IVSHMEM_HEAP_H

#include <stdint.h>

struct ivs_run;

struct ivs_heap {
        uint64_t base, size;    /* the heap in the vlink's memory */
        uint64_t used;
        struct ivs_run *free;   /* free runs by offset */
};

void ivs_heap_init(struct ivs_heap *h, uint64_t base, uint64_t size);
void ivs_heap_fini(struct ivs_heap *h);
/* size rounded up to pages. */
uint64_t ivs_heap_round(uint64_t size);
/* ivs_heap_round(size) bytes: their offset in *off. -ENOMEM when no free
 * run holds them, -EINVAL for 0. */
int ivs_heap_alloc(struct ivs_heap *h, uint64_t size, uint64_t *off);
/* Give back what ivs_heap_alloc gave (len as rounded). Anything else is
 * ignored. */
void ivs_heap_free(struct ivs_heap *h, uint64_t off, uint64_t len);

#endif
