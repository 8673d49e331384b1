/* The lock-free half of a VRPQ queue (proto/vrpq-proto.h): a ring of
 * descriptors and a port of PMEM, seen by its producer (struct vrpq_txq)
 * or its consumer (struct vrpq_rxq). No system call and no allocation here:
 * the callers wait and send xIRQs. Internal to libpvclient; the requests of
 * a channel are one queue (client produces), its callbacks another (server
 * produces).
 *
 * Each side keeps its own indices privately and publishes them; what the
 * other side publishes is read once, checked, and only then used. A bad
 * value makes the queue "broken": -EPROTO from then on, nothing outside the
 * ring and the port touched.
 *
 * The port is a FIFO allocator over a window of PMEM: blocks are taken
 * after the newest one, or at the start of the window when they do not fit
 * before its end (the skipped tail counts as used until released). When
 * nothing is in use the next block starts at 0, so any block up to the
 * window's size fits once the consumer has caught up.
 */
#ifndef VRPQ_QUEUE_H
#define VRPQ_QUEUE_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pv-atomic.h"
#include "vrpq-proto.h"

static inline uint32_t vrpq_align8(uint32_t n)
{
        return (n + 7u) & ~7u;
}

/* ---- producer ------------------------------------------------------------- */

struct vrpq_txq {
        struct vrpq_prod_line *pl;      /* ours */
        const struct vrpq_cons_line *cl;/* the consumer's */
        struct vrpq_desc *ring;
        uint32_t cap, mask;
        uint32_t prod;                  /* ours */
        uint32_t cons;                  /* the consumer's, last checked */
        uint32_t done;                  /* the consumer's, last checked */
        uint8_t *port;
        uint32_t port_size;
        uint32_t port_prod;             /* ours: bytes taken, skipped tails included */
        uint32_t port_pos;              /* ours: where the next block goes */
        uint32_t port_cons;             /* the consumer's, last checked */
        /* the block of the last allocation, until posted, and the port's
         * state before it (a new allocation takes its place back) */
        bool blk;
        uint32_t blk_in_off, blk_in_size, blk_out_off, blk_out_size;
        uint32_t blk_prev_prod, blk_prev_pos;
        uint64_t posted, xirq_sent, xirq_suppressed;
        bool broken;
};

/* The header's indices are zero in a fresh channel. */
static inline void vrpq_txq_init(struct vrpq_txq *q, struct vrpq_prod_line *pl, const struct vrpq_cons_line *cl,
                                 void *ring, uint32_t cap, void *port, uint32_t port_size)
{
        memset(q, 0, sizeof(*q));
        q->pl = pl;
        q->cl = cl;
        q->ring = (struct vrpq_desc *)ring;
        q->cap = cap;
        q->mask = cap - 1;
        q->port = (uint8_t *)port;
        q->port_size = port_size;
}

static inline int vrpq_txq_fail(struct vrpq_txq *q)
{
        q->broken = true;
        return -EPROTO;
}

/* Reload the consumer's ring index: it only moves forward, never past ours. */
static inline int vrpq_txq_load_cons(struct vrpq_txq *q)
{
        uint32_t c = ring_load_acquire(&q->cl->cons);
        if ((uint32_t)(c - q->cons) > (uint32_t)(q->prod - q->cons))
                return vrpq_txq_fail(q);
        q->cons = c;
        return 0;
}

/* 1 if one more descriptor fits, 0 if the ring is full, -EPROTO. */
static inline int vrpq_txq_ring_room(struct vrpq_txq *q)
{
        if (q->broken)
                return -EPROTO;
        if (q->prod - q->cons < q->cap)
                return 1;
        if (vrpq_txq_load_cons(q) < 0)
                return -EPROTO;
        return q->prod - q->cons < q->cap;
}

static inline int vrpq_txq_load_port_cons(struct vrpq_txq *q)
{
        uint32_t c = ring_load_acquire(&q->cl->port_cons);
        if ((uint32_t)(c - q->port_cons) > (uint32_t)(q->port_prod - q->port_cons))
                return vrpq_txq_fail(q);
        q->port_cons = c;
        return 0;
}

/* Bytes a block of in + out takes (at least 8, so that it has an address),
 * or 0 when it can never fit this port. */
static inline uint32_t vrpq_txq_block_size(const struct vrpq_txq *q, uint64_t in, uint64_t out)
{
        uint64_t need = ((in + 7) & ~(uint64_t)7) + ((out + 7) & ~(uint64_t)7);
        if (need == 0)
                need = 8;
        return need <= q->port_size ? (uint32_t)need : 0;
}

/* Place need bytes (from vrpq_txq_block_size) in the port: 0 with *off,
 * -EAGAIN when the consumer must release first, -EPROTO. */
static inline int vrpq_txq_port_take(struct vrpq_txq *q, uint32_t need, uint32_t *off)
{
        if (q->broken)
                return -EPROTO;
        /* The common case first: room after the newest block, by the copy
         * of the consumer's index we hold. */
        uint32_t in_use = q->port_prod - q->port_cons;
        if (in_use && need <= q->port_size - q->port_pos && need <= q->port_size - in_use) {
                *off = q->port_pos;
                q->port_pos += need;
                if (q->port_pos == q->port_size)
                        q->port_pos = 0;
                q->port_prod += need;
                return 0;
        }
        for (int pass = 0; pass < 2; pass++) {
                uint32_t used = q->port_prod - q->port_cons;
                if (used == 0)
                        q->port_pos = 0;
                uint32_t free = q->port_size - used;
                uint32_t tail = q->port_size - q->port_pos;
                if (need <= tail) {
                        if (need <= free) {
                                *off = q->port_pos;
                                q->port_pos += need;
                                if (q->port_pos == q->port_size)
                                        q->port_pos = 0;
                                q->port_prod += need;
                                return 0;
                        }
                } else if ((uint64_t)tail + need <= free) {
                        *off = 0;
                        q->port_pos = need == q->port_size ? 0 : need;
                        q->port_prod += tail + need;
                        return 0;
                }
                if (pass == 0 && vrpq_txq_load_port_cons(q) < 0)
                        return -EPROTO;
        }
        return -EAGAIN;
}

/* The common case of vrpq_txq_alloc(), for the callers' fast paths: no
 * block waiting to be posted, and room after the newest block by the copy
 * of the consumer's index we hold. The block's input bytes, or NULL when
 * vrpq_txq_alloc() must decide. */
static inline void *vrpq_txq_alloc_fast(struct vrpq_txq *q, uint64_t in_size, uint64_t out_size)
{
        uint64_t need = ((in_size + 7) & ~(uint64_t)7) + ((out_size + 7) & ~(uint64_t)7);
        uint32_t pos = q->port_pos, in_use = q->port_prod - q->port_cons;
        if (q->blk || q->broken || need - 1 >= q->port_size || !in_use || need > q->port_size - pos ||
            need > q->port_size - in_use)
                return NULL;
        q->blk_prev_prod = q->port_prod;
        q->blk_prev_pos = pos;
        q->blk = true;
        q->blk_in_off = pos;
        q->blk_in_size = (uint32_t)in_size;
        q->blk_out_off = pos + (uint32_t)((in_size + 7) & ~(uint64_t)7);
        q->blk_out_size = (uint32_t)out_size;
        q->port_prod += (uint32_t)need;
        q->port_pos = pos + (uint32_t)need == q->port_size ? 0 : pos + (uint32_t)need;
        return q->port + pos;
}

/* Allocate a parameter block: *in points to its input bytes. 0, -EAGAIN
 * (wait for the consumer), -E2BIG, -EPROTO. A block allocated before and
 * not posted is given back first: the consumer never saw it. */
static inline int vrpq_txq_alloc(struct vrpq_txq *q, uint64_t in_size, uint64_t out_size, void **in)
{
        uint32_t need = vrpq_txq_block_size(q, in_size, out_size);
        if (!need)
                return -E2BIG;
        if (q->blk) {
                q->port_prod = q->blk_prev_prod;
                q->port_pos = q->blk_prev_pos;
                q->blk = false;
        }
        uint32_t off, prev_prod = q->port_prod, prev_pos = q->port_pos;
        int rc = vrpq_txq_port_take(q, need, &off);
        if (rc < 0)
                return rc;
        q->blk_prev_prod = prev_prod;
        q->blk_prev_pos = prev_pos;
        q->blk = true;
        q->blk_in_off = off;
        q->blk_in_size = (uint32_t)in_size;
        q->blk_out_off = off + vrpq_align8((uint32_t)in_size);
        q->blk_out_size = (uint32_t)out_size;
        *in = q->port + off;
        return 0;
}

/* The output bytes of the last allocated block (NULL if none). */
static inline void *vrpq_txq_blk_out(const struct vrpq_txq *q, uint32_t out_off, uint32_t out_size)
{
        return out_size ? q->port + out_off : NULL;
}

/* Publish one descriptor. in: the last block's input pointer or NULL (no
 * parameters). The caller checked vrpq_txq_ring_room(). 0 with *seq (the
 * request's number), or -EINVAL when in is not the last block. */
static inline int vrpq_txq_post(struct vrpq_txq *q, uint32_t proc_id, uint32_t flags, const void *in, uint32_t *seq)
{
        uint32_t in_off = 0, in_size = 0, out_off = 0, out_size = 0;
        if (in) {
                if (!q->blk || (const uint8_t *)in != q->port + q->blk_in_off)
                        return -EINVAL;
                in_off = q->blk_in_off;
                in_size = q->blk_in_size;
                out_off = q->blk_out_off;
                out_size = q->blk_out_size;
        }
        /* An unposted block below pend is released with this descriptor:
         * it can no longer be given back. */
        q->blk = false;
        /* Built whole, then stored at once: two 16-byte stores. */
        q->ring[q->prod & q->mask] = (struct vrpq_desc){ .proc_id = proc_id, .flags = flags, .in_off = in_off,
                                                         .in_size = in_size, .out_off = out_off,
                                                         .out_size = out_size, .pend = q->port_prod };
        *seq = q->prod;
        q->prod++;
        ring_store_release(&q->pl->prod, q->prod);
        q->posted++;
        ring_store_relaxed(&q->pl->port_prod, q->port_prod);
        atomic_store_explicit(PV_A64(&q->pl->posted), q->posted, memory_order_relaxed);
        return 0;
}

/* 1 when request seq is complete, 0 not yet, -EPROTO. */
static inline int vrpq_txq_done(struct vrpq_txq *q, uint32_t seq)
{
        if (q->broken)
                return -EPROTO;
        uint32_t d = ring_load_acquire(&q->cl->done);
        if ((uint32_t)(d - q->done) > (uint32_t)(q->prod - q->done))
                return vrpq_txq_fail(q);
        q->done = d;
        return (int32_t)(d - (seq + 1)) >= 0;
}

/* ---- waking the other side -------------------------------------------------- */

/* After publishing (and before sleeping): true if the waiter owning flag
 * sleeps and needs the xIRQ. At most one true per sleep. one_kernel: we may
 * skip the fence when the peer's barrier word says its sleeps call
 * membarrier(2) (pv-atomic.h). */
static inline bool vrpq_wake_needed(uint32_t *flag, bool one_kernel, const uint32_t *peer_barrier)
{
        pv_fence_wake(one_kernel, peer_barrier);
        return ring_load_relaxed(flag) && ring_exchange(flag, 0);
}

static inline void vrpq_count(uint64_t *shared, uint64_t *local)
{
        ++*local;
        atomic_store_explicit(PV_A64(shared), *local, memory_order_relaxed);
}

/* ---- consumer ------------------------------------------------------------------ */

/* A descriptor as checked by the consumer. */
struct vrpq_item {
        uint32_t proc_id, flags, seq;
        uint32_t in_size, out_size;
        uint32_t pend;
        uint8_t *in, *out;
};

struct vrpq_rxq {
        const struct vrpq_prod_line *pl;/* the producer's */
        struct vrpq_cons_line *cl;      /* ours */
        const struct vrpq_desc *ring;
        uint32_t cap, mask;
        uint32_t cons;                  /* ours */
        uint32_t done;                  /* ours */
        uint8_t *port;
        uint32_t port_size;
        uint32_t port_cons;             /* ours: released up to here */
        uint32_t pend_last;             /* pend of the last descriptor fetched */
        uint32_t peak_stacked, peak_port;
        uint64_t received, completed, xirq_sent, xirq_suppressed;
        bool broken;
        char why[96];                   /* what was wrong, when broken */
};

static inline void vrpq_rxq_init(struct vrpq_rxq *q, const struct vrpq_prod_line *pl, struct vrpq_cons_line *cl,
                                 const void *ring, uint32_t cap, void *port, uint32_t port_size)
{
        memset(q, 0, sizeof(*q));
        q->pl = pl;
        q->cl = cl;
        q->ring = (const struct vrpq_desc *)ring;
        q->cap = cap;
        q->mask = cap - 1;
        q->port = (uint8_t *)port;
        q->port_size = port_size;
}

static inline int vrpq_rxq_fail(struct vrpq_rxq *q, const char *why)
{
        if (!q->broken) {
                q->broken = true;
                snprintf(q->why, sizeof(q->why), "%s", why);
        }
        return -EPROTO;
}

/* Descriptors waiting: 0 if none, -EPROTO for an impossible producer index. */
static inline int64_t vrpq_rxq_pending(struct vrpq_rxq *q)
{
        if (q->broken)
                return -EPROTO;
        uint32_t avail = ring_load_acquire(&q->pl->prod) - q->cons;
        if (avail > q->cap)
                return vrpq_rxq_fail(q, "the producer's ring index is past the ring");
        return avail;
}

/* Copy up to max descriptors out of the ring, each read once and checked
 * against the port. 0 with *n (0 when empty), or -EPROTO. */
static inline int vrpq_rxq_fetch(struct vrpq_rxq *q, struct vrpq_item *items, uint32_t max, uint32_t *n)
{
        *n = 0;
        int64_t avail = vrpq_rxq_pending(q);
        if (avail <= 0)
                return (int)avail;
        if (avail > q->peak_stacked) {
                q->peak_stacked = (uint32_t)avail;
                ring_store_relaxed(&q->cl->peak_stacked, q->peak_stacked);
        }
        uint32_t k = (uint32_t)avail < max ? (uint32_t)avail : max;
        for (uint32_t i = 0; i < k; i++) {
                const struct vrpq_desc *d = &q->ring[(q->cons + i) & q->mask];
                uint32_t proc = shm_read32(&d->proc_id), flags = shm_read32(&d->flags);
                uint32_t in_off = shm_read32(&d->in_off), in_size = shm_read32(&d->in_size);
                uint32_t out_off = shm_read32(&d->out_off), out_size = shm_read32(&d->out_size);
                uint32_t pend = shm_read32(&d->pend);
                if (VRPQ_GRP(proc) == 0)
                        return vrpq_rxq_fail(q, "a request of the reserved procedure group 0");
                if (flags & ~VRPQ_DF_ALL)
                        return vrpq_rxq_fail(q, "a request with unknown flags");
                if ((uint64_t)in_off + in_size > q->port_size || (uint64_t)out_off + out_size > q->port_size)
                        return vrpq_rxq_fail(q, "parameters outside the channel's port");
                if ((uint32_t)(pend - q->pend_last) > q->port_size || (uint32_t)(pend - q->port_cons) > q->port_size)
                        return vrpq_rxq_fail(q, "an impossible port index");
                struct vrpq_item *it = &items[i];
                it->proc_id = proc;
                it->flags = flags;
                it->seq = q->cons + i;
                it->in_size = in_size;
                it->out_size = out_size;
                it->pend = pend;
                it->in = in_size ? q->port + in_off : NULL;
                it->out = out_size ? q->port + out_off : NULL;
                q->pend_last = pend;
        }
        /* The port in use up to the last block: from the descriptors, so
         * that the producer's counter line is never read. */
        uint32_t used = q->pend_last - q->port_cons;
        if (used > q->peak_port) {
                q->peak_port = used;
                ring_store_relaxed(&q->cl->peak_port, used);
        }
        q->cons += k;
        ring_store_release(&q->cl->cons, q->cons);
        q->received += k;
        atomic_store_explicit(PV_A64(&q->cl->received), q->received, memory_order_relaxed);
        *n = k;
        return 0;
}

/* Requests before seq_end are complete (output parameters written). */
static inline void vrpq_rxq_complete(struct vrpq_rxq *q, uint32_t seq_end)
{
        if ((int32_t)(seq_end - q->done) <= 0)
                return;
        q->completed += seq_end - q->done;
        q->done = seq_end;
        ring_store_release(&q->cl->done, seq_end);
        atomic_store_explicit(PV_A64(&q->cl->completed), q->completed, memory_order_relaxed);
}

/* Done with the parameter blocks up to pend (a fetched descriptor's). */
static inline void vrpq_rxq_release(struct vrpq_rxq *q, uint32_t pend)
{
        q->port_cons = pend;
        ring_store_release(&q->cl->port_cons, pend);
}

#endif
