/* Helpers of the VRPQ integration tests: "programs" are forked children
 * running in a VM of the test platform (pvt_spawn); they check with CHK
 * and exit with the failing line, and share a page with the test. */
#ifndef VRPQ_TEST_H
#define VRPQ_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pv/vrpq.h"
#include "pvtest.h"

/* In a child: fail with the line number (as the exit status) and a reason. */
#define CHK(cond)                                                                                   \
        do {                                                                                        \
                if (!(cond)) {                                                                      \
                        fprintf(stderr, "%s:%d: %s failed (last error: %s)\n", __FILE__, __LINE__,  \
                                #cond, pvLastError());                                              \
                        return __LINE__ % 200 + 1;                                                  \
                }                                                                                   \
        } while (0)

#define CHK_OK(call)                                                                                \
        do {                                                                                        \
                int rc_ = (call);                                                                   \
                if (rc_ != 0) {                                                                     \
                        fprintf(stderr, "%s:%d: %s = %d (%s: %s)\n", __FILE__, __LINE__, #call,     \
                                rc_, pvStrError(rc_), pvLastError());                               \
                        return __LINE__ % 200 + 1;                                                  \
                }                                                                                   \
        } while (0)

/* A page shared by the test and its children (MAP_SHARED before fork). */
struct vt_shared {
        volatile int flag[16];
        volatile int64_t v[64];
};

static inline struct vt_shared *vt_shared_new(void)
{
        void *p = mmap(NULL, sizeof(struct vt_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

static inline void vt_sleep_ms(int ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Wait (in a child or the test) until *flag >= value: 0, or -ETIMEDOUT. */
static inline int vt_wait_flag(volatile int *flag, int value, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) < value) {
                if (pvt_now_ms() > deadline)
                        return -ETIMEDOUT;
                vt_sleep_ms(2);
        }
        return 0;
}

static inline void vt_set_flag(volatile int *flag, int value)
{
        __atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

static inline void vt_inc_flag(volatile int *flag)
{
        __atomic_add_fetch(flag, 1, __ATOMIC_ACQ_REL);
}

#endif
