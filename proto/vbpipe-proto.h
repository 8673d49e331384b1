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
 *   When the program asks (VBPIPE_OPEN_DIRECT), the answer may carry
 *   three more fds for direct access (flag VBPIPE_INFO_DIRECT): the end's direct page (a memfd holding a struct
 *   vbpipe_direct), the vlink's vbpipe memory, and the end's doorbell (an
 *   eventfd pvd watches). See "direct access" below.
 *
 * pvd <-> pvd (control ring messages of driver PV_DRV_VBPIPE, each a
 * struct vbpipe_msg):
 *   OPEN  gen             my end `gen` is open and has no partner yet
 *   PAIR  gen, peer_gen   (server -> client only) server end `gen` offers
 *                         a conversation to client end `peer_gen`
 *   ACCEPT gen, peer_gen  (client -> server only) client end `gen` takes
 *                         server end `peer_gen`: the conversation starts
 *   STOP  gen             the reader of my end `gen` is gone: send me
 *                         nothing more for it, and FIN
 *   FIN   gen, index      my end `gen` produced no byte beyond ring index
 *                         `index` (free-running, like the ring's prod)
 * Each end gets a new generation, increasing per side. Every OPEN is
 * followed, sooner or later, by exactly one FIN for the same gen (an end
 * closed before pairing sends STOP and FIN with the index it started at).
 * The server decides the pairings, so that both sides agree which end
 * reads which bytes. Neither side pairs an end whose program is gone, even
 * when its loop has not heard yet: each looks at the program's sockets
 * first. The server answers its program's open only at the ACCEPT; a
 * client whose end closed before the PAIR came does not accept it, and
 * that end's STOP tells the server, whose end then waits for the next
 * client end. So an open never returns paired with a program that died
 * before it began. A new pairing starts only when both directions of the
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
#define VBPIPE_OPEN_DIRECT   0x2u /* the program asks for direct access */
#define VBPIPE_OPEN_KNOWN    0x3u

/* PV_K_FLAGS of an OPEN answer: the end's info. */
#define VBPIPE_INFO_ANY      0x1u /* flag 'a': a read returns what is there */
#define VBPIPE_INFO_DIRECT   0x2u /* fds 1-3: direct page, vbpipe memory, doorbell */
/* The peer's end runs on another kernel (the backend lacks
 * HV_CAP_ONE_KERNEL: a QEMU guest, or the host beside one): it can answer
 * while a direct call polls the ring, even on one CPU, and a wake-up across
 * the boundary costs far more than a short poll. */
#define VBPIPE_INFO_REMOTE   0x4u

/* ---- pvd <-> pvd -------------------------------------------------------- */

enum vbpipe_msg_type {
        VBPIPE_MSG_OPEN = 1,
        VBPIPE_MSG_PAIR = 2,
        VBPIPE_MSG_STOP = 3,
        VBPIPE_MSG_FIN = 4,
        VBPIPE_MSG_ACCEPT = 5,
};

struct vbpipe_msg {
        uint32_t gen;       /* the sender's end */
        uint32_t peer_gen;  /* PAIR: the client's end; ACCEPT: the server's; else 0 */
        uint32_t index;     /* FIN: where the sender's bytes end; else 0 */
        uint32_t reserved;  /* 0 */
};

/* ---- vlink memory --------------------------------------------------------- */

#define VBPIPE_MAGIC    0x45504256u /* "VBPE" */
#define VBPIPE_VERSION  3u  /* 2: ring headers of three cache lines; 3: ACCEPT */
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

/* ---- direct access (program <-> its own pvd) ------------------------------------
 *
 * A program may move bytes between its buffers and the byte rings itself,
 * without pvd, while pvd lets it: each direction has a lock word in the
 * end's direct page, shared by pvd and the program(s) holding the end.
 *   lock    VBPIPE_LOCK_FREE, VBPIPE_LOCK_PVD, or the pid of the process
 *           whose read or write is using the ring now. Taken with a
 *           compare-and-swap from FREE; a program takes it only while `ok`
 *           is 1, and holds it only inside one read or write.
 *   ok      1: pvd grants direct access (the conversation is steady). pvd
 *           changes it only while it holds the lock, and holds the lock
 *           whenever ok is 0.
 *   index   the holder's ring index when it lets go: rx, the consumer
 *           index; tx, the producer index (free-running). Stored before
 *           the ring header's index, so that it is never behind it.
 *   want    pvd found the lock taken and waits: the holder rings the
 *           doorbell after letting go.
 *   kick    the holder moved bytes and the peer sleeps: pvd sends the xIRQ
 *           (programs never touch xIRQs). The holder rings the doorbell.
 * Bytes pvd has moved already come first: the program reads its socket
 * (non-blocking; only when rx.sock says pvd put bytes there) before the rx
 * ring, and writes into the tx ring only when
 * its socket holds nothing pvd has not read yet. Before letting go of rx,
 * the program arms cons_wait and rings the doorbell if bytes are left, so
 * that pvd moves them into the socket: poll and FIONREAD see them there.
 * A program that reads in a loop need not (rx only):
 *   reading  program: 1, "I come back for the bytes: leave them in the
 *            ring" (cons_wait stays 0: the peer sends no xIRQ for them).
 *            pvd: while it is 1, pvd moves no byte of the ring into the
 *            socket, and looks every VBPIPE_LOOKOUT_US (doubling up
 *            to VBPIPE_LOOKOUT_MAX_US) whether the program still reads (its index or calls moved, or it holds
 *            the lock); when it does not, pvd sets it to 0 and does as
 *            above. Both set it only while holding the lock; a program
 *            that could not take the ring and sleeps in the socket
 *            instead clears it without, and rings the doorbell.
 *   lookout  pvd: 1 while it looks (its timer runs). A program that sets
 *            reading while lookout is 0 rings the doorbell, so that pvd
 *            starts looking.
 * pvd treats the page as written by a stranger: an index out of bounds
 * ends the direct access of that end; reading is only a hint (a program
 * that says it reads and does not has its bytes moved a period later).
 */

#define VBPIPE_DIRECT_MAGIC   0x52494456u /* "VDIR" */
#define VBPIPE_DIRECT_VERSION 2u
#define VBPIPE_LOOKOUT_US     100u
#define VBPIPE_LOOKOUT_MAX_US 1000u
#define VBPIPE_DIRECT_SIZE    4096u
#define VBPIPE_LOCK_FREE      0u
#define VBPIPE_LOCK_PVD       1u

struct vbpipe_direct_dir {
        _Alignas(PV_CACHELINE) uint32_t lock;
        uint32_t ok;
        uint32_t index;
        uint32_t want;
        uint32_t kick;
        uint32_t peak;                /* program: highest ring fill it saw */
        uint32_t sock;                /* rx: pvd put bytes in the socket since the
                                         holder last found it empty */
        uint64_t bytes, calls;        /* program: bytes moved, calls that moved some */
        uint64_t xirq_asked, xirq_suppressed;
        uint32_t reading;             /* rx: the program reads in a loop (see above) */
        uint32_t lookout;             /* rx: pvd looks every VBPIPE_LOOKOUT_US */
};

struct vbpipe_direct {
        uint32_t magic;
        uint32_t version;
        uint32_t ring_size;
        uint32_t server;              /* 1: this end is the server's (tx is s2c) */
        uint32_t vgen;                /* the vlink generation of the memory fd */
        struct vbpipe_direct_dir rx, tx;
};

_Static_assert(sizeof(struct vbpipe_direct) <= VBPIPE_DIRECT_SIZE, "vbpipe direct page fits");

#endif
