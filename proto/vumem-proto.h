/* VUMEM (virtual user memory buffers): what pvd and libpvclient share.
 *
 *   - the operations programs ask pvd (PV_OP_VUMEM_FIRST..) and the keys
 *     they use;
 *   - the messages the two pvds of a vlink exchange on its control ring;
 *   - (in vumem-lane.h) the lane, where a session's allocations meet the
 *     server library without pvd;
 *   - the pdev region (PV_REGION_VUMEM, vumem-pdev bytes): the driver's
 *     bookkeeping, one record per buffer a client VM holds, each with its
 *     chunk list (extents of granted memory).
 *
 * Memory. A server program hands out buffers inside memory objects it
 * registered with its pvd: memory the hypervisor backend made
 * (VUMEM_OP_MEM_ALLOC, what vumemServerMemAlloc uses) or, where the backend
 * can share memory it did not make, a sealed memfd or dma-buf of the
 * program's (VUMEM_OP_REGISTER). pvd names each object by a key; answers
 * name key and offset, never an fd. Memory is handed to programs as fd,
 * offset and length, and mapped at that offset.
 *
 * Who writes the pdev: the server end's pvd only. It allocates cells in
 * its private bitmap, writes a buffer's record and extents, then sends the
 * reply naming the record's cell on the control ring (release/acquire
 * through the ring). The client end's pvd reads the record once into a
 * local, checks every field against the reply and against the grant it
 * names, and uses only its copy: a record that does not match fails that
 * request with -EPROTO. Nobody reads anything back from the pdev for its
 * own bookkeeping, so a peer (or a third mapping) scribbling in it can only
 * make requests fail.
 */
#ifndef VUMEM_PROTO_H
#define VUMEM_PROTO_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pv-atomic.h"
#include "pv-msg.h"

#define VUMEM_ALLOC_MAX      128    /* opaque alloc bytes (the original driver's limit) */
#define VUMEM_MSG_TEXT       200    /* error sentence carried across the vlink */
#define VUMEM_SESSIONS_MAX   1024   /* per vlink */
#define VUMEM_HANDLES_MAX    65536  /* buffer handles per vlink */
#define VUMEM_PENDING_MAX    64     /* requests in flight per session */
#define VUMEM_SERVER_WAIT_MS 2000   /* a session waits this long for a server program */
#define VUMEM_CREDIT_MAX     64     /* requests pushed to a server program ahead of its reading */
#define VUMEM_FREE_DELAY_MS  1      /* a FREE alone waits this long for company */

/* ---- operations (program <-> pvd) ---------------------------------------- */

#define VUMEM_FREE_NOREPLY 1u   /* FREE: the program does not wait; pvd answers only a failure */
#define VUMEM_FREE_NOTE    2u   /* FREE of a lane's buffer not yet noted: SIZE bytes (a NOTE and a FREE) */

enum vumem_op {
        /* client node */
        VUMEM_OP_SESSION_OPEN = PV_OP_VUMEM_FIRST + 1, /* FLAGS -> TOKEN session id, FLAGS, and its
                                                          lane (one fd, OFFSET) */
        VUMEM_OP_ALLOC,        /* DATA alloc -> BUFFER reply + DATA rewritten alloc */
        VUMEM_OP_FREE,         /* ID handle, FLAGS (VUMEM_FREE_NOREPLY: answer only a failure;
                                  VUMEM_FREE_NOTE: SIZE, the buffer was not noted) */
        VUMEM_OP_ACCESS,       /* VALUE buffer id -> BUFFER reply */
        VUMEM_OP_OBJECT,       /* VALUE object key -> SIZE object bytes, OFFSET, FLAGS, one fd (lane
                                  answers) */
        VUMEM_OP_NOTE,         /* ID handle, SIZE bytes: a buffer the lane gave (no answer; sent when
                                  the session's next lane allocation comes, or with its FREE) */
        /* server node */
        VUMEM_OP_SERVER_OPEN = PV_OP_VUMEM_FIRST + 0x40, /* FLAGS (VUMEM_SERVER_LANES) -> the node's name
                                                            in NAME, and with lanes the library's page
                                                            (one fd, OFFSET) */
        VUMEM_OP_NEXT,         /* COUNT: push me that many more requests (no answer) */
        VUMEM_OP_RESPOND,      /* ID req, DIAG, ... (no answer: failures come back as FREE) */
        VUMEM_OP_REQUEST,      /* pvd -> server program: a request (SEQ 0) */
        VUMEM_OP_REGISTER,     /* SIZE bytes, one fd: the program's memory -> VALUE key (-EOPNOTSUPP where
                                  the backend cannot share memory it did not make) */
        VUMEM_OP_UNREGISTER,   /* VALUE key (no answer) */
        VUMEM_OP_LANE,         /* pvd -> server program: a session's lane (SEQ 0): ID slot, GEN,
                                  TOKEN session, STATE master, NAME client VM, FLAGS, OFFSET, one fd */
        VUMEM_OP_NUDGE,        /* server program -> pvd: read the log, refill reservations (no answer) */
        VUMEM_OP_MEM_ALLOC,    /* SIZE -> VALUE key, OFFSET, SIZE (pages), FLAGS, one fd: memory of the
                                  hypervisor backend, registered */
        VUMEM_OP_FREES,        /* pvd -> server program (SEQ 0): several FREE requests in one message:
                                  NAME client VM, DATA struct vumem_free_ent[] (VUMEM_SERVER_FREES) */
        /* both nodes */
        VUMEM_OP_KICK = PV_OP_VUMEM_FIRST + 0x80, /* program -> pvd: wake the lane's other side
                                                     (server node: TOKEN session) (no answer) */
        VUMEM_OP_WAKE,         /* pvd -> program (SEQ 0): look at your lanes; DIAG < 0: the session is
                                  over (MSG why) */
        VUMEM_OP_END = PV_OP_VUMEM_FIRST + 0xff,
};

/* BUFFER reply: ID handle, VALUE buffer id, SIZE buffer bytes, OFFSET map
 * offset in the fd (page-aligned), SIZE2 map length (pages), OFFSET2 where
 * the buffer starts in the mapping (< page), FLAGS, one fd.
 * REQUEST: ID request id, COUNT command, TOKEN session, STATE 1 if master,
 * NAME client VM, DATA alloc bytes (ALLOC), VALUE buffer id, VALUE2 server
 * address, SIZE bytes (FREE).
 * RESPOND: ID request id, DIAG, MSG (on failure), DATA alloc bytes, VALUE2
 * server address, SIZE bytes, VALUE memory object key, OFFSET map offset in
 * the object (page-aligned), OFFSET2 in-page offset (success). */

#define VUMEM_SESSION_MASTER 1u
#define VUMEM_SERVER_LANES   1u  /* SERVER_OPEN: the server program serves lanes */
#define VUMEM_SERVER_FREES   2u  /* SERVER_OPEN: the server program takes VUMEM_OP_FREES */

/* One FREE request of a VUMEM_OP_FREES message. The FREEs a server
 * program hears of pile up while its clients allocate on their lanes (pvd
 * holds each VUMEM_FREE_DELAY_MS for company); one message for all of them
 * costs the program one wake-up and pvd one send, instead of one each. */
struct vumem_free_ent {
        uint32_t id;                /* request id */
        uint32_t reserved;
        uint64_t buf_id;
        uint64_t vaddr;             /* the server program's address */
        uint64_t size;
};

#define VUMEM_FREES_MAX 64u      /* entries per message (<= VUMEM_CREDIT_MAX) */
#define VUMEM_BUF_DMABUF     1u
/* SESSION_OPEN answer, LANE: the lane's CPU hints compare (both sides run
 * on one kernel's CPUs; the pvd of each side says so to its own program). */
#define VUMEM_LANE_ONE_KERNEL 2u

/* Commands a server program receives (VumemReqHeader.cmd). */
#define VUMEM_CMD_BUFFER_ALLOC 1u
#define VUMEM_CMD_BUFFER_FREE  2u

/* ---- control ring messages (pvd <-> pvd) --------------------------------- */

enum vumem_msg_type {
        VUMEM_MSG_SESSION_OPEN = 1, /* c2s, answered by REPLY */
        VUMEM_MSG_SESSION_CLOSE,    /* c2s, no answer */
        VUMEM_MSG_ALLOC,            /* c2s, REPLY */
        VUMEM_MSG_FREE,             /* c2s, REPLY unless req is 0 */
        VUMEM_MSG_ACCESS,           /* c2s, REPLY */
        VUMEM_MSG_REPLY,            /* s2c */
        VUMEM_MSG_SESSION_RESET,    /* s2c: the session's server program is gone */
        VUMEM_MSG_OBJECT,           /* c2s, REPLY (rec_cell: the object's grant, size: its bytes) */
        VUMEM_MSG_KICK,             /* c2s: the client waits on the lane, or posted to a sleeping server */
        VUMEM_MSG_WAKE,             /* s2c: the server library answered a sleeping client */
};

struct vumem_m_object {
        uint32_t req;
        uint32_t reserved;
        uint64_t session;
        uint64_t key;
};

struct vumem_m_kick {
        uint64_t session;           /* the client end's name */
};

struct vumem_m_session_open {
        uint32_t req;
        uint32_t flags;             /* VUMEM_SESSION_MASTER */
        uint64_t session;           /* chosen by the client end, unique on the vlink */
        uint32_t pid;               /* the client program, for statistics */
        char comm[16];
        uint32_t reserved;
};

struct vumem_m_session_close {
        uint64_t session;
};

struct vumem_m_alloc {
        uint32_t req;
        uint32_t alloc_size;
        uint64_t session;
        uint8_t alloc[VUMEM_ALLOC_MAX];
};

struct vumem_m_free {
        uint32_t req;
        uint32_t handle;
        uint64_t session;
};

struct vumem_m_access {
        uint32_t req;
        uint32_t reserved;
        uint64_t session;
        uint64_t id;
};

/* The answer to every c2s request. For a buffer (ALLOC, ACCESS): handle,
 * id, size and the pdev cell of its record. */
struct vumem_m_reply {
        uint32_t req;
        int32_t diag;
        uint32_t handle;
        uint32_t rec_cell;
        uint64_t id;
        uint64_t size;
        uint64_t session_id;        /* SESSION_OPEN: the server VM's name for it */
        uint32_t alloc_size;
        uint32_t flags;
        uint32_t lane_gref;         /* SESSION_OPEN: the session's lane (0: none) */
        uint32_t reserved;
        uint8_t alloc[VUMEM_ALLOC_MAX];
        char msg[VUMEM_MSG_TEXT];   /* failure: a sentence (not trusted: sanitized) */
};

struct vumem_m_session_reset {
        uint64_t session;
        int32_t diag;
        uint32_t reserved;
        char msg[VUMEM_MSG_TEXT];
};

/* The lane (a session's allocations without pvd) is proto/vumem-lane.h. */

/* ---- the pdev region ------------------------------------------------------ */

#define VUMEM_PDEV_MAGIC   0x4d454d55u /* "UMEM" */
#define VUMEM_PDEV_VERSION 1u
#define VUMEM_CELL         32u        /* allocation unit */
#define VUMEM_PDEV_HDR     64u
#define VUMEM_REC_KIND     0x43455242u /* "BREC" */
#define VUMEM_EXT_KIND     0x54584542u /* "BEXT" */
/* Chunks per buffer: one extent today (a buffer is one range of one memory
 * object); the layout has room for lists. */
#define VUMEM_EXT_MAX      1u
#define VUMEM_BUF_CELLS    (1u + VUMEM_EXT_MAX)

struct vumem_pdev_hdr {
        uint32_t magic;
        uint32_t version;
        uint32_t size;              /* region bytes */
        uint32_t cell_size;
        uint32_t cells_off;         /* = VUMEM_PDEV_HDR */
        uint32_t ncells;
        uint32_t cells_used;        /* for display only */
        uint32_t records;           /* for display only */
        uint32_t reserved[8];
};

struct vumem_pdev_rec {
        uint32_t kind;              /* VUMEM_REC_KIND */
        uint32_t flags;             /* VUMEM_BUF_DMABUF */
        uint64_t id;
        uint64_t size;              /* bytes of the buffer */
        uint16_t pgoff;             /* where it starts in its first page */
        uint16_t ext_count;         /* extents in its chunk list */
        uint32_t ext_cell;          /* the first extent's cell; the others follow */
};

struct vumem_pdev_ext {
        uint32_t kind;              /* VUMEM_EXT_KIND */
        uint32_t gref;              /* the grant this chunk lies in */
        uint64_t offset;            /* from the grant's start, page-aligned */
        uint64_t len;               /* pages */
        uint64_t reserved;
};

_Static_assert(sizeof(struct vumem_pdev_hdr) == VUMEM_PDEV_HDR, "pdev header size");
_Static_assert(sizeof(struct vumem_pdev_rec) == VUMEM_CELL, "pdev record size");
_Static_assert(sizeof(struct vumem_pdev_ext) == VUMEM_CELL, "pdev extent size");

/* Cells in a region of size bytes. */
static inline uint32_t vumem_pdev_ncells(uint64_t size)
{
        return size > VUMEM_PDEV_HDR ? (uint32_t)((size - VUMEM_PDEV_HDR) / VUMEM_CELL) : 0;
}

/* Copy a sentence that came across the vlink into buf, keeping printable
 * ASCII only. */
static inline void vumem_text_copy(char *buf, size_t len, const char *src, size_t srclen)
{
        size_t k = 0;
        for (size_t i = 0; i < srclen && src[i] && k + 1 < len; i++) {
                char ch = src[i];
                buf[k++] = ch >= 0x20 && ch < 0x7f ? ch : '?';
        }
        buf[k] = 0;
}

#endif
