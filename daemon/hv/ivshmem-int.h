/* What the ivshmem backend's files share: ivshmem.c (the faces, the link
 * state, the connection, the backend's life) and ivshmem-grant.c (program
 * xIRQs, grantable memory, grants and their announcements). */
#ifndef PVD_IVSHMEM_INT_H
#define PVD_IVSHMEM_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.h"
#include "id-table.h"
#include "ivshmem-heap.h"
#include "pv-ivshmem.h"
#include "pvd.h"

struct ivpci;
struct ivsock;
struct pvd_watch;

/* The heartbeat is a thread of its own: it says "this pvd lives", which a
 * loop that the scheduler keeps waiting (a busy host) must not silence. It
 * only ever writes the heartbeat words of attached vlinks. */
struct ivs_global {
        char dir[PVD_DIR_MAX];
        bool guest;                 /* the PCI face */
        pthread_t beat;
        pthread_mutex_t lock;
        pthread_cond_t cv;
        bool beating, stop;
        uint64_t *beats[256];       /* the heartbeat words of attached vlinks */
};

struct ivs_link;

/* A program xIRQ: this side's eventfd of bit `bit`. */
struct ivs_xirq {
        struct ivs_link *l;
        unsigned bit;
        int fd;                     /* -1: free */
        bool mine;                  /* allocated by this side (else the peer's) */
        bool tx;                    /* this side's programs signal through it (watched) */
        struct pvd_watch *relay;    /* tx: the watch that relays to the peer */
};

struct ivs_link {
        struct pvd_vlink *vl;
        int side, other;
        char path[108];
        struct ivsock *sock;        /* the host face */
        struct ivpci *pci;          /* the guest face */
        struct pvd_watch *sock_w, *vec_w[PV_IVSHM_VECTORS];
        uv_timer_t timer;           /* connect retry, heartbeat, deferred work */
        uint8_t *mem;
        uint64_t mem_size;
        dev_t mem_dev;              /* the memory's identity: a grant must be of it */
        ino_t mem_ino;
        struct pv_ivshm_hdr lay;    /* what the memory must look like (our own computation) */
        struct pv_ivshm_side *own, *peer_area;
        uint32_t gen;               /* server: the generation it made; client: the one it joined */
        uint32_t incarnation;       /* ours, chosen when we attach */
        uint32_t peer_inc;          /* the peer's incarnation we are ON with */
        uint32_t own_st, own_gen;   /* what we last wrote in our area */
        uint64_t peer_beat;
        uint64_t peer_beat_ms;
        uint64_t remade_ms;         /* server: the last regions made again for a client that found them bad */
        bool redo;                  /* look at the state again from the timer */
        struct ivs_heap heap;
        struct id_table own_grant, peer_grant;
        struct ivs_xirq xirq[PV_IVSHM_XIRQS];
        uint64_t rings_window_ms, rings_in_window;
        uint32_t next_grant;
        uint64_t connects, rings_sent, rings_recv, grants_tx, grants_rx;
        char last_err[160];
};

static inline struct ivs_link *ivs(struct pvd_vlink *vl)
{
        return vl->hv;
}

/* ivshmem.c */
void ivs_log_once(struct ivs_link *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ring vector vec of the other side: 0, or -ENOTCONN when it is not there. */
int ivs_ring(struct ivs_link *l, unsigned vec);
/* The fd that maps the vlink's memory (owned by the face). */
int ivs_mem_fd(const struct ivs_link *l);

/* ivshmem-grant.c */
/* Forget the program xIRQs of the last generation. */
void ivs_xirqs_clear(struct ivs_link *l);
/* The peer rang PV_IVSHM_VEC_XIRQ: wake what it set. */
void ivs_xirqs_in(struct ivs_link *l);
int ivs_xirq_alloc(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd);
int ivs_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd);
void ivs_xirq_free(struct pvd_vlink *vl, uint32_t id);
int ivs_mem_alloc(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out);
void ivs_mem_free(struct pvd_vlink *vl, struct hv_mem *m);
int ivs_grant(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref);
int ivs_grant_get(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out);
void ivs_grant_revoke(struct pvd_vlink *vl, uint32_t gref);
int ivs_ring_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len);

#endif
