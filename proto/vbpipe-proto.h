/* VBPIPE protocol: what libpvclient, pvd and the peer VM's pvd agree on.
 *
 * Program <-> pvd (struct pv_msg on the vbpipe's device node):
 *   PV_OP_VBPIPE_OPEN   PV_K_FLAGS (VBPIPE_OPEN_*)
 *                       -> one fd: the program's end of a socketpair
 *                          (AF_UNIX, SOCK_STREAM) whose other end pvd keeps;
 *                          PV_K_SIZE ring size, PV_K_FLAGS VBPIPE_INFO_*,
 *                          PV_K_GEN the end's generation.
 *   A blocking open is answered when the peer's end is open too; a
 *   non-blocking one at once, with the program's end made unwritable until
 *   the peer arrives (see daemon/vbpipe.c). -EBUSY: the end is open already.
 *   After the answer the program's fd is the end: its close is the end's
 *   close, and the control connection may go.
 *
 * pvd <-> pvd (control ring messages of driver PV_DRV_VBPIPE, each a
 * struct vbpipe_msg):
 *   OPEN  gen             my end `gen` is open and has no partner yet
 *   PAIR  gen, peer_gen   (server -> client only) server end `gen` and
 *                         client end `peer_gen` form a conversation
 *   STOP  gen             the reader of my end `gen` is gone: send me
 *                         nothing more for it, and FIN
 *   FIN   gen, index      my end `gen` produced no byte beyond ring index
 *                         `index` (free-running, like the ring's prod)
 * Each end gets a new generation, increasing per side. Every OPEN is
 * followed, sooner or later, by exactly one FIN for the same gen (an end
 * closed before pairing sends STOP and FIN with the index it started at).
 * The server decides the pairings, so that both sides agree which end
 * reads which bytes. A new pairing starts only when both directions of the
 * previous conversation are finished (each side has sent its FIN and
 * consumed the other's bytes up to its FIN index): the bytes of one
 * conversation can never be read as another's.
 *
 * Vlink memory (PV_REGION_VBPIPE): a header page (struct vbpipe_region),
 * then the server -> client byte ring's data, then the client -> server
 * one, each `ring_size` bytes (power of two), both computed by each side
 * from its own configuration. The server writes the magic, version and
 * ring size when it creates the memory; the client checks them once.
 */
#ifndef VBPIPE_PROTO_H
#define VBPIPE_PROTO_H

#include <stdint.h>

#include "pv-msg.h"
#include "pv-ring.h"

/* ---- program <-> pvd --------------------------------------------------- */

enum {
        PV_OP_VBPIPE_OPEN = PV_OP_VBPIPE_FIRST,
};

/* PV_K_FLAGS of an OPEN request. */
#define VBPIPE_OPEN_NONBLOCK 0x1u
#define VBPIPE_OPEN_KNOWN    0x1u

/* PV_K_FLAGS of an OPEN answer: the end's info. */
#define VBPIPE_INFO_ANY      0x1u /* flag 'a': a read returns what is there */

/* ---- pvd <-> pvd -------------------------------------------------------- */

enum vbpipe_msg_type {
        VBPIPE_MSG_OPEN = 1,
        VBPIPE_MSG_PAIR = 2,
        VBPIPE_MSG_STOP = 3,
        VBPIPE_MSG_FIN = 4,
};

struct vbpipe_msg {
        uint32_t gen;       /* the sender's end */
        uint32_t peer_gen;  /* PAIR: the client's end; else 0 */
        uint32_t index;     /* FIN: where the sender's bytes end; else 0 */
        uint32_t reserved;  /* 0 */
};

/* ---- vlink memory --------------------------------------------------------- */

#define VBPIPE_MAGIC    0x45504256u /* "VBPE" */
#define VBPIPE_VERSION  1u
#define VBPIPE_HDR_SIZE 4096u

struct vbpipe_region {
        uint32_t magic;
        uint32_t version;
        uint32_t ring_size;          /* bytes per direction */
        uint32_t reserved[13];
        struct pv_ring_hdr s2c;      /* server -> client */
        struct pv_ring_hdr c2s;      /* client -> server */
};

_Static_assert(sizeof(struct vbpipe_region) <= VBPIPE_HDR_SIZE, "vbpipe header fits its page");

static inline uint64_t vbpipe_region_bytes(uint64_t ring_size)
{
        return VBPIPE_HDR_SIZE + 2 * ring_size;
}

static inline uint64_t vbpipe_s2c_data(uint64_t ring_size)
{
        (void)ring_size;
        return VBPIPE_HDR_SIZE;
}

static inline uint64_t vbpipe_c2s_data(uint64_t ring_size)
{
        return VBPIPE_HDR_SIZE + ring_size;
}

#endif
