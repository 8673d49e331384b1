/* What pvfuzz's parts share (pvfuzz.c: the device nodes and the run;
 * pvfuzz-emu.c: a vlink's emulated-hypervisor socket): a reproducible
 * random source, a pool of fds of many kinds to attach, datagram I/O that
 * closes whatever fds come back, and the workers' counters. */
#ifndef PVFUZZ_H
#define PVFUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "campaign.h"

#define FZ_FDS_MAX     9        /* fds on one input: 0 to 9, one more than pvd takes */
#define FZ_POOL        16
#define FZ_WORKERS_MAX 16

struct fz_rng {
        uint64_t s;
};
uint64_t fz_next(struct fz_rng *r);
uint64_t fz_below(struct fz_rng *r, uint64_t n);
/* 0, 1, -1, powers of two and their neighbours, sizes near limits. */
uint64_t fz_interesting(struct fz_rng *r);
void fz_bytes(struct fz_rng *r, void *p, size_t n);

/* Shared by the workers and the run (shared memory). */
struct fz_stats {
        volatile uint64_t inputs[FZ_WORKERS_MAX];
        volatile uint64_t emu_inputs[FZ_WORKERS_MAX];
        volatile uint64_t conns, refused, replies, emu_joins, emu_drops;
        volatile uint64_t failed_answers, no_reason; /* answers reporting a failure; those without a PV_K_MSG */
        volatile int stop;
};

struct fz_worker {
        struct fz_rng rng;
        int pool[FZ_POOL];            /* memfds, eventfd, pipes, sockets, /dev/null, a directory ... */
        unsigned npool;
        const char *platform_dir;
        struct fz_stats *stats;
};

/* One datagram with fds (SCM_RIGHTS). 0 or -errno. */
int fz_sendmsg(int fd, const void *buf, size_t len, const int *fds, unsigned nfds);
/* One datagram; every fd that came with it is closed. Bytes, 0 at EOF, or
 * -errno (-EAGAIN: nothing there). */
ssize_t fz_recvmsg(int fd, void *buf, size_t cap);
/* n fds from the pool (repeats allowed). */
void fz_pick_fds(struct fz_worker *w, int *fds, unsigned n);

/* One visit to the emulated hypervisor's socket: join, then mutated link
 * messages until dropped; counts them in *inputs (pvfuzz-emu.c). */
void fz_emu_session(struct fz_worker *w, volatile uint64_t *inputs);

#endif
