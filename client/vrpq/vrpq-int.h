/* libpvclient's VRPQ internals: session and channel objects, shared by
 * vrpq.c (setup and teardown through pvd) and vrpq-req.c (requests, no pvd
 * on the way). */
#ifndef VRPQ_INT_H
#define VRPQ_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "pvc-spin.h"
#include "pv/vrpq.h"
#include "vrpq-proto.h"
#include "vrpq-queue.h"

struct VrpqSession {
        struct pv_conn *conn;           /* the session's connection to pvd */
        bool server;
        char dev[PVC_NAME_MAX];         /* the node, for channel connections */
        uint32_t sid;
        uint64_t token;
        uint8_t *base;                  /* the region, mapped */
        struct vrpq_layout lay;
        bool one_kernel;                /* pvd says: the peer VM runs on our kernel */
        pthread_mutex_t lock;
        unsigned refs;                  /* the session + each of its channels */
        atomic_bool destroyed;          /* its channels end with it */
};

struct VrpqChan {
        /* Hot: the two queues. A client produces requests (tx) and consumes
         * callbacks (rx); a server the other way round. */
        struct vrpq_txq tx;
        struct vrpq_rxq rx;
        struct vrpq_chan_hdr *hdr;
        uint32_t *my_tx_sleep;          /* ours, waiting for room or done */
        uint32_t *my_rx_sleep;          /* ours, waiting for what rx brings */
        uint32_t *peer_rx_sleep;        /* the peer's receiver: after we post */
        uint32_t *peer_tx_sleep;        /* the peer's poster: after we consume */
        uint32_t *my_cpu, *peer_cpu;    /* hints (vrpq-proto.h) */
        const uint64_t *peer_kernel;
        uint64_t kernel;                /* ours; 0: no CPU hints (not one kernel) */
        int kick_fd;                    /* the peer's xIRQ */
        int wait_fd;                    /* ours */
        bool wait_eventfd;              /* it is an eventfd: one read empties it */
        bool server;
        atomic_bool dead;               /* sticky: the channel ended */
        atomic_bool peer_woken;         /* we kicked a sleeping peer: yield while waiting for it */
        uint64_t spin_ns;               /* PVCLIENT_VRPQ_[REMOTE_]SPIN_US: the most a wait polls */
        bool remote;                    /* the peer runs on another kernel */
        /* Asymmetric fences (pv-atomic.h): on one kernel, with
         * membarrier(2) here; our barrier word and the peer's; our waits'
         * mode, one wait at a time. */
        bool barrier_ok;
        uint32_t *my_barrier;
        const uint32_t *peer_barrier;
        pthread_mutex_t fence_lock;
        struct pv_fence_mode fence_mode;
        atomic_uint fence_tick;         /* wakes, sampled: lossy across threads */
        struct pvc_spin_learn spin_learn; /* what it polls now */
        void *last_out;                 /* the last block's output bytes */
        VrpqCallbackFn cb_fn;           /* client: handles callbacks while it waits */
        void *cb_ctx;
        atomic_int rx_busy;             /* one receiver / callback handler at a time */
        /* Server: the batch vrpqReceive returned, released at the next call. */
        VrpqReq *batch;
        struct vrpq_item *items;
        unsigned batch_cap;
        unsigned batch_n;
        /* The xIRQ "bell": one thread at a time sleeps in poll() on wait_fd,
         * the others on the condition variable; each wake-up of the poller
         * wakes them all to re-check (several threads may wait on one side
         * of a channel: a poster and a callback handler, say). */
        pthread_mutex_t bell_lock;
        pthread_cond_t bell_cv;
        bool bell_polling;
        atomic_uint bell_gen;
        /* Populated ahead of the producer (prefault_ahead), bytes from the
         * start of the ring and of the port; pf_off: the kernel cannot. */
        uint32_t pf_ring, pf_port;
        bool pf_off;
        /* Setup. */
        VrpqSession *session;
        struct pv_conn *conn;           /* the channel's connection to pvd */
        uint32_t cid;
        struct vrpq_chan_geom geom;
};

/* vrpq-req.c (pvc_ names: the version script exports vrpq*) */
/* Wait until ready(c, arg) returns non-zero (spin, then sleep with flag,
 * and flag2 if not NULL, set). Returns what ready returned (> 0 or an
 * error), -ETIMEDOUT, -ECONNRESET. timeout_ms < 0: no timeout; 0: just
 * look, and leave the flags set (armed for an event loop). */
int pvc_vrpq_wait(VrpqChan *c, uint32_t *flag, uint32_t *flag2, int (*ready)(VrpqChan *, void *), void *arg,
              int timeout_ms);
/* The channel ended (a pvd marked it, or its connection hung up). */
bool pvc_vrpq_closed(VrpqChan *c);
uint64_t pvc_vrpq_spin_ns(bool remote);

#endif
