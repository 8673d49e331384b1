/* hv/emu.c: the emulated hypervisor. Each VM is a pvd process on one Linux
 * host; each vlink is a UNIX socket "<platform dir>/<link name>.sock" that
 * the server end listens on and the client end connects to (retrying until
 * the server is there). The server end creates the vlink's memory (sealed
 * memfds) and control xIRQs (eventfds) afresh for every connection and hands
 * them over; the socket closing is the peer VM going away. See emu-proto.h for
 * the messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/hv.h"
#include "emu-proto.h"
#include "pvd.h"
#include "watch.h"

#define EMU_RETRY_MS        100
#define EMU_SEND_WAIT_MS    100
#define EMU_MAX_PEER_XIRQS  4096
#define EMU_MAX_PEER_GRANTS 65536

struct emu_ent {
        uint32_t id;
        int fd;
        uint64_t offset, size;
};

/* Sorted by id (ids are handed out in increasing order, so insertion is
 * almost always an append). */
struct emu_table {
        struct emu_ent *v;
        unsigned n, cap;
};

struct emu_link {
        struct pvd_vlink *vl;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct pvd_watch *listen;   /* server end */
        struct pvd_watch *sock;     /* the peer's connection */
        struct pvd_watch *xirq_rx;  /* the peer signals us */
        int xirq_tx;                /* we signal the peer */
        uv_timer_t retry;           /* client end: reconnect; either: reset after a send failed */
        bool joined;                /* server: JOIN accepted */
        struct emu_table own_xirq, peer_xirq, own_grant, peer_grant;
        uint32_t next_xirq, next_grant;
        uint32_t gen;
        uint64_t connects, xirq_tx_count, xirq_rx_count, grants_tx, grants_rx;
        char last_err[160];         /* to log a repeating failure once */
};

static struct emu_link *emu(struct pvd_vlink *vl)
{
        return vl->hv;
}

/* ---- tables ---------------------------------------------------------------- */

static unsigned table_pos(const struct emu_table *t, uint32_t id)
{
        unsigned lo = 0, hi = t->n;
        while (lo < hi) {
                unsigned mid = lo + (hi - lo) / 2;
                if (t->v[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static struct emu_ent *table_find(struct emu_table *t, uint32_t id)
{
        unsigned i = table_pos(t, id);
        return i < t->n && t->v[i].id == id ? &t->v[i] : NULL;
}

/* Takes ownership of e->fd (closed on failure). */
static int table_add(struct emu_table *t, const struct emu_ent *e)
{
        unsigned i = table_pos(t, e->id);
        if (i < t->n && t->v[i].id == e->id) {
                close(e->fd);
                return -EEXIST;
        }
        if (t->n == t->cap) {
                unsigned cap = t->cap ? t->cap * 2 : 16;
                struct emu_ent *v = realloc(t->v, cap * sizeof(*v));
                if (!v) {
                        close(e->fd);
                        return -ENOMEM;
                }
                t->v = v;
                t->cap = cap;
        }
        memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
        t->v[i] = *e;
        t->n++;
        return 0;
}

static bool table_del(struct emu_table *t, uint32_t id)
{
        unsigned i = table_pos(t, id);
        if (i >= t->n || t->v[i].id != id)
                return false;
        close(t->v[i].fd);
        memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
        t->n--;
        return true;
}

static void table_clear(struct emu_table *t)
{
        for (unsigned i = 0; i < t->n; i++)
                close(t->v[i].fd);
        free(t->v);
        memset(t, 0, sizeof(*t));
}

/* ---- messages ----------------------------------------------------------------- */

static void emu_msg_init(struct pv_emu_msg *m, uint32_t type)
{
        memset(m, 0, sizeof(*m));
        m->magic = PV_EMU_MAGIC;
        m->version = PV_EMU_VERSION;
        m->type = type;
}

static void emu_fail_cb(uv_timer_t *t)
{
        struct emu_link *l = t->data;
        if (l->sock)
                pvd_vlink_fail(l->vl, "the peer did not read its link socket for %d ms", EMU_SEND_WAIT_MS);
}

static int emu_send(struct emu_link *l, const struct pv_emu_msg *m, const int *fds, unsigned nfds)
{
        if (!l->sock)
                return -ENOTCONN;
        struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof(*m) };
        union {
                char buf[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr align;
        } u;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds) {
                memset(&u, 0, sizeof(u));
                mh.msg_control = u.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        int fd = pvd_watch_fd(l->sock);
        ssize_t n;
        do
                n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        /* A full socket: the peer's pvd reads it in a moment. Waiting for
         * that loses no announcement (a lost GRANT_REVOKE left the peer
         * holding the memory) and keeps their order; a peer that does not
         * read for EMU_SEND_WAIT_MS is broken and the link is reset (later:
         * a driver may be in the middle of something). */
        uint64_t end = uv_hrtime() + EMU_SEND_WAIT_MS * 1000000ull;
        while (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                uint64_t now = uv_hrtime();
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                if (now >= end || poll(&pf, 1, (int)((end - now) / 1000000u) + 1) == 0) {
                        uv_timer_start(&l->retry, emu_fail_cb, 0, 0);
                        return -ENOBUFS;
                }
                n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n < 0)
                return -errno;
        return n == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

/* Receive one message. 1 with *m and fds, 0 when nothing waits, -ECONNRESET
 * on EOF, -EPROTO for anything malformed (fds closed). */
static int emu_recv(struct emu_link *l, struct pv_emu_msg *m, int *fds, unsigned *nfds)
{
        union {
                char buf[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr align;
        } u;
        struct iovec iov = { .iov_base = m, .iov_len = sizeof(*m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                             .msg_controllen = sizeof(u.buf) };
        *nfds = 0;
        ssize_t n;
        do
                n = recvmsg(pvd_watch_fd(l->sock), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 0 : -ECONNRESET;
        /* Every fd that came is taken before anything else is looked at:
         * even an empty datagram (n == 0) can carry some. */
        int rc = n == 0 ? -ECONNRESET : 1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        rc = -EPROTO;
                        continue;
                }
                unsigned cnt = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (unsigned i = 0; i < cnt; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (*nfds < PV_EMU_MAX_FDS)
                                fds[(*nfds)++] = fd;
                        else
                                close(fd);
                }
        }
        if (rc > 0 && ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n != (ssize_t)sizeof(*m) ||
                       m->magic != PV_EMU_MAGIC || m->version != PV_EMU_VERSION))
                rc = -EPROTO;
        if (rc < 0) {
                for (unsigned i = 0; i < *nfds; i++)
                        close(fds[i]);
                *nfds = 0;
        }
        return rc;
}

static void close_fds(int *fds, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

/* ---- link lifetime -------------------------------------------------------------- */

static void emu_log_fail(struct emu_link *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emu_log_fail(struct emu_link *l, const char *fmt, ...)
{
        char buf[sizeof(l->last_err)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        if (strcmp(buf, l->last_err) == 0)
                return;
        snprintf(l->last_err, sizeof(l->last_err), "%s", buf);
        pv_warn("vlink %s: %s", l->vl->cfg->link_name, buf);
}

static void emu_unmap(struct pvd_vlink *vl)
{
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                struct pvd_region *r = &vl->region[i];
                if (r->base)
                        munmap(r->base, r->size);
                if (r->fd >= 0)
                        close(r->fd);
                r->base = NULL;
                r->fd = -1;
        }
}

static void emu_schedule_connect(struct emu_link *l);

/* The peer is gone (or misbehaved): back to OFF and free everything that
 * came from or went to it. */
static void emu_drop(struct emu_link *l)
{
        struct pvd_vlink *vl = l->vl;
        if (vl->state != PV_VLINK_OFF)
                pvd_vlink_set_state(vl, PV_VLINK_OFF);
        pvd_watch_close(l->sock);
        l->sock = NULL;
        pvd_watch_close(l->xirq_rx);
        l->xirq_rx = NULL;
        if (l->xirq_tx >= 0)
                close(l->xirq_tx);
        l->xirq_tx = -1;
        l->joined = false;
        table_clear(&l->own_xirq);
        table_clear(&l->peer_xirq);
        table_clear(&l->own_grant);
        table_clear(&l->peer_grant);
        emu_unmap(vl);
        if (vl->side == PV_CLIENT && !vl->pvd->stopping)
                emu_schedule_connect(l);
}

static void emu_xirq_cb(struct pvd_watch *w, int status, int events, void *arg);
static void emu_sock_cb(struct pvd_watch *w, int status, int events, void *arg);

static int emu_watch_xirq(struct emu_link *l, int fd)
{
        l->xirq_rx = pvd_watch_new(l->vl->pvd->loop, fd, UV_READABLE, emu_xirq_cb, l);
        return l->xirq_rx ? 0 : -ENOMEM;
}

/* Server end: a client asked to join; create fresh memory and xIRQs. */
static int emu_serve(struct emu_link *l, const struct pv_emu_msg *join)
{
        struct pvd_vlink *vl = l->vl;
        const struct pv_vlink_cfg *cfg = vl->cfg;
        const char *client_vm = vl->pvd->plat->vms[cfg->vm[PV_CLIENT]].name;
        if (join->type != PV_EMU_JOIN || strncmp(join->client_vm, client_vm, sizeof(join->client_vm)) ||
            strncmp(join->link_name, cfg->link_name, sizeof(join->link_name))) {
                emu_log_fail(l, "refusing a peer that is not %s for this vlink", client_vm);
                return -EPROTO;
        }

        size_t sizes[PV_REGION_COUNT];
        pvd_vlink_region_sizes(vl, sizes);
        int fds[PV_EMU_MAX_FDS];
        unsigned nfds = 0;
        struct pv_emu_msg hello;
        emu_msg_init(&hello, PV_EMU_HELLO);
        hello.gen = ++l->gen;
        snprintf(hello.server_vm, sizeof(hello.server_vm), "%s", vl->pvd->vm_name);
        snprintf(hello.client_vm, sizeof(hello.client_vm), "%s", client_vm);
        snprintf(hello.link_name, sizeof(hello.link_name), "%s", cfg->link_name);

        int rc = 0;
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                if (!sizes[i])
                        continue;
                char name[200];
                snprintf(name, sizeof(name), "pvd-%.180s-r%d", cfg->link_name, i);
                int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
                if (fd < 0 || ftruncate(fd, (off_t)sizes[i]) < 0 ||
                    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                        rc = -errno;
                        if (fd >= 0)
                                close(fd);
                        goto fail;
                }
                void *p = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p == MAP_FAILED) {
                        rc = -errno;
                        close(fd);
                        goto fail;
                }
                vl->region[i] = (struct pvd_region){ .base = p, .size = sizes[i], .fd = fd };
                hello.region_mask |= 1u << i;
                hello.region_size[i] = sizes[i];
                fds[nfds++] = fd;
        }
        int s2c = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        int c2s = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s2c < 0 || c2s < 0) {
                rc = -errno;
                if (s2c >= 0)
                        close(s2c);
                if (c2s >= 0)
                        close(c2s);
                goto fail;
        }
        l->xirq_tx = s2c;
        rc = emu_watch_xirq(l, c2s);
        if (rc < 0)
                goto fail;
        fds[nfds++] = s2c;
        fds[nfds++] = c2s;

        pvd_vlink_regions_created(vl);
        rc = emu_send(l, &hello, fds, nfds);
        if (rc < 0)
                goto fail;
        l->joined = true;
        l->connects++;
        pvd_vlink_set_state(vl, PV_VLINK_RESET);
        return 0;
fail:
        emu_log_fail(l, "cannot set up vlink memory: %s", strerror(-rc));
        return rc;
}

/* Client end: the server's memory and xIRQs arrived. Check everything the
 * server claims against our own configuration before mapping. */
static int emu_accept_hello(struct emu_link *l, const struct pv_emu_msg *m, int *fds, unsigned nfds)
{
        struct pvd_vlink *vl = l->vl;
        const struct pv_vlink_cfg *cfg = vl->cfg;
        size_t sizes[PV_REGION_COUNT];
        pvd_vlink_region_sizes(vl, sizes);

        if (m->type != PV_EMU_HELLO || strncmp(m->link_name, cfg->link_name, sizeof(m->link_name))) {
                emu_log_fail(l, "the server sent no valid HELLO");
                goto bad;
        }
        unsigned want = 2;
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                bool present = m->region_mask & (1u << i);
                if (present != (sizes[i] != 0) || (present && m->region_size[i] != sizes[i])) {
                        emu_log_fail(l, "the server's vlink memory (region %d: %llu bytes) differs from "
                                     "our configuration (%zu bytes): do both VMs use the same platform file?",
                                     i, (unsigned long long)(present ? m->region_size[i] : 0), sizes[i]);
                        goto bad;
                }
                want += present;
        }
        if (m->region_mask >> PV_REGION_COUNT || nfds != want) {
                emu_log_fail(l, "the server's HELLO carries %u fds, %u expected", nfds, want);
                goto bad;
        }
        unsigned k = 0;
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                if (!sizes[i])
                        continue;
                int fd = fds[k];
                struct stat st;
                int seals = fcntl(fd, F_GET_SEALS);
                if (fstat(fd, &st) < 0 || (size_t)st.st_size != sizes[i] || seals < 0 ||
                    (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
                        emu_log_fail(l, "the server's region %d is not a sealed memfd of %zu bytes", i, sizes[i]);
                        goto bad;
                }
                void *p = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p == MAP_FAILED) {
                        emu_log_fail(l, "cannot map region %d: %s", i, strerror(errno));
                        goto bad;
                }
                vl->region[i] = (struct pvd_region){ .base = p, .size = sizes[i], .fd = fd };
                fds[k++] = -1;
        }
        const struct pv_vlink_ctl *ctl = vl->region[PV_REGION_CTL].base;
        if (shm_read32(&ctl->magic) != PV_VLINK_MAGIC || shm_read32(&ctl->version) != PV_VLINK_VERSION ||
            shm_read32(&ctl->ring_size) != PV_CTL_RING_SIZE) {
                emu_log_fail(l, "the server's control region has a bad magic or version");
                goto bad;
        }
        l->xirq_tx = fds[k + 1]; /* client -> server */
        fds[k + 1] = -1;
        if (emu_watch_xirq(l, fds[k]) < 0) {
                fds[k] = -1;
                goto bad;
        }
        fds[k] = -1;
        l->gen = m->gen;
        struct pv_emu_msg ready;
        emu_msg_init(&ready, PV_EMU_READY);
        if (emu_send(l, &ready, NULL, 0) < 0)
                goto bad;
        l->connects++;
        l->last_err[0] = 0;
        pvd_vlink_set_state(vl, PV_VLINK_ON);
        return 0;
bad:
        /* Regions already mapped are in vl->region[]: emu_drop frees them. */
        close_fds(fds, nfds);
        return -EPROTO;
}

static int emu_handle(struct emu_link *l, struct pv_emu_msg *m, int *fds, unsigned nfds)
{
        struct pvd_vlink *vl = l->vl;
        unsigned want_fds = (m->type == PV_EMU_XIRQ_NEW || m->type == PV_EMU_GRANT_NEW) ? 1 : 0;

        if (vl->side == PV_SERVER && !l->joined) {
                if (nfds)
                        goto bad;
                return emu_serve(l, m);
        }
        if (vl->side == PV_CLIENT && vl->state == PV_VLINK_RESET)
                return emu_accept_hello(l, m, fds, nfds);
        if (vl->side == PV_SERVER && vl->state == PV_VLINK_RESET) {
                if (m->type != PV_EMU_READY || nfds)
                        goto bad;
                l->last_err[0] = 0;
                pvd_vlink_set_state(vl, PV_VLINK_ON);
                return 0;
        }
        if (vl->state != PV_VLINK_ON || nfds != want_fds)
                goto bad;

        switch (m->type) {
        case PV_EMU_XIRQ_NEW:
                if (l->peer_xirq.n >= EMU_MAX_PEER_XIRQS) {
                        emu_log_fail(l, "the peer holds more than %d xIRQs", EMU_MAX_PEER_XIRQS);
                        goto bad;
                }
                if (table_add(&l->peer_xirq, &(struct emu_ent){ .id = m->id, .fd = fds[0] }) < 0)
                        return -EPROTO;
                return 0;
        case PV_EMU_XIRQ_FREE:
                table_del(&l->peer_xirq, m->id);
                return 0;
        case PV_EMU_GRANT_NEW:
                if (l->peer_grant.n >= EMU_MAX_PEER_GRANTS) {
                        emu_log_fail(l, "the peer holds more than %d grants", EMU_MAX_PEER_GRANTS);
                        goto bad;
                }
                l->grants_rx++;
                if (table_add(&l->peer_grant, &(struct emu_ent){ .id = m->id, .fd = fds[0],
                                                                .offset = m->offset, .size = m->size }) < 0)
                        return -EPROTO;
                return 0;
        case PV_EMU_GRANT_REVOKE:
                table_del(&l->peer_grant, m->id);
                return 0;
        default:
                goto bad;
        }
bad:
        close_fds(fds, nfds);
        return -EPROTO;
}

/* Read every waiting link message. Returns false if the link dropped. */
static bool emu_drain(struct emu_link *l)
{
        while (l->sock) {
                struct pv_emu_msg m;
                int fds[PV_EMU_MAX_FDS];
                unsigned nfds;
                int rc = emu_recv(l, &m, fds, &nfds);
                if (rc == 0)
                        return true;
                if (rc > 0)
                        rc = emu_handle(l, &m, fds, nfds);
                if (rc < 0) {
                        if (rc == -EPROTO)
                                emu_log_fail(l, "protocol error on the link socket; dropping the peer");
                        emu_drop(l);
                        return false;
                }
        }
        return false;
}

static void emu_sock_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct emu_link *l = arg;
        if (status < 0) {
                emu_drop(l);
                return;
        }
        emu_drain(l);
}

static void emu_xirq_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct emu_link *l = arg;
        uint64_t v;
        if (read(pvd_watch_fd(w), &v, sizeof(v)) < 0 && errno != EAGAIN)
                return;
        /* Link messages sent before the xIRQ (grants, xIRQs, READY) are
         * handled before the ring messages that name them. */
        if (!emu_drain(l))
                return;
        l->xirq_rx_count++;
        if (l->vl->state == PV_VLINK_ON)
                pvd_vlink_xirq(l->vl);
}

static void emu_listen_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct emu_link *l = arg;
        for (;;) {
                int fd = accept4(pvd_watch_fd(w), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0)
                        return;
                if (l->sock) {
                        emu_log_fail(l, "refusing a second peer connection (one is connected)");
                        close(fd);
                        continue;
                }
                l->sock = pvd_watch_new(l->vl->pvd->loop, fd, UV_READABLE, emu_sock_cb, l);
        }
}

static void emu_try_connect(uv_timer_t *t)
{
        struct emu_link *l = t->data;
        struct pvd_vlink *vl = l->vl;
        if (l->sock || vl->pvd->stopping)
                return;
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                goto retry;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, l->path, sizeof(sa.sun_path));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                goto retry;
        }
        l->sock = pvd_watch_new(vl->pvd->loop, fd, UV_READABLE, emu_sock_cb, l);
        if (!l->sock)
                goto retry;
        struct pv_emu_msg join;
        emu_msg_init(&join, PV_EMU_JOIN);
        snprintf(join.server_vm, sizeof(join.server_vm), "%s", vl->pvd->plat->vms[vl->cfg->vm[PV_SERVER]].name);
        snprintf(join.client_vm, sizeof(join.client_vm), "%s", vl->pvd->vm_name);
        snprintf(join.link_name, sizeof(join.link_name), "%s", vl->cfg->link_name);
        if (emu_send(l, &join, NULL, 0) < 0) {
                pvd_watch_close(l->sock);
                l->sock = NULL;
                goto retry;
        }
        pvd_vlink_set_state(vl, PV_VLINK_RESET);
        return;
retry:
        emu_schedule_connect(l);
}

static void emu_schedule_connect(struct emu_link *l)
{
        uv_timer_start(&l->retry, emu_try_connect, EMU_RETRY_MS, 0);
}

static int emu_start(struct pvd_vlink *vl)
{
        struct emu_link *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->vl = vl;
        l->xirq_tx = -1;
        vl->hv = l;
        for (int i = 0; i < PV_REGION_COUNT; i++)
                vl->region[i].fd = -1;
        uv_timer_init(vl->pvd->loop, &l->retry);
        l->retry.data = l;
        int n = snprintf(l->path, sizeof(l->path), "%s/%s.sock", vl->pvd->platform_dir, vl->cfg->link_name);
        if (n < 0 || (size_t)n >= sizeof(l->path)) {
                pv_err("vlink %s: platform directory path too long for a socket", vl->cfg->link_name);
                return -ENAMETOOLONG;
        }
        if (vl->side == PV_CLIENT) {
                emu_try_connect(&l->retry);
                return 0;
        }

        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, l->path, sizeof(sa.sun_path));
        struct stat st;
        /* A socket left by a pvd of this VM that died: we hold the VM's
         * platform lock, so it is stale. */
        if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(l->path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(l->path, 0660) < 0 || listen(fd, 4) < 0) {
                int e = errno;
                pv_err("vlink %s: cannot listen on %s: %s", vl->cfg->link_name, l->path, strerror(e));
                close(fd);
                return -e;
        }
        l->listen = pvd_watch_new(vl->pvd->loop, fd, UV_READABLE, emu_listen_cb, l);
        return l->listen ? 0 : -ENOMEM;
}

static void emu_free(uv_handle_t *h)
{
        free(h->data);
}

static void emu_stop(struct pvd_vlink *vl)
{
        struct emu_link *l = emu(vl);
        if (!l)
                return;
        emu_drop(l);
        if (l->listen) {
                unlink(l->path);
                pvd_watch_close(l->listen);
        }
        uv_timer_stop(&l->retry);
        vl->hv = NULL;
        uv_close((uv_handle_t *)&l->retry, emu_free);
}

static void emu_reset(struct pvd_vlink *vl)
{
        emu_drop(emu(vl));
}

static int emu_notify(struct pvd_vlink *vl)
{
        struct emu_link *l = emu(vl);
        uint64_t one = 1;
        if (l->xirq_tx < 0)
                return -ENOTCONN;
        l->xirq_tx_count++;
        return write(l->xirq_tx, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int emu_xirq_alloc(struct pvd_vlink *vl, uint32_t *id, int *fd)
{
        struct emu_link *l = emu(vl);
        if (vl->state != PV_VLINK_ON)
                return -ENOTCONN;
        int efd = eventfd(0, EFD_CLOEXEC);
        if (efd < 0)
                return -errno;
        struct pv_emu_msg m;
        emu_msg_init(&m, PV_EMU_XIRQ_NEW);
        m.id = ++l->next_xirq;
        int rc = emu_send(l, &m, &efd, 1);
        if (rc < 0) {
                close(efd);
                return rc;
        }
        rc = table_add(&l->own_xirq, &(struct emu_ent){ .id = m.id, .fd = efd });
        if (rc < 0)
                return rc;
        *id = m.id;
        *fd = efd;
        return 0;
}

static int emu_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd)
{
        struct emu_ent *e = table_find(&emu(vl)->peer_xirq, id);
        if (!e)
                return -ENOENT;
        *fd = e->fd;
        return 0;
}

static void emu_xirq_free(struct pvd_vlink *vl, uint32_t id)
{
        struct emu_link *l = emu(vl);
        if (!l || !table_del(&l->own_xirq, id))
                return;
        struct pv_emu_msg m;
        emu_msg_init(&m, PV_EMU_XIRQ_FREE);
        m.id = id;
        emu_send(l, &m, NULL, 0);
}

static int emu_grant(struct pvd_vlink *vl, int fd, uint64_t offset, uint64_t size, uint32_t *gref)
{
        struct emu_link *l = emu(vl);
        if (vl->state != PV_VLINK_ON)
                return -ENOTCONN;
        int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dfd < 0)
                return -errno;
        struct pv_emu_msg m;
        emu_msg_init(&m, PV_EMU_GRANT_NEW);
        m.id = ++l->next_grant;
        m.offset = offset;
        m.size = size;
        int rc = emu_send(l, &m, &dfd, 1);
        if (rc < 0) {
                close(dfd);
                return rc;
        }
        rc = table_add(&l->own_grant, &(struct emu_ent){ .id = m.id, .fd = dfd, .offset = offset, .size = size });
        if (rc < 0)
                return rc;
        l->grants_tx++;
        *gref = m.id;
        return 0;
}

static int emu_grant_get(struct pvd_vlink *vl, uint32_t gref, int *fd, uint64_t *offset, uint64_t *size)
{
        struct emu_ent *e = table_find(&emu(vl)->peer_grant, gref);
        if (!e)
                return -ENOENT;
        *fd = e->fd;
        *offset = e->offset;
        *size = e->size;
        return 0;
}

static void emu_grant_revoke(struct pvd_vlink *vl, uint32_t gref)
{
        struct emu_link *l = emu(vl);
        if (!l || !table_del(&l->own_grant, gref))
                return;
        struct pv_emu_msg m;
        emu_msg_init(&m, PV_EMU_GRANT_REVOKE);
        m.id = gref;
        emu_send(l, &m, NULL, 0);
}

static void emu_status(struct pvd_vlink *vl, void *pkv)
{
        msgpack_packer *pk = pkv;
        struct emu_link *l = emu(vl);
        msgpack_pack_map(pk, 8);
        pvd_pack_kv_str(pk, "hv", "emu");
        pvd_pack_kv_str(pk, "link_socket", l->path);
        pvd_pack_kv_u64(pk, "connects", l->connects);
        pvd_pack_kv_u64(pk, "xirqs_sent", l->xirq_tx_count);
        pvd_pack_kv_u64(pk, "xirqs_received", l->xirq_rx_count);
        pvd_pack_kv_u64(pk, "program_xirqs", l->own_xirq.n + l->peer_xirq.n);
        pvd_pack_kv_u64(pk, "grants_out", l->own_grant.n);
        pvd_pack_kv_u64(pk, "grants_in", l->peer_grant.n);
}

const struct hv_backend hv_emu = {
        .name = "emu",
        .one_kernel = 1,
        .start = emu_start,
        .stop = emu_stop,
        .reset = emu_reset,
        .notify = emu_notify,
        .xirq_alloc = emu_xirq_alloc,
        .xirq_get = emu_xirq_get,
        .xirq_free = emu_xirq_free,
        .grant = emu_grant,
        .grant_get = emu_grant_get,
        .grant_revoke = emu_grant_revoke,
        .status = emu_status,
};
