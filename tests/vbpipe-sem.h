/* Support for the vbpipe tests: the platform (test-2clients: vbpipe0 and
 * vbpipe1 between vm2 and vm4), two "programs" per test as forked children
 * (A in vm2, B in vm4) with a token channel between them, byte patterns,
 * and the driver's statistics. */
#ifndef VBPIPE_SEM_H
#define VBPIPE_SEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pvtest.h"

#define P0 "vbpipe0"
#define P1 "vbpipe1"

extern struct pvt_platform vbt_plat;
extern char vbt_wake[2][64];      /* PVD_WAKE_LOCK of vm2's and vm4's pvd */

/* What the children share with each other and the parent. */
struct vbt_shared {
        volatile int a_opened;
        volatile uint64_t count;
        volatile int sigpipes;
};
extern struct vbt_shared *vbt_sh;

/* In a child: fail with a message naming the line (the parent asserts
 * that the child exited 0). */
#define CK(cond)                                                                                                  \
        do {                                                                                                      \
                if (!(cond)) {                                                                                    \
                        fprintf(stderr, "%s:%d: %s failed (errno: %m)\n", __FILE__, __LINE__, #cond);            \
                        return 1;                                                                                 \
                }                                                                                                 \
        } while (0)

int vbt_suite_init(void);
int vbt_suite_fini(void);

/* Fork A in vm2 and B in vm4 (either may be NULL), each under a 30 s
 * alarm with SIGPIPE ignored; wait for both. Statuses as pvt_wait. */
void vbt_run(int (*a)(void), int (*b)(void), int *sa, int *sb);
/* Fork one child in vm (its exit status is collected by pvt_wait). */
pid_t vbt_spawn(const char *vm, int (*fn)(void));

/* Token channel between A and B (in the children). */
void vbt_tell(void);
bool vbt_hear(int timeout_ms);
void vbt_tell_u64(uint64_t v);
bool vbt_hear_u64(uint64_t *v, int timeout_ms);

/* Byte i of pattern seed. */
static inline uint8_t vbt_pat(unsigned seed, uint64_t i)
{
        return (uint8_t)(i * 131u + (i >> 9) + seed * 0x35u);
}
void vbt_fill(uint8_t *buf, size_t n, unsigned seed, uint64_t off);
bool vbt_check(const uint8_t *buf, size_t n, unsigned seed, uint64_t off);

/* Write all of buf (blocking fd). */
bool vbt_write_all(int fd, const void *buf, size_t n);
/* Read exactly n bytes (or until EOF/error); returns bytes read. */
size_t vbt_read_n(int fd, void *buf, size_t n);
/* Write pattern bytes without blocking until the pipe stays full (no
 * POLLOUT for 500 ms). Returns the bytes written. */
uint64_t vbt_fill_pipe(int fd, unsigned seed);
/* poll fd for events within timeout_ms: the revents. */
int vbt_poll(int fd, int events, int timeout_ms);
/* Poll until all of events are there (or timeout_ms): the last revents. */
int vbt_wait_ev(int fd, int events, int timeout_ms);

/* Statistics of pipe on vm (pvctl stat vbpipe): a string or a number of
 * the pipe's map, or of its sub-map sub (NULL: the pipe's map). */
bool vbt_stat_str(const char *vm, const char *pipe, const char *sub, const char *key, char *out, size_t cap);
bool vbt_stat_u64(const char *vm, const char *pipe, const char *sub, const char *key, uint64_t *out);
/* Wait (timeout_ms) until the local end of pipe on vm is in state. */
bool vbt_wait_state(const char *vm, const char *pipe, const char *sub, const char *state, int timeout_ms);
/* Both pipes closed on both sides (between tests). */
bool vbt_idle(void);

/* vbpipeOpen, saying why on stderr when it fails. */
int vbt_open(const char *name, int flags);

/* test-vbpipe-conv.c */
void test_busy(void);
void test_abandoned(void);
void test_reopen(void);
void test_independent(void);
void test_one_way(void);
void test_churn(void);

/* test-vbpipe-direct.c */
void test_direct_pingpong(void);
void test_direct_small_writes(void);
void test_direct_eof(void);
void test_direct_seen(void);
void test_direct_loop_reader(void);
void test_direct_event_loop_reader(void);
void test_direct_liar(void);

/* test-vbpipe-stat.c */
void test_wakeup(void);
void test_stat(void);

#endif
