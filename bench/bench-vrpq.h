/* What bench-vrpq's files share: the procedures the bench programs call and
 * the scaling run (bench-vrpq-scale.c). */
#ifndef BENCH_VRPQ_H
#define BENCH_VRPQ_H

#include <stdbool.h>

#include "pv/vrpq.h"

#define PROC_INT        VRPQ_PROC_ID(2, 2)      /* in: a 4-byte int */
#define PROC_ECHO       VRPQ_PROC_ID(2, 3)      /* sync; in: a 4-byte int, out: the same */
#define VRPQ_SCALE_MAX  512                     /* sessions in one --sessions point */

/* bench-vrpq --sessions LIST: one point per session count. The exit status. */
int vrpq_scale(const char *list, double seconds, int rounds, bool json);

#endif
