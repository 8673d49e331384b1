/* Named memory-ordering helpers for indices shared between processes and VMs.
 * Every cross-VM index access goes through one of these, so the pairing of
 * acquire and release is visible at each use. */
#ifndef PV_ATOMIC_H
#define PV_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/membarrier.h>
#include <sys/syscall.h>
#endif

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

/* ---- asymmetric fences, for two sides on one kernel --------------------------
 *
 * Notification suppression is a Dekker pair: the waker publishes its index,
 * then reads the sleeper's flag; the sleeper raises its flag, then reads the
 * index again. Each side needs a full fence between its store and its load,
 * or both can miss the other and the sleeper sleeps on a message. The
 * waker's fence is paid per message (a store-buffer drain onto a line the
 * peer polls: about 20 ns, three quarters of a 16 B message's cost), the
 * sleeper's once per sleep.
 *
 * When both processes run on one kernel, membarrier(2) moves the whole cost
 * to the sleeper. Its MEMBARRIER_CMD_GLOBAL_EXPEDITED makes every running
 * thread of every process registered for it pass a full barrier before the
 * call returns (a thread not running passed one when it was switched out),
 * so the waker's store is visible to the sleeper's re-check, or the
 * sleeper's flag to the waker's load. The waker keeps only a compiler
 * barrier.
 *
 * The rule, per ring or queue, decided once when a side attaches:
 *   one_kernel  both sides run on this kernel (pvd says so, from its
 *               hypervisor backend's "one_kernel" capability; the peer's
 *               pvd says the same to the peer);
 *   the sleeper calls pv_fence_sleep(one_kernel), since its peer may skip;
 *   the waker calls pv_fence_wake(light), where light =
 *               pv_fence_light(one_kernel): one kernel, and this process is
 *               registered, so the sleeper's call reaches it.
 * Across kernels (ivshmem between VMs) both are full fences. PV_LIGHT_FENCE=0
 * in a process's environment keeps its wakes fenced (its sleeps still call
 * membarrier: a peer may skip). A process whose membarrier(2) is refused
 * (a seccomp filter) fences, and its peers' wakes must then not skip: run
 * them with PV_LIGHT_FENCE=0 too. */

/* True if this process may skip its waker's fence on a one-kernel ring:
 * registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED (idempotent, cheap: call
 * it at attach) and not told otherwise by PV_LIGHT_FENCE=0. */
static inline bool pv_fence_light(bool one_kernel)
{
#if defined(__linux__) && defined(SYS_membarrier)
        if (!one_kernel)
                return false;
        const char *e = getenv("PV_LIGHT_FENCE");
        if (e && strcmp(e, "0") == 0)
                return false;
        return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
#else
        (void)one_kernel;
        return false;
#endif
}

/* The waker's step, between publishing and reading the sleeper's flag. */
static inline void pv_fence_wake(bool light)
{
        if (light)
                atomic_signal_fence(memory_order_seq_cst);
        else
                ring_full_fence();
}

/* The sleeper's step, between raising its flag and reading the index again:
 * on one kernel, a barrier in every registered process (the syscall is a
 * full fence for the caller too). */
static inline void pv_fence_sleep(bool one_kernel)
{
#if defined(__linux__) && defined(SYS_membarrier)
        if (one_kernel && syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)
                return;
#else
        (void)one_kernel;
#endif
        ring_full_fence();
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
