/* A buddy allocator for VRPQ's request slots and PMEM (server end): blocks
 * of 2^order units, split on allocation and merged with their buddy on
 * release. A byte per unit says whether a free block starts there and of
 * which order; allocations happen at channel creation only, so finding a
 * block is a scan. A range that is not a power of two starts as the
 * largest aligned blocks that fit, and merges never cross its end. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vrpq-int.h"

unsigned vrpq_log2(uint64_t v)
{
        unsigned n = 0;
        while (v >>= 1)
                n++;
        return n;
}

void vrpq_buddy_reset(struct vrpq_buddy *b)
{
        memset(b->head, 0, b->units);
        uint32_t u = 0;
        while (u < b->units) {
                unsigned o = b->max_order;
                /* Largest block aligned at u that fits before the end. */
                while (o && ((u & ((1u << o) - 1)) || u + (1u << o) > b->units))
                        o--;
                b->head[u] = (uint8_t)(o + 1);
                u += 1u << o;
        }
        b->free_units = b->units;
}

int vrpq_buddy_init(struct vrpq_buddy *b, uint32_t units)
{
        memset(b, 0, sizeof(*b));
        if (!units)
                return -EINVAL;
        b->head = malloc(units);
        if (!b->head)
                return -ENOMEM;
        b->units = units;
        b->max_order = vrpq_log2(units);
        vrpq_buddy_reset(b);
        return 0;
}

void vrpq_buddy_fini(struct vrpq_buddy *b)
{
        free(b->head);
        memset(b, 0, sizeof(*b));
}

int64_t vrpq_buddy_alloc(struct vrpq_buddy *b, unsigned order)
{
        if (order > b->max_order)
                return -1;
        for (unsigned o = order; o <= b->max_order; o++) {
                for (uint32_t u = 0; u < b->units; u += 1u << o) {
                        if (b->head[u] != o + 1)
                                continue;
                        /* Split down to the order asked for: the upper
                         * halves become free blocks. */
                        b->head[u] = 0;
                        for (unsigned k = o; k > order; k--)
                                b->head[u + (1u << (k - 1))] = (uint8_t)k;
                        b->free_units -= 1u << order;
                        return u;
                }
        }
        return -1;
}

void vrpq_buddy_free(struct vrpq_buddy *b, uint32_t unit, unsigned order)
{
        b->free_units += 1u << order;
        while (order < b->max_order) {
                uint32_t buddy = unit ^ (1u << order);
                if ((uint64_t)buddy + (1u << order) > b->units || b->head[buddy] != order + 1)
                        break;
                b->head[buddy] = 0;
                unit &= ~(1u << order);
                order++;
        }
        b->head[unit] = (uint8_t)(order + 1);
}
