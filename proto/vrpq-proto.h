/* VRPQ (remote procedure queues): what pvd and libpvclient share.
 *
 *   - the PV_REGION_VRPQ layout of a vlink: a region header, a table of
 *     channel headers, a pool of request slots (vrpq-reqs of them) and the
 *     parameter memory (PMEM, vrpq-pmem bytes);
 *   - the channel header: the indices, sleep flags and counters of the
 *     channel's two queues (requests client -> server, callbacks
 *     server -> client);
 *   - the 32-byte request descriptor;
 *   - the operations programs ask pvd (PV_OP_VRPQ_FIRST..) and the messages
 *     the two pvds exchange on the vlink's control ring.
 *
 * Geometry. The server end's pvd owns the layout: it carves each channel's
 * rings out of the slot pool and its ports out of PMEM with a buddy
 * allocator, and sends the geometry of each channel in its control
 * messages. Nobody takes a geometry from shared memory: the copy in the
 * channel header is for display only.
 *
 * Queues. A queue is a ring of descriptors (power-of-two capacity) plus a
 * port: a window of PMEM that the producer allocates parameter blocks from
 * in FIFO order and that the consumer releases in the same order. Indices
 * are free-running uint32_t; position = index & (capacity - 1).
 *
 *   prod       producer: store-release after writing the descriptor;
 *              consumer: load-acquire before reading it.
 *   cons       consumer: store-release after copying descriptors out;
 *              producer: load-acquire before overwriting those slots.
 *   port_cons  consumer: store-release when it is done with the parameter
 *              blocks up to a descriptor's `pend`; producer: load-acquire
 *              before reusing that memory.
 *   done       consumer: store-release when requests up to done - 1 are
 *              complete (their output parameters written); producer:
 *              load-acquire before reading output parameters.
 *   *_sleep    a waiter sets its flag before sleeping, issues a full fence
 *              and re-checks its condition; the other side, after
 *              publishing and a full fence, exchanges the flag to 0 and
 *              sends the xIRQ if it was set (pv-ring.h's protocol, with one
 *              flag per kind of waiter so that each flag has one owner).
 *
 * Everything in the region can be rewritten at any time by the peer VM or
 * a program mapping it: each side reads what the other wrote once, checks
 * it, and uses only its copy.
 */
#ifndef VRPQ_PROTO_H
#define VRPQ_PROTO_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "pv-atomic.h"
#include "pv-msg.h"

#define VRPQ_MAGIC          0x51505256u /* "VRPQ" */
#define VRPQ_CHAN_MAGIC     0x4e414843u /* "CHAN" */
#define VRPQ_VERSION        3u  /* 2: counters off the index lines; 3: state off the sleep flags' line */

/* Limits per vlink (the original driver's) and per info; the same in
 * <pv/vrpq.h>. */
#define VRPQ_SESSIONS_MAX 1024
#define VRPQ_CHANNELS_MAX 1024
#define VRPQ_INFO_MAX     4096  /* bytes of session or channel info */

#define VRPQ_DESC_SIZE      32u
#define VRPQ_RING_MIN       16u         /* slots in a ring, at least */
#define VRPQ_PORT_MIN       4096u       /* bytes in a port, at least */
#define VRPQ_PARAM_ALIGN    8u          /* parameter blocks start 8-aligned */

#define VRPQ_REGION_HDR_SIZE 4096u
#define VRPQ_CHAN_HDR_SIZE  1024u
#define VRPQ_TABLE_OFF      VRPQ_REGION_HDR_SIZE
#define VRPQ_POOL_OFF       (VRPQ_TABLE_OFF + VRPQ_CHANNELS_MAX * VRPQ_CHAN_HDR_SIZE)

/* Procedure ids: 16-bit group, 16-bit function. Group 0 is the library's. */
#define VRPQ_GRP(proc)      ((proc) >> 16)

/* ---- region ---------------------------------------------------------------- */

/* At offset 0 of the region, written once by the server end's pvd. */
struct vrpq_region_hdr {
        uint32_t magic;
        uint32_t version;
        uint32_t reqs;              /* slots in the pool */
        uint32_t desc_size;
        uint32_t chan_max;
        uint32_t chan_hdr_size;
        uint64_t table_off;
        uint64_t pool_off;
        uint64_t pmem_off;
        uint64_t pmem_size;
};

/* Where everything is, computed by each side from the configuration. */
struct vrpq_layout {
        uint32_t reqs;
        uint64_t table_off, pool_off, pmem_off, pmem_size;
        uint64_t size;              /* the whole region */
};

static inline void vrpq_layout_init(struct vrpq_layout *l, uint32_t reqs, uint64_t pmem)
{
        l->reqs = reqs;
        l->table_off = VRPQ_TABLE_OFF;
        l->pool_off = VRPQ_POOL_OFF;
        l->pmem_off = (l->pool_off + (uint64_t)reqs * VRPQ_DESC_SIZE + 4095) & ~(uint64_t)4095;
        l->pmem_size = pmem;
        l->size = l->pmem_off + pmem;
}

static inline bool vrpq_is_pow2(uint64_t v)
{
        return v && !(v & (v - 1));
}

/* ---- channels --------------------------------------------------------------- */

/* Where a channel's rings and ports are. Rings are in slots of the pool,
 * ports in bytes of PMEM; every size a power of two. */
struct vrpq_chan_geom {
        uint32_t hdr_index;         /* in the channel header table */
        uint32_t req_slot, req_cap; /* request ring (client -> server) */
        uint32_t cb_slot, cb_cap;   /* callback ring (server -> client) */
        uint32_t port_off, port_size;     /* request port in PMEM */
        uint32_t cbport_off, cbport_size; /* callback port in PMEM */
};

/* A geometry that stays inside the region (the peer or a program could
 * have sent any numbers). */
static inline bool vrpq_geom_valid(const struct vrpq_layout *l, const struct vrpq_chan_geom *g)
{
        return g->hdr_index < VRPQ_CHANNELS_MAX &&
               vrpq_is_pow2(g->req_cap) && g->req_cap >= VRPQ_RING_MIN &&
               (uint64_t)g->req_slot + g->req_cap <= l->reqs &&
               vrpq_is_pow2(g->cb_cap) && g->cb_cap >= VRPQ_RING_MIN &&
               (uint64_t)g->cb_slot + g->cb_cap <= l->reqs &&
               vrpq_is_pow2(g->port_size) && g->port_size >= VRPQ_PORT_MIN &&
               (uint64_t)g->port_off + g->port_size <= l->pmem_size &&
               vrpq_is_pow2(g->cbport_size) && g->cbport_size >= VRPQ_PORT_MIN &&
               (uint64_t)g->cbport_off + g->cbport_size <= l->pmem_size;
}

/* One request (or callback) in a ring. The parameter block is
 * [in_off, in_off + in_size) and [out_off, out_off + out_size) in the
 * queue's port; pend is the port's producer index just after the block:
 * releasing this descriptor releases the port up to pend. */
struct vrpq_desc {
        uint32_t proc_id;
        uint32_t flags;             /* VRPQ_DF_* */
        uint32_t in_off;
        uint32_t in_size;
        uint32_t out_off;
        uint32_t out_size;
        uint32_t pend;
        uint32_t reserved;
};

#define VRPQ_DF_SYNC        0x1u    /* the producer waits for `done` (VRPQ_REQ_SYNC) */
#define VRPQ_DF_ALL         VRPQ_DF_SYNC

/* Producer's cache lines of a queue: its index alone on the line the
 * consumer polls, its counters on another (written per request, read only
 * by pvd for display: on the index line each would cost the consumer's
 * poll a miss). */
struct vrpq_prod_line {
        _Alignas(PV_CACHELINE) uint32_t prod;
        _Alignas(PV_CACHELINE) uint32_t port_prod; /* bytes allocated in the port (for stat) */
        uint64_t posted;            /* counters, for stat only */
        uint64_t xirq_sent;
        uint64_t xirq_suppressed;
};

/* Consumer's cache lines of a queue: the indices the producer reads when
 * its copies run out (or it waits for done), then the counters. */
struct vrpq_cons_line {
        _Alignas(PV_CACHELINE) uint32_t cons;
        uint32_t port_cons;
        uint32_t done;
        _Alignas(PV_CACHELINE) uint32_t peak_stacked; /* counters and peaks, for stat only */
        uint32_t peak_port;
        uint32_t reserved;
        uint64_t received;
        uint64_t completed;
        uint64_t xirq_sent;
        uint64_t xirq_suppressed;
};

enum vrpq_chan_state { VRPQ_CHAN_FREE = 0, VRPQ_CHAN_OPEN = 1, VRPQ_CHAN_CLOSED = 2 };

/* One per channel, in the table. */
struct vrpq_chan_hdr {
        struct vrpq_prod_line req_p;        /* client */
        struct vrpq_cons_line req_c;        /* server */
        struct vrpq_prod_line cb_p;         /* server */
        struct vrpq_cons_line cb_c;         /* client */
        /* Sleep flags of the server's two kinds of waiter (receiver,
         * callback performer), written by the server, cleared by the
         * client; and the client's (poster/caller, callback handler). */
        _Alignas(PV_CACHELINE) uint32_t srv_rx_sleep;
        uint32_t srv_tx_sleep;
        /* Hints for waiters, written by their side when it starts waiting
         * (not trusted: a lie only changes whether the other side polls):
         * the CPU it runs on plus one, and a token of its kernel, so that
         * CPUs are compared only between programs of one kernel. A side
         * writes them only where its pvd says both VMs run on one kernel
         * (VRPQ_SESS_ONE_KERNEL): two guests may boot the same kernel image
         * and share its token, but not their CPU numbers. */
        uint32_t srv_cpu;
        /* The side's barrier word (pv-atomic.h, "asymmetric fences"): 1
         * while its waits call membarrier(2) before they sleep, so that
         * the other side's wake checks may skip their fence. Written by
         * its side only, where its pvd says one kernel. */
        uint32_t srv_barrier;
        uint64_t srv_kernel;
        _Alignas(PV_CACHELINE) uint32_t clt_tx_sleep;
        uint32_t clt_rx_sleep;
        uint32_t clt_cpu;
        uint32_t clt_barrier;
        uint64_t clt_kernel;
        /* Written by the pvds: a channel leaves OPEN for CLOSED when either
         * side ends it, so that busy programs learn it without a system
         * call (enum vrpq_chan_state). Both sides read it at every post and
         * allocation: on a line nobody writes while the channel is open, so
         * that it stays in each side's cache (beside the sleep flags, each
         * arming of the server's moved it away from the client). */
        _Alignas(PV_CACHELINE) uint32_t state;
        /* Written by the server VM's pvd, for display. */
        uint32_t magic;
        uint32_t sid, cid;
        struct vrpq_chan_geom geom;
};

_Static_assert(sizeof(struct vrpq_desc) == VRPQ_DESC_SIZE, "descriptor size");
_Static_assert(sizeof(struct vrpq_chan_hdr) <= VRPQ_CHAN_HDR_SIZE, "channel header size");
_Static_assert(sizeof(struct vrpq_region_hdr) <= VRPQ_REGION_HDR_SIZE, "region header size");

static inline struct vrpq_chan_hdr *vrpq_chan_hdr_at(void *region, const struct vrpq_layout *l, uint32_t index)
{
        return (struct vrpq_chan_hdr *)((uint8_t *)region + l->table_off + (uint64_t)index * VRPQ_CHAN_HDR_SIZE);
}

/* ---- program <-> pvd ---------------------------------------------------------- */

enum vrpq_op {
        /* client: PV_K_INFO -> PV_K_ID, PV_K_TOKEN, layout keys, PV_K_FLAGS
         * (VRPQ_SESS_*); fd: the region */
        VRPQ_OP_SESSION_CREATE = PV_OP_VRPQ_FIRST + 1,
        /* server: waits for a client's session -> the same, plus PV_K_INFO */
        VRPQ_OP_SESSION_ACCEPT,
        /* client: PV_K_ID, PV_K_TOKEN, PV_K_INFO -> PV_K_ID2, geometry keys;
         * fds: the request xIRQ, the answer xIRQ */
        VRPQ_OP_CHAN_CREATE,
        /* server: PV_K_ID, PV_K_TOKEN; waits for a channel -> the same, plus
         * PV_K_INFO */
        VRPQ_OP_CHAN_ACCEPT,
};

/* Integer keys of the replies. */
#define VRPQ_KEY(n)         ((enum pv_key)(PV_K_DRV0 + (n)))
#define VRPQ_K_REQS         VRPQ_KEY(0)     /* layout */
#define VRPQ_K_PMEM_SIZE    VRPQ_KEY(1)
#define VRPQ_K_REGION_SIZE  VRPQ_KEY(2)
#define VRPQ_K_HDR_INDEX    VRPQ_KEY(3)     /* geometry */
#define VRPQ_K_REQ_SLOT     VRPQ_KEY(4)
#define VRPQ_K_REQ_CAP      VRPQ_KEY(5)
#define VRPQ_K_CB_SLOT      VRPQ_KEY(6)
#define VRPQ_K_CB_CAP       VRPQ_KEY(7)
#define VRPQ_K_PORT_OFF     VRPQ_KEY(8)
#define VRPQ_K_PORT_SIZE    VRPQ_KEY(9)
#define VRPQ_K_CBPORT_OFF   VRPQ_KEY(10)
#define VRPQ_K_CBPORT_SIZE  VRPQ_KEY(11)
#define VRPQ_K_END          (PV_K_DRV0 + 12)

_Static_assert(VRPQ_K_END <= PV_K_UINT_END, "VRPQ keys fit the driver range");

/* PV_K_FLAGS of a session's answer. */
#define VRPQ_SESS_ONE_KERNEL 1u /* both VMs run on one kernel: the waiters' CPU hints mean something */

static inline void vrpq_geom_put(struct pv_msg *m, const struct vrpq_chan_geom *g)
{
        pv_msg_set_u(m, VRPQ_K_HDR_INDEX, g->hdr_index);
        pv_msg_set_u(m, VRPQ_K_REQ_SLOT, g->req_slot);
        pv_msg_set_u(m, VRPQ_K_REQ_CAP, g->req_cap);
        pv_msg_set_u(m, VRPQ_K_CB_SLOT, g->cb_slot);
        pv_msg_set_u(m, VRPQ_K_CB_CAP, g->cb_cap);
        pv_msg_set_u(m, VRPQ_K_PORT_OFF, g->port_off);
        pv_msg_set_u(m, VRPQ_K_PORT_SIZE, g->port_size);
        pv_msg_set_u(m, VRPQ_K_CBPORT_OFF, g->cbport_off);
        pv_msg_set_u(m, VRPQ_K_CBPORT_SIZE, g->cbport_size);
}

static inline int vrpq_geom_get(const struct pv_msg *m, struct vrpq_chan_geom *g)
{
        int rc = 0;
        rc |= pv_msg_get_u32(m, VRPQ_K_HDR_INDEX, &g->hdr_index);
        rc |= pv_msg_get_u32(m, VRPQ_K_REQ_SLOT, &g->req_slot);
        rc |= pv_msg_get_u32(m, VRPQ_K_REQ_CAP, &g->req_cap);
        rc |= pv_msg_get_u32(m, VRPQ_K_CB_SLOT, &g->cb_slot);
        rc |= pv_msg_get_u32(m, VRPQ_K_CB_CAP, &g->cb_cap);
        rc |= pv_msg_get_u32(m, VRPQ_K_PORT_OFF, &g->port_off);
        rc |= pv_msg_get_u32(m, VRPQ_K_PORT_SIZE, &g->port_size);
        rc |= pv_msg_get_u32(m, VRPQ_K_CBPORT_OFF, &g->cbport_off);
        rc |= pv_msg_get_u32(m, VRPQ_K_CBPORT_SIZE, &g->cbport_size);
        return rc ? -EPROTO : 0;
}

/* ---- pvd <-> pvd (control ring, PV_DRV_VRPQ) ----------------------------------
 *
 *   client end -> server end
 *     SESS_OPEN     a program created a session (sid chosen by the client end)
 *     CHAN_OPEN     a program created a channel of session sid (cid chosen
 *                   by the client end)
 *     CHAN_RELEASE  the client program no longer touches the channel's
 *                   memory (and the channel ends, if it had not): with the
 *                   server program's release, the rings and ports can be
 *                   reused
 *   server end -> client end
 *     SESS_OK / SESS_ERR, CHAN_OK (geometry, xIRQ ids) / CHAN_ERR; SESS_OK's
 *                   cid is the grant of the session's own memory (0: its
 *                   channels live in the vlink's VRPQ region), made where
 *                   the backend keeps each memory object to whom it is
 *                   handed, so that a program reaches its own sessions only
 *   either
 *     SESS_CLOSE, CHAN_CLOSE  this side ended the session / channel (its
 *                   program destroyed it, died, or the session ended): the
 *                   other side fails its program's calls with -ECONNRESET
 *
 * Each CLOSE is sent at most once per side; a CLOSE or RELEASE naming an id
 * the receiver no longer knows crossed the receiver's own and is ignored.
 */
enum vrpq_msg_type {
        VRPQ_M_SESS_OPEN = 1,
        VRPQ_M_SESS_OK,
        VRPQ_M_SESS_ERR,
        VRPQ_M_SESS_CLOSE,
        VRPQ_M_CHAN_OPEN,
        VRPQ_M_CHAN_OK,
        VRPQ_M_CHAN_ERR,
        VRPQ_M_CHAN_CLOSE,
        VRPQ_M_CHAN_RELEASE,
};

#define VRPQ_COMM_MAX 16
#define VRPQ_ERR_MAX  200

struct vrpq_m_open {            /* SESS_OPEN, CHAN_OPEN */
        uint32_t sid;
        uint32_t cid;           /* 0 for SESS_OPEN */
        uint32_t pid;           /* the client program, for display */
        uint32_t info_len;
        char comm[VRPQ_COMM_MAX];
        uint8_t info[];         /* info_len bytes */
};

struct vrpq_m_id {              /* SESS_OK, SESS_CLOSE, CHAN_CLOSE, CHAN_RELEASE */
        uint32_t sid;
        uint32_t cid;
};

struct vrpq_m_chan_ok {
        uint32_t sid;
        uint32_t cid;
        uint32_t xirq_req;      /* client -> server */
        uint32_t xirq_ans;      /* server -> client */
        struct vrpq_chan_geom geom;
};

struct vrpq_m_err {             /* SESS_ERR, CHAN_ERR */
        uint32_t sid;
        uint32_t cid;
        int32_t diag;
        char msg[VRPQ_ERR_MAX]; /* NUL-terminated sentence for the user */
};

#endif
