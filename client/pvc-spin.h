/* libpvclient: polling a little before sleeping (internal). */
#ifndef PVC_SPIN_H
#define PVC_SPIN_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t pvc_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void pvc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
}

/* Between bursts of polling, spun_ns into it: once the other side is late,
 * let another task of this CPU run. The side we wait for may be queued
 * behind us (wake-ups tend to put the two ends of a pair on one CPU); an
 * answer that comes in time (a round trip between two running sides takes
 * well under a microsecond) costs no system call. */
#define PVC_SPIN_YIELD_NS 2000u

static inline void pvc_spin_yield(uint64_t spun_ns)
{
        if (spun_ns >= PVC_SPIN_YIELD_NS)
                sched_yield();
}

/* This thread's CPU plus one, for a peer's hint (0: unknown). */
static inline uint32_t pvc_cpu_hint(void)
{
        int c = sched_getcpu();
        return c < 0 ? 0u : (uint32_t)c + 1u;
}

/* Between bursts of polling for a peer whose last CPU hint is peer_cpu
 * (ours: my_cpu; 0: unknown): yield at once when the two are one CPU (the
 * peer cannot answer while we poll), else as pvc_spin_yield. */
static inline void pvc_spin_yield_to(uint64_t spun_ns, uint32_t my_cpu, uint32_t peer_cpu)
{
        if (my_cpu != 0 && peer_cpu == my_cpu)
                sched_yield();
        else
                pvc_spin_yield(spun_ns);
}

/* How long a waiter polls before it sleeps, learnt from its last waits.
 * Polling pays only while the other side runs and answers soon: a wait
 * that polled in vain halves the budget (down to PVC_SPIN_MIN_NS), so a
 * side whose peer is preempted, asleep or busy for longer stops taking a
 * CPU from it (and from the peer, when they share one); an answer that
 * came while polling sets the budget to four times what it took (up to
 * the configured maximum). Racy updates from several threads only move
 * the guess. */
#define PVC_SPIN_MIN_NS 4000u

static inline uint64_t pvc_spin_budget(const uint64_t *budget, uint64_t max_ns)
{
        uint64_t b = __atomic_load_n(budget, __ATOMIC_RELAXED);
        return b && b < max_ns ? b : max_ns;
}

static inline void pvc_spin_learn(uint64_t *budget, uint64_t max_ns, bool answered, uint64_t spun_ns)
{
        uint64_t b = pvc_spin_budget(budget, max_ns);
        if (answered)
                b = spun_ns * 4 > b ? spun_ns * 4 : b;
        else
                b /= 2;
        if (b < PVC_SPIN_MIN_NS)
                b = PVC_SPIN_MIN_NS;
        __atomic_store_n(budget, b < max_ns ? b : max_ns, __ATOMIC_RELAXED);
}

/* Nanoseconds to poll: the environment variable's microseconds (at most one
 * second), else def_us; never on one CPU (the other side could not run). */
static inline uint64_t pvc_spin_ns(const char *env, unsigned long def_us)
{
        unsigned long us = def_us;
        const char *e = getenv(env);
        if (e && *e) {
                char *end;
                unsigned long v = strtoul(e, &end, 10);
                if (!*end && v <= 1000000)
                        us = v;
        }
        if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
                us = 0;
        return (uint64_t)us * 1000u;
}

#endif
