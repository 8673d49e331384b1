/* A peer's side of QEMU's ivshmem server protocol: see ivshmem-sock.h.
 *
 * Messages are 8-byte little-endian integers on a stream socket, an fd
 * sometimes riding with one. The kernel never merges data across a
 * message that carries fds, and this side reads at most the rest of the
 * current message per recvmsg (as QEMU does), so an fd is tied to the
 * message whose bytes it came with.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ivshmem-sock.h"

/* Enough room to see (and close) a flood of fds sent with one message;
 * beyond it the kernel truncates and closes the rest itself. */
#define RX_FDS_MAX 32
/* Messages handled per ivsock_read: a server that floods the socket does
 * not keep the loop from its other work. */
#define READ_BUDGET 64
/* Largest shared memory accepted (a lying size must not make the caller
 * map the address space away). */
#define MEM_SIZE_MAX (UINT64_C(1) << 40)

enum ivsock_state { ST_VERSION, ST_OWN_ID, ST_RUN };

struct ivsock_peer {
        int id;                                    /* -1: a free slot */
        int vec[PV_IVSHM_VECTORS];
        unsigned nvec;
};

struct ivsock {
        int fd;
        enum ivsock_state st;
        int own_id;
        int mem_fd;
        uint64_t mem_size;
        struct ivsock_peer own;                    /* our own vectors */
        struct ivsock_peer peer[IVSOCK_MAX_PEERS]; /* the others */
        uint8_t buf[8];                            /* the message being read */
        size_t have;
        int msg_fd;                                /* the fd that came with it, or -1 */
        int err;                                   /* sticky: the connection is dead */
        char why[192];
};

__attribute__((format(printf, 2, 3)))
static int proto_fail(struct ivsock *s, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof(s->why), fmt, ap);
        va_end(ap);
        s->err = -EPROTO;
        return -EPROTO;
}

static void close_fd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

int ivsock_connect(const char *path, struct ivsock **out)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (!path || !out)
                return -EINVAL;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        struct ivsock *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->own_id = -1;
        s->mem_fd = -1;
        s->msg_fd = -1;
        for (int p = 0; p <= IVSOCK_MAX_PEERS; p++) {
                struct ivsock_peer *pp = p ? &s->peer[p - 1] : &s->own;
                pp->id = -1;
                for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++)
                        pp->vec[v] = -1;
        }
        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->fd < 0) {
                int e = -errno;
                free(s);
                return e;
        }
        if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = -errno;
                close(s->fd);
                free(s);
                return e;
        }
        *out = s;
        return 0;
}

int ivsock_fd(const struct ivsock *s)
{
        return s->fd;
}

bool ivsock_ready(const struct ivsock *s)
{
        return s->st == ST_RUN && s->mem_fd >= 0 && s->own.nvec == PV_IVSHM_VECTORS;
}

int ivsock_own_id(const struct ivsock *s)
{
        return s->own_id;
}

int ivsock_mem_fd(const struct ivsock *s)
{
        return s->mem_fd;
}

uint64_t ivsock_mem_size(const struct ivsock *s)
{
        return s->mem_size;
}

int ivsock_own_vector_fd(const struct ivsock *s, unsigned vec)
{
        if (vec >= PV_IVSHM_VECTORS)
                return -1;
        return s->own.vec[vec];
}

static struct ivsock_peer *find_peer(struct ivsock *s, long long id)
{
        for (int p = 0; p < IVSOCK_MAX_PEERS; p++)
                if (s->peer[p].id == id)
                        return &s->peer[p];
        return NULL;
}

static const struct ivsock_peer *present(const struct ivsock *s, uint32_t id)
{
        for (int p = 0; p < IVSOCK_MAX_PEERS; p++)
                if (s->peer[p].id >= 0 && (uint32_t)s->peer[p].id == id && s->peer[p].nvec == PV_IVSHM_VECTORS)
                        return &s->peer[p];
        return NULL;
}

bool ivsock_peer_present(const struct ivsock *s, uint32_t peer)
{
        return present(s, peer) != NULL;
}

unsigned ivsock_peers(const struct ivsock *s, uint32_t *ids, unsigned max)
{
        unsigned n = 0;
        for (int p = 0; p < IVSOCK_MAX_PEERS; p++)
                if (s->peer[p].id >= 0 && s->peer[p].nvec == PV_IVSHM_VECTORS) {
                        if (n < max)
                                ids[n] = (uint32_t)s->peer[p].id;
                        n++;
                }
        return n;
}

int ivsock_peer_vector_fd(const struct ivsock *s, uint32_t peer, unsigned vec)
{
        const struct ivsock_peer *p = present(s, peer);
        if (!p || vec >= PV_IVSHM_VECTORS)
                return -1;
        return p->vec[vec];
}

int ivsock_ring(const struct ivsock *s, uint32_t peer, unsigned vec)
{
        int fd = ivsock_peer_vector_fd(s, peer, vec);
        uint64_t one = 1;
        if (fd < 0)
                return -ENOTCONN;
        for (;;) {
                if (write(fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
                        return 0;
                if (errno == EINTR)
                        continue;
                /* EAGAIN: the counter is near its maximum, the peer has
                 * plenty of rings to read already. */
                return errno == EAGAIN ? 0 : -errno;
        }
}

const char *ivsock_error(const struct ivsock *s)
{
        return s->why;
}

void ivsock_close(struct ivsock *s)
{
        if (!s)
                return;
        close_fd(&s->fd);
        close_fd(&s->mem_fd);
        close_fd(&s->msg_fd);
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                close_fd(&s->own.vec[v]);
                for (int p = 0; p < IVSOCK_MAX_PEERS; p++)
                        close_fd(&s->peer[p].vec[v]);
        }
        free(s);
}

/* ---- checks on what the server hands over ------------------------------- */

/* The shared memory: a regular file (memfd) whose size is a power of two
 * (QEMU maps no other) and cannot change under the mappings (a shrink
 * would turn every access past the new end into SIGBUS). */
static int check_mem(struct ivsock *s, int fd)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return proto_fail(s, "cannot stat the shared memory fd: %s", strerror(errno));
        if (!S_ISREG(st.st_mode))
                return proto_fail(s, "the shared memory fd is not a memory file (mode 0%o)", st.st_mode);
        uint64_t size = (uint64_t)st.st_size;
        if (size < PV_IVSHM_MIN_SIZE || size > MEM_SIZE_MAX || (size & (size - 1)))
                return proto_fail(s, "shared memory of %llu bytes; expected a power of two from %llu to %llu",
                                  (unsigned long long)size, (unsigned long long)PV_IVSHM_MIN_SIZE,
                                  (unsigned long long)MEM_SIZE_MAX);
        int seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
                return proto_fail(s, "shared memory not sealed against shrinking and growing");
        s->mem_size = size;
        return 0;
}

/* A vector: an eventfd, made non-blocking so that no ring or read can
 * block the loop whatever the server did to it. */
static int check_eventfd(struct ivsock *s, int fd, long long id)
{
        char path[64], link[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n >= 0) {
                link[n] = '\0';
                if (strcmp(link, "anon_inode:[eventfd]") != 0)
                        return proto_fail(s, "the vector fd for peer %lld is not an eventfd (%s)", id, link);
        } else if (errno != ENOENT) {
                return proto_fail(s, "cannot check the vector fd for peer %lld: %s", id, strerror(errno));
        }
        /* ENOENT: no /proc here; non-blocking is what protects us anyway. */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return proto_fail(s, "cannot make the vector fd for peer %lld non-blocking: %s", id,
                                  strerror(errno));
        return 0;
}

/* ---- one message ---------------------------------------------------------- */

/* Takes ownership of *fd (sets it to -1 when kept, the caller closes it
 * otherwise). */
static int handle(struct ivsock *s, long long v, int *fd, unsigned *ev)
{
        bool was_ready = ivsock_ready(s);
        int rc;
        switch (s->st) {
        case ST_VERSION:
                if (*fd >= 0)
                        return proto_fail(s, "the version message came with an fd");
                if (v != PV_IVSHM_PROTO_VERSION)
                        return proto_fail(s, "protocol version %lld; this side speaks version %d (QEMU's)", v,
                                          PV_IVSHM_PROTO_VERSION);
                s->st = ST_OWN_ID;
                return 0;
        case ST_OWN_ID:
                if (*fd >= 0)
                        return proto_fail(s, "the peer id message came with an fd");
                if (v < 0 || v > PV_IVSHM_PEER_ID_MAX)
                        return proto_fail(s, "own peer id %lld out of range (0 to %d)", v, PV_IVSHM_PEER_ID_MAX);
                s->own_id = (int)v;
                s->st = ST_RUN;
                return 0;
        case ST_RUN:
                break;
        }
        if (v == PV_IVSHM_MSG_SHM) {
                if (*fd < 0)
                        return proto_fail(s, "the shared memory message came without its fd");
                if (s->mem_fd >= 0)
                        return proto_fail(s, "a second shared memory");
                if ((rc = check_mem(s, *fd)) < 0)
                        return rc;
                s->mem_fd = *fd;
                *fd = -1;
        } else if (v < 0 || v > PV_IVSHM_PEER_ID_MAX) {
                return proto_fail(s, "message %lld is neither a peer id nor the memory", v);
        } else if (*fd >= 0) {
                struct ivsock_peer *p = v == s->own_id ? &s->own : find_peer(s, v);
                if (!p) {
                        p = find_peer(s, -1);
                        if (!p)
                                return proto_fail(s, "peer %lld joins while %d others are there (at most %d)", v,
                                                  IVSOCK_MAX_PEERS, IVSOCK_MAX_PEERS);
                        p->id = (int)v;
                }
                if (p->nvec == PV_IVSHM_VECTORS)
                        return proto_fail(s, "more than %u vectors for peer %lld%s", PV_IVSHM_VECTORS, v,
                                          v == s->own_id ? " (this side)" : "");
                if ((rc = check_eventfd(s, *fd, v)) < 0)
                        return rc;
                p->vec[p->nvec++] = *fd;
                *fd = -1;
                if (p->nvec == PV_IVSHM_VECTORS && v != s->own_id)
                        *ev |= IVSOCK_EV_PEER_JOINED;
        } else {
                struct ivsock_peer *p = find_peer(s, v);
                if (v == s->own_id)
                        return proto_fail(s, "told that this side itself (peer %lld) left", v);
                if (!p)
                        return proto_fail(s, "peer %lld left without having joined", v);
                for (unsigned i = 0; i < PV_IVSHM_VECTORS; i++)
                        close_fd(&p->vec[i]);
                p->nvec = 0;
                p->id = -1;
                *ev |= IVSOCK_EV_PEER_LEFT;
        }
        if (!was_ready && ivsock_ready(s))
                *ev |= IVSOCK_EV_READY;
        return 0;
}

/* The fds of one recvmsg: at most one, added to the message's. */
static int take_fds(struct ivsock *s, struct msghdr *mh)
{
        int n = 0, first = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < cnt; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (n++ == 0)
                                first = fd;
                        else
                                close(fd);
                }
        }
        if (n > 1 || (n == 1 && s->msg_fd >= 0)) {
                int total = n + (s->msg_fd >= 0);
                close_fd(&first);
                close_fd(&s->msg_fd);
                return proto_fail(s, "%d fds with one message (at most one belongs)", total);
        }
        if (mh->msg_flags & MSG_CTRUNC) {
                close_fd(&first);
                return proto_fail(s, "more fds with one message than anyone sends (truncated)");
        }
        if (n == 1)
                s->msg_fd = first;
        return 0;
}

int ivsock_read(struct ivsock *s, unsigned *events)
{
        unsigned ev = 0;
        int rc = 0;
        if (events)
                *events = 0;
        if (s->err)
                return s->err;
        for (int budget = READ_BUDGET; budget > 0; budget--) {
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int) * RX_FDS_MAX)];
                } cm;
                struct iovec iov = { .iov_base = s->buf + s->have, .iov_len = sizeof(s->buf) - s->have };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                                     .msg_controllen = sizeof(cm.buf) };
                ssize_t n = recvmsg(s->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        break;
                if (n < 0) {
                        rc = s->err = -errno;
                        break;
                }
                if ((rc = take_fds(s, &mh)) < 0)
                        break;
                if (n == 0) {
                        if (s->have > 0 || s->msg_fd >= 0) {
                                close_fd(&s->msg_fd);
                                rc = proto_fail(s, "the server closed the connection inside a message (%zu of 8 bytes)",
                                                s->have);
                        } else {
                                rc = s->err = -ECONNRESET;
                        }
                        break;
                }
                s->have += (size_t)n;
                if (s->have < sizeof(s->buf))
                        continue;
                uint64_t le;
                memcpy(&le, s->buf, sizeof(le));
                s->have = 0;
                int fd = s->msg_fd;
                s->msg_fd = -1;
                rc = handle(s, (long long)(int64_t)le64toh(le), &fd, &ev);
                close_fd(&fd);
                if (rc < 0)
                        break;
        }
        if (events)
                *events = ev;
        return rc;
}
