/* VBPIPE daemon side: what vbpipe.c (ends, data path, program requests),
 * vbpipe-peer.c (messages between pvds, vlink life) and vbpipe-stat.c
 * (pvctl stat vbpipe) share. See vbpipe.c for how the driver works. */
#ifndef PVD_VBPIPE_INT_H
#define PVD_VBPIPE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pv-bytering.h"
#include "pvd.h"
#include "vbpipe-proto.h"
#include "watch.h"

#define VBP_PUMP_ROUNDS 32            /* readv/writev per callback, for fairness */
#define VBP_FILLER_CHUNK 65536
#define VBP_WAKE_LOCK "/sys/power/wake_lock"
#define VBP_SPIN_US_DEFAULT 50        /* hot polling after the last byte moved */

enum vbp_state { VBP_WAIT, VBP_OPEN };

struct vbp_pipe;

struct vbp_end {
        struct vbp_pipe *p;
        uint32_t gen;
        enum vbp_state st;
        struct pvd_watch *w;       /* D, pvd's end of the socketpair */
        int prog_fd;               /* the program's end while pvd holds it (blocking open) */
        struct pvd_conn *conn;     /* a blocking open waiting for its answer */
        uint64_t seq;              /* ... to request seq */
        uint32_t filler;           /* bytes written through the program's end (O_NONBLOCK) */
        pid_t pid;
        uid_t uid;                 /* who may see it in pvctl stat (pvd_viewer_sees) */
        char comm[32];
        uint64_t since_ms;
        uint32_t peer_gen;
        bool announced;            /* OPEN sent on this vlink generation */
        bool gone;                 /* the program closed its end or gave up its open */
        bool tx_full;              /* ring full: D unread until the peer makes room */
        bool tx_done;              /* FIN sent (or vlink down): D is not read any more */
        bool rx_blocked;           /* D full: waiting for POLLOUT */
        bool rx_done;              /* EOF given, or the program reads no more */
        bool stop_sent;
        uint8_t *tail;             /* the peer's bytes saved when the vlink went down */
        size_t tail_len, tail_off;
        /* Direct access (vbpipe-direct.c). */
        struct vbpipe_direct *dir; /* the end's direct page, or NULL */
        int dir_fd;
        struct pvd_watch *bell;    /* the doorbell eventfd */
        uint32_t dir_vgen;         /* vlink generation of the memory the program got */
        bool dir_bad;              /* it wrote an impossible index: no more direct access */
        uint64_t dir_seen[8];      /* program counters already added: rx bytes, calls, tx bytes, calls,
                                      then the xIRQs it asked for and saved, rx and tx */
};

enum vbp_peer { PEER_CLOSED, PEER_WAITING, PEER_OPEN, PEER_CLOSING };

struct vbp_flow {
        uint64_t bytes, xfers;     /* bytes moved, and the socket calls that moved them */
        uint32_t peak;             /* highest ring fill seen */
};

struct vbp_pipe {
        struct pvd_vlink *vl;
        const char *name;          /* this end's device name */
        bool any;                  /* flag 'a' */
        uint32_t wakeup_ms;
        uint32_t size;             /* ring bytes per direction */
        bool on;                   /* rings attached (vlink ON) */
        int depth;                 /* entry points on the stack */
        struct pv_ring tx, rx;
        struct vbp_end *cur;       /* the end using the rings (or waiting to) */
        struct vbp_end *next;      /* an open that waits for cur's end */
        struct vbp_end *txe;       /* paired end whose bytes go into tx (FIN not sent) */
        struct {                   /* the peer's bytes now arriving in rx */
                bool active;
                uint32_t gen;      /* the peer's end */
                struct vbp_end *to;/* NULL: nobody reads them (discard up to FIN) */
                bool fin;
                uint32_t fin_at;
                bool stopped;      /* the peer's reader is gone too */
        } seg;
        uint32_t rx_start;         /* where the peer's next segment begins */
        uint32_t next_gen;
        /* The peer's ends as the messages tell (reset at each ON). */
        bool peer_waiting;         /* an announced end without partner */
        uint32_t peer_wait_gen;
        bool peer_wait_stopped;    /* ... whose STOP came: it closed before pairing */
        bool proposed;             /* server: PAIR sent, its ACCEPT or the end's STOP awaited */
        uint32_t proposed_gen;     /* ... of this server end */
        uint32_t peer_max_gen;
        uint32_t paired_max;       /* client: highest own end the server paired */
        uint32_t announced_max;    /* client: highest own end announced */
        enum vbp_peer peer;
        /* Statistics. */
        uint64_t conversations, refused_busy, cancelled;
        uint64_t pair_refused;     /* PAIRs the other side refused (its end had closed) */
        struct vbp_flow out, in;   /* program -> peer, peer -> program */
        uint64_t xirq_sent, xirq_suppressed;     /* of rings already detached */
        /* Hot polling: for spin_us after bytes moved, the loop polls D and
         * the rx ring instead of sleeping (see vbp_hot_touch). */
        uv_idle_t *idle;
        uv_idle_t *more;           /* rx_pump stopped after VBP_PUMP_ROUNDS: go on at the next turn */
        bool hot;
        uint64_t hot_until_ns;
        uint64_t spin_ns;
        uint64_t hot_spells;
        /* Direct access: peer messages waiting for the rings to come back. */
        struct vbp_qmsg *q_head, *q_tail;
        uv_timer_t *stuck;         /* looks at a holder that keeps a ring too long */
        uint64_t dir_deferred, dir_stolen;
        /* Looking out for a program that reads in a loop (rx.reading): a
         * timerfd, and where the program was at the last look. */
        struct pvd_watch *lookout;
        bool looking;
        uint32_t look_index;
        uint64_t look_calls;
        unsigned look_us;          /* the period of looks now */
        uint64_t look_spells;      /* lookouts started */
        uint64_t look_stops;       /* looks that found the program had stopped reading */
        /* wakeup= */
        int wake_fd;
        char wake_path[128];
        uint64_t wake_until_ms, wake_count, wake_errors;
};

static inline struct vbp_pipe *pipe_of(const struct pvd_vlink *vl)
{
        return vl->drv[PV_DRV_VBPIPE];
}

static inline int end_fd(const struct vbp_end *e)
{
        return pvd_watch_fd(e->w);
}

/* vbpipe.c: ends and the program's requests */
void vbp_pipe_enter(struct vbp_pipe *p);
void vbp_pipe_leave(struct vbp_pipe *p);
const char *vbp_end_state_name(const struct vbp_end *e);
void vbp_end_watch(struct vbp_end *e);
void vbp_seg_discard(struct vbp_pipe *p);
void vbp_tx_finish(struct vbp_end *e);
void vbp_end_answer(struct vbp_end *e, int diag);
void vbp_end_pair(struct vbp_end *e, uint32_t peer_gen);
void vbp_end_announce(struct vbp_end *e);
void vbp_end_free(struct vbp_end *e);
bool vbp_end_closed(const struct vbp_end *e);
bool vbp_end_hung_up(const struct vbp_end *e);
void vbp_seg_end(struct vbp_pipe *p);
void vbp_reader_gone(struct vbp_end *e);
void vbp_end_gone(struct vbp_end *e);
void vbp_end_check_gone(struct vbp_end *e);
bool vbp_peer_send(struct vbp_pipe *p, uint32_t type, uint32_t gen, uint32_t peer_gen, uint32_t index);

/* vbpipe-data.c: the pumps between the program's socket and the rings */
void vbp_fail_corrupt(struct vbp_pipe *p, const char *what);
void vbp_tx_notify(struct vbp_pipe *p);
void vbp_rx_notify(struct vbp_pipe *p);
void vbp_wake_hold(struct vbp_pipe *p);
void vbp_tx_pump(struct vbp_pipe *p);
void vbp_rx_pump(struct vbp_pipe *p);
void vbp_tail_pump(struct vbp_end *e);
void vbp_refresh(struct vbp_pipe *p);
void vbp_end_cb(struct pvd_watch *w, int status, int events, void *arg);
int vbp_hot_init(struct vbp_pipe *p);
void vbp_hot_fini(struct vbp_pipe *p);

/* vbpipe-direct.c */
enum vbp_claim { CLAIM_TRY, CLAIM_WAIT, CLAIM_FORCE };
int vbp_dir_create(struct vbp_end *e);
void vbp_dir_free(struct vbp_end *e);
uint64_t vbp_dir_answer_fds(struct vbp_end *e, struct pv_msg *r);
bool vbp_dir_claim(struct vbp_pipe *p, enum vbp_claim mode);
bool vbp_dir_withdraw(struct vbp_pipe *p);
bool vbp_enter(struct vbp_pipe *p, enum vbp_claim mode);
void vbp_dir_grant(struct vbp_pipe *p);
bool vbp_dir_reading(struct vbp_pipe *p, struct vbp_end *e);
void vbp_dir_fold(struct vbp_end *e);
int vbp_dir_init(struct vbp_pipe *p);
void vbp_dir_fini(struct vbp_pipe *p);

/* vbpipe-peer.c */
struct vbp_qmsg;
void vbp_msg_handle(struct vbp_pipe *p, uint32_t type, const struct vbpipe_msg *m);
void vbp_msg_queue(struct vbp_pipe *p, uint32_t type, const struct vbpipe_msg *m);
void vbp_msg_drain(struct vbp_pipe *p);
void vbp_msg_drop(struct vbp_pipe *p);
void vbpipe_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len);
void vbpipe_kick(struct pvd_vlink *vl);
size_t vbpipe_region_size(const struct pv_vlink_cfg *cfg);
void vbpipe_region_init(struct pvd_vlink *vl);
void vbpipe_client_join(struct pvd_vlink *vl);
void vbpipe_up(struct pvd_vlink *vl);
void vbpipe_down(struct pvd_vlink *vl);
int vbpipe_attach(struct pvd_vlink *vl);
void vbpipe_detach(struct pvd_vlink *vl);

/* vbpipe-stat.c */
void vbpipe_stat(struct pvd_vlink *vl, msgpack_packer *pk);

#endif
