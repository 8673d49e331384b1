/* Device nodes (one listening UNIX SOCK_SEQPACKET socket per node of the
 * seed, plus "control") and the program connections they accept: access
 * checks, message decoding, dispatch to the driver, and cleanup when a
 * program goes away.
 */
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

#include "node.h"
#include "pvd.h"

#define NODE_BACKLOG 64
#define CONN_SNDBUF  (1 << 20)
#define NODE_REFUSED_MAX 16

static void conn_poll_cb(uv_poll_t *h, int status, int events);

static void conn_send_refusal(struct pvd_conn *c, int diag, const char *msg)
{
        struct pv_msg m;
        pv_msg_init(&m, PV_OP_NONE);
        pv_msg_set_i(&m, PV_K_DIAG, diag);
        pv_msg_set_str(&m, PV_K_MSG, msg);
        pv_msg_send(c->fd, &m);
}

/* Like /dev permissions: root always; else the owner, group or other bits
 * must grant read and write. Supplementary groups count (SO_PEERGROUPS). */
static bool node_access_ok(const struct pvd_node *n, int fd, const struct ucred *cr)
{
        if (cr->uid == 0)
                return true;
        if (cr->uid == n->uid)
                return (n->mode & 0600) == 0600;
        bool in_group = cr->gid == n->gid;
        if (!in_group) {
                gid_t groups[256];
                socklen_t len = sizeof(groups);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
                        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                                in_group |= groups[i] == n->gid;
        }
        if (in_group)
                return (n->mode & 0060) == 0060;
        return (n->mode & 0006) == 0006;
}

static void read_comm(pid_t pid, char *buf, size_t len)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        buf[0] = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        ssize_t n = read(fd, buf, len - 1);
        close(fd);
        if (n <= 0) {
                buf[0] = 0;
                return;
        }
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
}

static void conn_free_cb(uv_handle_t *h)
{
        struct pvd_conn *c = h->data;
        close(c->fd);
        free(c);
}

/* Discard what the program sent and we will not read (fds included). A
 * UNIX socket closed with unread messages makes the program's next read
 * fail with ECONNRESET before it reaches our last message (the reason we
 * hung up), so the queue goes first. */
static void conn_discard(int fd)
{
        for (int i = 0; i < 4096; i++) {
                union {
                        char buf[CMSG_SPACE(sizeof(int) * PV_MSG_MAX_FDS)];
                        struct cmsghdr align;
                } u;
                char data[64];
                struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                     .msg_controllen = sizeof(u.buf) };
                ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n <= 0)
                        return;
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
                        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
                                for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                                        int f;
                                        memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
                                        close(f);
                                }
        }
}

void pvd_conn_close(struct pvd_conn *c, const char *why)
{
        if (c->closing)
                return;
        c->closing = true;
        struct pvd_node *n = c->node;
        if (why)
                pv_info("%s: dropping %s[%d]: %s", n->name, c->comm, (int)c->cred.pid, why);
        else
                pv_debug("%s: %s[%d] disconnected", n->name, c->comm, (int)c->cred.pid);
        if (c->pprev) {
                if (n->drv && n->drv->conn_close)
                        n->drv->conn_close(c);
                *c->pprev = c->next;
                if (c->next)
                        c->next->pprev = c->pprev;
                n->nconns--;
        } else {
                n->refused_pending--;
        }
        /* The program must see the end at once, even if the close of the
         * handle completes later; nothing it sends now is queued. */
        shutdown(c->fd, SHUT_RDWR);
        conn_discard(c->fd);
        uv_poll_stop(&c->poll);
        uv_close((uv_handle_t *)&c->poll, conn_free_cb);
}

int pvd_conn_send(struct pvd_conn *c, const struct pv_msg *m)
{
        if (c->closing)
                return -ECONNRESET;
        int rc = pv_msg_send(c->fd, m);
        if (rc == -EAGAIN)
                pvd_conn_close(c, "the program does not read its socket");
        else if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
                pv_warn("%s: cannot send to %s[%d]: %s", c->node->name, c->comm, (int)c->cred.pid, strerror(-rc));
        return rc;
}

int pvd_conn_reply_err(struct pvd_conn *c, const struct pv_msg *req, int diag, const char *fmt, ...)
{
        struct pv_msg m;
        char text[512];
        pv_msg_init_reply(&m, req, diag);
        if (fmt) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(text, sizeof(text), fmt, ap);
                va_end(ap);
                pv_msg_set_str(&m, PV_K_MSG, text);
                if (diag)
                        pv_debug("%s: %s[%d]: %s", c->node->name, c->comm, (int)c->cred.pid, text);
        }
        return pvd_conn_send(c, &m);
}

static void conn_dispatch(struct pvd_conn *c)
{
        static uint8_t buf[PV_MSG_MAX];
        struct pvd_node *n = c->node;
        /* Bounded work per wake-up, so one busy program cannot starve the
         * loop. */
        for (int i = 0; i < 64 && !c->closing; i++) {
                struct pv_msg m;
                int rc = pv_msg_recv(c->fd, &m, buf, sizeof(buf), MSG_DONTWAIT);
                if (rc == -EAGAIN || rc == -EINTR)
                        return;
                if (c->refused) {
                        /* The request is read first, so that closing with it
                         * unread does not turn the program's next read into
                         * ECONNRESET before it sees why. */
                        if (rc == 0)
                                pv_msg_close_fds(&m);
                        if (rc != -ECONNRESET)
                                conn_send_refusal(c, -EACCES, c->refusal);
                        pvd_conn_close(c, NULL);
                        return;
                }
                if (rc == -ECONNRESET) {
                        pvd_conn_close(c, NULL);
                        return;
                }
                if (rc < 0) {
                        pvd_conn_close(c, "malformed control message");
                        return;
                }
                if (n->drv)
                        rc = n->drv->conn_msg(c, &m);
                else
                        rc = pvd_control_msg(c, &m);
                /* fds a handler kept are set to -1; the rest are closed. */
                pv_msg_close_fds(&m);
                if (rc < 0) {
                        char why[96];
                        snprintf(why, sizeof(why), "protocol error in operation 0x%x (%s)", pv_msg_op(&m),
                                 strerror(-rc));
                        pvd_conn_close(c, why);
                        return;
                }
        }
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
        struct pvd_conn *c = h->data;
        if (c->closing)
                return;
        if (status < 0) {
                pvd_conn_close(c, NULL);
                return;
        }
        if (events & UV_READABLE)
                conn_dispatch(c);
        else if (events & UV_DISCONNECT)
                pvd_conn_close(c, NULL);
}

static void node_accept(struct pvd_node *n)
{
        for (;;) {
                int fd = accept4(n->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE)
                                pv_warn("%s: out of file descriptors; connection waits", n->name);
                        return;
                }
                struct pvd_conn *c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->node = n;
                c->fd = fd;
                socklen_t len = sizeof(c->cred);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
                        close(fd);
                        free(c);
                        continue;
                }
                read_comm(c->cred.pid, c->comm, sizeof(c->comm));
                if (!node_access_ok(n, fd, &c->cred)) {
                        n->refused++;
                        pv_notice("%s: refused %s[%d] uid %u: not allowed by owner %u, group %u, mode %04o",
                                  n->name, c->comm, (int)c->cred.pid, (unsigned)c->cred.uid, (unsigned)n->uid,
                                  (unsigned)n->gid, (unsigned)n->mode);
                        /* Answer its first request with the refusal; few of
                         * those wait at a time. */
                        if (n->refused_pending >= NODE_REFUSED_MAX) {
                                close(fd);
                                free(c);
                                continue;
                        }
                        snprintf(c->refusal, sizeof(c->refusal),
                                 "%s: permission denied for uid %u (node owner %u, group %u, mode %04o)", n->name,
                                 (unsigned)c->cred.uid, (unsigned)n->uid, (unsigned)n->gid, (unsigned)n->mode);
                        c->refused = true;
                        n->refused_pending++;
                        uv_poll_init(n->pvd->loop, &c->poll, fd);
                        c->poll.data = c;
                        uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, conn_poll_cb);
                        continue;
                }
                int sndbuf = CONN_SNDBUF;
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
                c->id = ++n->pvd->next_conn_id;
                uv_poll_init(n->pvd->loop, &c->poll, fd);
                c->poll.data = c;
                c->next = n->conns;
                if (n->conns)
                        n->conns->pprev = &c->next;
                c->pprev = &n->conns;
                n->conns = c;
                n->nconns++;
                n->accepted++;
                pv_debug("%s: %s[%d] connected (uid %u)", n->name, c->comm, (int)c->cred.pid, (unsigned)c->cred.uid);
                if (n->drv && n->drv->conn_open && n->drv->conn_open(c) < 0) {
                        pvd_conn_close(c, "driver refused the connection");
                        continue;
                }
                uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, conn_poll_cb);
        }
}

static void node_poll_cb(uv_poll_t *h, int status, int events)
{
        if (status == 0)
                node_accept(h->data);
}

int pvd_node_open(struct pvd *pvd, struct pvd_node *n)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int len = snprintf(n->path, sizeof(n->path), "%s/%s", pvd->runtime_dir, n->name);
        if (len < 0 || (size_t)len >= sizeof(sa.sun_path)) {
                pv_err("%s: socket path %s/%s is too long", n->name, pvd->runtime_dir, n->name);
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, n->path, (size_t)len + 1);
        struct stat st;
        /* A socket left by a pvd of this runtime directory that died (we hold
         * its lock, so it is stale). Anything else there is not ours. */
        if (lstat(n->path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode)) {
                        pv_err("%s: %s exists and is not a socket; not touching it", n->name, n->path);
                        return -EEXIST;
                }
                unlink(n->path);
        }
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                goto fail;
        if (chmod(n->path, n->mode) < 0)
                goto fail_unlink;
        if ((geteuid() == 0 || n->uid == geteuid()) && lchown(n->path, n->uid, n->gid) < 0 &&
            geteuid() == 0)
                goto fail_unlink;
        if (listen(fd, NODE_BACKLOG) < 0)
                goto fail_unlink;
        n->fd = fd;
        n->pvd = pvd;
        uv_poll_init(pvd->loop, &n->poll, fd);
        n->poll.data = n;
        uv_poll_start(&n->poll, UV_READABLE, node_poll_cb);
        return 0;
fail_unlink:;
        int e = errno;
        unlink(n->path);
        errno = e;
fail:
        e = errno;
        pv_err("%s: cannot create %s: %s", n->name, n->path, strerror(e));
        close(fd);
        return -e;
}

static void node_closed_cb(uv_handle_t *h)
{
        struct pvd_node *n = h->data;
        close(n->fd);
        n->fd = -1;
}

void pvd_node_close(struct pvd_node *n)
{
        while (n->conns)
                pvd_conn_close(n->conns, NULL);
        if (n->fd < 0)
                return;
        unlink(n->path);
        uv_poll_stop(&n->poll);
        uv_close((uv_handle_t *)&n->poll, node_closed_cb);
}

struct pvd_node *pvd_node_find(struct pvd *pvd, const char *name)
{
        for (unsigned i = 0; i < pvd->nnodes; i++)
                if (strcmp(pvd->nodes[i].name, name) == 0)
                        return &pvd->nodes[i];
        return NULL;
}
