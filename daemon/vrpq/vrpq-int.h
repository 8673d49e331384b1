/* VRPQ inside pvd: what vrpq.c (the driver's entry points, statistics),
 * vrpq-be.c (the server end), vrpq-fe.c (the client end) and
 * vrpq-alloc.c (the buddy allocator of slots and PMEM) share.
 *
 * pvd is never on the path of a request: it sets up sessions and channels,
 * carves rings and ports (server end), hands the region and the xIRQs to
 * programs, and ends what must end. A program's objects live as long as its
 * connections: one per session, one per channel. When the other side ends
 * a channel, pvd marks it CLOSED in its header, kicks both xIRQs and
 * half-closes the program's connection (the program sees EOF, and pvd still
 * sees when the program lets go), so that the memory is reused only once
 * neither program can touch it.
 *
 * A connection carries one request and gets one answer (a second request
 * drops it), so pvd_conn_send never finds a socket full and never drops a
 * connection under the driver's feet.
 */
#ifndef PVD_VRPQ_INT_H
#define PVD_VRPQ_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pvd.h"
#include "vrpq-proto.h"

/* ---- buddy allocator (vrpq-alloc.c) ---------------------------------------------- */

/* Blocks of 2^order units over [0, units); units need not be a power of
 * two. Allocation is rare (channel creation): a scan is fine. */
struct vrpq_buddy {
        uint32_t units;
        unsigned max_order;
        uint8_t *head;          /* per unit: 0, or 1 + order of a free block starting there */
        uint32_t free_units;
};

int vrpq_buddy_init(struct vrpq_buddy *b, uint32_t units);
void vrpq_buddy_reset(struct vrpq_buddy *b);
void vrpq_buddy_fini(struct vrpq_buddy *b);
/* The first unit of a free block of 2^order units, or -1. */
int64_t vrpq_buddy_alloc(struct vrpq_buddy *b, unsigned order);
void vrpq_buddy_free(struct vrpq_buddy *b, uint32_t unit, unsigned order);
/* log2 of the largest power of two <= v (v > 0). */
unsigned vrpq_log2(uint64_t v);

/* ---- objects -------------------------------------------------------------------- */

struct vrpq_vlink;
struct vrpq_sess;
struct vrpq_chan;

enum vrpq_conn_kind {
        VC_IDLE = 0,    /* no request yet */
        VC_WAIT_SESS,   /* a session request waits (client: the server end's answer; server: a session) */
        VC_SESS,        /* the session's connection */
        VC_WAIT_CHAN,   /* a channel request waits */
        VC_CHAN,        /* the channel's connection */
        VC_DEAD,        /* its object ended: half-closed, waiting for the program to close */
};

/* pvd_conn->priv of a VRPQ node's connection. */
struct vrpq_conn {
        enum vrpq_conn_kind kind;
        struct pvd_conn *c;
        struct vrpq_vlink *v;
        struct vrpq_sess *s;
        struct vrpq_chan *ch;
        uint32_t op;            /* the waiting request, to answer it later */
        uint64_t seq;
        struct vrpq_conn *next; /* in a list of waiting accepts */
};

struct vrpq_chan {
        struct vrpq_sess *s;
        struct vrpq_chan *next;         /* in the session */
        uint32_t cid;
        struct vrpq_chan_geom g;
        bool has_geom;
        uint32_t xirq_req, xirq_ans;
        int fd_req, fd_ans;             /* the backend's; -1 until known */
        struct vrpq_conn *conn;         /* the local program's channel connection */
        bool waiting;                   /* client end: CHAN_OPEN unanswered */
        bool accepted;                  /* server end: a program accepted it */
        bool local_dead, peer_dead;     /* a CLOSE was sent / received */
        bool local_released;            /* the local program cannot touch the memory any more */
        bool peer_released;             /* server end: CHAN_RELEASE received */
        unsigned ring_order, cb_order, port_order, cbport_order; /* server end */
        uint8_t *info;                  /* server end, until accepted */
        uint32_t info_len;
        uint32_t peer_pid;
        char peer_comm[VRPQ_COMM_MAX + 1];
};

struct vrpq_sess {
        struct vrpq_vlink *v;
        struct vrpq_sess *next;
        uint32_t sid;
        uint64_t token;                 /* proves a connection's right to the session */
        struct vrpq_conn *conn;         /* the local program's session connection */
        bool waiting;                   /* client end: SESS_OPEN unanswered */
        bool accepted;                  /* server end: a program accepted it */
        bool local_dead, peer_dead;
        struct vrpq_chan *chans;
        struct vrpq_conn *chan_waiters; /* server end: CHAN_ACCEPTs waiting (FIFO) */
        uint8_t *info;                  /* server end, until accepted */
        uint32_t info_len;
        uint32_t peer_pid;
        char peer_comm[VRPQ_COMM_MAX + 1];
        uint32_t local_pid;
        char local_comm[32];
        /* The session's own memory, where the backend keeps each memory
         * object to whom it is handed (HV_CAP_SLICE): the region's layout,
         * for this session's channels only, so that a program that
         * scribbles there harms its own sessions only. base NULL: the
         * session's channels live in the vlink's VRPQ region. */
        void *base;
        struct hv_mem mem;              /* server end: made here; client end: the grant's (fd borrowed) */
        uint32_t gref;                  /* server end: granted to the client VM */
};

struct vrpq_vlink {
        struct pvd_vlink *vl;
        struct vrpq_layout lay;
        struct vrpq_sess *sessions;
        unsigned nsess, nchan;
        uint32_t next_sid, next_cid;    /* client end */
        /* server end */
        struct vrpq_chan *by_hdr[VRPQ_CHANNELS_MAX];
        struct vrpq_buddy slots, pmem;
        struct vrpq_conn *accept_waiters; /* SESSION_ACCEPTs waiting (FIFO), across vlink generations */
        uint64_t sessions_total, chans_total, refused_total;
};

static inline struct vrpq_vlink *vrpq_of(struct pvd_vlink *vl)
{
        return vl->drv[PV_DRV_VRPQ];
}

/* ---- vrpq.c: helpers both ends use --------------------------------------------------- */

struct vrpq_chan_hdr *vrpq_hdr(struct vrpq_vlink *v, const struct vrpq_chan *ch);
/* Mark the channel CLOSED in its header and kick both xIRQs, so that busy
 * and sleeping programs learn it. */
void vrpq_chan_mark_closed(struct vrpq_vlink *v, struct vrpq_chan *ch);
/* The object of vc ended: half-close the connection so that the program
 * sees EOF; pvd keeps it (and its link to the object) until the program
 * closes it, which is when the program lets go of the memory. */
void vrpq_conn_hangup(struct vrpq_conn *vc);
/* The same, and forget the object (freed now): the close will do nothing. */
void vrpq_conn_detach(struct vrpq_conn *vc);
/* Answer the request waiting on vc with diag and a sentence, or with m. */
void vrpq_conn_reply_err(struct vrpq_conn *vc, int diag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vrpq_reply_init(struct pv_msg *m, const struct vrpq_conn *vc);
/* Fill a reply with the session's memory: layout keys, its fd and offset. */
void vrpq_reply_region(struct vrpq_vlink *v, const struct vrpq_sess *s, struct pv_msg *m);
/* Write the layout's header at base (the region, or a session's memory). */
void vrpq_region_hdr_write(void *base, const struct vrpq_layout *l);
/* Server end: the session's own memory, where the backend slices (0 with
 * nothing made elsewhere). -errno. */
int vrpq_sess_mem_make(struct vrpq_vlink *v, struct vrpq_sess *s);
/* Client end: map the session memory of grant gref (0: the region). */
int vrpq_sess_mem_take(struct vrpq_vlink *v, struct vrpq_sess *s, uint32_t gref);
/* Either end: the session is freed: its memory goes (programs keep their
 * mappings). */
void vrpq_sess_mem_drop(struct vrpq_vlink *v, struct vrpq_sess *s);
int vrpq_send(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len);
void vrpq_send_id(struct vrpq_vlink *v, uint32_t type, uint32_t sid, uint32_t cid);
struct vrpq_sess *vrpq_sess_find(struct vrpq_vlink *v, uint32_t sid);
struct vrpq_chan *vrpq_chan_find(struct vrpq_vlink *v, uint32_t cid, struct vrpq_sess **s);
void vrpq_sess_unlink(struct vrpq_sess *s);
void vrpq_chan_unlink(struct vrpq_chan *ch);
/* Copy a program's info (PV_K_INFO, optional): 0, or -E2BIG answered. */
int vrpq_get_info(struct vrpq_conn *vc, const struct pv_msg *m, const void **info, uint32_t *len);
const char *vrpq_node_name(const struct vrpq_conn *vc);

/* ---- the two ends ------------------------------------------------------------------- */

int vrpq_srv_conn_msg(struct vrpq_conn *vc, struct pv_msg *m);
void vrpq_srv_conn_close(struct vrpq_conn *vc);
void vrpq_srv_msg(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len);
void vrpq_srv_up(struct vrpq_vlink *v);
void vrpq_srv_down(struct vrpq_vlink *v);

int vrpq_clt_conn_msg(struct vrpq_conn *vc, struct pv_msg *m);
void vrpq_clt_conn_close(struct vrpq_conn *vc);
void vrpq_clt_msg(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len);
void vrpq_clt_down(struct vrpq_vlink *v);

#endif
