/* pvhv: one side of a vlink. Its socket DIR/LINK.VM.sock takes one peer at
 * a time (QEMU's ivshmem-doorbell device, or a host-process pvd) and speaks
 * QEMU's ivshmem server protocol to it (proto/pv-ivshmem.h): on a join,
 * fresh eventfds for that side's vectors, the handshake, an announcement to
 * the other side and a ring of its link vector; on a leave, a disconnect
 * notification to the other side and a ring.
 *
 * The peers are not trusted. The protocol is one-way, so a peer that sends
 * anything is dropped; a second peer for a side is refused; a peer that
 * does not read its socket is dropped once its socket is full.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "pvhv.h"

/* Connections accepted per wake-up of a socket: a storm of them does not
 * keep the loop from the other sockets. */
#define ACCEPT_BUDGET 32

static struct pvhv_side *other_of(struct pvhv_side *s)
{
        return &s->link->side[s->side == PV_SERVER ? PV_CLIENT : PV_SERVER];
}

static const char *link_name(const struct pvhv_side *s)
{
        return s->link->cfg->link_name;
}

static uint32_t peer_id(const struct pvhv_side *s)
{
        return s->id;
}

/* A new id for side s's newcomer, never one that the other side's peer
 * saw leave: QEMU frees a peer's state when told that it left, and writes
 * to the freed state if the same id joins again. Ids of a side go up by
 * two and wrap after PV_IVSHM_PEER_IDS_PER_SIDE, so the other side's peer
 * has seen them all only after that many joins; then it is refused. */
static int take_id(struct pvhv_side *s)
{
        struct pvhv_side *o = other_of(s);
        if (o->conn && o->ids_seen >= PV_IVSHM_PEER_IDS_PER_SIDE)
                return -ENOSPC;
        s->id = s->next_id;
        s->next_id += 2;
        if (s->next_id > PV_IVSHM_PEER_ID_MAX)
                s->next_id = PV_IVSHM_PEER_ID_FIRST(s->side);
        s->ids_seen = o->conn ? 1 : 0;
        if (o->conn)
                o->ids_seen++;
        return 0;
}

/* ---- the header ------------------------------------------------------------ */

void pvhv_link_write_hdr(struct pvhv_link *l)
{
        /* Everything but the presence first, then each presence with its
         * flag last, so that a reader never sees present=1 beside a stale
         * generation. */
        memcpy(l->map, &l->hdr, offsetof(struct pv_ivshm_hdr, presence));
        for (int s = 0; s < 2; s++) {
                struct pv_ivshm_presence *p = &l->map->presence[s];
                const struct pv_ivshm_presence *mine = &l->hdr.presence[s];
                p->peer_id = mine->peer_id;
                p->conn_gen = mine->conn_gen;
                p->reserved = 0;
                __atomic_store_n(&p->present, mine->present, __ATOMIC_RELEASE);
        }
}

static void set_presence(struct pvhv_side *s, bool present)
{
        struct pv_ivshm_presence *mine = &s->link->hdr.presence[s->side];
        mine->present = present;
        mine->peer_id = peer_id(s);
        if (present)
                mine->conn_gen++;
        pvhv_link_write_hdr(s->link);
}

/* Ring a side's own vector (its peer waits on it). */
static void ring(struct pvhv_side *s, unsigned vec)
{
        uint64_t one = 1;
        if (s->vec[vec] < 0)
                return;
        /* EAGAIN: the counter is near its maximum, the peer has rings to
         * read already. */
        while (write(s->vec[vec], &one, sizeof(one)) < 0 && errno == EINTR)
                ;
}

/* ---- messages ----------------------------------------------------------------- */

/* One message: a little-endian int64, with fd when fd >= 0. Never blocks;
 * 0 or -errno (-EAGAIN: the peer does not read its socket). */
static int send_msg(struct pvhv_side *s, int64_t v, int fd)
{
        uint64_t le = htole64((uint64_t)v);
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct iovec iov = { .iov_base = &le, .iov_len = sizeof(le) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd >= 0) {
                memset(&cm, 0, sizeof(cm));
                mh.msg_control = cm.buf;
                mh.msg_controllen = sizeof(cm.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        for (;;) {
                ssize_t n = sendmsg(pvd_watch_fd(s->conn), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n == (ssize_t)sizeof(le))
                        return 0;
                if (n < 0 && errno == EINTR)
                        continue;
                /* A UNIX stream socket takes 8 bytes whole or not at all. */
                return n < 0 ? -errno : -EIO;
        }
}

/* A peer's vectors: its id once per vector, each with one eventfd. */
static int send_vectors(struct pvhv_side *to, const struct pvhv_side *of)
{
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                int rc = send_msg(to, peer_id(of), of->vec[v]);
                if (rc < 0)
                        return rc;
        }
        return 0;
}

static const char *send_error(int rc)
{
        return rc == -EAGAIN || rc == -ETOOMANYREFS ? "it does not read its socket" : strerror(-rc);
}

/* ---- leaving ------------------------------------------------------------------ */

static void side_leave(struct pvhv_side *s, const char *why);

/* Tell the other side that s left (if it was told s came) and ring it. */
static void tell_left(struct pvhv_side *s)
{
        struct pvhv_side *o = other_of(s);
        if (!o->conn)
                return;
        if (o->knows_other) {
                o->knows_other = false;
                int rc = send_msg(o, peer_id(s), -1);
                if (rc < 0) {
                        char why[160];
                        snprintf(why, sizeof(why), "cannot tell it that %s left: %s; dropping it", s->vm,
                                 send_error(rc));
                        o->dropped++;
                        side_leave(o, why);
                        return;
                }
        }
        ring(o, PV_IVSHM_VEC_LINK);
}

static void side_leave(struct pvhv_side *s, const char *why)
{
        if (!s->conn)
                return;
        pvd_watch_close(s->conn);
        s->conn = NULL;
        s->knows_other = false;
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                if (s->vec[v] >= 0)
                        close(s->vec[v]);
                s->vec[v] = -1;
        }
        set_presence(s, false);
        struct pvhv_side *o = other_of(s);
        bool told = o->conn && o->knows_other;
        if (s->link->hv->stopping)
                pv_info("vlink %s: %s (pid %d) disconnected: pvhv stops", link_name(s), s->vm, (int)s->pid);
        else
                pv_notice("vlink %s: %s left (pid %d): %s; %s OFF%s", link_name(s), s->vm, (int)s->pid, why,
                          s->vm, told ? ", told the other side" : "");
        s->pid = 0;
        if (!s->link->hv->stopping)
                tell_left(s);
}

/* The peer's socket is readable: the end of it, or junk. */
static void on_conn(struct pvd_watch *w, int status, int events, void *arg)
{
        struct pvhv_side *s = arg;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 16)];
        } cm;
        char data[256];
        struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                             .msg_controllen = sizeof(cm.buf) };
        ssize_t n;
        char why[160];
        if (status < 0) {
                snprintf(why, sizeof(why), "socket error: %s", uv_strerror(status));
                side_leave(s, why);
                return;
        }
        while ((n = recvmsg(pvd_watch_fd(w), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
                ;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
        /* Fds a peer sends are never wanted: close them. */
        int nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n >= 0 && c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        close(fd);
                        nfds++;
                }
        }
        if (n == 0)
                snprintf(why, sizeof(why), "its socket closed");
        else if (n < 0)
                snprintf(why, sizeof(why), "its socket failed: %s", strerror(errno));
        else
                snprintf(why, sizeof(why),
                         "it sent %zd bytes%s%s, but the ivshmem protocol is one-way (server to peer); dropping it",
                         n, nfds ? " and fds" : "", (mh.msg_flags & MSG_CTRUNC) ? " (truncated)" : "");
        if (n > 0)
                s->dropped++;
        side_leave(s, why);
}

/* ---- joining -------------------------------------------------------------------- */

static pid_t peer_pid(int fd)
{
        struct ucred cr;
        socklen_t len = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
                return 0;
        return cr.pid;
}

/* The handshake of ivshmem-spec: version, own id, memory, the other
 * side's vectors when it is there, then its own vectors. */
static int handshake(struct pvhv_side *s)
{
        struct pvhv_side *o = other_of(s);
        int rc;
        if ((rc = send_msg(s, PV_IVSHM_PROTO_VERSION, -1)) < 0 || (rc = send_msg(s, peer_id(s), -1)) < 0 ||
            (rc = send_msg(s, PV_IVSHM_MSG_SHM, s->link->mem_fd)) < 0)
                return rc;
        if (o->conn) {
                if ((rc = send_vectors(s, o)) < 0)
                        return rc;
                s->knows_other = true;
        }
        return send_vectors(s, s);
}

static void side_join(struct pvhv_side *s, int fd)
{
        struct pvhv_side *o = other_of(s);
        pid_t pid = peer_pid(fd);
        if (take_id(s) < 0) {
                s->refused++;
                pv_warn("vlink %s: %s's peer (pid %d) refused: %s's peer (pid %d) saw all %u peer ids of %s "
                        "leave and QEMU cannot take one back; restart %s's peer",
                        link_name(s), s->vm, (int)pid, o->vm, (int)o->pid, PV_IVSHM_PEER_IDS_PER_SIDE, s->vm,
                        o->vm);
                close(fd);
                return;
        }
        s->conn = pvd_watch_new(s->link->hv->loop, fd, UV_READABLE | UV_DISCONNECT, on_conn, s);
        if (!s->conn) {
                pv_err("vlink %s: cannot watch %s's peer (pid %d); refused", link_name(s), s->vm, (int)pid);
                return;
        }
        s->pid = pid;
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                s->vec[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (s->vec[v] < 0) {
                        char why[128];
                        snprintf(why, sizeof(why), "no eventfd for its vectors (%s)", strerror(errno));
                        side_leave(s, why);
                        return;
                }
        }
        /* The header first: the newcomer reads it as soon as it has the
         * memory. */
        set_presence(s, true);
        s->joins++;
        pv_notice("vlink %s: %s joined (pid %d, peer id %u, connection %u); %s is %s", link_name(s), s->vm,
                  (int)pid, peer_id(s), s->link->hdr.presence[s->side].conn_gen, o->vm,
                  o->conn ? "there" : "absent");
        int rc = handshake(s);
        if (rc < 0) {
                char why[160];
                snprintf(why, sizeof(why), "handshake failed: %s", send_error(rc));
                side_leave(s, why);
                return;
        }
        if (!o->conn)
                return;
        rc = send_vectors(o, s);
        if (rc < 0) {
                char why[160];
                snprintf(why, sizeof(why), "cannot tell it that %s joined: %s; dropping it", s->vm,
                         send_error(rc));
                o->dropped++;
                side_leave(o, why);
                return;
        }
        o->knows_other = true;
        ring(o, PV_IVSHM_VEC_LINK);
}

static void on_listen(struct pvd_watch *w, int status, int events, void *arg)
{
        struct pvhv_side *s = arg;
        for (int i = 0; i < ACCEPT_BUDGET; i++) {
                int fd = accept4(pvd_watch_fd(w), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                /* The connection waits in the backlog; the
                                 * socket would stay readable: pause it. */
                                pv_warn("vlink %s: cannot accept on %s: %s; trying again in a moment",
                                        link_name(s), s->path, strerror(errno));
                                pvd_watch_set(w, 0);
                                s->listen_paused = true;
                                pvhv_resume_later(s->link->hv);
                        }
                        return;
                }
                if (s->conn) {
                        s->refused++;
                        pv_warn("vlink %s: a second peer for %s (pid %d) while %s's peer (pid %d) is there; "
                                "refused (one peer per side)",
                                link_name(s), s->vm, (int)peer_pid(fd), s->vm, (int)s->pid);
                        close(fd);
                        continue;
                }
                side_join(s, fd);
        }
}

/* ---- the socket ------------------------------------------------------------------ */

int pvhv_side_listen(struct pvhv_side *s)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, s->path, sizeof(sa.sun_path));
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
                pv_err("vlink %s: socket: %s", link_name(s), strerror(errno));
                return -errno;
        }
        /* We hold DIR's lock: a socket file there is a previous pvhv's. */
        unlink(s->path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(s->path, 0660) < 0 ||
            listen(fd, 16) < 0) {
                int e = errno;
                pv_err("vlink %s: cannot serve %s: %s", link_name(s), s->path, strerror(e));
                close(fd);
                unlink(s->path);
                return -e;
        }
        s->listen = pvd_watch_new(s->link->hv->loop, fd, UV_READABLE, on_listen, s);
        if (!s->listen) {
                unlink(s->path);
                return -ENOMEM;
        }
        return 0;
}

void pvhv_side_resume(struct pvhv_side *s)
{
        if (s->listen && s->listen_paused) {
                s->listen_paused = false;
                pvd_watch_set(s->listen, UV_READABLE);
        }
}

void pvhv_side_stop(struct pvhv_side *s)
{
        side_leave(s, "pvhv stops");
        if (s->listen) {
                pvd_watch_close(s->listen);
                s->listen = NULL;
                unlink(s->path);
        }
}
