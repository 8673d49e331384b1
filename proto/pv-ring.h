/* Single-producer/single-consumer message ring in shared memory.
 *
 * Used for every driver message that crosses a vlink (pvd <-> pvd), and as
 * the model for the other rings in proto/. Header-only, no allocation, no
 * system call: the caller sends the xIRQ when pv_ring_*_notify() says so.
 *
 * Layout: a struct pv_ring_hdr (three cache lines: the producer's index,
 * the consumer's index, the two sleep flags) and a data area of a
 * power-of-two size, both at offsets that each side computes from its own
 * configuration (never from shared memory).
 *
 * Indices are free-running uint32_t byte counts; position = index & mask.
 * A record is an 8-byte header {len, tag} followed by len bytes, padded to a
 * multiple of 8. A record never wraps: when it does not fit before the end of
 * the data area, the producer writes a pad record (len = PV_RING_PAD) that
 * tells the consumer to skip to the start.
 *
 * Memory ordering:
 *   prod      written by the producer with release, after the record bytes;
 *             read by the consumer with acquire, before reading the record.
 *   cons      written by the consumer with release, after it copied the
 *             record out; read by the producer with acquire, before it
 *             overwrites that space.
 *   cons_wait the consumer sets it before sleeping and re-checks prod after a
 *             full fence; the producer, after publishing prod and a full
 *             fence, exchanges it to 0 and sends an xIRQ if it was set.
 *   prod_wait the same for a producer waiting for room.
 *   On one kernel (pv_ring_set_one_kernel) a side that sleeps rarely calls
 *   membarrier(2) instead, and says so in its barrier word: the other
 *   side's notify then needs only a compiler barrier (pv-atomic.h).
 *
 * Cost per message. Each side keeps the peer's index as it last read and
 * checked it (`seen`), and reads the shared one again only when that copy
 * says the ring is full (producer) or empty (consumer): a stream of
 * messages costs no load of the other side's cache line per message, and
 * no read-modify-write. Each index and the flags have a cache line of
 * their own, so publishing one never evicts what the other side polls.
 *
 * Sleeping: each side calls its notify function (pv_ring_prod_notify(),
 * pv_ring_cons_notify()) before it prepares to sleep, whatever its last call
 * returned, and sends the xIRQ if told to. Pad records are why: a reserve
 * that returns -EAGAIN may have published a pad the consumer must skip before
 * room appears, and a recv that returns -EAGAIN may have skipped one and so
 * freed room; neither hands the caller a message, so a caller that notifies
 * only after a message moved leaves both sides asleep. A batching caller
 * needs the same rule for the messages of a batch cut short by -EAGAIN.
 *
 * The peer is hostile (DESIGN 5): each index and record header it wrote is
 * read once into a local and checked before use. An index must lie between
 * the one seen last and our own (the peer's index never moves back, nor past
 * ours), on a record boundary; a record must lie within what was published.
 * A bad value makes the ring "broken": every later call returns -EPROTO and
 * nothing outside the data area is touched. A lie is caught at the next read
 * of the peer's index (when the ring looks full or empty, or before
 * sleeping); until then each side only uses space its checked copy allows.
 * Our own index is never read back from shared memory.
 */
#ifndef PV_RING_H
#define PV_RING_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "pv-atomic.h"

struct pv_ring_hdr {
        _Alignas(PV_CACHELINE) uint32_t prod; /* producer: release; consumer: acquire */
        _Alignas(PV_CACHELINE) uint32_t cons; /* consumer: release; producer: acquire */
        /* Written only around sleeps: apart, so that the other side's notify
         * check reads a line that stays in its cache. */
        _Alignas(PV_CACHELINE) uint32_t cons_wait; /* consumer sleeps for data; producer clears */
        uint32_t prod_wait;                   /* producer sleeps for room; consumer clears */
        /* Each sleeper's barrier word (pv-atomic.h): 1 while its sleeps
         * call membarrier(2), so the other side's notify may skip its
         * fence. Written by its side only; 0 between kernels. */
        uint32_t cons_barrier;
        uint32_t prod_barrier;
};

#define PV_RING_HDR_SIZE   ((uint32_t)sizeof(struct pv_ring_hdr))
#define PV_RING_REC_HDR    8u
#define PV_RING_PAD        0xffffffffu
#define PV_RING_MIN_SIZE   64u
#define PV_RING_MAX_SIZE   (1u << 30)

/* Counters kept privately by each side, never in shared memory. */
struct pv_ring_stats {
        uint64_t msgs;            /* records (or bytes, for byte rings) moved */
        uint64_t xirq_sent;       /* notifications the peer needed */
        uint64_t xirq_suppressed; /* notifications saved because the peer was awake */
};

/* One side's view of a ring. A process uses one struct per role. */
struct pv_ring {
        struct pv_ring_hdr *hdr;
        uint8_t *data;
        uint32_t size;  /* power of two */
        uint32_t mask;
        uint32_t prod;  /* producer's private index */
        uint32_t cons;  /* consumer's private index */
        uint32_t seen;  /* the peer's index as last read and checked (message rings) */
        uint32_t told;  /* our index when the notify check last looked at the peer's flag */
        uint32_t resv;  /* payload length of the reserved, uncommitted record */
        int broken;     /* sticky: the peer wrote nonsense */
        bool one_kernel;/* the peer runs on our kernel, membarrier(2) works here (pv-atomic.h) */
        struct pv_fence_mode sleeps; /* ours, when one_kernel */
        struct pv_ring_stats stats;
};

static inline uint32_t pv_ring_align8(uint32_t n)
{
        return (n + 7u) & ~7u;
}

static inline bool pv_ring_size_valid(uint32_t size)
{
        return size >= PV_RING_MIN_SIZE && size <= PV_RING_MAX_SIZE && (size & (size - 1)) == 0;
}

/* Attach to a ring. The creator of fresh memory passes reset = true, which
 * zeroes the shared header; the other side passes false. Returns -EINVAL for
 * a size that is not a power of two in [PV_RING_MIN_SIZE, PV_RING_MAX_SIZE]. */
static inline int pv_ring_init(struct pv_ring *r, void *hdr, void *data, uint32_t size, bool reset)
{
        if (!pv_ring_size_valid(size))
                return -EINVAL;
        memset(r, 0, sizeof(*r));
        r->hdr = (struct pv_ring_hdr *)hdr;
        r->data = (uint8_t *)data;
        r->size = size;
        r->mask = size - 1;
        if (reset)
                memset(hdr, 0, sizeof(struct pv_ring_hdr));
        return 0;
}

/* Both sides run on one kernel (pvd's hypervisor backend says so): a side
 * that sleeps rarely then calls membarrier(2) before its sleeps, and the
 * other side's notify checks skip their fence (see "asymmetric fences" in
 * pv-atomic.h). Either side may say it or not: a side that does not fences
 * and never asks the other to skip. Before the ring is used. */
static inline void pv_ring_set_one_kernel(struct pv_ring *r, bool one_kernel)
{
        r->one_kernel = pv_fence_register(one_kernel);
        pv_fence_mode_init(&r->sleeps);
        r->sleeps.at = r->stats.msgs;
}

/* A side joining memory that held an earlier generation of a pair of rings
 * (the ivshmem backend): write again the words it owns, the producer's of
 * the ring it sends on and the consumer's of the one it reads, so that a
 * late store of the last generation's is never taken for this one's. The
 * peer must not use the rings before a release store that follows. */
static inline void pv_ring_hdr_rejoin(struct pv_ring_hdr *tx, struct pv_ring_hdr *rx)
{
        ring_store_relaxed(&tx->prod, 0);
        ring_store_relaxed(&tx->prod_wait, 0);
        ring_store_relaxed(&rx->cons, 0);
        ring_store_relaxed(&rx->cons_wait, 0);
        ring_store_relaxed(&tx->prod_barrier, 0);
        ring_store_relaxed(&rx->cons_barrier, 0);
}

/* Largest payload one record can carry. */
static inline uint32_t pv_ring_max_msg(const struct pv_ring *r)
{
        return r->size - PV_RING_REC_HDR;
}

static inline int pv_ring_fail(struct pv_ring *r)
{
        r->broken = 1;
        return -EPROTO;
}

/* ---- producer ---------------------------------------------------------- */

/* Read the consumer's index again (one acquire load) and check it: it lies
 * between the one seen last and ours, on a record boundary. 0 or -EPROTO. */
static inline int pv_ring_prod_refresh(struct pv_ring *r)
{
        if (r->broken)
                return -EPROTO;
        uint32_t c = ring_load_acquire(&r->hdr->cons);
        if ((uint32_t)(c - r->seen) > (uint32_t)(r->prod - r->seen) || ((r->prod - c) & 7u))
                return pv_ring_fail(r);
        r->seen = c;
        return 0;
}

/* Bytes the producer may still write, or -EPROTO if the consumer's index is
 * impossible. Reads the consumer's index again. */
static inline int64_t pv_ring_prod_free(struct pv_ring *r)
{
        if (pv_ring_prod_refresh(r) < 0)
                return -EPROTO;
        return r->size - (r->prod - r->seen);
}

/* Reserve room for a record of len payload bytes; *payload points where the
 * caller writes them, then pv_ring_commit() publishes. 0, -EAGAIN (full:
 * see pv_ring_prod_prepare_sleep), -EMSGSIZE, -EPROTO. The consumer's index
 * is read only when the copy we hold leaves too little room. */
static inline int pv_ring_reserve(struct pv_ring *r, uint32_t len, void **payload)
{
        if (r->broken)
                return -EPROTO;
        if (len > pv_ring_max_msg(r))
                return -EMSGSIZE;
        uint32_t need = PV_RING_REC_HDR + pv_ring_align8(len);
        uint32_t pos = r->prod & r->mask;
        uint32_t tail = r->size - pos;
        uint64_t want = tail < need ? (uint64_t)tail + need : need;
        uint32_t avail = r->size - (r->prod - r->seen);
        if (avail < want) {
                if (pv_ring_prod_refresh(r) < 0)
                        return -EPROTO;
                avail = r->size - (r->prod - r->seen);
        }
        if (tail < need) {
                /* The record does not fit before the end: pad to the start
                 * as soon as the tail is free, even if the record itself
                 * must still wait for room. */
                if (tail > avail)
                        return -EAGAIN;
                ring_store_relaxed((uint32_t *)(r->data + pos), PV_RING_PAD);
                ring_store_relaxed((uint32_t *)(r->data + pos + 4), 0);
                r->prod += tail;
                ring_store_release(&r->hdr->prod, r->prod);
                avail -= tail;
                pos = 0;
        }
        if (need > avail)
                return -EAGAIN;
        ring_store_relaxed((uint32_t *)(r->data + pos), len);
        r->resv = len;
        *payload = r->data + pos + PV_RING_REC_HDR;
        return 0;
}

/* Publish the record reserved last, with its tag: one release store of our
 * index, to a line the consumer reads only when it has run out. */
static inline void pv_ring_commit(struct pv_ring *r, uint32_t tag)
{
        uint32_t pos = r->prod & r->mask;
        ring_store_relaxed((uint32_t *)(r->data + pos + 4), tag);
        r->prod += PV_RING_REC_HDR + pv_ring_align8(r->resv);
        r->stats.msgs++;
        ring_store_release(&r->hdr->prod, r->prod);
}

/* Copy one message into the ring. 0, -EAGAIN, -EMSGSIZE or -EPROTO. */
static inline int pv_ring_send(struct pv_ring *r, uint32_t tag, const void *buf, uint32_t len)
{
        void *p;
        int rc = pv_ring_reserve(r, len, &p);
        if (rc < 0)
                return rc;
        if (len)        /* buf may be NULL for an empty message */
                memcpy(p, buf, len);
        pv_ring_commit(r, tag);
        return 0;
}

/* After one or more sends, and before sleeping: true if the consumer is
 * asleep and needs an xIRQ. At most one true per sleep of the consumer. */
static inline bool pv_ring_prod_notify(struct pv_ring *r)
{
        /* Nothing published since the last look: the consumer cannot be
         * waiting for it (a sleep it prepared since then re-checked prod),
         * and the fence is saved. */
        if (r->prod == r->told) {
                r->stats.xirq_suppressed++;
                return false;
        }
        r->told = r->prod;
        if (r->one_kernel)
                pv_fence_busy(&r->hdr->prod_barrier, &r->sleeps, r->stats.msgs);
        pv_fence_wake(r->one_kernel, &r->hdr->cons_barrier);
        if (ring_load_relaxed(&r->hdr->cons_wait) && ring_exchange(&r->hdr->cons_wait, 0)) {
                r->stats.xirq_sent++;
                return true;
        }
        r->stats.xirq_suppressed++;
        return false;
}

/* Producer found the ring full and wants to sleep until `need` bytes are
 * free. Announces it, then re-checks: returns true if it must sleep (wait for
 * the consumer's xIRQ), false if room appeared meanwhile. Call
 * pv_ring_prod_notify() first (see "Sleeping" above). */
static inline bool pv_ring_prod_prepare_sleep(struct pv_ring *r, uint32_t need)
{
        ring_store_relaxed(&r->hdr->prod_wait, 1);
        pv_fence_sleep(r->one_kernel, &r->hdr->prod_barrier, &r->sleeps, r->stats.msgs);
        /* Byte rings share this: only the bounds are checked here, without
         * touching `seen`; a message ring's next reserve checks the rest. */
        uint32_t used = r->broken ? 0 : r->prod - ring_load_acquire(&r->hdr->cons);
        if (used > r->size)
                pv_ring_fail(r);
        if (r->broken || r->size - used >= need) {
                ring_store_relaxed(&r->hdr->prod_wait, 0);
                return false;
        }
        return true;
}

/* Free bytes the next pv_ring_reserve() of len payload bytes waits for: the
 * `need` argument of pv_ring_prod_prepare_sleep(). When the record does not
 * fit before the end of the data area, that is first the tail (for the pad
 * record), then the record itself. Never more than the ring size. */
static inline uint32_t pv_ring_room_for(const struct pv_ring *r, uint32_t len)
{
        uint32_t need = PV_RING_REC_HDR + pv_ring_align8(len);
        uint32_t tail = r->size - (r->prod & r->mask);
        return tail < need ? tail : need;
}

/* ---- consumer ---------------------------------------------------------- */

/* Read the producer's index again (one acquire load) and check it: it lies
 * ahead of ours by at most the ring, on a record boundary (so it never
 * moves back either: we consumed up to where it was). 0 or -EPROTO. */
static inline int pv_ring_cons_refresh(struct pv_ring *r)
{
        if (r->broken)
                return -EPROTO;
        uint32_t p = ring_load_acquire(&r->hdr->prod);
        uint32_t used = p - r->cons;
        if (used > r->size || (used & 7u) || used < r->seen - r->cons)
                return pv_ring_fail(r);
        r->seen = p;
        return 0;
}

/* Copy the next message out. 0 with *tag and *len set, -EAGAIN if empty,
 * -EPROTO if the producer wrote an impossible index or record, or a record
 * longer than cap (the protocol's maximum for this ring). The producer's
 * index is read only when the records seen last are all consumed. */
static inline int pv_ring_recv(struct pv_ring *r, uint32_t *tag, void *buf, uint32_t cap, uint32_t *len)
{
        if (r->broken)
                return -EPROTO;
        for (;;) {
                uint32_t used = r->seen - r->cons;
                if (used == 0) {
                        if (pv_ring_cons_refresh(r) < 0)
                                return -EPROTO;
                        used = r->seen - r->cons;
                        if (used == 0)
                                return -EAGAIN;
                }
                uint32_t pos = r->cons & r->mask;
                uint32_t l = shm_read32(r->data + pos);
                uint32_t t = shm_read32(r->data + pos + 4);
                if (l == PV_RING_PAD) {
                        /* A pad always sends us to position 0, and the
                         * producer never pads there (a whole ring fits any
                         * record): one at 0 is corruption. This also bounds
                         * the loop to one pad per call, so a peer that keeps
                         * publishing pads cannot hold us here. */
                        uint32_t skip = r->size - pos;
                        if (pos == 0 || skip > used)
                                return pv_ring_fail(r);
                        r->cons += skip;
                        ring_store_release(&r->hdr->cons, r->cons);
                        continue;
                }
                if (l > pv_ring_max_msg(r) || l > cap)
                        return pv_ring_fail(r);
                uint32_t rec = PV_RING_REC_HDR + pv_ring_align8(l);
                if (rec > used || rec > r->size - pos)
                        return pv_ring_fail(r);
                if (l)  /* buf may be NULL when only empty messages are expected */
                        memcpy(buf, r->data + pos + PV_RING_REC_HDR, l);
                r->cons += rec;
                r->stats.msgs++;
                ring_store_release(&r->hdr->cons, r->cons);
                *tag = t;
                *len = l;
                return 0;
        }
}

/* True if at least one record (or pad) is waiting; -EPROTO-safe (a broken
 * ring reports true so that the caller calls recv and sees the error). */
static inline bool pv_ring_cons_pending(struct pv_ring *r)
{
        /* The shared index, not `seen`: byte rings share this. A record
         * still cached means prod != cons too, unless the peer lied. */
        return r->broken || ring_load_acquire(&r->hdr->prod) != r->cons;
}

/* Consumer found the ring empty and wants to sleep. Returns true if it must
 * sleep (wait for the producer's xIRQ), false if data arrived meanwhile.
 * Call pv_ring_cons_notify() first (see "Sleeping" above). */
static inline bool pv_ring_cons_prepare_sleep(struct pv_ring *r)
{
        ring_store_relaxed(&r->hdr->cons_wait, 1);
        pv_fence_sleep(r->one_kernel, &r->hdr->cons_barrier, &r->sleeps, r->stats.msgs);
        if (pv_ring_cons_pending(r)) {
                ring_store_relaxed(&r->hdr->cons_wait, 0);
                return false;
        }
        return true;
}

/* After consuming, and before sleeping: true if the producer sleeps waiting
 * for room. */
static inline bool pv_ring_cons_notify(struct pv_ring *r)
{
        /* No room freed since the last look: a producer that sleeps since
         * then re-checked cons before it did, and waits for more. */
        if (r->cons == r->told) {
                r->stats.xirq_suppressed++;
                return false;
        }
        r->told = r->cons;
        if (r->one_kernel)
                pv_fence_busy(&r->hdr->cons_barrier, &r->sleeps, r->stats.msgs);
        pv_fence_wake(r->one_kernel, &r->hdr->prod_barrier);
        if (ring_load_relaxed(&r->hdr->prod_wait) && ring_exchange(&r->hdr->prod_wait, 0)) {
                r->stats.xirq_sent++;
                return true;
        }
        r->stats.xirq_suppressed++;
        return false;
}

#endif
