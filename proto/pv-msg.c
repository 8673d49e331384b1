/* Control-message codec (msgpack) and transport. See pv-msg.h.
 *
 * The encoder packs with msgpack-c into a list of iovecs: the small parts
 * (map header, keys, integers, bin headers) go into a scratch buffer on the
 * stack and bin values are referenced where they lie, so a send neither
 * copies the payload nor allocates. The decoder is written for this one flat
 * format rather than built on msgpack_unpack_next(): msgpack-c allocates room
 * for the declared number of entries before reading them (a five-byte map32
 * header asks for 256 GiB) and accepts nested containers we must refuse. Ours
 * reads each byte at most once, checks every length against what is left,
 * allocates nothing, and leaves bin values pointing into the caller's buffer.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <msgpack/pack.h>

#include "pv-msg.h"

#define KEY_BIT(k) (UINT64_C(1) << (k))

/* Set in m->has by a setter given a key of the wrong kind or a value the key
 * cannot hold. Encoding such a message fails with -EINVAL, so that a
 * programming error shows at the sender and not as -EPROTO at the peer. */
#define HAS_BAD (UINT64_C(1) << 63)

_Static_assert(PV_K_COUNT_ALL < 63, "every key needs a bit in pv_msg.has, below HAS_BAD");
_Static_assert(PV_K_UINT_END <= PV_K_BIN_FIRST, "integer and bytes keys overlap");
_Static_assert(PV_K_COUNT_ALL < 128, "EMIT_SCRATCH counts one byte (a positive fixint) per key");

/* Distinct keys a message can hold (a map with more entries repeats one),
 * and their bits in pv_msg.has. */
#define KEYS_MAX (PV_K_UINT_END + PV_K_BIN_COUNT)
#define KEYS_MASK ((KEY_BIT(PV_K_UINT_END) - 1) | \
                   (KEY_BIT(PV_K_COUNT_ALL) - KEY_BIT(PV_K_BIN_FIRST)))

/* The kernel's MAX_ERRNO: a diag below it is not an errno. */
#define DIAG_MIN (-4095)

static bool key_is_uint(enum pv_key k)
{
        return (unsigned)k < PV_K_UINT_END;
}

static bool key_is_bin(enum pv_key k)
{
        return (unsigned)k >= PV_K_BIN_FIRST && (unsigned)k < PV_K_COUNT_ALL;
}

static uint32_t bin_max(enum pv_key k)
{
        return k == PV_K_DOC ? PV_MSG_DOC_MAX : PV_MSG_BIN_MAX;
}

void pv_msg_init(struct pv_msg *m, uint32_t op)
{
        memset(m, 0, sizeof(*m));
        m->u[PV_K_OP] = op;
        m->has = KEY_BIT(PV_K_OP) | KEY_BIT(PV_K_SEQ);
}

void pv_msg_init_reply(struct pv_msg *m, const struct pv_msg *req, int diag)
{
        pv_msg_init(m, pv_msg_op(req));
        if (pv_msg_has(req, PV_K_SEQ))
                m->u[PV_K_SEQ] = req->u[PV_K_SEQ];
        pv_msg_set_i(m, PV_K_DIAG, diag);
}

void pv_msg_set_u(struct pv_msg *m, enum pv_key k, uint64_t v)
{
        /* DIAG travels as a signed integer: a larger value would not come back */
        if (!key_is_uint(k) || (k == PV_K_DIAG && v > INT64_MAX)) {
                m->has |= HAS_BAD;
                return;
        }
        m->u[k] = v;
        m->has |= KEY_BIT(k);
}

void pv_msg_set_i(struct pv_msg *m, enum pv_key k, int64_t v)
{
        if (!key_is_uint(k) || (k != PV_K_DIAG && v < 0)) {
                m->has |= HAS_BAD;
                return;
        }
        m->u[k] = (uint64_t)v;
        m->has |= KEY_BIT(k);
}

void pv_msg_set_b(struct pv_msg *m, enum pv_key k, const void *p, uint32_t len)
{
        if (!key_is_bin(k) || (p == NULL && len > 0)) {
                m->has |= HAS_BAD;
                return;
        }
        m->b[k - PV_K_BIN_FIRST] = p;
        m->blen[k - PV_K_BIN_FIRST] = len;
        m->has |= KEY_BIT(k);
}

void pv_msg_set_str(struct pv_msg *m, enum pv_key k, const char *s)
{
        size_t len = s ? strlen(s) : 0;

        if (s == NULL || len > UINT32_MAX) {
                m->has |= HAS_BAD;
                return;
        }
        pv_msg_set_b(m, k, s, (uint32_t)len);
}

int pv_msg_add_fd(struct pv_msg *m, int fd)
{
        if (fd < 0)
                return -EBADF;
        if (m->nfds >= PV_MSG_MAX_FDS)
                return -E2BIG;
        m->fds[m->nfds++] = fd;
        return 0;
}

bool pv_msg_has(const struct pv_msg *m, enum pv_key k)
{
        return (unsigned)k < PV_K_COUNT_ALL && (m->has & KEY_BIT(k));
}

uint32_t pv_msg_op(const struct pv_msg *m)
{
        /* the decoder refuses an op above UINT32_MAX, so nothing is cut off */
        return pv_msg_has(m, PV_K_OP) ? (uint32_t)m->u[PV_K_OP] : PV_OP_NONE;
}

int pv_msg_get_u(const struct pv_msg *m, enum pv_key k, uint64_t *v)
{
        if (!key_is_uint(k) || !pv_msg_has(m, k))
                return -EPROTO;
        if (k == PV_K_DIAG && (int64_t)m->u[k] < 0)
                return -EPROTO;
        *v = m->u[k];
        return 0;
}

int pv_msg_get_u32(const struct pv_msg *m, enum pv_key k, uint32_t *v)
{
        uint64_t x;
        int r = pv_msg_get_u(m, k, &x);

        if (r < 0)
                return r;
        if (x > UINT32_MAX)
                return -EPROTO;
        *v = (uint32_t)x;
        return 0;
}

int pv_msg_get_i(const struct pv_msg *m, enum pv_key k, int64_t *v)
{
        if (!key_is_uint(k) || !pv_msg_has(m, k))
                return -EPROTO;
        if (k != PV_K_DIAG && m->u[k] > INT64_MAX)
                return -EPROTO;
        *v = (int64_t)m->u[k];
        return 0;
}

int pv_msg_get_b(const struct pv_msg *m, enum pv_key k, const void **p, uint32_t *len)
{
        if (!key_is_bin(k) || !pv_msg_has(m, k))
                return -EPROTO;
        *p = m->b[k - PV_K_BIN_FIRST];
        *len = m->blen[k - PV_K_BIN_FIRST];
        return 0;
}

int pv_msg_get_str(const struct pv_msg *m, enum pv_key k, char *buf, size_t len)
{
        const void *p;
        uint32_t n;
        int r;

        if (len == 0)
                return -EINVAL;
        r = pv_msg_get_b(m, k, &p, &n);
        if (r < 0)
                return r;
        if (n > len - 1)
                return -EPROTO;
        if (n > 0) {
                /* an embedded NUL would let "vogl0\0../x" pass for "vogl0" */
                if (memchr(p, 0, n) != NULL)
                        return -EPROTO;
                memcpy(buf, p, n);
        }
        buf[n] = '\0';
        return 0;
}

int pv_msg_diag(const struct pv_msg *m)
{
        int64_t d;

        if (!pv_msg_has(m, PV_K_DIAG))
                return -EPROTO;
        d = (int64_t)m->u[PV_K_DIAG];
        if (d > 0 || d < DIAG_MIN)
                return -EPROTO;
        return (int)d;
}

/* ---- encoder ---- */

/* Map header (3) + every integer key with a uint64 (1 + 9) + every bytes key
 * with a bin32 header (1 + 5): 3 + 33 * 10 + 9 * 6 = 387 bytes. */
#define EMIT_SCRATCH 512
/* The scratch part before the first value, then per bytes key its value and
 * the scratch part after it. */
#define EMIT_IOV_MAX (1 + 2 * PV_K_BIN_COUNT)

_Static_assert(3 + PV_K_UINT_END * 10 + PV_K_BIN_COUNT * 6 <= EMIT_SCRATCH,
               "EMIT_SCRATCH too small for the largest set of headers");

struct emit {
        uint8_t scratch[EMIT_SCRATCH];
        size_t used;
        bool open;              /* the last iovec ends at scratch + used */
        struct iovec iov[EMIT_IOV_MAX];
        unsigned niov;
        size_t total;
};

/* msgpack_packer callback: append to the scratch, growing the last iovec when
 * it is the scratch's own. Returning nonzero makes msgpack_pack_* fail. */
static int emit_write(void *data, const char *buf, size_t len)
{
        struct emit *e = data;
        uint8_t *dst = e->scratch + e->used;

        if (len > sizeof(e->scratch) - e->used)
                return -1;
        if (!e->open) {
                if (e->niov == EMIT_IOV_MAX)
                        return -1;
                e->iov[e->niov++] = (struct iovec){ .iov_base = dst, .iov_len = 0 };
                e->open = true;
        }
        memcpy(dst, buf, len);
        e->used += len;
        e->iov[e->niov - 1].iov_len += len;
        e->total += len;
        return 0;
}

/* Reference a value where it lies instead of copying it. */
static int emit_ref(struct emit *e, const void *p, size_t len)
{
        if (len == 0)
                return 0;
        if (e->niov == EMIT_IOV_MAX)
                return -1;
        e->iov[e->niov++] = (struct iovec){ .iov_base = (void *)p, .iov_len = len };
        e->open = false;
        e->total += len;
        return 0;
}

/* Lay out the message m would be with key set has and PV_K_NFDS = nfds (the
 * sender puts its real fd count there). */
static int emit_msg(struct emit *e, const struct pv_msg *m, uint64_t has, uint64_t nfds)
{
        msgpack_packer pk;
        unsigned k;

        /* a bad setter call, or bits set by hand where no key is */
        if (has & ~KEYS_MASK)
                return -EINVAL;
        /* the peer's decoder would refuse these: say so here */
        if (!(has & KEY_BIT(PV_K_OP)) || !(has & KEY_BIT(PV_K_SEQ)) ||
            m->u[PV_K_OP] > UINT32_MAX)
                return -EINVAL;
        if ((has & KEY_BIT(PV_K_NFDS)) && nfds > PV_MSG_MAX_FDS)
                return -EINVAL;
        for (k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                if (!(has & KEY_BIT(k)))
                        continue;
                if (m->b[k - PV_K_BIN_FIRST] == NULL && m->blen[k - PV_K_BIN_FIRST] > 0)
                        return -EINVAL;
                if (m->blen[k - PV_K_BIN_FIRST] > bin_max(k))
                        return -EMSGSIZE;
        }

        e->used = 0;
        e->open = false;
        e->niov = 0;
        e->total = 0;
        msgpack_packer_init(&pk, e, emit_write);

        /* EMIT_SCRATCH and EMIT_IOV_MAX cover every message, so the packer
         * cannot fail; the checks only keep a future key from overflowing. */
        if (msgpack_pack_map(&pk, (size_t)__builtin_popcountll(has)) < 0)
                return -ENOBUFS;
        for (k = 0; k < PV_K_UINT_END; k++) {
                uint64_t v = k == PV_K_NFDS ? nfds : m->u[k];
                int r;

                if (!(has & KEY_BIT(k)))
                        continue;
                r = msgpack_pack_unsigned_char(&pk, (unsigned char)k);
                if (r == 0)
                        r = k == PV_K_DIAG ? msgpack_pack_int64(&pk, (int64_t)v)
                                           : msgpack_pack_uint64(&pk, v);
                if (r < 0)
                        return -ENOBUFS;
        }
        for (k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                uint32_t len = m->blen[k - PV_K_BIN_FIRST];

                if (!(has & KEY_BIT(k)))
                        continue;
                if (msgpack_pack_unsigned_char(&pk, (unsigned char)k) < 0 ||
                    msgpack_pack_bin(&pk, len) < 0 ||
                    emit_ref(e, m->b[k - PV_K_BIN_FIRST], len) < 0)
                        return -ENOBUFS;
        }
        return 0;
}

int pv_msg_encode(const struct pv_msg *m, void *buf, size_t cap, size_t *len)
{
        struct emit e;
        uint8_t *out = buf;
        int r;

        r = emit_msg(&e, m, m->has, m->u[PV_K_NFDS]);
        if (r < 0)
                return r;
        if (e.total > cap)
                return -EMSGSIZE;
        for (unsigned i = 0; i < e.niov; i++) {
                memcpy(out, e.iov[i].iov_base, e.iov[i].iov_len);
                out += e.iov[i].iov_len;
        }
        *len = e.total;
        return 0;
}

/* ---- decoder ---- */

struct reader {
        const uint8_t *p;
        size_t left;
};

static int read_bytes(struct reader *rd, size_t n, const uint8_t **out)
{
        if (n > rd->left)
                return -EPROTO;
        *out = rd->p;
        rd->p += n;
        rd->left -= n;
        return 0;
}

/* An n-byte big-endian unsigned integer, n <= 8. */
static int read_be(struct reader *rd, unsigned n, uint64_t *v)
{
        const uint8_t *p;
        uint64_t x = 0;

        if (read_bytes(rd, n, &p) < 0)
                return -EPROTO;
        for (unsigned i = 0; i < n; i++)
                x = x << 8 | p[i];
        *v = x;
        return 0;
}

enum val_kind { VAL_UINT, VAL_NEG, VAL_BYTES };

struct val {
        enum val_kind kind;
        uint64_t u;             /* VAL_UINT: the value; VAL_NEG: its int64_t bits */
        const uint8_t *p;       /* VAL_BYTES */
        uint32_t len;
};

/* One scalar: any msgpack integer encoding (another packer may not pick the
 * shortest), bin or str. Everything else has no place in our messages. */
static int read_val(struct reader *rd, struct val *v)
{
        const uint8_t *t;
        uint64_t x;
        unsigned n;

        if (read_bytes(rd, 1, &t) < 0)
                return -EPROTO;
        if (*t <= 0x7f) {                               /* positive fixint */
                v->kind = VAL_UINT;
                v->u = *t;
                return 0;
        }
        if (*t >= 0xe0) {                               /* negative fixint */
                v->kind = VAL_NEG;
                v->u = (uint64_t)(int64_t)(int8_t)*t;
                return 0;
        }
        if ((*t & 0xe0) == 0xa0) {                      /* fixstr */
                x = *t & 0x1f;
                goto bytes;
        }
        switch (*t) {
        case 0xcc: case 0xcd: case 0xce: case 0xcf:     /* uint 8/16/32/64 */
                if (read_be(rd, 1u << (*t - 0xcc), &x) < 0)
                        return -EPROTO;
                v->kind = VAL_UINT;
                v->u = x;
                return 0;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3:     /* int 8/16/32/64 */
                n = 1u << (*t - 0xd0);
                if (read_be(rd, n, &x) < 0)
                        return -EPROTO;
                if (n < 8 && (x & (UINT64_C(1) << (8 * n - 1))))
                        x |= UINT64_MAX << (8 * n);     /* sign-extend */
                v->kind = (int64_t)x < 0 ? VAL_NEG : VAL_UINT;
                v->u = x;
                return 0;
        case 0xc4: case 0xd9:                           /* bin8, str8 */
                n = 1;
                break;
        case 0xc5: case 0xda:                           /* bin16, str16 */
                n = 2;
                break;
        case 0xc6: case 0xdb:                           /* bin32, str32 */
                n = 4;
                break;
        default:        /* nil, bool, float, ext, array, map, 0xc1 */
                return -EPROTO;
        }
        if (read_be(rd, n, &x) < 0)
                return -EPROTO;
bytes:
        /* checked against what is left before anything points at it */
        if (read_bytes(rd, x, &v->p) < 0)
                return -EPROTO;
        v->kind = VAL_BYTES;
        v->len = (uint32_t)x;
        return 0;
}

static int read_map_header(struct reader *rd, uint64_t *n)
{
        const uint8_t *t;

        if (read_bytes(rd, 1, &t) < 0)
                return -EPROTO;
        if ((*t & 0xf0) == 0x80) {
                *n = *t & 0x0f;
                return 0;
        }
        if (*t == 0xde)
                return read_be(rd, 2, n);
        if (*t == 0xdf)
                return read_be(rd, 4, n);
        return -EPROTO;
}

static void clear_values(struct pv_msg *m)
{
        m->has = 0;
        memset(m->u, 0, sizeof(m->u));
        memset(m->b, 0, sizeof(m->b));
        memset(m->blen, 0, sizeof(m->blen));
}

int pv_msg_decode(const void *buf, size_t len, struct pv_msg *m)
{
        struct reader rd = { .p = buf, .left = len };
        uint64_t has = 0, n;

        clear_values(m);
        if (read_map_header(&rd, &n) < 0 || n > KEYS_MAX)
                goto bad;
        for (uint64_t i = 0; i < n; i++) {
                struct val key, v;
                enum pv_key k;

                if (read_val(&rd, &key) < 0 || key.kind != VAL_UINT ||
                    key.u >= PV_K_COUNT_ALL ||
                    !(key_is_uint((enum pv_key)key.u) || key_is_bin((enum pv_key)key.u)))
                        goto bad;
                k = (enum pv_key)key.u;
                if (has & KEY_BIT(k))
                        goto bad;
                if (read_val(&rd, &v) < 0)
                        goto bad;
                if (key_is_uint(k)) {
                        if (v.kind == VAL_BYTES)
                                goto bad;
                        if (k == PV_K_DIAG ? v.kind == VAL_UINT && v.u > INT64_MAX
                                           : v.kind == VAL_NEG)
                                goto bad;
                        m->u[k] = v.u;
                } else {
                        if (v.kind != VAL_BYTES || v.len > bin_max(k))
                                goto bad;
                        m->b[k - PV_K_BIN_FIRST] = v.p;
                        m->blen[k - PV_K_BIN_FIRST] = v.len;
                }
                has |= KEY_BIT(k);
        }
        if (rd.left != 0)
                goto bad;
        if (!(has & KEY_BIT(PV_K_OP)) || !(has & KEY_BIT(PV_K_SEQ)) ||
            m->u[PV_K_OP] > UINT32_MAX)
                goto bad;
        if ((has & KEY_BIT(PV_K_NFDS)) && m->u[PV_K_NFDS] > PV_MSG_MAX_FDS)
                goto bad;
        m->has = has;
        return 0;
bad:
        /* leave nothing pointing into a buffer that was refused */
        clear_values(m);
        return -EPROTO;
}

/* ---- transport ---- */

union fd_cmsg {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * PV_MSG_MAX_FDS)];
};

int pv_msg_send(int fd, const struct pv_msg *m)
{
        union fd_cmsg ctl;
        struct msghdr mh = { 0 };
        struct emit e;
        uint64_t has;
        size_t limit;
        ssize_t n;
        int r;

        if (m->nfds > PV_MSG_MAX_FDS)
                return -EINVAL;
        /* PV_K_NFDS is what travels, not what the caller may have set */
        has = m->has & ~KEY_BIT(PV_K_NFDS);
        if (m->nfds > 0)
                has |= KEY_BIT(PV_K_NFDS);
        r = emit_msg(&e, m, has, m->nfds);
        if (r < 0)
                return r;
        /* the receiver sizes its buffer the same way */
        limit = (has & KEY_BIT(PV_K_DOC)) ? PV_MSG_DOC_MAX : PV_MSG_MAX;
        if (e.total > limit)
                return -EMSGSIZE;

        mh.msg_iov = e.iov;
        mh.msg_iovlen = e.niov;
        if (m->nfds > 0) {
                struct cmsghdr *c;

                memset(&ctl, 0, sizeof(ctl));
                mh.msg_control = ctl.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * m->nfds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * m->nfds);
                memcpy(CMSG_DATA(c), m->fds, sizeof(int) * m->nfds);
        }
        do
                n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* a SOCK_SEQPACKET datagram goes whole or not at all */
        if ((size_t)n != e.total)
                return -EIO;
        return 0;
}

int pv_msg_recv(int fd, struct pv_msg *m, void *buf, size_t cap, int flags)
{
        union fd_cmsg ctl;
        struct iovec iov = { .iov_base = buf, .iov_len = cap };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = ctl.buf,
                .msg_controllen = sizeof(ctl.buf),
        };
        struct cmsghdr *c;
        bool foreign = false;
        uint64_t declared;
        ssize_t n;
        int r;

        m->has = 0;
        m->nfds = 0;
        /* MSG_PEEK would hand out the same fds twice */
        if (flags & ~(MSG_DONTWAIT | MSG_CMSG_CLOEXEC))
                return -EINVAL;
        n = recvmsg(fd, &mh, flags | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;

        /* Take every fd the kernel installed, whatever else is wrong, so that
         * the error paths below can close them all. */
        for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
                const uint8_t *data = CMSG_DATA(c);
                size_t cnt;

                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
                    c->cmsg_len < CMSG_LEN(0)) {
                        foreign = true;
                        continue;
                }
                cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < cnt; i++) {
                        int x;

                        memcpy(&x, data + i * sizeof(int), sizeof(x));
                        if (m->nfds < PV_MSG_MAX_FDS) {
                                m->fds[m->nfds++] = x;
                        } else {
                                close(x);
                                foreign = true;
                        }
                }
        }

        if (foreign || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                r = -EPROTO;
                goto fail;
        }
        if (n == 0) {
                r = -ECONNRESET;
                goto fail;
        }
        r = pv_msg_decode(buf, (size_t)n, m);
        if (r < 0)
                goto fail;
        declared = pv_msg_has(m, PV_K_NFDS) ? m->u[PV_K_NFDS] : 0;
        if (declared != m->nfds) {
                r = -EPROTO;
                goto fail;
        }
        return 0;
fail:
        pv_msg_close_fds(m);
        clear_values(m);
        return r;
}

void pv_msg_close_fds(struct pv_msg *m)
{
        for (unsigned i = 0; i < m->nfds && i < PV_MSG_MAX_FDS; i++) {
                if (m->fds[i] >= 0)
                        close(m->fds[i]);
                m->fds[i] = -1;
        }
        m->nfds = 0;
}
