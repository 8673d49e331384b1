/* VUMEM inside pvd: the state of each end of a vlink, shared by vumem.c
 * (driver entry points, pdev cells, statistics), vumem-be.c (the server
 * end: server program, sessions, buffers, grants, pdev records) and
 * vumem-fe.c (the client end: sessions of local programs, checks of what
 * the server VM sends). */
#ifndef PVD_VUMEM_INT_H
#define PVD_VUMEM_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pvd.h"
#include "vumem-lane.h"

#define VS_HBUCKETS 256

struct vs_link;

/* A buffer a server program of this VM allocated. Known VM-wide by its id,
 * so that sessions of every client VM of the same vdev can access it. */
struct vs_buf {
        uint64_t id;
        uint64_t size;              /* bytes the client sees */
        uint64_t map_off, map_len;  /* page range of the object that holds it */
        uint32_t pgoff;
        uint32_t flags;             /* VUMEM_BUF_DMABUF */
        uint64_t vaddr;             /* the server program's address, for FREE */
        struct vs_link *owner;      /* whose server program gets the FREE; NULL once it is gone */
        const char *compat;         /* vdev (compatible) it belongs to */
        struct vs_obj *obj;         /* the memory object it lies in (a reference) */
        unsigned refs;              /* handles, on every vlink */
        struct vs_export *exports;  /* one per vlink where it is held */
        struct vs_buf *hnext;
};

/* A buffer as seen on one vlink: its grant and pdev record there. */
struct vs_export {
        struct vs_buf *buf;
        struct vs_link *link;
        uint32_t gref;
        uint32_t cell;              /* record cell; extents follow */
        bool obj_grant;             /* gref is the object's (lane buffers): not revoked here */
        unsigned handles;
        struct vs_export *next;     /* in buf->exports */
};

struct vs_session;

/* One client session's reference to a buffer. */
struct vs_handle {
        uint32_t id;                /* unique on the vlink */
        struct vs_session *s;
        struct vs_export *x;
        struct vs_handle *hnext;    /* in the link's hash */
        struct vs_handle *snext, **sprev;
};

struct vs_session {
        uint64_t cid;               /* the client end's name */
        uint64_t sid;               /* this VM's name (VumemReqHeader.sessionId) */
        bool master;
        uint32_t pid;
        char comm[16];
        struct vs_handle *handles;
        unsigned nhandles;
        uint64_t bytes;
        /* the lane (see vumem-proto.h) */
        struct vumem_lane *lane;
        struct hv_mem lane_mem;
        uint32_t lane_gref;
        uint32_t slot, gen;
        struct vs_session *next;
};

/* Memory a server program may answer with: the backend's (MEM_ALLOC) or
 * its own (REGISTER). Lives while the server program has it or a buffer in
 * it lives. */
struct vs_obj {
        uint32_t key;
        struct pvd *pvd;
        struct vs_link *link;       /* NULL once its vlink is gone */
        bool gone;                  /* unregistered, or its server program ended */
        struct hv_mem mem;
        uint32_t flags;             /* VUMEM_BUF_DMABUF */
        uint32_t gref;              /* granted whole to the vlink, for lane answers (0: not yet) */
        unsigned users;             /* buffers made in it */
        struct vs_obj *next;
};

/* Cells, a buffer id and a handle reserved for one lane answer. */
struct vs_resv {
        uint64_t id;
        uint32_t handle;
        uint32_t cell;
        uint32_t ring;              /* its index in the ring */
        bool used;
        bool stale;                 /* from before the vlink went down (no cells) */
};

/* A request for the server program. */
struct vs_req {
        uint32_t id;
        uint32_t cmd;               /* VUMEM_CMD_BUFFER_* */
        /* ALLOC: who asked */
        uint64_t cid;
        uint64_t sid;
        bool master;
        bool cancelled;             /* the session ended: answer nobody, free what comes */
        uint32_t creq;
        uint32_t cell;              /* reserved pdev cells */
        uint32_t alloc_size;
        uint8_t alloc[VUMEM_ALLOC_MAX];
        /* FREE */
        uint64_t buf_id, vaddr, size;
        struct vs_req *next;
};

/* A session waiting for a server program. */
struct vs_park {
        struct vumem_m_session_open m;
        uint64_t deadline;
        struct vs_park *next;
};

struct vs_link {
        struct pvd_vlink *vl;
        struct pvd_node *node;
        struct pvd_conn *server;    /* the server program, or NULL */
        uint64_t server_starts;
        uint32_t credit;            /* requests the server program takes without asking */
        bool server_frees;          /* it takes VUMEM_OP_FREES */
        uv_timer_t *free_timer;     /* pushes FREEs that wait alone */
        struct vs_req *queue, *queue_tail; /* not yet given to the server program */
        struct vs_req *given;       /* given, waiting for RESPOND (ALLOC) */
        uint32_t next_req;
        struct vs_session *sessions;
        unsigned nsessions;
        struct vs_handle *hb[VS_HBUCKETS];
        unsigned nhandles;
        uint32_t next_handle;
        struct vs_park *parked;
        uv_timer_t *wait_timer;
        /* pdev cells (private bitmap; the region is only written) */
        uint8_t *bitmap;
        uint32_t ncells, used_cells, hint;
        unsigned nexports;
        uint64_t export_bytes;
        uint64_t served, failed;
        /* lanes: the server library's page, objects, reservations */
        struct vumem_srv_shm *shm;
        int shm_fd;
        bool lanes_off;             /* the library broke the page: lanes answer "ask pvd" */
        uint32_t log_cons, resv_prod;
        struct vs_resv resv[VUMEM_RESV_RING];
        struct vs_obj *objs;
        uint32_t next_key;
        struct vs_session *slot_s[VUMEM_SESSIONS_MAX];
        uint32_t slot_gen[VUMEM_SESSIONS_MAX];
        uint64_t lane_allocs;
};

/* A request of a local program, waiting for the server VM. */
struct vc_pending {
        uint32_t req;
        uint32_t kind;              /* VUMEM_MSG_* it was */
        struct pvd_conn *c;
        uint32_t op;
        uint64_t seq;
        uint32_t handle;            /* FREE */
        struct vc_pending *next;
};

struct vc_hent {
        uint32_t handle;
        uint64_t size;
};

struct vc_session {
        struct pvd_conn *c;
        uint64_t cid;
        uint64_t sid;
        bool opening, open, master, reset;
        unsigned npending;
        struct vc_hent *h;
        unsigned nh, caph;
        uint64_t bytes;
        struct vc_session *next;
};

struct vc_link {
        struct pvd_vlink *vl;
        struct pvd_node *node;
        struct vc_pending *pending;
        uint32_t next_req;
        struct vc_session *sessions;
        unsigned nsessions;
        bool pdev_ok;
        uint32_t ncells;
        uint64_t served, failed;
        uv_timer_t *free_timer;     /* wakes the server VM's pvd for FREEs sent quietly */
};

struct vumem_link {
        enum pv_side side;
        union {
                struct vs_link s;
                struct vc_link c;
        };
};

static inline struct vumem_link *vumem_of(struct pvd_vlink *vl)
{
        return vl->drv[PV_DRV_VUMEM];
}

/* vumem.c: pdev cells of the server end. */
int vs_cells_alloc(struct vs_link *L, uint32_t n, uint32_t *first);
void vs_cells_free(struct vs_link *L, uint32_t first, uint32_t n);
void *vs_cell_ptr(struct vs_link *L, uint32_t cell);
size_t vumem_page(void);

/* vumem-buf.c: buffers, exports, handles (server end) */
struct vs_buf *vs_buf_find(uint64_t id);
int vs_buf_new_id(uint64_t *id);
void vs_buf_add(struct vs_buf *b);
void vs_buf_release(struct vs_buf *b);
void vs_bufs_orphan(struct vs_link *owner);
int vs_export_get(struct vs_link *L, struct vs_buf *b, uint32_t cell, struct vs_export **out);
/* The same for a lane buffer on its own vlink: the object's grant. */
int vs_export_lane(struct vs_link *L, struct vs_buf *b, uint32_t cell, uint32_t gref, struct vs_export **out);
void vs_export_release(struct vs_export *x);
struct vs_handle *vs_handle_find(struct vs_link *L, uint32_t id);
/* id 0: a new one. */
int vs_handle_new(struct vs_link *L, struct vs_session *s, struct vs_export *x, uint32_t id, struct vs_handle **out);
void vs_handle_release(struct vs_link *L, struct vs_handle *h);

/* vumem-be.c: the client VM's sessions and requests */
void vs_up(struct vs_link *L);
void vs_down(struct vs_link *L);
void vs_detach(struct vs_link *L);
void vs_msg(struct vs_link *L, uint32_t type, const void *msg, uint32_t len);
void vs_stat(struct vs_link *L, msgpack_packer *pk);
struct vs_session *vs_session_find(struct vs_link *L, uint64_t cid);
struct vs_session *vs_session_by_sid(struct vs_link *L, uint64_t sid);
struct vs_session *vs_master_of(struct vs_link *L);
void vs_session_end(struct vs_link *L, struct vs_session *s);
void vs_session_accept_parked(struct vs_link *L);
void vs_reply_err(struct vs_link *L, uint32_t req, int diag, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
void vs_reply_buffer(struct vs_link *L, uint32_t req, struct vs_handle *h, const struct vs_req *q);
const char *vs_node_name(const struct vs_link *L);

/* vumem-be-prog.c: the server program, its queue and its memory objects */
void vs_enqueue(struct vs_link *L, struct vs_req *q);
void vs_queue_free(struct vs_link *owner, uint64_t id, uint64_t vaddr, uint64_t size);
int vs_conn_msg(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m);
void vs_conn_close(struct vs_link *L, struct pvd_conn *c);
void vs_prog_detach(struct vs_link *L);
void vs_bounce(struct vs_link *L, uint64_t id, uint64_t vaddr, uint64_t size);
struct vs_obj *vs_obj_find(struct vs_link *L, uint64_t key);
int vs_obj_grant(struct vs_link *L, struct vs_obj *o);
void vs_obj_put(struct vs_obj *o);
void vs_objs_down(struct vs_link *L);
void vs_object(struct vs_link *L, const struct vumem_m_object *m);

/* vumem-lane.c (server end) */
int vs_lane_server_open(struct vs_link *L, struct pv_msg *reply);
void vs_lane_server_close(struct vs_link *L);
void vs_lane_session_open(struct vs_link *L, struct vs_session *s);
void vs_lane_session_end(struct vs_link *L, struct vs_session *s);
void vs_lane_rules(struct vs_link *L);
void vs_lane_drain(struct vs_link *L);
void vs_lane_drain_all(struct pvd *pvd);
bool vs_lane_reclaim(struct vs_link *L);
bool vs_lane_handle_reserved(const struct vs_link *L, uint32_t id);
void vs_pdev_hdr_update(struct vs_link *L);
unsigned vs_lane_resv_cells(const struct vs_link *L);
void vs_lane_down(struct vs_link *L);
void vs_lane_up(struct vs_link *L);
void vs_reply(struct vs_link *L, struct vumem_m_reply *r);
int vs_lane_conn_op(struct vs_link *L, struct pvd_conn *c, struct pv_msg *m);
void vs_lane_kick(struct vs_link *L, const struct vumem_m_kick *m);

/* vumem-fe.c */
void vc_up(struct vc_link *L);
void vc_down(struct vc_link *L);
void vc_msg(struct vc_link *L, uint32_t type, const void *msg, uint32_t len);
int vc_conn_msg(struct vc_link *L, struct pvd_conn *c, struct pv_msg *m);
void vc_conn_close(struct vc_link *L, struct pvd_conn *c);
void vc_stat(struct vc_link *L, msgpack_packer *pk);

#endif
