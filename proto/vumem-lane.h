/* VUMEM lanes: a session's allocations without pvd (what the client
 * library, the server library and the server VM's pvd share).
 *
 * An ALLOC through pvd crosses four processes (client program, both pvds,
 * server program) and sleeps at each: six wake-ups. The lane lets the
 * client library and the server library meet directly, each polling a
 * little before it sleeps, while pvd keeps every rule and the bookkeeping:
 *
 *   - one page per session (struct vumem_lane), memory of the hypervisor
 *     backend made by the server VM's pvd when the session opens, granted
 *     to the client VM and handed to the server program (VUMEM_OP_LANE).
 *     One request at a time.
 *   - the server library's page with pvd (struct vumem_srv_shm, pvd's own
 *     memfd, never seen by another VM): pvd reserves pdev cells, a buffer
 *     id and a handle for each allocation the lane may answer (resv ring;
 *     an empty ring means "ask pvd", status VUMEM_LANE_SLOW), says per
 *     session whether it may allocate (slots: the master rule), and reads
 *     back the log of what the server program answered.
 *   - a lane answer names a memory object's key and an offset in it, and
 *     the client library fetches each object's fd once (VUMEM_OP_OBJECT
 *     through both pvds: the object is granted whole to the client VM).
 *
 * Memory ordering of the lane page (writer; reader):
 *   req, then req_seq   client: the request bytes, then req_seq with
 *                       release; server: req_seq with acquire, then the
 *                       bytes (copied once, checked).
 *   ans, then ans_seq   server: the answer, then ans_seq with release;
 *                       client: ans_seq with acquire, then the answer
 *                       (copied once, checked against its seq and bounds).
 *   srv_sleep/clt_sleep a side that stops polling sets its word, issues a
 *                       full fence and looks once more; the other side,
 *                       after its publication and a full fence, reads the
 *                       word and asks its pvd to carry a wake-up
 *                       (VUMEM_OP_KICK) if it is set. No wake-up is lost.
 *   dead                the server VM's pvd, with release, when the session
 *                       ends; both libraries stop waiting on the lane.
 * Of the server library's page:
 *   resv[], resv_prod   pvd writes entries, then resv_prod (release);
 *   resv_cons           the library takes an entry with a CAS of resv_cons;
 *                       pvd takes back what is left with a CAS too.
 *   log[], log_prod     the library writes the entry, then log_prod
 *                       (release) -- before it publishes the answer on the
 *                       lane -- and pvd reads the log before it handles
 *                       anything of that vlink (a FREE, an ACCESS, a close,
 *                       pvctl stat), so a buffer is always known by the
 *                       time anyone can name it.
 *   slots[]             pvd (release): VUMEM_SLOT_WORD(gen, state) per
 *                       session; the library reads it (acquire) per request.
 * Everything the other side writes is hostile: read once, check, use the
 * copy (DESIGN section 5). A corrupt lane turns that session's lane off; a
 * corrupt page of the server library turns the lanes off for pvd.
 */
#ifndef VUMEM_LANE_H
#define VUMEM_LANE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "pv-atomic.h"
#include "vumem-proto.h"


#define VUMEM_LANE_MAGIC   0x454e414cu /* "LANE" */
#define VUMEM_LANE_VERSION 3u
#define VUMEM_LANE_SIZE    4096u
#define VUMEM_LANE_DONE    0u          /* answered: diag, and the buffer if 0 */
#define VUMEM_LANE_SLOW    1u          /* not given to the server program: ask pvd */

struct vumem_lane_req {
        uint32_t alloc_size;
        uint32_t reserved;
        uint8_t alloc[VUMEM_ALLOC_MAX];
};

struct vumem_lane_ans {
        uint32_t seq;               /* the request's */
        uint32_t status;            /* VUMEM_LANE_DONE, VUMEM_LANE_SLOW */
        int32_t diag;
        uint32_t handle;            /* the session's handle (as from pvd) */
        uint64_t id;                /* buffer id */
        uint64_t key;               /* memory object */
        uint64_t offset;            /* of the buffer's first byte in the object */
        uint64_t size;
        uint32_t alloc_size;
        uint32_t reserved;
        uint8_t alloc[VUMEM_ALLOC_MAX];
        char msg[VUMEM_MSG_TEXT];   /* failure: a sentence */
};

struct vumem_lane {
        uint32_t magic;             /* written once by pvd */
        uint32_t version;
        uint32_t req_seq;           /* client library */
        uint32_t ans_seq;           /* server library */
        uint32_t srv_sleep;         /* server library: 1 while asleep */
        uint32_t clt_sleep;         /* client library: 1 while asleep */
        uint32_t dead;              /* server VM's pvd: the session is over */
        uint32_t reserved;
        struct vumem_lane_req req;
        struct vumem_lane_ans ans;
        /* Hints, never trusted for more than a choice between polling and
         * yielding: the CPU each library last ran on, plus one (0: unknown),
         * written only where each side's pvd said the numbers compare
         * (VUMEM_LANE_ONE_KERNEL). A side waiting for one that last ran on
         * its own CPU yields at once, since polling would only keep the
         * other from running. */
        uint32_t clt_cpu;
        uint32_t srv_cpu;
};

_Static_assert(sizeof(struct vumem_lane) <= VUMEM_LANE_SIZE, "lane size");

#define VUMEM_SHM_MAGIC   0x4d485356u  /* "VSHM" */
#define VUMEM_RESV_RING   64u          /* allocations the lane may answer before pvd looks */
#define VUMEM_LOG_RING    128u         /* >= VUMEM_RESV_RING: the log never overflows */
#define VUMEM_SLOT_FREE   0u
#define VUMEM_SLOT_ALLOC  1u           /* the session may allocate on its lane */
#define VUMEM_SLOT_SLOW   2u           /* it must ask pvd (a master session exists) */
#define VUMEM_SLOT_WORD(gen, state) (((gen) << 2) | (state))

struct vumem_srv_resv {
        uint64_t id;
        uint32_t handle;
        uint32_t reserved;
};

struct vumem_srv_log {
        uint64_t session;           /* VumemReqHeader.sessionId */
        uint64_t id;                /* from the reservation */
        uint64_t key;
        uint64_t offset;
        uint64_t size;
        uint64_t vaddr;             /* the server program's address (for its FREE) */
        uint32_t handle;            /* from the reservation */
        int32_t diag;               /* < 0: refused; the reservation comes back */
};

struct vumem_srv_shm {
        uint32_t magic;
        uint32_t version;
        uint32_t resv_prod;         /* pvd */
        uint32_t resv_cons;         /* library and pvd (CAS: pvd takes back what is left) */
        uint32_t log_prod;          /* library */
        uint32_t log_cons;          /* pvd */
        uint32_t reserved[2];
        uint32_t slots[VUMEM_SESSIONS_MAX]; /* pvd: VUMEM_SLOT_WORD(gen, state) */
        struct vumem_srv_resv resv[VUMEM_RESV_RING];
        struct vumem_srv_log log[VUMEM_LOG_RING];
};

#define VUMEM_SHM_SIZE ((sizeof(struct vumem_srv_shm) + 4095u) / 4096u * 4096u)

/* A lane request's id in VumemReqHeader.reqId (pvd's ids stay below). */
#define VUMEM_LANE_REQ_BIT 0x80000000u

/* ---- the steps of the protocol ---------------------------------------------- */

/* Client: publish request seq (alloc_size bytes of alloc). True if the
 * server library sleeps (ask pvd to wake it). */
static inline bool vumem_lane_post(struct vumem_lane *lane, uint32_t seq, const void *alloc, uint32_t alloc_size)
{
        if (alloc_size)
                memcpy(lane->req.alloc, alloc, alloc_size);
        ring_store_relaxed(&lane->req.alloc_size, alloc_size);
        ring_store_release(&lane->req_seq, seq);
        ring_full_fence();
        return ring_load_relaxed(&lane->srv_sleep) != 0;
}

/* Client: has the answer to seq come? */
static inline bool vumem_lane_answered(const struct vumem_lane *lane, uint32_t seq)
{
        return ring_load_acquire(&lane->ans_seq) == seq;
}

/* Client: the answer, copied once (the server VM may rewrite it). */
static inline void vumem_lane_answer_copy(const struct vumem_lane *lane, struct vumem_lane_ans *a)
{
        memcpy(a, (const void *)&lane->ans, sizeof(*a));
}

/* Server: the request after seen, if one came: its seq in *seq. */
static inline bool vumem_lane_request(const struct vumem_lane *lane, uint32_t seen, uint32_t *seq)
{
        *seq = ring_load_acquire(&lane->req_seq);
        return *seq != seen;
}

/* Server: publish an answer (its CPU hint too, where they compare). True if
 * the client library sleeps (ask pvd to wake it). */
static inline bool vumem_lane_publish(struct vumem_lane *lane, const struct vumem_lane_ans *a, uint32_t cpu_hint)
{
        memcpy(&lane->ans, a, sizeof(*a));
        if (cpu_hint)
                ring_store_relaxed(&lane->srv_cpu, cpu_hint);
        ring_store_release(&lane->ans_seq, a->seq);
        ring_full_fence();
        return ring_load_relaxed(&lane->clt_sleep) != 0;
}

/* Server library: append a log entry for pvd (before the answer it
 * describes is published). */
static inline void vumem_srv_log_put(struct vumem_srv_shm *shm, uint32_t *log_prod, const struct vumem_srv_log *e)
{
        memcpy(&shm->log[*log_prod % VUMEM_LOG_RING], e, sizeof(*e));
        ring_store_release(&shm->log_prod, ++*log_prod);
}

#endif
