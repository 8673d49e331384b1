/* Control messages between programs (libpvclient, pvctl) and pvd.
 *
 * A message is one SOCK_SEQPACKET datagram holding one msgpack map whose keys
 * are small unsigned integers (enum pv_key) and whose values have the type
 * fixed by the key: keys below PV_K_BIN_FIRST are integers (unsigned, or
 * signed for PV_K_DIAG), keys from PV_K_BIN_FIRST up are bytes (msgpack bin
 * or str). File descriptors ride along as SCM_RIGHTS; a message that carries
 * fds says how many in PV_K_NFDS, and the receiver refuses any other count.
 *
 * Every message has PV_K_OP and PV_K_SEQ. A response repeats the request's
 * op and seq and adds PV_K_DIAG (0 or a negative errno) and, on failure,
 * PV_K_MSG (a sentence for the user).
 *
 * The decoder treats its input as hostile: wrong types, unknown or repeated
 * keys, oversized values, trailing bytes, a declared fd count that does not
 * match: all -EPROTO, never a crash.
 */
#ifndef PV_MSG_H
#define PV_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PV_MSG_MAX      (64 * 1024)   /* largest datagram, except status documents */
#define PV_MSG_DOC_MAX  (192 * 1024)  /* largest datagram carrying PV_K_DOC */
#define PV_MSG_MAX_FDS  8
#define PV_MSG_BIN_MAX  (60 * 1024)   /* largest bytes value, except PV_K_DOC */

enum pv_key {
        /* integers */
        PV_K_OP = 0,      /* operation, enum pv_op */
        PV_K_SEQ,         /* request number, echoed in the response */
        PV_K_DIAG,        /* signed: 0 or -errno */
        PV_K_NFDS,        /* number of fds attached */
        PV_K_ID,          /* object id (session, buffer, ...) */
        PV_K_ID2,         /* second object id (channel, ...) */
        PV_K_TOKEN,       /* secret that proves a connection's right to an object */
        PV_K_SIZE,
        PV_K_SIZE2,
        PV_K_OFFSET,
        PV_K_OFFSET2,
        PV_K_FLAGS,
        PV_K_COUNT,
        PV_K_STATE,
        PV_K_GEN,         /* vlink generation */
        PV_K_VALUE,
        PV_K_VALUE2,
        PV_K_DRV0,        /* PV_K_DRV0 .. PV_K_DRV0 + 15: meaning set by each driver's op */
        PV_K_UINT_END = PV_K_DRV0 + 16,
        /* bytes */
        PV_K_BIN_FIRST = 48,
        PV_K_MSG = PV_K_BIN_FIRST, /* utf-8 sentence */
        PV_K_INFO,        /* opaque user bytes (session/channel info) */
        PV_K_NAME,        /* utf-8 name */
        PV_K_DATA,        /* opaque bytes */
        PV_K_DOC,         /* a msgpack document (status, statistics) */
        PV_K_BIN_DRV0,    /* PV_K_BIN_DRV0 .. +3: meaning set by each driver's op */
        PV_K_COUNT_ALL = PV_K_BIN_DRV0 + 4,
};

#define PV_K_BIN_COUNT (PV_K_COUNT_ALL - PV_K_BIN_FIRST)

/* Operations. Each driver owns a range; its header in proto/ lists them. */
enum pv_op {
        PV_OP_NONE = 0,
        /* control node (pvctl) */
        PV_OP_STATUS = 0x01,   /* -> PV_K_DOC: the VM's status document */
        PV_OP_STAT = 0x02,     /* PV_K_NAME driver -> PV_K_DOC: its statistics */
        PV_OP_CORE_END = 0xff,
        PV_OP_VRPQ_FIRST = 0x100,
        PV_OP_VUMEM_FIRST = 0x200,
        PV_OP_VBPIPE_FIRST = 0x300,
        PV_OP_TEST_FIRST = 0xf00,   /* reserved for tests */
};

struct pv_msg {
        uint64_t has;                            /* bit per key present */
        uint64_t u[PV_K_UINT_END];
        const uint8_t *b[PV_K_BIN_COUNT];        /* into the decode buffer, or the setter's bytes */
        uint32_t blen[PV_K_BIN_COUNT];
        int fds[PV_MSG_MAX_FDS];
        unsigned nfds;
};

void pv_msg_init(struct pv_msg *m, uint32_t op);
/* A response to req: same op and seq, PV_K_DIAG = diag. */
void pv_msg_init_reply(struct pv_msg *m, const struct pv_msg *req, int diag);

/* A setter given a key of the other kind, a negative value for an unsigned
 * key or NULL bytes marks the message bad: encoding or sending it then fails
 * with -EINVAL. */
void pv_msg_set_u(struct pv_msg *m, enum pv_key k, uint64_t v);
void pv_msg_set_i(struct pv_msg *m, enum pv_key k, int64_t v);
/* The bytes are not copied: keep them alive until encoded or sent. */
void pv_msg_set_b(struct pv_msg *m, enum pv_key k, const void *p, uint32_t len);
void pv_msg_set_str(struct pv_msg *m, enum pv_key k, const char *s);
/* The fd is not duplicated: the caller keeps ownership. -E2BIG if full. */
int pv_msg_add_fd(struct pv_msg *m, int fd);

bool pv_msg_has(const struct pv_msg *m, enum pv_key k);
uint32_t pv_msg_op(const struct pv_msg *m);
/* Missing key: -EPROTO. */
int pv_msg_get_u(const struct pv_msg *m, enum pv_key k, uint64_t *v);
int pv_msg_get_u32(const struct pv_msg *m, enum pv_key k, uint32_t *v); /* -EPROTO if > UINT32_MAX */
int pv_msg_get_i(const struct pv_msg *m, enum pv_key k, int64_t *v);
int pv_msg_get_b(const struct pv_msg *m, enum pv_key k, const void **p, uint32_t *len);
/* Copy a string value, NUL-terminated: -EPROTO if missing, longer than
 * len - 1 or holding a NUL byte. */
int pv_msg_get_str(const struct pv_msg *m, enum pv_key k, char *buf, size_t len);
/* The diag of a response (PV_K_DIAG; -EPROTO if missing or not a valid
 * negative errno). */
int pv_msg_diag(const struct pv_msg *m);

/* 0; -EMSGSIZE when cap is too small or a bytes value is over its limit;
 * -EINVAL for a message the peer would refuse (no OP or SEQ, OP above
 * UINT32_MAX, PV_K_NFDS above PV_MSG_MAX_FDS, a bad setter call). */
int pv_msg_encode(const struct pv_msg *m, void *buf, size_t cap, size_t *len);
/* Decode buf (bin values point into buf). fds are not touched. 0 or -EPROTO
 * (then m holds no key). */
int pv_msg_decode(const void *buf, size_t len, struct pv_msg *m);

/* Send one message with its fds (MSG_NOSIGNAL), PV_K_NFDS set from m->nfds.
 * The bytes values are sent from where they lie, not copied. 0 or -errno
 * (-EAGAIN on a full non-blocking socket, -EMSGSIZE beyond PV_MSG_MAX, or
 * PV_MSG_DOC_MAX with a PV_K_DOC, -EPIPE...). */
int pv_msg_send(int fd, const struct pv_msg *m);
/* Receive one message into buf (flags: MSG_DONTWAIT or 0, else -EINVAL;
 * cap: PV_MSG_MAX, or PV_MSG_DOC_MAX where documents come). 0; -ECONNRESET
 * when the peer closed; -EAGAIN; -EINTR; -EPROTO for a truncated datagram or
 * control part, bad encoding, or an fd count other than PV_K_NFDS (every fd
 * received is closed then). The fds of a good message are the caller's (in
 * m->fds, created close-on-exec). */
int pv_msg_recv(int fd, struct pv_msg *m, void *buf, size_t cap, int flags);
/* Close the fds a received message still holds. */
void pv_msg_close_fds(struct pv_msg *m);

#endif
