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

static inline const msgpack_object *vt_get(const msgpack_object *m, const char *key)
{
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < m->via.map.size; i++) {
                const msgpack_object *k = &m->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
                    memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
                        return &m->via.map.ptr[i].val;
        }
        return NULL;
}

/* Sessions and channels vm's pvd holds on all its VRPQ vlinks, or -1. */
static inline int vt_held(struct pvt_platform *p, const char *vm)
{
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 4096);
        int n = -1;
        if (pvt_stat(p, vm, "vrpq", &z, &doc) == 0) {
                n = 0;
                const msgpack_object *vls = vt_get(&doc, "vlinks");
                for (uint32_t i = 0; vls && i < vls->via.array.size; i++) {
                        const msgpack_object *st = vt_get(&vls->via.array.ptr[i], "stat");
                        const msgpack_object *c = vt_get(st, "channels"), *s = vt_get(st, "sessions");
                        n += (c ? (int)c->via.u64 : 0) + (s ? (int)s->via.array.size : 0);
                }
        }
        msgpack_zone_destroy(&z);
        return n;
}

/* Wait until none of the VMs' pvds holds a session or channel: 0, or the
 * number still held after timeout_ms. */
static inline int vt_wait_idle(struct pvt_platform *p, const char *const *vms, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        for (;;) {
                int n = 0;
                for (int i = 0; vms[i]; i++) {
                        int h = vt_held(p, vms[i]);
                        n += h < 0 ? 1000 : h;
                }
                if (n == 0 || pvt_now_ms() > deadline)
                        return n;
                vt_sleep_ms(10);
        }
}

#endif
