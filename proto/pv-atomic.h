/* Named memory-ordering helpers for indices shared between processes and VMs.
 * Every cross-VM index access goes through one of these, so the pairing of
 * acquire and release is visible at each use. */
#ifndef PV_ATOMIC_H
#define PV_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

/* Shared words are plain uint32_t in layouts (so layouts are plain C structs
 * usable by any language); we access them as atomics through these casts. */
#define PV_A32(p) ((_Atomic uint32_t *)(p))
#define PV_A64(p) ((_Atomic uint64_t *)(p))

static inline uint32_t ring_load_acquire(const uint32_t *p)
{
        return atomic_load_explicit(PV_A32(p), memory_order_acquire);
}

static inline uint32_t ring_load_relaxed(const uint32_t *p)
{
        return atomic_load_explicit(PV_A32(p), memory_order_relaxed);
}

static inline void ring_store_release(uint32_t *p, uint32_t v)
{
        atomic_store_explicit(PV_A32(p), v, memory_order_release);
}

static inline void ring_store_relaxed(uint32_t *p, uint32_t v)
{
        atomic_store_explicit(PV_A32(p), v, memory_order_relaxed);
}

static inline uint32_t ring_exchange(uint32_t *p, uint32_t v)
{
        return atomic_exchange_explicit(PV_A32(p), v, memory_order_seq_cst);
}

/* Compare-and-swap (sequentially consistent): true if *p was `expect` and
 * is now v. */
static inline int ring_cas(uint32_t *p, uint32_t expect, uint32_t v)
{
        return atomic_compare_exchange_strong_explicit(PV_A32(p), &expect, v, memory_order_seq_cst,
                                                       memory_order_seq_cst);
}

static inline void shm_store64(void *p, uint64_t v)
{
        atomic_store_explicit(PV_A64(p), v, memory_order_relaxed);
}

/* Full fence: orders a store of our own index or flag before a load of the
 * peer's flag or index (the Dekker step of notification suppression). */
static inline void ring_full_fence(void)
{
        atomic_thread_fence(memory_order_seq_cst);
}

/* Read a value the peer may be rewriting, exactly once, into a local. */
static inline uint32_t shm_read32(const void *p)
{
        return atomic_load_explicit(PV_A32(p), memory_order_relaxed);
}

static inline uint64_t shm_read64(const void *p)
{
        return atomic_load_explicit(PV_A64(p), memory_order_relaxed);
}

#define PV_CACHELINE 64

#endif
