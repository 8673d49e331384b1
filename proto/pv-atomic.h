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
 * When both processes run on one kernel, membarrier(2) can move the cost to
 * the sleeper: its MEMBARRIER_CMD_GLOBAL_EXPEDITED makes every running
 * thread of every process registered for it pass a full barrier before the
 * call returns (a thread not running passed one when it was switched out),
 * so the waker's store is visible to the sleeper's re-check, or the
 * sleeper's flag to the waker's load, and the waker needs only a compiler
 * barrier. But that call interrupts every CPU running a registered process
 * (about 10 us here, in a VM), so it pays only for a sleeper that sleeps
 * rarely: one that consumed at least PV_FENCE_LIGHT_AT messages since its
 * last sleep, against the fences they would have cost.
 *
 * So each sleeper decides at each sleep, and publishes its choice in a word
 * of its own beside its sleep flag (its "barrier word"): 1 while its sleeps
 * call membarrier(2), else 0. The waker reads that word after publishing,
 * and skips its fence only when it is 1 (and it is registered itself: on
 * one kernel). Changing the word either way takes a membarrier(2) in that
 * sleep: a waker that read the old 1 published before the barrier it
 * passed, so the sleeper's re-check sees it; every later wake reads the new
 * word. A sleeper's first sleep after it attached counts as a change, so a
 * stale word in reused memory is never trusted. A side that moves
 * PV_FENCE_LIGHT_AT without sleeping at all publishes 1 at once
 * (pv_fence_busy): its next sleep calls membarrier(2) anyway. A peer that
 * lies in its word only risks its own wake-ups. Across kernels (ivshmem
 * between VMs) the word stays 0 and both sides fence. */

#define PV_FENCE_LIGHT_AT    1024u    /* moved since the last sleep: membarrier from now */
#define PV_FENCE_HEAVY_BELOW 256u     /* moved since the last sleep: fences again */

/* The sleeper's choice as published: fences, membarrier(2), or none yet
 * (its first sleep publishes one). */
enum { PV_FENCE_WORD_FENCED = 0, PV_FENCE_WORD_BARRIER = 1, PV_FENCE_UNKNOWN = 2 };

/* On one kernel: registers this process for MEMBARRIER_CMD_GLOBAL_EXPEDITED
 * (idempotent and cheap: call it where a ring or queue is attached); true
 * if it may then skip its waker's fences and call membarrier(2) before its
 * sleeps. False elsewhere, or where membarrier(2) is missing or refused (a
 * seccomp filter): that side fences and publishes 0. */
static inline bool pv_fence_register(bool one_kernel)
{
#if defined(__linux__) && defined(SYS_membarrier)
        return one_kernel && syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
#else
        (void)one_kernel;
        return false;
#endif
}

/* The waker's step, between publishing and reading the sleeper's flag:
 * peer_word is the sleeper's barrier word. */
static inline void pv_fence_wake(bool one_kernel, const uint32_t *peer_word)
{
        if (one_kernel && ring_load_relaxed(peer_word) == PV_FENCE_WORD_BARRIER)
                atomic_signal_fence(memory_order_seq_cst);
        else
                ring_full_fence();
}

/* A barrier in every registered process; a full fence if refused. */
static inline void pv_membarrier(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
        if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)
                return;
#endif
        ring_full_fence();
}

/* The sleeper's mode, private to it. */
struct pv_fence_mode {
        uint32_t state;         /* as published; PV_FENCE_UNKNOWN before the first sleep
                                 * (stored relaxed: may be peeked at outside its lock) */
        uint64_t at;            /* the count at the last sleep */
        uint32_t light_at;      /* PV_FENCE_LIGHT_AT (tests: 0, always membarrier) */
        uint32_t heavy_below;   /* PV_FENCE_HEAVY_BELOW */
};

static inline void pv_fence_mode_init(struct pv_fence_mode *m)
{
        m->state = PV_FENCE_UNKNOWN;
        m->at = 0;
        m->light_at = PV_FENCE_LIGHT_AT;
        m->heavy_below = PV_FENCE_HEAVY_BELOW;
}

/* The mode the next sleep wants, given what moved since the last one. */
static inline uint32_t pv_fence_want(const struct pv_fence_mode *m, uint64_t moved)
{
        if (moved >= m->light_at)
                return PV_FENCE_WORD_BARRIER;
        if (moved < m->heavy_below)
                return PV_FENCE_WORD_FENCED;
        return m->state == PV_FENCE_WORD_BARRIER ? PV_FENCE_WORD_BARRIER : PV_FENCE_WORD_FENCED;
}

/* A side that has not slept for light_at moves may publish at once that
 * its sleeps will call membarrier(2) (safe at any time: the next sleep
 * does), so that a peer's wakes stop fencing for a side that never sleeps.
 * True if it did. Same thread rule as pv_fence_sleep. */
static inline bool pv_fence_busy(uint32_t *word, struct pv_fence_mode *m, uint64_t count)
{
        if (m->state == PV_FENCE_WORD_BARRIER || count - m->at < m->light_at)
                return false;
        ring_store_relaxed(word, PV_FENCE_WORD_BARRIER);
        ring_store_relaxed(&m->state, PV_FENCE_WORD_BARRIER);
        return true;
}

/* The sleeper's step, between raising its flag and reading the index
 * again. word: its barrier word; count: a running count of what the
 * waker's wakes published (messages consumed, say). One thread per mode. */
static inline void pv_fence_sleep(bool one_kernel, uint32_t *word, struct pv_fence_mode *m, uint64_t count)
{
        if (!one_kernel) {
                ring_full_fence();
                return;
        }
        uint32_t want = pv_fence_want(m, count - m->at);
        m->at = count;
        if (want != m->state) {
                ring_store_relaxed(word, want);
                ring_store_relaxed(&m->state, want);
                pv_membarrier();
        } else if (want == PV_FENCE_WORD_BARRIER) {
                pv_membarrier();
        } else {
                ring_full_fence();
        }
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
