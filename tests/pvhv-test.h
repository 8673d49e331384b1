/* Test support for pvhv: a pvhv process on a platform in a temporary
 * directory (started once READY=1, stopped with SIGTERM and checked for
 * leftovers), its log, and peers that join its sockets through the
 * protocol client pvd uses (daemon/hv/ivshmem-sock.h).
 *
 * Environment (set by tests/meson.build): PVHV_BIN.
 */
#ifndef PVHV_TEST_H
#define PVHV_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hv/ivshmem-sock.h"
#include "pv-ivshmem.h"

struct pvhvt {
        pid_t pid;
        char dir[96];          /* temporary directory: the log, and sock/ */
        char sock_dir[112];    /* pvhv's --dir */
        char log[128];
        char dtb[512];
};

/* Start pvhv on dtb (a path) in a fresh temporary directory and wait for
 * its READY=1 (10 s). 0 or -errno. */
int pvhvt_start(struct pvhvt *p, const char *dtb);
/* SIGTERM, wait (5 s, then SIGKILL), remove the directory. Returns the
 * number of problems found (a kill was needed, a non-zero exit, a socket
 * or the lock left behind): a test asserts 0. */
int pvhvt_stop(struct pvhvt *p);
/* Times needle is in the log. */
int pvhvt_log_count(const struct pvhvt *p, const char *needle);
/* Wait up to timeout_ms until the log has needle at least count times. */
int pvhvt_wait_log(const struct pvhvt *p, const char *needle, int count, int timeout_ms);
/* Print the log on stderr (a test that failed shows what pvhv said). */
void pvhvt_show_log(const struct pvhvt *p);
/* DIR/LINK.VM.sock. */
const char *pvhvt_sock(const struct pvhvt *p, const char *link, const char *vm, char *buf, size_t len);

/* Join link as vm's peer and wait until ready (timeout_ms). 0 or -errno. */
int pvhvt_join(const struct pvhvt *p, const char *link, const char *vm, struct ivsock **out, int timeout_ms);
/* Read s until the events in want all came (accumulated in *got, may be
 * NULL), timeout_ms at most. 0, -ETIMEDOUT, or ivsock_read's error. */
int pvhvt_wait_ev(struct ivsock *s, unsigned want, unsigned *got, int timeout_ms);
/* Read whatever is there now, without waiting. Events seen, or < 0. */
int pvhvt_pump(struct ivsock *s);
/* The counter of an eventfd (0 when nothing rang it), non-blocking. */
uint64_t pvhvt_counter(int efd);
/* Wait up to timeout_ms for an eventfd to be rung; its counter, or 0. */
uint64_t pvhvt_wait_ring(int efd, int timeout_ms);
/* Map the header page of s's memory (read/write), or NULL. munmap it
 * with PV_IVSHM_PAGE. */
struct pv_ivshm_hdr *pvhvt_map_hdr(struct ivsock *s);
/* presence[side].present read from shared memory, waiting up to
 * timeout_ms for it to become want. 0 or -ETIMEDOUT. */
int pvhvt_wait_presence(const struct pv_ivshm_hdr *h, int side, uint32_t want, int timeout_ms);

/* Entries in /proc/PID/fd, or -1. */
int pvhvt_fd_count(pid_t pid);
long long pvhvt_now_ms(void);
void pvhvt_sleep_ms(int ms);

#endif
