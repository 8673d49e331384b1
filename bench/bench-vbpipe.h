/* What bench-vbpipe's files share: the scaling run (bench-vbpipe-scale.c). */
#ifndef BENCH_VBPIPE_H
#define BENCH_VBPIPE_H

#include <stdbool.h>

#define VBPIPE_SCALE_MAX 256    /* pipes in one --sessions point: a platform's most vlinks */

/* bench-vbpipe --sessions LIST: one point per pipe count. The exit status. */
int vbpipe_scale(const char *list, double seconds, int rounds, bool json);

#endif
