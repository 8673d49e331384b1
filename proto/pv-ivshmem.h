/* The ivshmem backend's vlink memory: one shared memory per vlink, served
 * by pvhv through QEMU's ivshmem server protocol, the same bytes whether a
 * pvd maps it as a host process (the fd pvhv hands out) or inside a guest
 * (BAR2 of the ivshmem-doorbell PCI device).
 *
 *   0                      struct pv_ivshm_hdr     written by pvhv only
 *   hdr.side[s]            one area per side       written by side s's pvd
 *                          (s = PV_SERVER, PV_CLIENT)
 *   hdr.region[r]          the vlink's regions (PV_REGION_*), sized as pvd
 *                          sizes them from the platform device tree
 *   hdr.heap[s]            grantable memory of side s: its pvd carves the
 *                          memory it grants to the other side from here
 *
 * Every offset and size is a multiple of PV_IVSHM_PAGE, and the whole is a
 * power of two (QEMU refuses any other BAR size); what rounding adds goes
 * to the two heaps in equal parts. pv_ivshm_layout() computes the layout
 * from the region sizes and the heap size: pvhv writes what it computes,
 * and pvd checks the header against its own computation.
 *
 * Peers: pvhv serves one socket per side of a vlink, so the socket says
 * which side joined; the peer id does not. Each connection of side s gets a
 * new id, s + 1, s + 3, s + 5, ... (odd for the server VM, even for the
 * client VM), which pvhv writes in presence[s].peer_id: QEMU (7.2) frees a
 * peer's state when told that it left and writes to that freed state if
 * the same id joins again, corrupting its heap, so an id is never given
 * again while a connection that saw it leave lives. Each side gets
 * PV_IVSHM_VECTORS doorbell vectors: PV_IVSHM_VEC_LINK (pvhv rings it
 * after it changed the other side's presence; the other pvd rings it for
 * the control ring and link state) and PV_IVSHM_VEC_XIRQ (program xIRQs,
 * multiplexed).
 *
 * Trust: both VMs can write every byte at any time (a guest writes its
 * BAR). pvhv only writes this memory, never reads it; it keeps its own copy
 * of everything it wrote. pvd reads each field once into a local and checks
 * it before use (DESIGN section 5).
 */
#ifndef PV_IVSHMEM_H
#define PV_IVSHMEM_H

#include <stdint.h>

#include "pv-vlink.h"

#define PV_IVSHM_MAGIC     0x56495650u /* "PVIV" */
#define PV_IVSHM_VERSION   1u
#define PV_IVSHM_PAGE      4096u
#define PV_IVSHM_VECTORS   2u
#define PV_IVSHM_VEC_LINK  0u
#define PV_IVSHM_VEC_XIRQ  1u
/* Peer ids of side s (PV_SERVER 0, PV_CLIENT 1): the first, the side of
 * an id, and how many a side has before they wrap (ids stay within the
 * doorbell register's 16 bits). */
#define PV_IVSHM_PEER_ID_FIRST(s) ((uint32_t)(s) + 1u)
#define PV_IVSHM_PEER_SIDE(id) (((uint32_t)(id) - 1u) & 1u)
#define PV_IVSHM_PEER_IDS_PER_SIDE 32767u
/* Bytes of each side's area (its layout belongs to pvd's ivshmem backend). */
#define PV_IVSHM_SIDE_SIZE (128u * 1024)
/* Default grantable memory per side (info key hv-heap overrides it): on
 * vlinks with VUMEM, whose buffers come from it, and on the others. */
#define PV_IVSHM_HEAP_VUMEM_DEFAULT (60ull << 20) /* with the regions, a 128 MiB memory */
#define PV_IVSHM_HEAP_DEFAULT (8ull << 20)
/* Smallest shared memory pvhv creates. */
#define PV_IVSHM_MIN_SIZE  (1ull << 20)

/* QEMU's ivshmem server protocol (QEMU's docs/specs/ivshmem-spec.rst):
 * one way, server to peer; each message is one little-endian int64,
 * sometimes with one fd (SCM_RIGHTS). On connect: the version, the peer's
 * own id, PV_IVSHM_MSG_SHM with the memory fd, then (id, eventfd) once per
 * vector for every other peer there and then for the peer itself. Later:
 * id with eventfds (a peer joined), id alone (it left). */
#define PV_IVSHM_PROTO_VERSION 0
#define PV_IVSHM_MSG_SHM       (-1)
#define PV_IVSHM_PEER_ID_MAX   65535   /* the doorbell register has 16 bits */

struct pv_ivshm_span {
        uint64_t offset;
        uint64_t size;          /* 0: absent */
};

/* pvhv's view of one side, updated while the vlink lives. */
struct pv_ivshm_presence {
        uint32_t present;       /* 1 while that side's VM is connected to pvhv */
        uint32_t peer_id;       /* that side's id while present, its last id after, 0 before */
        uint32_t conn_gen;      /* incremented each time that side connects */
        uint32_t reserved;
};

struct pv_ivshm_hdr {
        uint32_t magic;
        uint32_t version;
        uint64_t size;                              /* of the whole memory */
        uint32_t vectors;                           /* PV_IVSHM_VECTORS */
        uint32_t reserved0;
        char link_name[128];                        /* NUL-terminated */
        char vm[2][64];                             /* [PV_SERVER], [PV_CLIENT] */
        struct pv_ivshm_span side[2];
        struct pv_ivshm_span region[PV_REGION_COUNT];
        struct pv_ivshm_span heap[2];
        uint8_t reserved1[64];
        /* Live: rewritten by pvhv when a side connects or goes. On a cache
         * line of its own. */
        struct pv_ivshm_presence presence[2] __attribute__((aligned(64)));
};

/* ---- the side areas: what each side's pvd says to the other ---------------------------
 *
 * Link state. Side s's pvd writes its own area only; the other reads it
 * once per look, into locals, and checks it. The server side drives:
 *   server: not READY (its first look, or the link went down) and the
 *           client present (pvhv): zero the regions, write their headers,
 *           gen = gen + 1 (generations count from a random start in each
 *           incarnation), state READY (release), ring the client's link
 *           vector. A READY server waits: a client ON in another
 *           generation leaves it when it sees ours (a new generation then
 *           would clear the regions under a client still writing);
 *   client: the server is READY in a generation it has not joined yet:
 *           check the memory, write its halves of the rings' headers
 *           again (the control rings' and a vbpipe's: c2s prod and
 *           prod_wait, s2c cons and cons_wait; a late write of the
 *           generation it left may have landed after the server cleared
 *           them), state ON with that gen (release),
 *           ring; memory that fails the check: wait for the next
 *           generation;
 *   server: the client is ON in our gen: state ON;
 *   server, READY and its regions' headers found written over (by any
 *           mapping of the memory): a new generation, at most once per
 *           PV_IVSHM_BEAT_MS, or a client that refused them would wait
 *           for one forever.
 * Either side's state leaving ON (or going back: OFF, another gen, a new
 * incarnation) is the link going down for the other, which then starts
 * over. A pvd that restarts while its VM lives writes a new incarnation and
 * OFF; a pvd that dies while its VM lives stops its heartbeat, which the
 * other side notices after PV_IVSHM_DEAD_MS.
 *
 * Doorbells: the sender sets bits with an atomic or in the receiver's
 * causes word (link) or xirq_pending words (program xIRQs), then rings the
 * receiver's vector; the receiver takes the words with an exchange to 0
 * before it acts on them, so a ring is never lost and a bit set twice is
 * one wake-up. A bit the receiver does not know is ignored. */

#define PV_IVSHM_SIDE_MAGIC   0x45444953u /* "SIDE" */
#define PV_IVSHM_OFF          0u
#define PV_IVSHM_READY        1u          /* server: regions fresh for gen */
#define PV_IVSHM_ON           2u
#define PV_IVSHM_BEAT_MS      250u        /* heartbeat period */
#define PV_IVSHM_DEAD_MS      1500u       /* no beat for this long: the pvd is gone */
#define PV_IVSHM_XIRQS        1024u       /* program xIRQ bits per side */
#define PV_IVSHM_XIRQ_BASE(s) ((uint32_t)(s) * (PV_IVSHM_XIRQS / 2)) /* bits side s allocates */

struct pv_ivshm_side {
        /* written by this side's pvd */
        uint32_t magic;
        uint32_t state;             /* PV_IVSHM_OFF, _READY, _ON */
        uint32_t gen;               /* link generation of that state */
        uint32_t incarnation;       /* chosen at each start of this pvd */
        uint64_t heartbeat;         /* counts up every PV_IVSHM_BEAT_MS */
        uint32_t peer_id;           /* the ivshmem id this pvd has */
        uint32_t reserved[9];
        /* set by the other side, taken by this side */
        uint32_t causes __attribute__((aligned(64)));
        uint32_t reserved2[15];
        uint64_t xirq_pending[PV_IVSHM_XIRQS / 64] __attribute__((aligned(64)));
};

_Static_assert(sizeof(struct pv_ivshm_side) <= PV_IVSHM_SIDE_SIZE, "side area size");

#define PV_IVSHM_CAUSE_LINK   1u          /* look at my state */
#define PV_IVSHM_CAUSE_RING   2u          /* look at the control ring */

/* Announcements on the control ring (pvd_vlink_send_hv types), in order
 * with the drivers' messages (daemon/hv/hv.h). */
enum pv_ivshm_ann_type {
        PV_IVSHM_ANN_GRANT_NEW = 1, /* id, offset, size: pages of the sender's heap */
        PV_IVSHM_ANN_GRANT_REVOKE,  /* id */
        PV_IVSHM_ANN_XIRQ_NEW,      /* id, bit, dir (the sender's: HV_XIRQ_TX or _RX) */
        PV_IVSHM_ANN_XIRQ_FREE,     /* id */
};

struct pv_ivshm_ann {
        uint32_t id;
        uint32_t bit;
        uint32_t dir;
        uint32_t reserved;
        uint64_t offset;
        uint64_t size;
};

/* The layout of a vlink's memory: region sizes (page multiples, 0 for
 * absent regions) and each side's heap size in, offsets and the total
 * size out. 0, or -1 if it does not fit in 64 bits. */
static inline int pv_ivshm_layout(const uint64_t region_size[PV_REGION_COUNT], uint64_t heap_size,
                                  struct pv_ivshm_hdr *h)
{
        const uint64_t pg = PV_IVSHM_PAGE;
        uint64_t off = pg; /* the header's page */
        for (int s = 0; s < 2; s++) {
                h->side[s].offset = off;
                h->side[s].size = PV_IVSHM_SIDE_SIZE;
                off += PV_IVSHM_SIDE_SIZE;
        }
        for (int r = 0; r < PV_REGION_COUNT; r++) {
                uint64_t sz = (region_size[r] + pg - 1) / pg * pg;
                if (sz < region_size[r] || off + sz < off)
                        return -1;
                h->region[r].offset = sz ? off : 0;
                h->region[r].size = sz;
                off += sz;
        }
        heap_size = (heap_size + pg - 1) / pg * pg;
        if (heap_size > (UINT64_C(1) << 60) || off + 2 * heap_size < off)
                return -1;
        uint64_t need = off + 2 * heap_size, total = 1;
        while (total < need || total < PV_IVSHM_MIN_SIZE) {
                if (total >> 62)
                        return -1;
                total <<= 1;
        }
        heap_size += (total - need) / 2 / pg * pg;
        for (int s = 0; s < 2; s++) {
                h->heap[s].offset = off;
                h->heap[s].size = heap_size;
                off += heap_size;
        }
        h->size = total;
        return 0;
}

#endif
