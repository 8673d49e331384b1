/* Scaling benches (bench-vrpq --sessions, bench-vbpipe --sessions): a
 * platform whose device tree is written for the run, and the CPU time the
 * pvds spend. */
#ifndef BENCH_SCALE_H
#define BENCH_SCALE_H

#include <stdbool.h>
#include <sys/types.h>

#include "pvtest.h"

#define BENCH_SCALE_POINTS 8    /* session counts in one --sessions list */

/* Parse "1,16,256" into n[], at most BENCH_SCALE_POINTS values in [1, max].
 * The count, or -1. */
int bench_sessions_parse(const char *list, int max, int n[BENCH_SCALE_POINTS]);

#define BENCH_SCALE_ROUNDS 16   /* --rounds at most */

/* One point of a scaling run: n sessions (or pipes) at once. run() fills
 * one round's figures; bench_scale_run() leaves in them the median of the
 * rounds, and the lowest and highest rate in rate_lo and rate_hi. */
struct bench_scale_point {
        int n;
        bool ok;               /* every round ran */
        double rate;           /* operations per second, all of them together */
        double pvd_ns;         /* the pvds' CPU nanoseconds per operation (-1: unknown) */
        double mb_per_s;       /* bytes moved, where the bench moves bytes */
        double rate_lo, rate_hi;
        int rounds;
};

/* Run the points of list (numbers from 1 to max; run fills each) rounds
 * times, interleaved (every point once, then again), raising the fd limit
 * first; *one is the 1-session point and *big the largest other one, each
 * NULL when missing or failed. The number of points, or -1 after saying on
 * stderr that the list is wrong (prog: whose message). */
int bench_scale_run(const char *prog, const char *list, int max, int rounds,
                    void (*run)(struct bench_scale_point *), struct bench_scale_point pts[BENCH_SCALE_POINTS],
                    const struct bench_scale_point **one, const struct bench_scale_point **big);

/* "-12%/+30%": the spread of a point's rate around its median. */
const char *bench_scale_spread(const struct bench_scale_point *pt, char *buf, size_t len);

/* A temporary platform of VMs vm2 and vm3 whose vdevs are dts_vm2 and
 * dts_vm3 (node text), started: both pvds ready and every vlink ON.
 * Needs dtc on the PATH. 0, or -1 with a message on stderr. */
int bench_plat_start(struct pvt_platform *p, const char *dts_vm2, const char *dts_vm3, int nvlinks);

/* The same for every pvd of the platform. */
long long bench_pvd_cpu_ns(const struct pvt_platform *p);

/* Allow this process and its children (the pvds, the programs) as many fds
 * as the hard limit does: hundreds of sessions take a few each. */
void bench_raise_nofile(void);

#endif
