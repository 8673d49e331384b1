/* Single-producer/single-consumer byte ring in shared memory (vbpipe data).
 *
 * Same header, index rules and notification protocol as pv-ring.h, but the
 * data are a plain byte stream: the producer asks for the free space as at
 * most two spans and fills them directly (readv from a socket straight into
 * ring memory), the consumer asks for the filled bytes as at most two spans
 * and drains them directly (writev to a socket). No bounce buffer.
 *
 * The peer's index is read once per call and checked (used <= size); a bad
 * one makes the ring broken (-EPROTO for every later call). Unlike the
 * message ring, nothing is cached: each call already pays for a system
 * call, and pvd moves its own index when a program hands back a ring it
 * held (daemon/vbpipe/vbpipe-direct.c), so a copy would go stale.
 */
#ifndef PV_BYTERING_H
#define PV_BYTERING_H

#include <sys/uio.h>

#include "pv-ring.h"

/* A byte ring is a struct pv_ring used through these functions only. */

/* Producer: free bytes (one acquire load of the consumer's index), or
 * -EPROTO if that index is impossible. */
static inline int64_t pv_bytering_free(struct pv_ring *r)
{
        if (r->broken)
                return -EPROTO;
        uint32_t cons = ring_load_acquire(&r->hdr->cons);
        uint32_t used = r->prod - cons;
        if (used > r->size)
                return pv_ring_fail(r);
        return r->size - used;
}

/* Producer: free space as up to two spans. Returns the number of free bytes
 * (0 when full) or -EPROTO. */
static inline int64_t pv_bytering_wspan(struct pv_ring *r, struct iovec iov[2], int *iovcnt)
{
        int64_t avail = pv_bytering_free(r);
        *iovcnt = 0;
        if (avail <= 0)
                return avail;
        uint32_t pos = r->prod & r->mask;
        uint32_t first = r->size - pos;
        if (first > avail)
                first = (uint32_t)avail;
        iov[0].iov_base = r->data + pos;
        iov[0].iov_len = first;
        *iovcnt = 1;
        if ((uint64_t)avail > first) {
                iov[1].iov_base = r->data;
                iov[1].iov_len = (size_t)avail - first;
                *iovcnt = 2;
        }
        return avail;
}

/* Producer: publish n bytes written into the spans. */
static inline void pv_bytering_produce(struct pv_ring *r, uint32_t n)
{
        r->prod += n;
        r->stats.msgs += n;
        ring_store_release(&r->hdr->prod, r->prod);
}

/* Consumer: filled bytes as up to two spans. Returns the number of bytes
 * available (0 when empty) or -EPROTO. */
static inline int64_t pv_bytering_rspan(struct pv_ring *r, struct iovec iov[2], int *iovcnt)
{
        *iovcnt = 0;
        if (r->broken)
                return -EPROTO;
        uint32_t prod = ring_load_acquire(&r->hdr->prod);
        uint32_t used = prod - r->cons;
        if (used > r->size)
                return pv_ring_fail(r);
        if (used == 0)
                return 0;
        uint32_t pos = r->cons & r->mask;
        uint32_t first = r->size - pos;
        if (first > used)
                first = used;
        iov[0].iov_base = r->data + pos;
        iov[0].iov_len = first;
        *iovcnt = 1;
        if (used > first) {
                iov[1].iov_base = r->data;
                iov[1].iov_len = used - first;
                *iovcnt = 2;
        }
        return used;
}

/* Consumer: release n bytes read from the spans. */
static inline void pv_bytering_consume(struct pv_ring *r, uint32_t n)
{
        r->cons += n;
        r->stats.msgs += n;
        ring_store_release(&r->hdr->cons, r->cons);
}

/* Bytes waiting, for FIONREAD-style reporting; -EPROTO if broken. */
static inline int64_t pv_bytering_used(struct pv_ring *r)
{
        if (r->broken)
                return -EPROTO;
        uint32_t used = ring_load_acquire(&r->hdr->prod) - r->cons;
        /* Not a conditional expression: its int and uint32_t arms would meet
         * as unsigned, and -EPROTO would come back as a large byte count. */
        if (used > r->size)
                return pv_ring_fail(r);
        return used;
}

#endif
