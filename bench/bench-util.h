/* What every bench shares: the clock, the median and spread of repeated
 * rounds, and the targets each bench checks (a figure against its limit or
 * peer measured in the same run), printed as a table and as JSON in the one
 * form bench/run collects. Header-only; each bench is one program. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench_cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* The median of n rounds and their spread (lowest, highest). */
struct bench_stat {
        double med, lo, hi;
        int n;
};

static inline struct bench_stat bench_stat_of(const double *v, int n)
{
        struct bench_stat s = { 0, 0, 0, 0 };
        double tmp[64];
        if (n <= 0 || n > 64)
                return s;
        memcpy(tmp, v, sizeof(double) * (size_t)n);
        qsort(tmp, (size_t)n, sizeof(double), bench_cmp_double);
        s.med = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
        s.lo = tmp[0];
        s.hi = tmp[n - 1];
        s.n = n;
        return s;
}

/* Spread as "lo-hi" relative to the median, e.g. "-4%/+9%". */
static inline const char *bench_spread(struct bench_stat s, char *buf, size_t len)
{
        if (s.n < 2 || s.med == 0)
                snprintf(buf, len, "-");
        else
                snprintf(buf, len, "-%.0f%%/+%.0f%%", (s.med - s.lo) / s.med * 100, (s.hi - s.med) / s.med * 100);
        return buf;
}

/* The p-th fraction (0..1) of v, sorted in place. */
static inline double bench_pct(double *v, size_t n, double p)
{
        if (!n)
                return 0;
        qsort(v, n, sizeof(double), bench_cmp_double);
        size_t i = (size_t)(p * (double)(n - 1) + 0.5);
        return v[i];
}

/* True if name contains one of the comma-separated words of list (--case). */
static inline bool bench_case_wanted(const char *name, const char *list)
{
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", list);
        for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save))
                if (strstr(name, w))
                        return true;
        return false;
}

/* ---- targets ------------------------------------------------------------------- */

#define BENCH_TARGETS_MAX 32

/* figure / peer, compared with goal: at least (higher) or at most. */
struct bench_target {
        char figure[96], peer[96], unit[16];
        double value, peer_value, ratio, goal;
        bool higher;
        bool ok;            /* both were measured */
};

static struct bench_target bench_targets[BENCH_TARGETS_MAX];
static int bench_ntargets;

static inline void bench_target(const char *figure, double value, const char *peer, double peer_value,
                                const char *unit, bool higher, double goal)
{
        if (bench_ntargets >= BENCH_TARGETS_MAX)
                return;
        struct bench_target *t = &bench_targets[bench_ntargets++];
        snprintf(t->figure, sizeof(t->figure), "%s", figure);
        snprintf(t->peer, sizeof(t->peer), "%s", peer);
        snprintf(t->unit, sizeof(t->unit), "%s", unit);
        t->value = value;
        t->peer_value = peer_value;
        t->ok = value > 0 && peer_value > 0;
        t->ratio = t->ok ? value / peer_value : 0;
        t->goal = goal;
        t->higher = higher;
}

static inline bool bench_target_met(const struct bench_target *t)
{
        return t->ok && (t->higher ? t->ratio >= t->goal : t->ratio <= t->goal);
}

static inline void bench_print_targets(void)
{
        if (!bench_ntargets)
                return;
        printf("\n%-46s %16s  %-34s %16s %8s %8s %4s\n", "target: figure", "value", "limit or peer", "value",
               "ratio", "goal", "met");
        for (int i = 0; i < bench_ntargets; i++) {
                const struct bench_target *t = &bench_targets[i];
                printf("%-46s %10.4g %-5s  %-34s %10.4g %-5s %7.2fx %s%5.2fx %4s\n", t->figure, t->value, t->unit,
                       t->peer, t->peer_value, t->unit, t->ratio, t->higher ? ">=" : "<=", t->goal,
                       !t->ok ? "n/a" : bench_target_met(t) ? "yes" : "NO");
        }
}

/* The "targets" member of a bench's JSON object (no leading comma). */
static inline void bench_json_targets(void)
{
        printf("\"targets\": [");
        for (int i = 0; i < bench_ntargets; i++) {
                const struct bench_target *t = &bench_targets[i];
                printf("%s\n  {\"figure\": \"%s\", \"value\": %.6g, \"peer\": \"%s\", \"peer_value\": %.6g, "
                       "\"unit\": \"%s\", \"ratio\": %.4f, \"goal\": \"%s %.2f\", \"met\": %s}",
                       i ? "," : "", t->figure, t->value, t->peer, t->peer_value, t->unit, t->ratio,
                       t->higher ? ">=" : "<=", t->goal, !t->ok ? "null" : bench_target_met(t) ? "true" : "false");
        }
        printf("\n]");
}

#endif
