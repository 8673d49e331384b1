/* libpvclient, VUMEM server side (<pv/vumem-server.h>): the server
 * program's connection to its pvd, the table of memory it may hand out,
 * and the requests it received and has not answered yet.
 *
 * Requests are pushed by pvd against credit: vumemReceive asks for more
 * (NEXT) before the server program runs out, so a slow server program
 * only makes requests wait in pvd, and a request costs one message. A
 * response is one message with no answer (pvd sends what it could not use
 * back as a FREE), so answering costs one send.
 *
 * Lanes (vumem-proto.h): pvd hands over each session's lane page
 * (VUMEM_OP_LANE); vumemReceive polls the lanes for up to
 * PVCLIENT_VUMEM_SPIN_US before it sleeps on the connection. A lane
 * request becomes an ordinary VumemReq (reqId with VUMEM_LANE_REQ_BIT);
 * vumemRespond writes the log entry for pvd, then the answer on the lane.
 * What the client VM writes on a lane is read once and checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "pv/vumem-server.h"
#include "pvc-spin.h"
#include "vumem-int.h"

/* PVCLIENT_VUMEM_SPIN_US: polling the lanes before sleeping, in the
 * thread's CPU time. Longer than a client's wait: a server that slept
 * costs the next request a wake-up through both pvds, and a client's work
 * between two requests (mapping, a FREE to its pvd) on a busy machine
 * often exceeds 50 us. */
#define LANE_SRV_SPIN_US 200
#define LANE_IDLE_MS 100    /* no lane request for this long: sleep without polling */

static size_t page_size(void)
{
        return (size_t)sysconf(_SC_PAGESIZE);
}

uint32_t vsrv_new_seq(struct pv_conn *c)
{
        pthread_mutex_lock(&c->lock);
        uint32_t seq = ++c->seq;
        if (!seq)
                seq = ++c->seq;
        pthread_mutex_unlock(&c->lock);
        return seq;
}

int vumemServerCreate(const char *dev, VumemServer **server)
{
        pvc_error_clear();
        if (!server)
                return pvc_error(-EINVAL, "vumemServerCreate: server is NULL");
        VumemServer *v = calloc(1, sizeof(*v));
        if (!v)
                return pvc_error(-ENOMEM, "out of memory");
        v->last_slot = -1;
        int rc = pvc_conn_open(dev, &v->conn);
        if (rc < 0) {
                free(v);
                return rc;
        }
        struct pv_msg req, resp;
        pv_msg_init(&req, VUMEM_OP_SERVER_OPEN);
        pv_msg_set_u(&req, PV_K_FLAGS, VUMEM_SERVER_LANES | VUMEM_SERVER_FREES);
        resp.nfds = 0;
        rc = pvc_conn_call(v->conn, &req, &resp, v->buf, sizeof(v->buf));
        uint64_t off;
        void *p;
        if (rc == 0 && resp.nfds == 1 && pv_msg_get_u(&resp, PV_K_OFFSET, &off) == 0 &&
            pvc_map(resp.fds[0], off, VUMEM_SHM_SIZE, &p) == 0) {
                if (ring_load_acquire(&((struct vumem_srv_shm *)p)->magic) == VUMEM_SHM_MAGIC)
                        v->shm = p;
                else
                        munmap(p, VUMEM_SHM_SIZE);
        }
        pv_msg_close_fds(&resp);
        if (rc < 0) {
                pvc_conn_close(v->conn);
                free(v);
                return rc;
        }
        v->spin_ns = pvc_spin_ns("PVCLIENT_VUMEM_SPIN_US", LANE_SRV_SPIN_US);
        pthread_mutex_init(&v->rx, NULL);
        pthread_mutex_init(&v->lock, NULL);
        pthread_mutex_init(&v->call_mu, NULL);
        pthread_cond_init(&v->call_cv, NULL);
        v->backlog_tail = &v->backlog;
        *server = v;
        return 0;
}

static void mem_drop(struct srv_mem *m)
{
        munmap(m->vaddr, m->map_len);
        free(m);
}

int vumemServerDestroy(VumemServer *v)
{
        pvc_error_clear();
        if (!v)
                return pvc_error(-EINVAL, "vumemServerDestroy: server is NULL");
        pvc_conn_close(v->conn);
        for (unsigned i = 0; i < VUMEM_SESSIONS_MAX; i++)
                if (v->lanes[i]) {
                        munmap(v->lanes[i]->lane, VUMEM_LANE_SIZE);
                        free(v->lanes[i]);
                }
        if (v->shm)
                munmap(v->shm, VUMEM_SHM_SIZE);
        while (v->mems) {
                struct srv_mem *m = v->mems;
                v->mems = m->next;
                mem_drop(m);
        }
        while (v->out) {
                struct srv_out *o = v->out;
                v->out = o->next;
                free(o);
        }
        while (v->backlog) {
                struct srv_backlog *b = v->backlog;
                v->backlog = b->next;
                free(b);
        }
        pthread_mutex_destroy(&v->rx);
        pthread_mutex_destroy(&v->lock);
        pthread_mutex_destroy(&v->call_mu);
        pthread_cond_destroy(&v->call_cv);
        free(v);
        return 0;
}

/* ---- requests -------------------------------------------------------------- */

/* Note request id as awaiting vumemRespond (what it matches against). */
static int out_add(VumemServer *v, uint32_t id, uint32_t cmd)
{
        struct srv_out *o = calloc(1, sizeof(*o));
        if (!o)
                return pvc_error(-ENOMEM, "out of memory");
        o->req = id;
        o->cmd = cmd;
        pthread_mutex_lock(&v->lock);
        o->next = v->out;
        v->out = o;
        pthread_mutex_unlock(&v->lock);
        return 0;
}

static void fill_free(VumemReq *req, uint32_t id, uint64_t bid, uint64_t vaddr, uint64_t size)
{
        req->header.cmd = VUMEM_CMD_BUFFER_FREE;
        req->header.reqId = id;
        req->bufferFree.vaddr = (void *)(uintptr_t)vaddr;
        req->bufferFree.size = (size_t)size;
        req->bufferFree.bufferId = bid;
}

static int fill_req(VumemServer *v, struct pv_msg *m, VumemReq *req)
{
        uint64_t id, cmd, sid = 0, master = 0;
        if (pv_msg_get_u(m, PV_K_ID, &id) < 0 || id > UINT32_MAX || pv_msg_get_u(m, PV_K_COUNT, &cmd) < 0 ||
            (cmd != VUMEM_CMD_BUFFER_ALLOC && cmd != VUMEM_CMD_BUFFER_FREE) || m->nfds)
                return pvc_error(-EPROTO, "%s: malformed request from pvd", v->conn->name);
        pv_msg_get_u(m, PV_K_TOKEN, &sid);
        pv_msg_get_u(m, PV_K_STATE, &master);
        memset(req, 0, sizeof(*req));
        req->header.cmd = (nku32_f)cmd;
        req->header.reqId = (nku32_f)id;
        req->header.sessionId = sid;
        req->header.master = master != 0;
        const void *p;
        uint32_t len;
        if (pv_msg_get_b(m, PV_K_NAME, &p, &len) == 0)
                vumem_text_copy(req->header.clientVm, sizeof(req->header.clientVm), p, len);
        if (cmd == VUMEM_CMD_BUFFER_ALLOC) {
                if (pv_msg_get_b(m, PV_K_DATA, &p, &len) < 0 || len > VUMEM_ALLOC_MAX)
                        return pvc_error(-EPROTO, "%s: malformed request from pvd", v->conn->name);
                memcpy(req->bufferAlloc.alloc, p, len);
                req->bufferAlloc.allocSize = len;
        } else {
                uint64_t bid = 0, vaddr = 0, size = 0;
                pv_msg_get_u(m, PV_K_VALUE, &bid);
                pv_msg_get_u(m, PV_K_VALUE2, &vaddr);
                pv_msg_get_u(m, PV_K_SIZE, &size);
                fill_free(req, (uint32_t)id, bid, vaddr, size);
        }
        return out_add(v, (uint32_t)id, (uint32_t)cmd);
}

static int gone(VumemServer *v)
{
        return pvc_error(-ECONNRESET, "%s: pvd closed the connection (pvd stopped)", v->conn->name);
}

#define CREDIT_ASK  32  /* credit asked for when it runs low */

void vsrv_post(VumemServer *v, struct pv_msg *m)
{
        pv_msg_set_u(m, PV_K_SEQ, vsrv_new_seq(v->conn));
        pv_msg_send(v->conn->fd, m); /* a failure shows at the next receive */
}


static void call_fail(VumemServer *v, int diag)
{
        pthread_mutex_lock(&v->lock);
        if (v->call && !v->call->done) {
                v->call->diag = diag;
                v->call->done = true;
                pthread_cond_broadcast(&v->call_cv);
        }
        pthread_mutex_unlock(&v->lock);
}

/* An answer from pvd: hand it to the call that waits for it. */
static void call_answer(VumemServer *v, struct pv_msg *m)
{
        uint64_t seq = 0;
        pv_msg_get_u(m, PV_K_SEQ, &seq);
        pthread_mutex_lock(&v->lock);
        struct srv_call *c = v->call;
        if (c && !c->done && seq == c->seq) {
                c->diag = pv_msg_diag(m);
                pv_msg_get_u(m, PV_K_VALUE, &c->key);
                pv_msg_get_u(m, PV_K_OFFSET, &c->off);
                pv_msg_get_u(m, PV_K_SIZE, &c->size);
                pv_msg_get_u(m, PV_K_FLAGS, &c->flags);
                if (pv_msg_get_str(m, PV_K_MSG, c->msg, sizeof(c->msg)) < 0)
                        c->msg[0] = 0;
                if (m->nfds == 1) {
                        c->fd = m->fds[0];
                        m->fds[0] = -1;
                }
                c->done = true;
                pthread_cond_broadcast(&v->call_cv);
        }
        pthread_mutex_unlock(&v->lock);
        pv_msg_close_fds(m);
}

static void backlog_push(VumemServer *v, const VumemReq *req);

/* VUMEM_OP_FREES: the first FREE into req, the others into the backlog
 * (vumemReceive hands them over first, in order). 1, or -EPROTO. */
static int take_frees(VumemServer *v, struct pv_msg *m, VumemReq *req)
{
        const void *p, *name = NULL;
        uint32_t len, nlen = 0;
        if (m->nfds || pv_msg_get_b(m, PV_K_DATA, &p, &len) < 0 || !len || len % sizeof(struct vumem_free_ent) ||
            len / sizeof(struct vumem_free_ent) > VUMEM_FREES_MAX)
                return pvc_error(-EPROTO, "%s: malformed FREE requests from pvd", v->conn->name);
        pv_msg_get_b(m, PV_K_NAME, &name, &nlen);
        uint32_t n = len / (uint32_t)sizeof(struct vumem_free_ent);
        v->credit = v->credit > n ? v->credit - n : 0;
        for (uint32_t i = 0; i < n; i++) {
                struct vumem_free_ent e;
                memcpy(&e, (const uint8_t *)p + (size_t)i * sizeof(e), sizeof(e));
                VumemReq r;
                memset(&r, 0, sizeof(r));
                if (name)
                        vumem_text_copy(r.header.clientVm, sizeof(r.header.clientVm), name, nlen);
                fill_free(&r, e.id, e.buf_id, e.vaddr, e.size);
                int rc = out_add(v, e.id, VUMEM_CMD_BUFFER_FREE);
                if (rc < 0)
                        return rc;
                if (i == 0)
                        *req = r;
                else
                        backlog_push(v, &r);
        }
        return 1;
}

/* Messages from pvd, without waiting: 1 and req filled for a request, 0
 * when there is nothing more, or an error. Answers to a call go to it. */
static int sock_take(VumemServer *v, VumemReq *req)
{
        for (;;) {
                struct pv_msg m;
                int rc = pv_msg_recv(v->conn->fd, &m, v->buf, sizeof(v->buf), MSG_DONTWAIT);
                if (rc == -EAGAIN)
                        return 0;
                if (rc == -EINTR)
                        continue;
                if (rc < 0)
                        call_fail(v, -ECONNRESET);
                if (rc == -ECONNRESET)
                        return gone(v);
                if (rc < 0)
                        return pvc_error(rc, "%s: bad message from pvd: %s", v->conn->name, strerror(-rc));
                uint32_t op = pv_msg_op(&m);
                if (op == PV_OP_NONE) {
                        char text[256];
                        int diag = pv_msg_diag(&m);
                        pv_msg_close_fds(&m);
                        call_fail(v, -ECONNRESET);
                        if (pv_msg_get_str(&m, PV_K_MSG, text, sizeof(text)) == 0)
                                return pvc_error(diag < 0 ? diag : -ECONNRESET, "%s", text);
                        return gone(v);
                }
                if (op == VUMEM_OP_MEM_ALLOC || op == VUMEM_OP_REGISTER) {
                        call_answer(v, &m);
                        continue;
                }
                if (op == VUMEM_OP_LANE) {
                        pthread_mutex_lock(&v->lock);
                        vsrv_lane_add(v, &m);
                        pthread_mutex_unlock(&v->lock);
                }
                if (op == VUMEM_OP_FREES) {
                        rc = take_frees(v, &m, req);
                        pv_msg_close_fds(&m);
                        return rc;
                }
                if (op != VUMEM_OP_REQUEST) {
                        pv_msg_close_fds(&m); /* a wake-up, or a lane (mapped) */
                        continue;
                }
                if (v->credit)
                        v->credit--;
                rc = fill_req(v, &m, req);
                pv_msg_close_fds(&m);
                return rc < 0 ? rc : 1;
        }
}

/* A request read by a thread waiting for its call's answer: it waits here
 * for vumemReceive. */
static void backlog_push(VumemServer *v, const VumemReq *req)
{
        struct srv_backlog *b = malloc(sizeof(*b));
        if (!b)
                return; /* the client's call fails when its session ends */
        b->req = *req;
        b->next = NULL;
        pthread_mutex_lock(&v->lock);
        *v->backlog_tail = b;
        v->backlog_tail = &b->next;
        pthread_mutex_unlock(&v->lock);
}

static bool backlog_pop(VumemServer *v, VumemReq *req)
{
        pthread_mutex_lock(&v->lock);
        struct srv_backlog *b = v->backlog;
        if (b) {
                v->backlog = b->next;
                if (!v->backlog)
                        v->backlog_tail = &v->backlog;
        }
        pthread_mutex_unlock(&v->lock);
        if (!b)
                return false;
        *req = b->req;
        free(b);
        return true;
}

/* Send req and wait for pvd's answer into *c (c->fd: the caller's to
 * close). Whoever reads the connection meanwhile hands the answer over;
 * if nobody does, this thread reads it, keeping the requests it reads for
 * vumemReceive. Returns the answer's diag. */
static int srv_call(VumemServer *v, struct pv_msg *req, struct srv_call *c)
{
        pthread_mutex_lock(&v->call_mu);
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        c->seq = vsrv_new_seq(v->conn);
        pv_msg_set_u(req, PV_K_SEQ, c->seq);
        pthread_mutex_lock(&v->lock);
        v->call = c;
        pthread_mutex_unlock(&v->lock);
        int rc = pv_msg_send(v->conn->fd, req);
        if (rc < 0)
                call_fail(v, rc == -EPIPE ? -ECONNRESET : rc);
        for (;;) {
                pthread_mutex_lock(&v->lock);
                bool done = c->done;
                if (!done && pthread_mutex_trylock(&v->rx) != 0) {
                        /* A receiver reads the connection: it hands us the answer. */
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_nsec += 10 * 1000000;
                        if (ts.tv_nsec >= 1000000000) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000;
                        }
                        pthread_cond_timedwait(&v->call_cv, &v->lock, &ts);
                        pthread_mutex_unlock(&v->lock);
                        continue;
                }
                pthread_mutex_unlock(&v->lock);
                if (done)
                        break;
                struct pollfd pf = { .fd = v->conn->fd, .events = POLLIN };
                if (poll(&pf, 1, 100) > 0) {
                        VumemReq r;
                        int t;
                        while ((t = sock_take(v, &r)) > 0)
                                backlog_push(v, &r);
                }
                pthread_mutex_unlock(&v->rx);
        }
        pthread_mutex_lock(&v->lock);
        v->call = NULL;
        pthread_mutex_unlock(&v->lock);
        pthread_mutex_unlock(&v->call_mu);
        return c->diag;
}

static int receive_locked(VumemServer *v, VumemReq *req, int timeout_ms)
{
        if (backlog_pop(v, req))
                return 0;
        if (v->credit < CREDIT_ASK / 2) {
                struct pv_msg m;
                pv_msg_init(&m, VUMEM_OP_NEXT);
                pv_msg_set_u(&m, PV_K_SEQ, vsrv_new_seq(v->conn));
                pv_msg_set_u(&m, PV_K_COUNT, CREDIT_ASK - v->credit);
                int rc = pv_msg_send(v->conn->fd, &m);
                if (rc == -EPIPE || rc == -ECONNRESET)
                        return gone(v);
                if (rc < 0)
                        return pvc_error(rc, "%s: cannot send to pvd: %s", v->conn->name, strerror(-rc));
                v->credit = CREDIT_ASK;
        }
        uint64_t now = pvc_now_ns();
        uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now + (uint64_t)timeout_ms * 1000000u;
        /* The polling budget is the thread's CPU time (pvc_thread_cpu_ns):
         * a server that shares a CPU with its client yields to it while
         * the client works between two requests, and so stays awake for
         * the next one instead of sleeping (then each request costs a
         * wake-up through both pvds, the round trip's tail). */
        uint64_t spin_until = now + v->spin_ns * PVC_SPIN_WALL_FACTOR;
        uint64_t cpu0 = pvc_thread_cpu_ns();
        /* Poll only while the lanes are in use: a server whose clients go
         * through pvd sleeps on the connection at once. */
        bool busy = now - v->lane_seen_ns < LANE_IDLE_MS * 1000000ull;
        for (unsigned iter = 0;; iter++) {
                if (iter % 64 == 0) {
                        int rc = sock_take(v, req);
                        if (rc != 0)
                                return rc < 0 ? rc : 0;
                }
                bool burst = iter % 64 == 63 || iter == 0;
                uint32_t my_cpu = 0, peer_cpu = 0;
                pthread_mutex_lock(&v->lock);
                int got = v->nact ? vsrv_lane_scan(v, req) : 0;
                bool lanes = v->nact != 0 && busy;
                if (!got && lanes && burst)
                        peer_cpu = vsrv_lane_peer_cpu(v, &my_cpu);
                pthread_mutex_unlock(&v->lock);
                if (got) {
                        v->lane_seen_ns = pvc_now_ns();
                        return 0;
                }
                if (lanes && !burst) {
                        pvc_cpu_relax();
                        continue;
                }
                now = pvc_now_ns();
                uint64_t spun = pvc_thread_cpu_ns() - cpu0;
                if (lanes && spun < v->spin_ns && now < spin_until && now < deadline) {
                        pvc_spin_yield_to(spun, my_cpu, peer_cpu);
                        continue;
                }
                /* Sleep: say so on every lane, then look once more (a
                 * client that posted before seeing it kicks no one). */
                pthread_mutex_lock(&v->lock);
                vsrv_lanes_sleep(v, 1);
                ring_full_fence();
                got = v->nact ? vsrv_lane_scan(v, req) : 0;
                pthread_mutex_unlock(&v->lock);
                if (!got) {
                        int wait = deadline == UINT64_MAX ? -1
                                   : now >= deadline      ? 0
                                                          : (int)((deadline - now + 999999) / 1000000);
                        struct pollfd pf = { .fd = v->conn->fd, .events = POLLIN };
                        int n = poll(&pf, 1, wait);
                        int e = errno;
                        pthread_mutex_lock(&v->lock);
                        vsrv_lanes_sleep(v, 0);
                        pthread_mutex_unlock(&v->lock);
                        if (n < 0 && e == EINTR)
                                return pvc_error(-EINTR, "%s: interrupted by a signal", v->conn->name);
                        if (n < 0)
                                return pvc_error(-e, "%s: poll: %s", v->conn->name, strerror(e));
                        if (n == 0)
                                return pvc_error(-ETIMEDOUT, "%s: no request within %d ms", v->conn->name,
                                                 timeout_ms);
                        int rc = sock_take(v, req);
                        if (rc != 0)
                                return rc < 0 ? rc : 0;
                        now = pvc_now_ns();
                        spin_until = now + v->spin_ns * PVC_SPIN_WALL_FACTOR;
                        cpu0 = pvc_thread_cpu_ns();
                        busy = now - v->lane_seen_ns < LANE_IDLE_MS * 1000000ull;
                        iter = 0;
                        continue;
                }
                pthread_mutex_lock(&v->lock);
                vsrv_lanes_sleep(v, 0);
                pthread_mutex_unlock(&v->lock);
                v->lane_seen_ns = pvc_now_ns();
                return 0;
        }
}

int vumemReceiveTimeout(VumemServer *v, VumemReq *req, int timeoutMs)
{
        pvc_error_clear();
        if (!v || !req)
                return pvc_error(-EINVAL, "vumemReceive: NULL server or req");
        pthread_mutex_lock(&v->rx);
        int rc = receive_locked(v, req, timeoutMs < 0 ? -1 : timeoutMs);
        pthread_mutex_unlock(&v->rx);
        return rc;
}

int vumemReceive(VumemServer *v, VumemReq *req)
{
        return vumemReceiveTimeout(v, req, -1);
}

struct srv_mem *vsrv_mem_containing(VumemServer *v, const void *p, size_t size)
{
        uintptr_t a = (uintptr_t)p;
        for (struct srv_mem *m = v->mems; m; m = m->next) {
                uintptr_t b = (uintptr_t)m->vaddr;
                if (a >= b && a - b < m->size && size <= m->size - (a - b))
                        return m;
        }
        return NULL;
}

static int send_respond(VumemServer *v, struct pv_msg *m)
{
        pv_msg_set_u(m, PV_K_SEQ, vsrv_new_seq(v->conn));
        int rc = pv_msg_send(v->conn->fd, m);
        if (rc == -EPIPE || rc == -ECONNRESET)
                return gone(v);
        if (rc < 0)
                return pvc_error(rc, "%s: cannot send to pvd: %s", v->conn->name, strerror(-rc));
        return 0;
}

int vumemRespond(VumemServer *v, VumemResp *resp)
{
        pvc_error_clear();
        if (!v || !resp)
                return pvc_error(-EINVAL, "vumemRespond: NULL server or resp");
        pthread_mutex_lock(&v->lock);
        struct srv_out *o = NULL;
        for (struct srv_out **pp = &v->out; *pp; pp = &(*pp)->next)
                if ((*pp)->req == resp->header.reqId && (*pp)->cmd == resp->header.cmd) {
                        o = *pp;
                        *pp = o->next;
                        break;
                }
        int rc = 0;
        if (!o) {
                rc = pvc_error(-EINVAL, "vumemRespond: no request %u (cmd %u) awaits an answer (copy the request's "
                               "header: resp.header = req.header)", resp->header.reqId, resp->header.cmd);
                goto out;
        }
        uint32_t cmd = o->cmd;
        if (o->lane) {
                rc = vsrv_respond_lane(v, o, resp);
                free(o);
                goto out;
        }
        free(o);
        if (cmd == VUMEM_CMD_BUFFER_FREE)
                goto out; /* nobody waits for it */

        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_RESPOND);
        pv_msg_set_u(&m, PV_K_ID, resp->header.reqId);
        if (resp->diag > 0 || resp->diag < -4095) {
                pv_msg_set_i(&m, PV_K_DIAG, -EINVAL);
                pv_msg_set_str(&m, PV_K_MSG, "the server program answered with an invalid diag");
                send_respond(v, &m);
                rc = pvc_error(-EINVAL, "vumemRespond: diag %d is not 0 or a negative errno", resp->diag);
                goto out;
        }
        if (resp->diag < 0) {
                pv_msg_set_i(&m, PV_K_DIAG, resp->diag);
                rc = send_respond(v, &m);
                goto out;
        }
        const void *vaddr = resp->bufferAlloc.vaddr;
        size_t size = resp->bufferAlloc.size;
        struct srv_mem *mem = size && resp->bufferAlloc.allocSize <= VUMEM_ALLOC_MAX
                                      ? vsrv_mem_containing(v, vaddr, size) : NULL;
        if (!mem) {
                char text[VUMEM_MSG_TEXT];
                if (!size || resp->bufferAlloc.allocSize > VUMEM_ALLOC_MAX)
                        snprintf(text, sizeof(text), "the server answered with size %zu and allocSize %u (size must "
                                 "be > 0, allocSize <= %d)", size, resp->bufferAlloc.allocSize, VUMEM_ALLOC_MAX);
                else
                        snprintf(text, sizeof(text), "the server answered with memory VUMEM cannot share: %p (%zu "
                                 "bytes) is not inside memory of vumemServerMemAlloc or vumemServerFdRegister "
                                 "(malloc or stack memory cannot be shared)", vaddr, size);
                pv_msg_set_i(&m, PV_K_DIAG, size ? -EFAULT : -EINVAL);
                pv_msg_set_str(&m, PV_K_MSG, text);
                send_respond(v, &m);
                rc = pvc_error(size ? -EFAULT : -EINVAL, "vumemRespond: %s", text);
                goto out;
        }
        size_t in = (size_t)((const uint8_t *)vaddr - mem->vaddr);
        size_t off = in / page_size() * page_size();
        pv_msg_set_i(&m, PV_K_DIAG, 0);
        pv_msg_set_b(&m, PV_K_DATA, resp->bufferAlloc.alloc, resp->bufferAlloc.allocSize);
        pv_msg_set_u(&m, PV_K_VALUE2, (uint64_t)(uintptr_t)vaddr);
        pv_msg_set_u(&m, PV_K_SIZE, size);
        pv_msg_set_u(&m, PV_K_VALUE, mem->key);
        pv_msg_set_u(&m, PV_K_OFFSET, off);
        pv_msg_set_u(&m, PV_K_OFFSET2, in - off);
        rc = send_respond(v, &m);
out:
        pthread_mutex_unlock(&v->lock);
        return rc;
}

/* ---- shareable memory ------------------------------------------------------------ */

static int mem_add(VumemServer *v, uint32_t key, void *p, size_t size, size_t map_len, void **vaddr)
{
        struct srv_mem *m = calloc(1, sizeof(*m));
        if (!m) {
                munmap(p, map_len);
                struct pv_msg r;
                pv_msg_init(&r, VUMEM_OP_UNREGISTER);
                pv_msg_set_u(&r, PV_K_VALUE, key);
                pthread_mutex_lock(&v->lock);
                vsrv_post(v, &r);
                pthread_mutex_unlock(&v->lock);
                return pvc_error(-ENOMEM, "out of memory");
        }
        m->key = key;
        m->vaddr = p;
        m->size = size;
        m->map_len = map_len;
        pthread_mutex_lock(&v->lock);
        m->next = v->mems;
        v->mems = m;
        pthread_mutex_unlock(&v->lock);
        *vaddr = p;
        return 0;
}

/* A call's failure, as the program's error. */
static int call_error(VumemServer *v, const struct srv_call *c, const char *what)
{
        if (c->fd >= 0)
                close(c->fd);
        if (c->diag == -ECONNRESET && !c->msg[0])
                return gone(v);
        return pvc_error(c->diag, "%s", c->msg[0] ? c->msg : what);
}

int vumemServerMemAlloc(VumemServer *v, size_t size, void **vaddr)
{
        pvc_error_clear();
        if (!v || !vaddr || !size)
                return pvc_error(-EINVAL, "vumemServerMemAlloc: NULL server or vaddr, or size 0");
        size_t pg = page_size();
        if (size > SIZE_MAX - pg)
                return pvc_error(-EINVAL, "vumemServerMemAlloc: size %zu too large", size);
        /* Memory of the hypervisor backend, through pvd: the only memory
         * every backend can share with another VM. */
        struct pv_msg req;
        pv_msg_init(&req, VUMEM_OP_MEM_ALLOC);
        pv_msg_set_u(&req, PV_K_SIZE, size);
        struct srv_call c;
        if (srv_call(v, &req, &c) < 0)
                return call_error(v, &c, "vumemServerMemAlloc: pvd refused");
        void *p;
        int rc = c.fd < 0 || c.size < size || c.size > SIZE_MAX ? -EPROTO : pvc_map(c.fd, c.off, c.size, &p);
        if (c.fd >= 0)
                close(c.fd);
        if (rc < 0) {
                struct pv_msg r;
                pv_msg_init(&r, VUMEM_OP_UNREGISTER);
                pv_msg_set_u(&r, PV_K_VALUE, c.key);
                pthread_mutex_lock(&v->lock);
                vsrv_post(v, &r);
                pthread_mutex_unlock(&v->lock);
                return pvc_error(rc, "vumemServerMemAlloc: cannot map the %llu bytes pvd gave: %s",
                                 (unsigned long long)c.size, strerror(-rc));
        }
        return mem_add(v, (uint32_t)c.key, p, (size_t)c.size, (size_t)c.size, vaddr);
}

int vumemServerFdRegister(VumemServer *v, int fd, size_t size, void **vaddr)
{
        pvc_error_clear();
        if (!v || !vaddr || !size || fd < 0)
                return pvc_error(-EINVAL, "vumemServerFdRegister: NULL server or vaddr, bad fd, or size 0");
        size_t pg = page_size();
        if (size > SIZE_MAX - pg)
                return pvc_error(-EINVAL, "vumemServerFdRegister: size %zu too large", size);
        /* A memfd that may still shrink is sealed here (a client's mapping
         * must never lose its pages); pvd checks the memory again. */
        int seals = fcntl(fd, F_GET_SEALS);
        if (seals >= 0 && !(seals & F_SEAL_SHRINK) && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
                return pvc_error(-EINVAL, "vumemServerFdRegister: the memfd cannot be sealed against shrinking "
                                 "(create it with MFD_ALLOW_SEALING): a client's mapping could lose its pages");
        size_t len = (size + pg - 1) / pg * pg;
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
                return pvc_error(-errno, "vumemServerFdRegister: cannot map %zu bytes of fd %d: %s", len, fd,
                                 strerror(errno));
        struct pv_msg req;
        pv_msg_init(&req, VUMEM_OP_REGISTER);
        pv_msg_set_u(&req, PV_K_SIZE, size);
        pv_msg_add_fd(&req, fd);
        struct srv_call c;
        if (srv_call(v, &req, &c) < 0) {
                munmap(p, len);
                return call_error(v, &c, "vumemServerFdRegister: pvd refused the memory");
        }
        if (c.fd >= 0)
                close(c.fd);
        return mem_add(v, (uint32_t)c.key, p, size, len, vaddr);
}

int vumemServerMemFree(VumemServer *v, void *vaddr)
{
        pvc_error_clear();
        if (!v)
                return pvc_error(-EINVAL, "vumemServerMemFree: NULL server");
        pthread_mutex_lock(&v->lock);
        struct srv_mem *m = NULL;
        for (struct srv_mem **pp = &v->mems; *pp; pp = &(*pp)->next)
                if ((*pp)->vaddr == vaddr) {
                        m = *pp;
                        *pp = m->next;
                        break;
                }
        if (m) {
                struct pv_msg r;
                pv_msg_init(&r, VUMEM_OP_UNREGISTER);
                pv_msg_set_u(&r, PV_K_VALUE, m->key);
                vsrv_post(v, &r);
        }
        pthread_mutex_unlock(&v->lock);
        if (!m)
                return pvc_error(-EINVAL, "vumemServerMemFree: %p is not memory of vumemServerMemAlloc or "
                                 "vumemServerFdRegister", vaddr);
        /* Clients that map buffers of it keep their pages (pvd holds the
         * memory while any buffer in it lives). */
        mem_drop(m);
        return 0;
}
