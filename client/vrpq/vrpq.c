/* VRPQ in libpvclient: sessions and channels, set up and torn down through
 * pvd. A session is one connection to the device node plus the vlink's
 * VRPQ region mapped; a channel is one more connection (so that pvd can end
 * one channel by hanging it up) plus the channel's two xIRQs. What travels
 * on a channel needs no pvd: see vrpq-req.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vrpq-int.h"

/* Whether fd is an eventfd: one read empties it (an xIRQ of any other
 * kind is read until empty). */
static bool fd_is_eventfd(int fd)
{
        char path[64], link[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n < 0)
                return false;
        link[n] = 0;
        return strcmp(link, "anon_inode:[eventfd]") == 0;
}

#define REPLY_MAX (VRPQ_INFO_MAX + 2048)

/* ---- sessions ---------------------------------------------------------------- */

static void session_put(VrpqSession *s)
{
        pthread_mutex_lock(&s->lock);
        unsigned left = --s->refs;
        pthread_mutex_unlock(&s->lock);
        if (left)
                return;
        if (s->base)
                munmap(s->base, s->lay.size);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

/* Map the region of a SESSION_CREATE/ACCEPT reply and check its header
 * against the layout pvd described. Takes the reply's fds. */
static int session_from_reply(VrpqSession *s, struct pv_msg *r)
{
        uint64_t sid, reqs, pmem, size, off;
        int rc = -EPROTO;
        if (pv_msg_get_u(r, PV_K_ID, &sid) < 0 || pv_msg_get_u(r, PV_K_TOKEN, &s->token) < 0 ||
            pv_msg_get_u(r, VRPQ_K_REQS, &reqs) < 0 || pv_msg_get_u(r, VRPQ_K_PMEM_SIZE, &pmem) < 0 ||
            pv_msg_get_u(r, VRPQ_K_REGION_SIZE, &size) < 0 || pv_msg_get_u(r, PV_K_OFFSET, &off) < 0 ||
            r->nfds != 1 || sid > UINT32_MAX || reqs > UINT32_MAX || !vrpq_is_pow2(reqs) || !pmem ||
            pmem > (1ull << 32))
                goto bad;
        s->sid = (uint32_t)sid;
        uint64_t flags = 0; /* absent: CPU hints stay off */
        pv_msg_get_u(r, PV_K_FLAGS, &flags);
        s->one_kernel = flags & VRPQ_SESS_ONE_KERNEL;
        vrpq_layout_init(&s->lay, (uint32_t)reqs, pmem);
        if (s->lay.size != size)
                goto bad;
        void *p;
        rc = pvc_map(r->fds[0], off, size, &p);
        if (rc < 0) {
                pv_msg_close_fds(r);
                return pvc_error(rc, "%s: cannot map the VRPQ memory (%llu bytes at %llu): %s", s->dev,
                                 (unsigned long long)size, (unsigned long long)off, strerror(-rc));
        }
        s->base = p;
        pv_msg_close_fds(r);
        /* The geometry is pvd's answer, never the memory's header: other
         * programs may write that memory where the hypervisor cannot give
         * each session its own. */
        return 0;
bad:
        pv_msg_close_fds(r);
        return pvc_error(rc, "%s: malformed session answer from pvd", s->dev);
}

static int session_open(const char *dev, int op, const void *info, size_t info_len, void *info_out,
                        size_t *info_size, VrpqSession **out)
{
        if (!out)
                return pvc_error(-EINVAL, "vrpq: session pointer is NULL");
        *out = NULL;
        if (info_len > VRPQ_INFO_MAX)
                return pvc_error(-E2BIG, "vrpq: session info of %zu bytes is longer than VRPQ_INFO_MAX (%u)",
                                 info_len, VRPQ_INFO_MAX);
        if (info_len && !info)
                return pvc_error(-EINVAL, "vrpq: info is NULL but infoSize is %zu", info_len);
        if (info_out && !info_size)
                return pvc_error(-EINVAL, "vrpq: info given without infoSize");
        VrpqSession *s = calloc(1, sizeof(*s));
        if (!s)
                return pvc_error(-ENOMEM, "out of memory");
        pthread_mutex_init(&s->lock, NULL);
        s->refs = 1;
        s->server = op == VRPQ_OP_SESSION_ACCEPT;
        int rc = pvc_conn_open(dev, &s->conn);
        if (rc < 0)
                goto fail;
        snprintf(s->dev, sizeof(s->dev), "%s", s->conn->name);

        uint8_t buf[REPLY_MAX];
        struct pv_msg req, resp;
        pv_msg_init(&req, (uint32_t)op);
        if (info_len)
                pv_msg_set_b(&req, PV_K_INFO, info, (uint32_t)info_len);
        rc = pvc_conn_call(s->conn, &req, &resp, buf, sizeof(buf));
        if (rc < 0) {
                pv_msg_close_fds(&resp);
                goto fail;
        }
        if (s->server && info_size) {
                const void *p = NULL;
                uint32_t n = 0;
                if (pv_msg_has(&resp, PV_K_INFO))
                        pv_msg_get_b(&resp, PV_K_INFO, &p, &n);
                if (info_out && n)
                        memcpy(info_out, p, n < *info_size ? n : *info_size);
                *info_size = n;
        }
        rc = session_from_reply(s, &resp);
        if (rc < 0)
                goto fail;
        *out = s;
        return 0;
fail:
        pvc_conn_close(s->conn);
        s->conn = NULL;
        session_put(s);
        return rc;
}

int vrpqSessionCreate(const char *dev, const void *info, size_t infoSize, VrpqSession **session)
{
        return session_open(dev, VRPQ_OP_SESSION_CREATE, info, infoSize, NULL, NULL, session);
}

int vrpqSessionAccept(const char *dev, void *info, size_t *infoSize, VrpqSession **session)
{
        return session_open(dev, VRPQ_OP_SESSION_ACCEPT, NULL, 0, info, infoSize, session);
}

int vrpqSessionDestroy(VrpqSession *session)
{
        if (!session)
                return pvc_error(-EINVAL, "vrpq: session is NULL");
        /* pvd sees the connection close: the session and its channels end
         * on both sides (here at once). The mapping stays until the last
         * channel goes. */
        atomic_store(&session->destroyed, true);
        pvc_conn_close(session->conn);
        session->conn = NULL;
        session_put(session);
        return 0;
}

int vrpqShmMap(VrpqSession *session, void **shmBase)
{
        if (!session || !shmBase)
                return pvc_error(-EINVAL, "vrpq: vrpqShmMap needs a session and a pointer");
        *shmBase = session->base + session->lay.pmem_off;
        return 0;
}

/* ---- channels ------------------------------------------------------------------ */

static void chan_free(VrpqChan *c)
{
        if (c->conn)
                pvc_conn_close(c->conn);
        if (c->kick_fd >= 0)
                close(c->kick_fd);
        if (c->wait_fd >= 0)
                close(c->wait_fd);
        pthread_mutex_destroy(&c->bell_lock);
        pthread_mutex_destroy(&c->fence_lock);
        pthread_cond_destroy(&c->bell_cv);
        free(c->batch);
        free(c->items);
        if (c->session)
                session_put(c->session);
        free(c);
}

/* Wire the channel's queues into the region according to geom. */
static void chan_attach(VrpqChan *c)
{
        VrpqSession *s = c->session;
        const struct vrpq_chan_geom *g = &c->geom;
        uint8_t *pool = s->base + s->lay.pool_off, *pmem = s->base + s->lay.pmem_off;
        struct vrpq_chan_hdr *h = vrpq_chan_hdr_at(s->base, &s->lay, g->hdr_index);
        void *req_ring = pool + (uint64_t)g->req_slot * VRPQ_DESC_SIZE;
        void *cb_ring = pool + (uint64_t)g->cb_slot * VRPQ_DESC_SIZE;
        c->hdr = h;
        if (!c->server) {
                vrpq_txq_init(&c->tx, &h->req_p, &h->req_c, req_ring, g->req_cap, pmem + g->port_off, g->port_size);
                vrpq_rxq_init(&c->rx, &h->cb_p, &h->cb_c, cb_ring, g->cb_cap, pmem + g->cbport_off, g->cbport_size);
                c->my_tx_sleep = &h->clt_tx_sleep;
                c->my_rx_sleep = &h->clt_rx_sleep;
                c->peer_rx_sleep = &h->srv_rx_sleep;
                c->peer_tx_sleep = &h->srv_tx_sleep;
                c->my_cpu = &h->clt_cpu;
                c->peer_cpu = &h->srv_cpu;
                c->peer_kernel = &h->srv_kernel;
                c->my_barrier = &h->clt_barrier;
                c->peer_barrier = &h->srv_barrier;
                shm_store64(&h->clt_kernel, c->kernel);
        } else {
                vrpq_txq_init(&c->tx, &h->cb_p, &h->cb_c, cb_ring, g->cb_cap, pmem + g->cbport_off, g->cbport_size);
                vrpq_rxq_init(&c->rx, &h->req_p, &h->req_c, req_ring, g->req_cap, pmem + g->port_off, g->port_size);
                c->my_tx_sleep = &h->srv_tx_sleep;
                c->my_rx_sleep = &h->srv_rx_sleep;
                c->peer_rx_sleep = &h->clt_rx_sleep;
                c->peer_tx_sleep = &h->clt_tx_sleep;
                c->my_cpu = &h->srv_cpu;
                c->peer_cpu = &h->clt_cpu;
                c->peer_kernel = &h->clt_kernel;
                c->my_barrier = &h->srv_barrier;
                c->peer_barrier = &h->clt_barrier;
                shm_store64(&h->srv_kernel, c->kernel);
        }
}

static int chan_open(VrpqSession *s, int op, const void *info, size_t info_len, void *info_out, size_t *info_size,
                     VrpqChan **out)
{
        if (!out)
                return pvc_error(-EINVAL, "vrpq: channel pointer is NULL");
        *out = NULL;
        if (!s || !s->conn)
                return pvc_error(-EINVAL, "vrpq: the session is NULL or destroyed");
        if (s->server != (op == VRPQ_OP_CHAN_ACCEPT))
                return pvc_error(-EINVAL, "vrpq: %s on a %s session", s->server ? "vrpqChanCreate" : "vrpqChanAccept",
                                 s->server ? "server" : "client");
        if (info_len > VRPQ_INFO_MAX)
                return pvc_error(-E2BIG, "vrpq: channel info of %zu bytes is longer than VRPQ_INFO_MAX (%u)",
                                 info_len, VRPQ_INFO_MAX);
        if (info_len && !info)
                return pvc_error(-EINVAL, "vrpq: info is NULL but infoSize is %zu", info_len);
        if (info_out && !info_size)
                return pvc_error(-EINVAL, "vrpq: info given without infoSize");

        VrpqChan *c = calloc(1, sizeof(*c));
        if (!c)
                return pvc_error(-ENOMEM, "out of memory");
        c->kick_fd = c->wait_fd = -1;
        c->server = s->server;
        c->remote = !s->one_kernel;
        /* On one kernel a side that sleeps rarely calls membarrier(2)
         * before it sleeps, and the other's wake checks skip their fence
         * (pv-atomic.h). */
        c->barrier_ok = pv_fence_register(s->one_kernel);
        pthread_mutex_init(&c->fence_lock, NULL);
        pv_fence_mode_init(&c->fence_mode);
        c->spin_ns = pvc_vrpq_spin_ns(c->remote);
        pvc_spin_learn_init(&c->spin_learn);
        /* Our kernel's token is no proof that the peer shares it (guests
         * may boot one image): hints only where pvd says so. */
        c->kernel = s->one_kernel ? pvc_kernel_token() : 0;
        pthread_mutex_init(&c->bell_lock, NULL);
        pthread_cond_init(&c->bell_cv, NULL);
        pthread_mutex_lock(&s->lock);
        s->refs++;
        pthread_mutex_unlock(&s->lock);
        c->session = s;

        int rc = pvc_conn_open(s->dev, &c->conn);
        if (rc < 0)
                goto fail;
        uint8_t buf[REPLY_MAX];
        struct pv_msg req, resp;
        pv_msg_init(&req, (uint32_t)op);
        pv_msg_set_u(&req, PV_K_ID, s->sid);
        pv_msg_set_u(&req, PV_K_TOKEN, s->token);
        if (info_len)
                pv_msg_set_b(&req, PV_K_INFO, info, (uint32_t)info_len);
        rc = pvc_conn_call(c->conn, &req, &resp, buf, sizeof(buf));
        if (rc < 0) {
                pv_msg_close_fds(&resp);
                goto fail;
        }
        uint64_t cid;
        if (pv_msg_get_u(&resp, PV_K_ID2, &cid) < 0 || cid > UINT32_MAX || vrpq_geom_get(&resp, &c->geom) < 0 ||
            !vrpq_geom_valid(&s->lay, &c->geom) || resp.nfds != 2) {
                pv_msg_close_fds(&resp);
                rc = pvc_error(-EPROTO, "%s: malformed channel answer from pvd", s->dev);
                goto fail;
        }
        c->cid = (uint32_t)cid;
        /* fds[0]: client -> server xIRQ, fds[1]: server -> client. */
        c->kick_fd = resp.fds[c->server ? 1 : 0];
        c->wait_fd = resp.fds[c->server ? 0 : 1];
        resp.fds[0] = resp.fds[1] = -1;
        if (fcntl(c->wait_fd, F_SETFL, fcntl(c->wait_fd, F_GETFL) | O_NONBLOCK) < 0) {
                rc = pvc_error(-errno, "%s: cannot set up the channel's xIRQ: %s", s->dev, strerror(errno));
                goto fail;
        }
        c->wait_eventfd = fd_is_eventfd(c->wait_fd);
        if (c->server && info_size) {
                const void *p = NULL;
                uint32_t n = 0;
                if (pv_msg_has(&resp, PV_K_INFO))
                        pv_msg_get_b(&resp, PV_K_INFO, &p, &n);
                if (info_out && n)
                        memcpy(info_out, p, n < *info_size ? n : *info_size);
                *info_size = n;
        }
        chan_attach(c);
        *out = c;
        return 0;
fail:
        chan_free(c);
        return rc;
}

int vrpqChanCreate(VrpqSession *session, const void *info, size_t infoSize, VrpqChan **chan)
{
        return chan_open(session, VRPQ_OP_CHAN_CREATE, info, infoSize, NULL, NULL, chan);
}

int vrpqChanAccept(VrpqSession *session, void *info, size_t *infoSize, VrpqChan **chan)
{
        return chan_open(session, VRPQ_OP_CHAN_ACCEPT, NULL, 0, info, infoSize, chan);
}

int vrpqChanDestroy(VrpqChan *chan)
{
        if (!chan)
                return pvc_error(-EINVAL, "vrpq: channel is NULL");
        /* Closing the connection tells pvd, which tells the other side. */
        chan_free(chan);
        return 0;
}

int vrpqChanFdGet(VrpqChan *chan, int *fd)
{
        if (!chan || !fd)
                return pvc_error(-EINVAL, "vrpq: vrpqChanFdGet needs a channel and a pointer");
        *fd = chan->wait_fd;
        return 0;
}
