/* libpvclient: polling a little before sleeping (internal). */
#ifndef PVC_SPIN_H
#define PVC_SPIN_H

#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
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

/* CPU time this thread has used. A poller's budget counts in it: time
 * the poller spent yielded to the side it waits for (the two often share a
 * CPU) or preempted is not time it polled in vain. */
static inline uint64_t pvc_thread_cpu_ns(void)
{
        struct timespec ts;
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
                return pvc_now_ns();
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A poller that counts its budget in CPU time still sleeps after this many
 * budgets of wall time. */
#define PVC_SPIN_WALL_FACTOR 20u

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

/* A token of the kernel this process runs on (a hash of its boot id; 0:
 * unknown): two sides compare CPU hints only when their tokens match. */
static inline uint64_t pvc_kernel_token(void)
{
        static uint64_t token;
        uint64_t t = __atomic_load_n(&token, __ATOMIC_RELAXED);
        if (t)
                return t;
        char id[64] = "";
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        if (f) {
                if (!fgets(id, sizeof(id), f))
                        id[0] = 0;
                fclose(f);
        }
        t = 1469598103934665603ull;   /* FNV-1a */
        for (const char *p = id; *p && *p != '\n'; p++)
                t = (t ^ (uint8_t)*p) * 1099511628211ull;
        t = id[0] ? (t ? t : 1) : 0;
        __atomic_store_n(&token, t, __ATOMIC_RELAXED);
        return t;
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
 * that polled in vain halves the budget, and below PVC_SPIN_MIN_NS the
 * waiter stops polling (but for one short probe every PVC_SPIN_PROBE
 * waits), so a side whose peer is preempted, asleep or busy for longer
 * stops taking a CPU from it (and from the peer, when they share one); an
 * answer that came while polling sets the budget to four times what it
 * took (at least PVC_SPIN_MIN_NS, at most the configured maximum). Racy
 * updates from several threads only move the guess. */
#define PVC_SPIN_MIN_NS 4000u
#define PVC_SPIN_PROBE  16u

struct pvc_spin_learn {
        uint64_t budget;        /* ns; 0: not polling; UINT64_MAX: the maximum (nothing learnt yet) */
        uint32_t skipped;       /* waits that did not poll, for the probes */
};

static inline void pvc_spin_learn_init(struct pvc_spin_learn *l)
{
        l->budget = UINT64_MAX;
        l->skipped = 0;
}

/* Nanoseconds to poll in this wait (0: sleep at once). */
static inline uint64_t pvc_spin_budget(struct pvc_spin_learn *l, uint64_t max_ns)
{
        uint64_t b = __atomic_load_n(&l->budget, __ATOMIC_RELAXED);
        if (b == 0) {
                uint32_t k = __atomic_add_fetch(&l->skipped, 1, __ATOMIC_RELAXED);
                return k % PVC_SPIN_PROBE == 0 && max_ns ? (max_ns < PVC_SPIN_MIN_NS ? max_ns : PVC_SPIN_MIN_NS) : 0;
        }
        return b < max_ns ? b : max_ns;
}

static inline void pvc_spin_learned(struct pvc_spin_learn *l, uint64_t max_ns, bool answered, uint64_t spun_ns)
{
        uint64_t b = __atomic_load_n(&l->budget, __ATOMIC_RELAXED);
        b = b < max_ns ? b : max_ns;
        if (answered) {
                b = spun_ns * 4 > b ? spun_ns * 4 : b;
                b = b > PVC_SPIN_MIN_NS ? b : PVC_SPIN_MIN_NS;
                b = b < max_ns ? b : max_ns;
        } else {
                b = b / 2 >= PVC_SPIN_MIN_NS ? b / 2 : 0;
        }
        __atomic_store_n(&l->budget, b, __ATOMIC_RELAXED);
}

/* Nanoseconds to poll for a peer on another kernel: the environment
 * variable's microseconds (at most one second), else def_us; on one CPU
 * too, since that peer does not need ours to run. */
static inline uint64_t pvc_spin_ns_remote(const char *env, unsigned long def_us)
{
        unsigned long us = def_us;
        const char *e = getenv(env);
        if (e && *e) {
                char *end;
                unsigned long v = strtoul(e, &end, 10);
                if (!*end && v <= 1000000)
                        us = v;
        }
        return (uint64_t)us * 1000u;
}

/* Nanoseconds to poll for a peer on this kernel: the same, but never on
 * one CPU (the other side could not run). */
static inline uint64_t pvc_spin_ns(const char *env, unsigned long def_us)
{
        return sysconf(_SC_NPROCESSORS_ONLN) < 2 ? 0 : pvc_spin_ns_remote(env, def_us);
}

#endif
