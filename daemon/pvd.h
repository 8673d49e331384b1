/* pvd's core objects: the daemon, its vlinks, device nodes, program
 * connections, and the interface every driver implements.
 *
 * pvd is single-threaded: everything runs on one libuv loop.
 */
#ifndef PVD_H
#define PVD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <msgpack.h>
#include <uv.h>

#include "config.h"
#include "hv/hv.h"
#include "log.h"
#include "pv-msg.h"
#include "pv-ring.h"
#include "pv-vlink.h"

struct pvd;
struct pvd_vlink;
struct pvd_node;
struct pvd_conn;
struct hv_backend;

/* ---- vlinks ------------------------------------------------------------ */

enum pv_vlink_state { PV_VLINK_OFF = 0, PV_VLINK_RESET, PV_VLINK_ON };

const char *pv_vlink_state_name(enum pv_vlink_state st);

struct pvd_region {
        void *base;     /* mapped in pvd, or NULL */
        size_t size;    /* 0: region absent on this vlink */
        int fd;         /* the backend's memory (or -1): the region is at offset */
        uint64_t offset;
};

struct pvd_pending; /* control messages waiting for ring room */

struct pvd_vlink {
        struct pvd *pvd;
        const struct pv_vlink_cfg *cfg;
        unsigned index;                     /* in pvd->vlinks */
        enum pv_side side;                  /* this VM's end */
        const char *peer_vm;
        enum pv_vlink_state state;
        uint32_t gen;                       /* incremented at each ON */
        struct pvd_region region[PV_REGION_COUNT];
        struct pv_ring tx, rx;              /* control rings (tx: we produce) */
        struct pvd_pending *pending_head, *pending_tail;
        size_t pending_bytes;
        struct pvd_pending *rx_stalled;     /* a backend message waiting (hv.h, ordering) */
        void *hv;                           /* backend state */
        void *drv[PV_DRV_COUNT];            /* driver state */
        uint64_t up_since_ms;               /* uv_now() at the last ON */
        uint64_t up_count, down_count;
        uint64_t ctl_xirq_rx;
};

/* Send a driver message to the peer pvd over the control ring (copied).
 * When the ring is full the message waits in a local queue and goes out, in
 * order, as the peer drains the ring; nothing is dropped while the vlink is
 * ON. 0, -ENOTCONN (vlink not ON), -EMSGSIZE (> PV_CTL_MSG_MAX), -ENOBUFS
 * (the peer has not drained for too long: the vlink is reset). */
int pvd_vlink_send(struct pvd_vlink *vl, enum pv_drv_id drv, uint32_t type,
                   const void *msg, uint32_t len);
/* The same, without waking a sleeping peer: for a message that can wait
 * until the next pvd_vlink_send or pvd_vlink_flush_notify (the caller
 * arranges one soon). It keeps its place in the ring's order. */
int pvd_vlink_send_quiet(struct pvd_vlink *vl, enum pv_drv_id drv, uint32_t type,
                         const void *msg, uint32_t len);
/* Wake the peer if it sleeps with messages it has not been told of. */
void pvd_vlink_flush_notify(struct pvd_vlink *vl);

/* The peer broke the vlink's rules (corrupt ring, impossible message):
 * log why and reset the vlink (OFF, then back ON with fresh memory when the
 * peer reconnects). Safe to call from driver callbacks. */
void pvd_vlink_fail(struct pvd_vlink *vl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Send the control xIRQ to the peer now (drivers with rings of their own,
 * after producing into them, when the ring's notify check says so). */
int pvd_vlink_notify(struct pvd_vlink *vl);

/* Backend -> core. */
/* Sizes of every region of this vlink (0: absent), page-rounded. */
void pvd_vlink_region_sizes(const struct pvd_vlink *vl, size_t sizes[PV_REGION_COUNT]);
/* The same from the configuration alone: what pvhv sizes a vlink's shared
 * memory with, so that pvd and pvhv can never disagree. */
void pv_vlink_cfg_region_sizes(const struct pv_vlink_cfg *cfg, size_t sizes[PV_REGION_COUNT]);
/* Server end: fresh regions are mapped in vl->region[]; the control
 * header and each driver's region_init run before the peer sees them. */
void pvd_vlink_regions_created(struct pvd_vlink *vl);
/* Client end of a backend whose memory outlives a generation: before it
 * says ON, the shared words it owns in the control region and the drivers'
 * regions are written again (see struct pvd_driver, client_join). */
void pvd_vlink_client_join(struct pvd_vlink *vl);
void pvd_vlink_set_state(struct pvd_vlink *vl, enum pv_vlink_state st);
void pvd_vlink_xirq(struct pvd_vlink *vl);  /* the peer's control xIRQ */

/* Backend -> peer's backend, in ring order (hv.h, ordering rule): like
 * pvd_vlink_send, delivered to the peer backend's ring_msg. */
int pvd_vlink_send_hv(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len);
/* The backend can now take the ring message its ring_msg put off. */
void pvd_vlink_rx_resume(struct pvd_vlink *vl);

/* Hypervisor services for drivers (see hv/hv.h for the contract). */
int pvd_xirq_alloc(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd);
int pvd_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd);
void pvd_xirq_free(struct pvd_vlink *vl, uint32_t id);
int pvd_mem_alloc(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out);
int pvd_mem_import(struct pvd_vlink *vl, int fd, uint64_t size, struct hv_mem *out);
void pvd_mem_free(struct pvd *pvd, struct pvd_vlink *vl, struct hv_mem *m);
int pvd_grant(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref);
int pvd_grant_get(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out);
void pvd_grant_revoke(struct pvd_vlink *vl, uint32_t gref);
/* The backend's capabilities (HV_CAP_*) less those PVD_HV_CAPS_OFF turned
 * off. */
unsigned pvd_hv_caps(const struct pvd *pvd);

/* ---- device nodes and program connections -------------------------------- */

struct pvd_node {
        struct pvd *pvd;
        char name[PV_NAME_MAX];             /* "vrpq-clt-vogl0", "control" */
        char path[PATH_MAX];
        const struct pvd_driver *drv;       /* NULL for the control node */
        struct pvd_vlink *vl;               /* NULL for the control node */
        int fd;
        uv_poll_t poll;
        uid_t uid;
        gid_t gid;
        mode_t mode;
        struct pvd_conn *conns;             /* list */
        unsigned nconns;
        unsigned refused_pending;           /* refused, waiting to read their refusal */
        struct pvd_conn *refused_conns;     /* ... those (list by rnext) */
        uint64_t accepted, refused;
        struct pv_log_limit log_refused;
};

struct pvd_conn {
        struct pvd_node *node;
        int fd;
        uv_poll_t poll;
        struct ucred cred;
        char comm[32];                      /* the program's name, for status */
        uint64_t id;                        /* unique in this pvd */
        void *priv;                         /* the driver's per-connection state */
        struct pvd_conn *next, **pprev;     /* pprev NULL: refused, not in the node's list */
        struct pvd_conn *rnext;             /* refused: in node->refused_conns */
        bool closing;
        bool refused;
        bool counted;                       /* in its user's connection count (pvd-pvd-limits.c) */
        bool sees_all;                      /* root or the control group: sees every program */
};

/* Send a message (and its fds) to the program. A program that does not
 * read its socket is dropped (logged). 0 or -errno. */
int pvd_conn_send(struct pvd_conn *c, const struct pv_msg *m);
/* Reply to req with diag; on failure fmt (may be NULL) gives the sentence
 * for the user, in PV_K_MSG. */
int pvd_conn_reply_err(struct pvd_conn *c, const struct pv_msg *req, int diag,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Drop a connection: the driver's conn_close runs once, the fd closes, the
 * object is freed later (safe inside any callback). */
void pvd_conn_close(struct pvd_conn *c, const char *why);
/* The same, telling the program first why (diag and a sentence that
 * becomes its pvLastError()). */
void pvd_conn_drop(struct pvd_conn *c, int diag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- drivers ------------------------------------------------------------- */

struct pvd_driver {
        const char *name;                   /* "vrpq", "vumem", "vbpipe" */
        enum pv_drv_id id;
        enum pv_region_id region;
        /* Bytes of the driver's region on this vlink; 0: the driver is not
         * on this vlink (no region, no device node). */
        size_t (*region_size)(const struct pv_vlink_cfg *cfg);
        /* Server end: fresh memory of this driver's region, not yet seen by
         * the peer: write its layout header (optional). */
        void (*region_init)(struct pvd_vlink *vl);
        /* Client end, about to say ON in memory that held an earlier
         * generation (the ivshmem backend): write again the shared words
         * this side owns in the driver's region (its rings' indices and
         * sleep flags), so that a late write of the last generation's is
         * never read as this one's (optional). */
        void (*client_join)(struct pvd_vlink *vl);
        /* pvd starts / stops: private state in vl->drv[id]. */
        int (*attach)(struct pvd_vlink *vl);
        void (*detach)(struct pvd_vlink *vl);
        /* The vlink went ON (regions mapped, fresh) / is leaving ON (fail
         * everything that crossed it, free what the peer held). */
        void (*up)(struct pvd_vlink *vl);
        void (*down)(struct pvd_vlink *vl);
        /* A message from the peer pvd: a private copy, still hostile. */
        void (*msg)(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len);
        /* The control xIRQ arrived: check the driver's own rings (optional). */
        void (*kick)(struct pvd_vlink *vl);
        /* A program connected to one of its device nodes (optional). */
        int (*conn_open)(struct pvd_conn *c);
        /* A request from a program. < 0: protocol violation, the connection
         * is dropped. Errors for the program are replies, returning 0. */
        int (*conn_msg)(struct pvd_conn *c, struct pv_msg *m);
        /* The program is gone or dropped: free all it held. */
        void (*conn_close)(struct pvd_conn *c);
        /* pvctl stat <name>: pack one map describing this vlink. */
        void (*stat)(struct pvd_vlink *vl, msgpack_packer *pk);
};

extern const struct pvd_driver pvd_drv_vrpq;
extern const struct pvd_driver pvd_drv_vumem;
extern const struct pvd_driver pvd_drv_vbpipe;
extern const struct pvd_driver *const pvd_drivers[PV_DRV_COUNT]; /* by id; [PV_DRV_CORE] NULL */

/* ---- the daemon ---------------------------------------------------------- */

#define PVD_DIR_MAX 96

struct pvd_options {
        const char *config;
        const char *vm;
        const char *runtime_dir;
        const struct hv_backend *hv;
        const char *hv_values[HV_MAX_OPTIONS];  /* the backend's options[i] */
        int log_level;
};

struct pvd {
        uv_loop_t *loop;
        struct pv_platform *plat;
        int vm;                              /* index in plat->vms */
        const char *vm_name;
        /* Short enough for socket paths (sun_path is 108 bytes). */
        char runtime_dir[PVD_DIR_MAX];
        const struct hv_backend *hv;
        void *hv_priv;                       /* the backend's own state */
        unsigned hv_caps;                    /* hv->caps less PVD_HV_CAPS_OFF */
        struct pvd_vlink *vlinks;
        unsigned nvlinks;
        struct pvd_node *nodes;
        unsigned nnodes;
        uv_signal_t sig[3];
        uv_timer_t stop_timer;
        int lock_fd;
        bool ready_sent;
        bool stopping;
        uint64_t start_ms;
        uint64_t next_conn_id;
        /* Hot polling (pvd_hot): the loop does not sleep until hot_until_ns. */
        uv_idle_t hot_idle;
        bool hot;
        uint64_t hot_ns;                     /* PVD_SPIN_US, 0 on one CPU */
        uint64_t hot_until_ns;
        uint64_t hot_spells;
        struct pvd_limits *limits;           /* per-user limits, fd budget (pvd-pvd-limits.c) */
        const struct pvd_conn *viewer;       /* while answering pvctl: who asks */
};

/* Whether the program asking pvctl status or stat (pvd->viewer) may see a
 * program of user owner: root and the control group see all, others their
 * own. PVD_UID_PEER: a program of the peer VM. Drivers leave out the pid
 * and name of programs the viewer may not see. */
#define PVD_UID_PEER ((uid_t)-1)
bool pvd_viewer_sees(const struct pvd *pvd, uid_t owner);

/* Keep the loop polling without sleeping for the next PVD_SPIN_US: called
 * when an answer is due soon (a request was passed on and its answer will
 * come back through this pvd), so that neither the program's socket nor the
 * peer's xIRQ has to wake a sleeping pvd. Sleeping costs a scheduler
 * wake-up per hop, tens of microseconds on a virtual machine; polling costs
 * a CPU for at most the spin time, yielded to any program that wants it. */
void pvd_hot(struct pvd *pvd);
/* The spin time a driver polls for: PVD_SPIN_US when it is set (a bad
 * value is reported and default_us used), else default_us; 0 on a machine
 * with one CPU. */
uint64_t pvd_spin_ns(unsigned default_us);

/* Helpers for the core and backends. */
/* mkdir -p with mode: 0 or -errno. */
int pvd_mkdir_p(const char *dir, mode_t mode);
/* An exclusive lock on path (created), recording this pvd; on conflict
 * logs who holds it ("another pvd (...) already <what>"). The fd, or
 * -errno. */
int pvd_lock_take(struct pvd *pvd, const char *path, const char *what);

/* Helpers for drivers. */
struct pvd_node *pvd_node_find(struct pvd *pvd, const char *name);
/* 64 random bits (tokens, ids that must not be guessable). */
uint64_t pvd_random64(void);
/* Pack a string / a key-value pair into a msgpack map. */
void pvd_pack_str(msgpack_packer *pk, const char *s);
void pvd_pack_kv_str(msgpack_packer *pk, const char *k, const char *v);
void pvd_pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v);
void pvd_pack_kv_i64(msgpack_packer *pk, const char *k, int64_t v);
void pvd_pack_kv_bool(msgpack_packer *pk, const char *k, bool v);

#endif
