/* libpvclient's VUMEM, what its files share: vumem.c (a client program's
 * sessions and buffers), vumem-server.c (a server program's connection,
 * requests, answers and memory) and vumem-lane.c (both libraries' side of
 * the lanes, proto/vumem-lane.h). */
#ifndef PVC_VUMEM_INT_H
#define PVC_VUMEM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "pv/vumem-server.h"
#include "pv/vumem.h"
#include "vumem-lane.h"

#define ANSWER_CAP 8192
#define LANE_SPIN_US 50     /* PVCLIENT_VUMEM_SPIN_US: polling a lane before sleeping */
#define LANE_IDLE_MS 100    /* server: no lane request for this long: sleep without polling */
#define OBJ_CACHE 64        /* memory objects whose fd a session keeps */

/* ---- client side ---- */

struct lane_obj {
        uint64_t key;
        uint64_t off, size;         /* the object: size bytes at off of fd */
        int fd;
        bool dmabuf;
};

typedef struct VumemBuffer VumemBuffer;

struct VumemSession {
        struct pv_conn *conn;
        pthread_mutex_t lock;       /* the buffer list */
        bool master;
        atomic_bool reset;
        struct VumemBuffer *bufs;
        /* the lane */
        struct vumem_lane *lane;
        bool lane_broken;           /* a corrupt answer: through pvd from now on */
        bool one_kernel;            /* the lane's CPU hints compare (our pvd says) */
        pthread_mutex_t lane_lock;  /* one request on it at a time */
        uint32_t lane_seq;
        uint64_t spin_ns;
        struct VumemBuffer *note_due; /* under lock: a lane's buffer pvd has not been told of */
        struct lane_obj objs[OBJ_CACHE]; /* under lock */
        unsigned nobjs, obj_next;
};

struct VumemBuffer {
        VumemSession *s;
        uint32_t handle;
        uint64_t id;
        uint64_t size;
        uint64_t off, len;          /* the mapping: offset in fd, length */
        uint64_t pgoff;             /* the buffer's start in the mapping */
        int fd;
        bool dmabuf;
        void *base;                 /* mapped, or NULL */
        struct VumemBuffer *next, **pprev;
};

/* ---- server side ---- */

struct srv_mem {
        uint32_t key;               /* pvd's name for it: answers name key and offset */
        uint8_t *vaddr;
        size_t size;                /* bytes that may be handed out */
        size_t map_len;             /* mapped (pages) */
        struct srv_mem *next;
};

/* A request pvd answers, on the connection pvd also pushes requests on:
 * whoever reads the socket (this thread, or one in vumemReceive) hands the
 * answer over here. */
struct srv_call {
        uint32_t seq;
        bool done;
        int diag;
        uint64_t key, off, size, flags;
        int fd;
        char msg[256];
};

/* A request read while waiting for an answer, kept for vumemReceive. */
struct srv_backlog {
        VumemReq req;
        struct srv_backlog *next;
};

struct srv_out {
        uint32_t req;
        uint32_t cmd;
        /* a lane request */
        bool lane;
        uint32_t slot, gen, seq;
        uint64_t sid;
        struct vumem_srv_resv resv;
        struct srv_out *next;
};

struct srv_lane {
        struct vumem_lane *lane;
        uint32_t slot, gen;
        uint64_t sid;
        bool master;
        char vm[36];
        uint32_t seen;              /* the last request seq taken */
        bool one_kernel;            /* the CPU hints compare (pvd says) */
        bool busy;                  /* a request of it awaits vumemRespond */
};

struct VumemServer {
        struct pv_conn *conn;
        pthread_mutex_t rx;         /* one receiver */
        pthread_mutex_t lock;       /* memory table, unanswered requests, sends, call, backlog */
        pthread_mutex_t call_mu;    /* one call at a time */
        pthread_cond_t call_cv;     /* its answer came */
        struct srv_call *call;      /* the call waiting for its answer (under lock) */
        struct srv_backlog *backlog, **backlog_tail; /* under lock */
        uint32_t credit;            /* requests pvd may still push (under rx) */
        struct srv_mem *mems;
        struct srv_out *out;
        /* lanes (under lock) */
        struct vumem_srv_shm *shm;
        struct srv_lane *lanes[VUMEM_SESSIONS_MAX];
        uint16_t act[VUMEM_SESSIONS_MAX]; /* slots with a lane */
        unsigned nact, next_scan;
        uint32_t log_prod, lane_req;
        uint64_t lane_seen_ns;      /* when a lane last brought a request */
        int last_slot;              /* the lane that did (-1: none yet) */
        uint64_t spin_ns;
        char buf[8192];             /* under rx */
};

/* vumem.c */
/* A call on the session's connection (fails at once once the session is
 * reset). */
int pvc_vumem_call(VumemSession *s, struct pv_msg *req, struct pv_msg *resp, void *buf);
void pvc_vumem_buffer_link(VumemSession *s, VumemBuffer *b);

/* vumem-server.c */
uint32_t vsrv_new_seq(struct pv_conn *c);
/* Send m to pvd without waiting (a failure shows at the next receive). */
void vsrv_post(VumemServer *v, struct pv_msg *m);
struct srv_mem *vsrv_mem_containing(VumemServer *v, const void *p, size_t size);

/* vumem-lane.c: the client library's lane */
/* An ALLOC on the session's lane: 1 if it must go through pvd, else 0 or
 * -errno (*out made). */
int pvc_vumem_lane_alloc(VumemSession *s, void *alloc, size_t allocSize, VumemBufferHd *out);

/* vumem-lane.c: the server library's lanes (under v->lock) */
/* VUMEM_OP_LANE: a session's lane came. */
void vsrv_lane_add(VumemServer *v, struct pv_msg *m);
/* A request waiting on a lane, into req: 1 if one, else 0. */
int vsrv_lane_scan(VumemServer *v, VumemReq *req);
/* On the lane that last brought a request: publish our CPU hint, *mine,
 * and return the client's (0: unknown). */
uint32_t vsrv_lane_peer_cpu(VumemServer *v, uint32_t *mine);
void vsrv_lanes_sleep(VumemServer *v, uint32_t on);
/* The answer to a lane request: the log entry for pvd first, then the
 * answer on the lane. */
int vsrv_respond_lane(VumemServer *v, const struct srv_out *o, VumemResp *resp);

#endif
