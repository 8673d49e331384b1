/* hv/emu.c: the emulated hypervisor. Each VM is a pvd process on one Linux
 * host; each vlink is a UNIX socket "<platform dir>/<link name>.sock" that
 * the server end listens on and the client end connects to (retrying until
 * the server is there). The server end creates the vlink's memory (sealed
 * memfds) and control xIRQs (eventfds) afresh for every connection and hands
 * them over; the socket closing is the peer VM going away. Grants and
 * program xIRQs are announced on the control ring, their fds on the socket
 * (emu-proto.h says why).
 *
 * Every memory object this backend makes starts one page into its memfd
 * (EMU_MEM_OFFSET), so that a program that maps at offset 0 instead of the
 * offset it was given fails here, in every test, and not only on a backend
 * that carves objects out of one large memory.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "emu-proto.h"
#include "id-table.h"
#include "hv.h"
#include "pv-config.h"
#include "pvd.h"
#include "watch.h"

#define EMU_RETRY_MS        100
#define EMU_MAX_PEER_XIRQS  4096
#define EMU_MAX_PEER_GRANTS 65536
#define EMU_MAX_STASH       4096    /* fds that came before their announcement */
#define EMU_TXQ_MAX         65536   /* fds waiting for room in the socket */
#define EMU_MEM_OFFSET      PV_EMU_MEM_OFFSET

/* The backend's own state: the platform directory and this VM's lock in it. */
struct emu_global {
        char dir[PVD_DIR_MAX];
        char lock_path[PVD_DIR_MAX + PV_NAME_MAX + 8];
        int lock_fd;
        uint32_t next_mem;
};

/* An fd message waiting for room in the socket. */
struct emu_txq {
        struct emu_txq *next;
        uint32_t kind, id;
        int fd;
};

struct emu_link {
        struct pvd_vlink *vl;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct pvd_watch *listen;   /* server end */
        struct pvd_watch *sock;     /* the peer's connection */
        struct pvd_watch *xirq_rx;  /* the peer signals us */
        int xirq_tx;                /* we signal the peer */
        uv_timer_t retry;           /* client end: reconnect; both: a deferred drop */
        bool joined;                /* server: JOIN accepted */
        bool drop_due;              /* dropped from the timer, out of any driver's call */
        bool waiting;               /* a ring announcement waits for its fd */
        struct id_table own_xirq, peer_xirq, own_grant, peer_grant;
        struct id_table stash_xirq, stash_grant;
        struct emu_txq *txq, **txq_tail;
        unsigned ntxq;
        uint32_t next_xirq, next_grant;
        uint32_t gen;
        uint64_t connects, xirq_tx_count, xirq_rx_count, grants_tx, grants_rx, txq_peak, stalls;
        char last_err[160];         /* to log a repeating failure once */
};

static struct emu_link *emu(struct pvd_vlink *vl)
{
        return vl->hv;
}

static size_t page_size(void)
{
        return (size_t)sysconf(_SC_PAGESIZE);
}

static uint64_t page_round(uint64_t n)
{
        uint64_t pg = page_size();
        return (n + pg - 1) / pg * pg;
}

/* ---- messages ----------------------------------------------------------------- */

static void emu_msg_init(struct pv_emu_msg *m, uint32_t type)
{
        memset(m, 0, sizeof(*m));
        m->magic = PV_EMU_MAGIC;
        m->version = PV_EMU_VERSION;
        m->type = type;
}

static int sock_send(int sock, const struct pv_emu_msg *m, const int *fds, unsigned nfds)
{
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
        ssize_t n;
        do
                n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return n == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

static int emu_send(struct emu_link *l, const struct pv_emu_msg *m, const int *fds, unsigned nfds)
{
        return l->sock ? sock_send(pvd_watch_fd(l->sock), m, fds, nfds) : -ENOTCONN;
}

static void close_fds(int *fds, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

/* Receive one message. 1 with *m and fds, 0 when nothing waits, -ECONNRESET
 * at the end, -EPROTO for anything malformed. Every fd that came is taken
 * first and closed on failure, whatever the message was (an empty datagram
 * can carry fds too). */
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
        int rc = 1;
        if (mh.msg_controllen)
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
        if (n == 0 && !*nfds && rc > 0)
                return -ECONNRESET;
        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n != (ssize_t)sizeof(*m) ||
            m->magic != PV_EMU_MAGIC || m->version != PV_EMU_VERSION)
                rc = -EPROTO;
        if (rc < 0) {
                close_fds(fds, *nfds);
                *nfds = 0;
        }
        return rc;
}

/* ---- the fd queue --------------------------------------------------------------- */

static void txq_clear(struct emu_link *l)
{
        while (l->txq) {
                struct emu_txq *q = l->txq;
                l->txq = q->next;
                close(q->fd);
                free(q);
        }
        l->txq_tail = &l->txq;
        l->ntxq = 0;
}

/* Send what waits, in order, while the socket takes it. */
static int txq_flush(struct emu_link *l)
{
        while (l->txq) {
                struct emu_txq *q = l->txq;
                struct pv_emu_msg m;
                emu_msg_init(&m, PV_EMU_FD);
                m.kind = q->kind;
                m.id = q->id;
                int rc = emu_send(l, &m, &q->fd, 1);
                if (rc == -EAGAIN)
                        break;
                if (rc < 0)
                        return rc;
                l->txq = q->next;
                if (!l->txq)
                        l->txq_tail = &l->txq;
                l->ntxq--;
                close(q->fd);
                free(q);
        }
        if (l->sock)
                pvd_watch_set(l->sock, UV_READABLE | (l->txq ? UV_WRITABLE : 0));
        return 0;
}

static void emu_defer_drop(struct emu_link *l);

/* Hand fd (a duplicate is taken) to the peer as object (kind, id), behind
 * everything queued before it. */
static int send_fd(struct emu_link *l, uint32_t kind, uint32_t id, int fd)
{
        if (!l->sock)
                return -ENOTCONN;
        if (!l->txq) {
                struct pv_emu_msg m;
                emu_msg_init(&m, PV_EMU_FD);
                m.kind = kind;
                m.id = id;
                int rc = emu_send(l, &m, &fd, 1);
                if (rc != -EAGAIN)
                        return rc;
        }
        if (l->ntxq >= EMU_TXQ_MAX) {
                pv_err("vlink %s: the peer has not read %u fds of its link socket; dropping it",
                       l->vl->cfg->link_name, l->ntxq);
                emu_defer_drop(l);
                return -ENOBUFS;
        }
        struct emu_txq *q = malloc(sizeof(*q));
        int dfd = q ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
        if (dfd < 0) {
                free(q);
                return -ENOMEM;
        }
        *q = (struct emu_txq){ .kind = kind, .id = id, .fd = dfd };
        *l->txq_tail = q;
        l->txq_tail = &q->next;
        if (++l->ntxq > l->txq_peak)
                l->txq_peak = l->ntxq;
        pvd_watch_set(l->sock, UV_READABLE | UV_WRITABLE);
        return 0;
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
                r->offset = 0;
        }
}

static void emu_schedule_connect(struct emu_link *l);

/* The peer is gone (or misbehaved): back to OFF and free everything that
 * came from or went to it. */
static void emu_drop(struct emu_link *l)
{
        struct pvd_vlink *vl = l->vl;
        l->drop_due = false;
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
        l->waiting = false;
        txq_clear(l);
        id_table_clear(&l->own_xirq);
        id_table_clear(&l->peer_xirq);
        id_table_clear(&l->own_grant);
        id_table_clear(&l->peer_grant);
        id_table_clear(&l->stash_xirq);
        id_table_clear(&l->stash_grant);
        emu_unmap(vl);
        if (vl->side == PV_CLIENT && !vl->pvd->stopping)
                emu_schedule_connect(l);
}

static void drop_cb(uv_timer_t *t)
{
        struct emu_link *l = t->data;
        if (l->drop_due)
                emu_drop(l);
}

/* Drop the peer from the loop, not inside the driver call that found out. */
static void emu_defer_drop(struct emu_link *l)
{
        if (l->drop_due)
                return;
        l->drop_due = true;
        uv_timer_start(&l->retry, drop_cb, 0, 0);
}

static void emu_xirq_cb(struct pvd_watch *w, int status, int events, void *arg);
static void emu_sock_cb(struct pvd_watch *w, int status, int events, void *arg);

static int emu_watch_xirq(struct emu_link *l, int fd)
{
        l->xirq_rx = pvd_watch_new(l->vl->pvd->loop, fd, UV_READABLE, emu_xirq_cb, l);
        return l->xirq_rx ? 0 : -ENOMEM;
}

/* A sealed memfd with size bytes at EMU_MEM_OFFSET, and the same mapped
 * when base is not NULL. */
static int memfd_object(const char *name, uint64_t size, void **base)
{
        int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t)(EMU_MEM_OFFSET + size)) < 0 ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        if (base) {
                void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, EMU_MEM_OFFSET);
                if (p == MAP_FAILED) {
                        int e = errno;
                        close(fd);
                        return -e;
                }
                *base = p;
        }
        return fd;
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
                void *p;
                int fd = memfd_object(name, sizes[i], &p);
                if (fd < 0) {
                        rc = fd;
                        goto fail;
                }
                vl->region[i] = (struct pvd_region){ .base = p, .size = sizes[i], .fd = fd,
                                                     .offset = EMU_MEM_OFFSET };
                hello.region_mask |= 1u << i;
                hello.region_size[i] = sizes[i];
                hello.region_offset[i] = EMU_MEM_OFFSET;
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

/* Is fd memory that cannot shrink under a mapping of [offset, offset +
 * size)? A sealed memfd (rounded up to pages: the last partial page maps)
 * or a dma-buf. Sets *dmabuf. */
static bool memory_holds(int fd, uint64_t offset, uint64_t size, bool *dmabuf)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return false;
        uint64_t end;
        int seals = fcntl(fd, F_GET_SEALS);
        *dmabuf = false;
        if (seals >= 0 && S_ISREG(st.st_mode)) {
                if (!(seals & F_SEAL_SHRINK))
                        return false;
                end = page_round((uint64_t)st.st_size);
        } else {
                char path[64], buf[512];
                snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
                int ifd = open(path, O_RDONLY | O_CLOEXEC);
                if (ifd < 0)
                        return false;
                ssize_t n = read(ifd, buf, sizeof(buf) - 1);
                close(ifd);
                if (n <= 0)
                        return false;
                buf[n] = 0;
                off_t e = strstr(buf, "\nexp_name:") ? lseek(fd, 0, SEEK_END) : -1;
                if (e < 0)
                        return false;
                end = (uint64_t)e;
                *dmabuf = true;
        }
        return offset % page_size() == 0 && size && offset <= end && size <= end - offset;
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
                uint64_t off = m->region_offset[i];
                bool dmabuf;
                if (!memory_holds(fd, off, sizes[i], &dmabuf) || dmabuf) {
                        emu_log_fail(l, "the server's region %d is not a sealed memfd with %zu bytes at %llu", i,
                                     sizes[i], (unsigned long long)off);
                        goto bad;
                }
                void *p = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
                if (p == MAP_FAILED) {
                        emu_log_fail(l, "cannot map region %d: %s", i, strerror(errno));
                        goto bad;
                }
                vl->region[i] = (struct pvd_region){ .base = p, .size = sizes[i], .fd = fd, .offset = off };
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
        int rx = fds[k];
        fds[k] = -1;
        if (emu_watch_xirq(l, rx) < 0)
                goto bad;
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

/* An fd for an announcement still to come on the ring. */
static int take_fd(struct emu_link *l, const struct pv_emu_msg *m, int fd)
{
        bool xirq = m->kind == PV_EMU_KIND_XIRQ;
        struct id_table *stash = xirq ? &l->stash_xirq : &l->stash_grant;
        struct id_table *known = xirq ? &l->peer_xirq : &l->peer_grant;
        if ((m->kind != PV_EMU_KIND_XIRQ && m->kind != PV_EMU_KIND_GRANT) || !m->id ||
            id_table_find(known, m->id) || stash->n >= EMU_MAX_STASH) {
                close(fd);
                emu_log_fail(l, "the peer sent an fd that no announcement can claim (kind %u, id %u)", m->kind, m->id);
                return -EPROTO;
        }
        return id_table_add(stash, &(struct id_ent){ .id = m->id, .fd = fd }) < 0 ? -EPROTO : 0;
}

static int emu_handle(struct emu_link *l, struct pv_emu_msg *m, int *fds, unsigned nfds)
{
        struct pvd_vlink *vl = l->vl;
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
        if (vl->state != PV_VLINK_ON || m->type != PV_EMU_FD || nfds != 1)
                goto bad;
        return take_fd(l, m, fds[0]);
bad:
        close_fds(fds, nfds);
        return -EPROTO;
}

/* Read every waiting link message. Returns false if the link dropped. */
static bool emu_drain(struct emu_link *l)
{
        while (l->sock && !l->drop_due) {
                struct pv_emu_msg m;
                int fds[PV_EMU_MAX_FDS];
                unsigned nfds;
                int rc = emu_recv(l, &m, fds, &nfds);
                if (rc == 0)
                        break;
                if (rc > 0)
                        rc = emu_handle(l, &m, fds, nfds);
                if (rc < 0) {
                        if (rc == -EPROTO)
                                emu_log_fail(l, "protocol error on the link socket; dropping the peer");
                        emu_drop(l);
                        return false;
                }
        }
        if (!l->sock || l->drop_due)
                return false;
        /* A ring announcement waited for an fd that may just have come. */
        if (l->waiting) {
                l->waiting = false;
                pvd_vlink_rx_resume(l->vl);
        }
        return l->sock != NULL;
}

static void emu_sock_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct emu_link *l = arg;
        if (status < 0) {
                emu_drop(l);
                return;
        }
        if ((events & UV_WRITABLE) && txq_flush(l) < 0) {
                emu_drop(l);
                return;
        }
        if (events & UV_READABLE)
                emu_drain(l);
}

static void emu_xirq_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct emu_link *l = arg;
        uint64_t v;
        if (read(pvd_watch_fd(w), &v, sizeof(v)) < 0 && errno != EAGAIN)
                return;
        /* fds sent before the xIRQ are stashed before the ring messages
         * that claim them are read. */
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

/* ---- the backend's life ----------------------------------------------------------- */

static const struct hv_option emu_options[] = {
        { "platform-dir", "DIR",
          "where the vlink sockets and VM locks go, shared by the pvds of all VMs; else " PV_DEFAULT_PLATFORM_DIR,
          "PVD_PLATFORM_DIR" },
        { NULL, NULL, NULL, NULL },
};

static int emu_init(struct pvd *pvd, const char *const *values)
{
        const char *dir = values[0] ? values[0] : PV_DEFAULT_PLATFORM_DIR;
        if (strlen(dir) >= PVD_DIR_MAX) {
                pv_err("the platform directory path must be shorter than %d bytes (it holds UNIX sockets)",
                       PVD_DIR_MAX);
                return -ENAMETOOLONG;
        }
        struct emu_global *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        snprintf(g->dir, sizeof(g->dir), "%s", dir);
        int e = pvd_mkdir_p(g->dir, 0755);
        if (e < 0) {
                pv_err("cannot create the platform directory %s: %s", g->dir, strerror(-e));
                free(g);
                return e;
        }
        char what[PVD_DIR_MAX + PV_NAME_MAX + 32];
        snprintf(g->lock_path, sizeof(g->lock_path), "%s/%s.lock", g->dir, pvd->vm_name);
        snprintf(what, sizeof(what), "serves %s on platform %s", pvd->vm_name, g->dir);
        g->lock_fd = pvd_lock_take(pvd, g->lock_path, what);
        if (g->lock_fd < 0) {
                e = g->lock_fd;
                free(g);
                return e;
        }
        pvd->hv_priv = g;
        return 0;
}

static void emu_fini(struct pvd *pvd)
{
        struct emu_global *g = pvd->hv_priv;
        if (!g)
                return;
        unlink(g->lock_path);
        close(g->lock_fd);
        free(g);
        pvd->hv_priv = NULL;
}

static int emu_start(struct pvd_vlink *vl)
{
        struct emu_global *g = vl->pvd->hv_priv;
        struct emu_link *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->vl = vl;
        l->xirq_tx = -1;
        l->txq_tail = &l->txq;
        vl->hv = l;
        for (int i = 0; i < PV_REGION_COUNT; i++)
                vl->region[i].fd = -1;
        uv_timer_init(vl->pvd->loop, &l->retry);
        l->retry.data = l;
        int n = snprintf(l->path, sizeof(l->path), "%s/%s.sock", g->dir, vl->cfg->link_name);
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

/* ---- announcements ------------------------------------------------------------------ */

static int announce(struct pvd_vlink *vl, uint32_t type, uint32_t id, const struct hv_mem *m, uint64_t off,
                    uint64_t len)
{
        struct pv_emu_ann a = { .id = id };
        if (m) {
                a.offset = m->offset + off;
                a.size = len;
                a.flags = m->flags & HV_MEM_DMABUF;
        }
        return pvd_vlink_send_hv(vl, type, &a, sizeof(a));
}

/* The object of a NEW: from the stash, or -EAGAIN until its fd comes. */
static int claim(struct emu_link *l, struct id_table *stash, uint32_t id, int *fd)
{
        struct id_ent *e = id_table_find(stash, id);
        if (!e) {
                l->waiting = true;
                l->stalls++;
                return -EAGAIN;
        }
        *fd = e->fd;
        e->fd = -1;
        id_table_del(stash, id);
        return 0;
}

static int emu_ring_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct emu_link *l = emu(vl);
        struct pv_emu_ann a;
        if (len != sizeof(a))
                return -EPROTO;
        memcpy(&a, msg, sizeof(a));
        int fd, rc;
        bool dmabuf;
        switch (type) {
        case PV_EMU_ANN_XIRQ_NEW:
                if (l->peer_xirq.n >= EMU_MAX_PEER_XIRQS) {
                        emu_log_fail(l, "the peer holds more than %d xIRQs", EMU_MAX_PEER_XIRQS);
                        return -EPROTO;
                }
                rc = claim(l, &l->stash_xirq, a.id, &fd);
                if (rc < 0)
                        return rc;
                return id_table_add(&l->peer_xirq, &(struct id_ent){ .id = a.id, .fd = fd }) < 0 ? -EPROTO : 0;
        case PV_EMU_ANN_XIRQ_FREE:
                id_table_del(&l->peer_xirq, a.id);
                return 0;
        case PV_EMU_ANN_GRANT_NEW:
                if (l->peer_grant.n >= EMU_MAX_PEER_GRANTS) {
                        emu_log_fail(l, "the peer holds more than %d grants", EMU_MAX_PEER_GRANTS);
                        return -EPROTO;
                }
                rc = claim(l, &l->stash_grant, a.id, &fd);
                if (rc < 0)
                        return rc;
                /* Checked once here, so that every mapping of it is safe. */
                if (!memory_holds(fd, a.offset, a.size, &dmabuf) || a.size % page_size() ||
                    dmabuf != ((a.flags & HV_MEM_DMABUF) != 0)) {
                        close(fd);
                        emu_log_fail(l, "grant %u is not memory that holds %llu bytes at %llu", a.id,
                                     (unsigned long long)a.size, (unsigned long long)a.offset);
                        return -EPROTO;
                }
                l->grants_rx++;
                return id_table_add(&l->peer_grant, &(struct id_ent){ .id = a.id, .fd = fd, .offset = a.offset,
                                                                        .size = a.size, .flags = a.flags }) < 0
                               ? -EPROTO : 0;
        case PV_EMU_ANN_GRANT_REVOKE:
                id_table_del(&l->peer_grant, a.id);
                return 0;
        }
        return -EPROTO;
}

/* ---- xIRQs --------------------------------------------------------------------------- */

/* One eventfd serves both sides (one kernel): dir does not matter. */
static int emu_xirq_alloc(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd)
{
        struct emu_link *l = emu(vl);
        int efd = eventfd(0, EFD_CLOEXEC);
        if (efd < 0)
                return -errno;
        uint32_t xid = ++l->next_xirq;
        int rc = send_fd(l, PV_EMU_KIND_XIRQ, xid, efd);
        if (rc == 0)
                rc = announce(vl, PV_EMU_ANN_XIRQ_NEW, xid, NULL, 0, 0);
        if (rc == 0)
                rc = id_table_add(&l->own_xirq, &(struct id_ent){ .id = xid, .fd = efd });
        else
                close(efd);
        if (rc < 0)
                return rc;
        *id = xid;
        *fd = efd;
        return 0;
}

static int emu_xirq_get(struct pvd_vlink *vl, uint32_t id, int *fd)
{
        struct id_ent *e = id_table_find(&emu(vl)->peer_xirq, id);
        if (!e)
                return -ENOENT;
        *fd = e->fd;
        return 0;
}

static void emu_xirq_free(struct pvd_vlink *vl, uint32_t id)
{
        struct emu_link *l = emu(vl);
        if (l && id_table_del(&l->own_xirq, id))
                announce(vl, PV_EMU_ANN_XIRQ_FREE, id, NULL, 0, 0);
}

/* ---- memory --------------------------------------------------------------------------- */

static int emu_mem_alloc(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out)
{
        struct emu_global *g = vl->pvd->hv_priv;
        uint64_t len = page_round(size);
        int fd = memfd_object(name, len, NULL);
        if (fd < 0)
                return fd;
        *out = (struct hv_mem){ .fd = fd, .offset = EMU_MEM_OFFSET, .size = len, .id = ++g->next_mem };
        return 0;
}

static int emu_mem_import(struct pvd_vlink *vl, int fd, uint64_t size, struct hv_mem *out)
{
        bool dmabuf;
        if (!memory_holds(fd, 0, page_round(size), &dmabuf)) {
                struct stat st;
                int seals = fcntl(fd, F_GET_SEALS);
                if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && seals >= 0 && !(seals & F_SEAL_SHRINK))
                        return -EPERM;
                return -EINVAL;
        }
        int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dfd < 0)
                return -errno;
        *out = (struct hv_mem){ .fd = dfd, .offset = 0, .size = page_round(size),
                                .flags = HV_MEM_FOREIGN | (dmabuf ? HV_MEM_DMABUF : 0) };
        return 0;
}

static void emu_mem_free(struct pvd_vlink *vl, struct hv_mem *m)
{
        close(m->fd);
        m->fd = -1;
}

static int emu_grant(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref)
{
        struct emu_link *l = emu(vl);
        uint64_t pg = page_size();
        if (off % pg || len % pg)
                return -EINVAL;
        uint32_t id = ++l->next_grant;
        int rc = send_fd(l, PV_EMU_KIND_GRANT, id, m->fd);
        if (rc == 0)
                rc = announce(vl, PV_EMU_ANN_GRANT_NEW, id, m, off, len);
        if (rc == 0)
                rc = id_table_add(&l->own_grant, &(struct id_ent){ .id = id, .fd = -1 });
        if (rc < 0)
                return rc;
        l->grants_tx++;
        *gref = id;
        return 0;
}

static int emu_grant_get(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out)
{
        struct id_ent *e = id_table_find(&emu(vl)->peer_grant, gref);
        if (!e)
                return -ENOENT;
        *out = (struct hv_mem){ .fd = e->fd, .offset = e->offset, .size = e->size, .flags = e->flags, .id = gref };
        return 0;
}

static void emu_grant_revoke(struct pvd_vlink *vl, uint32_t gref)
{
        struct emu_link *l = emu(vl);
        if (l && id_table_del(&l->own_grant, gref))
                announce(vl, PV_EMU_ANN_GRANT_REVOKE, gref, NULL, 0, 0);
}

/* ---- status ------------------------------------------------------------------------------ */

static void emu_status(struct pvd_vlink *vl, void *pkv)
{
        msgpack_packer *pk = pkv;
        struct emu_link *l = emu(vl);
        msgpack_pack_map(pk, 11);
        pvd_pack_kv_str(pk, "hv", "emu");
        pvd_pack_kv_str(pk, "link_socket", l->path);
        pvd_pack_kv_u64(pk, "connects", l->connects);
        pvd_pack_kv_u64(pk, "xirqs_sent", l->xirq_tx_count);
        pvd_pack_kv_u64(pk, "xirqs_received", l->xirq_rx_count);
        pvd_pack_kv_u64(pk, "program_xirqs", l->own_xirq.n + l->peer_xirq.n);
        pvd_pack_kv_u64(pk, "grants_out", l->own_grant.n);
        pvd_pack_kv_u64(pk, "grants_in", l->peer_grant.n);
        pvd_pack_kv_u64(pk, "fds_queued", l->ntxq);
        pvd_pack_kv_u64(pk, "fds_queued_peak", l->txq_peak);
        pvd_pack_kv_u64(pk, "ring_waits", l->stalls);
}

static void emu_global_status(struct pvd *pvd, void *pkv)
{
        msgpack_packer *pk = pkv;
        struct emu_global *g = pvd->hv_priv;
        msgpack_pack_map(pk, 1);
        pvd_pack_kv_str(pk, "platform_dir", g ? g->dir : "");
}

const struct hv_backend hv_emu = {
        .name = "emu",
        .summary = "VMs as pvd processes of one Linux host, meeting in a platform directory",
        .options = emu_options,
        .caps = HV_CAP_ONE_KERNEL | HV_CAP_FOREIGN_MEM | HV_CAP_SLICE,
        .init = emu_init,
        .fini = emu_fini,
        .start = emu_start,
        .stop = emu_stop,
        .reset = emu_reset,
        .notify = emu_notify,
        .ring_msg = emu_ring_msg,
        .xirq_alloc = emu_xirq_alloc,
        .xirq_get = emu_xirq_get,
        .xirq_free = emu_xirq_free,
        .mem_alloc = emu_mem_alloc,
        .mem_import = emu_mem_import,
        .mem_free = emu_mem_free,
        .grant = emu_grant,
        .grant_get = emu_grant_get,
        .grant_revoke = emu_grant_revoke,
        .status = emu_status,
        .global_status = emu_global_status,
};
