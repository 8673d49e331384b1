/* libpvclient, VUMEM server side (<pv/vumem-server.h>): the server
 * program's connection to its pvd, the table of memory it may hand out,
 * and the requests it received and has not answered yet.
 *
 * Requests are pushed by pvd against credit: vumemReceive asks for more
 * (NEXT) before the server program runs out, so a slow server program
 * only makes requests wait in pvd, and a request costs one message. A
 * response is one message with no answer (pvd sends what it could not use
 * back as a FREE), so answering costs one send.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "pv/vumem-server.h"
#include "vumem-proto.h"

struct srv_mem {
        uint8_t *vaddr;
        size_t size;                /* bytes that may be handed out */
        size_t map_len;             /* mapped (pages) */
        int fd;
        struct srv_mem *next;
};

struct srv_out {
        uint32_t req;
        uint32_t cmd;
        struct srv_out *next;
};

struct VumemServer {
        struct pv_conn *conn;
        pthread_mutex_t rx;         /* one receiver */
        pthread_mutex_t lock;       /* memory table, unanswered requests, sends */
        uint32_t credit;            /* requests pvd may still push (under rx) */
        struct srv_mem *mems;
        struct srv_out *out;
        char buf[8192];             /* under rx */
};

static size_t page_size(void)
{
        return (size_t)sysconf(_SC_PAGESIZE);
}

static uint32_t new_seq(struct pv_conn *c)
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
        int rc = pvc_conn_open(dev, &v->conn);
        if (rc < 0) {
                free(v);
                return rc;
        }
        struct pv_msg req, resp;
        pv_msg_init(&req, VUMEM_OP_SERVER_OPEN);
        resp.nfds = 0;
        rc = pvc_conn_call(v->conn, &req, &resp, v->buf, sizeof(v->buf));
        pv_msg_close_fds(&resp);
        if (rc < 0) {
                pvc_conn_close(v->conn);
                free(v);
                return rc;
        }
        pthread_mutex_init(&v->rx, NULL);
        pthread_mutex_init(&v->lock, NULL);
        *server = v;
        return 0;
}

static void mem_drop(struct srv_mem *m)
{
        munmap(m->vaddr, m->map_len);
        close(m->fd);
        free(m);
}

int vumemServerDestroy(VumemServer *v)
{
        pvc_error_clear();
        if (!v)
                return pvc_error(-EINVAL, "vumemServerDestroy: server is NULL");
        pvc_conn_close(v->conn);
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
        pthread_mutex_destroy(&v->rx);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return 0;
}

/* ---- requests -------------------------------------------------------------- */

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
                req->bufferFree.vaddr = (void *)(uintptr_t)vaddr;
                req->bufferFree.size = (size_t)size;
                req->bufferFree.bufferId = bid;
        }
        struct srv_out *o = malloc(sizeof(*o));
        if (!o)
                return pvc_error(-ENOMEM, "out of memory");
        o->req = (uint32_t)id;
        o->cmd = (uint32_t)cmd;
        pthread_mutex_lock(&v->lock);
        o->next = v->out;
        v->out = o;
        pthread_mutex_unlock(&v->lock);
        return 0;
}

static int gone(VumemServer *v)
{
        return pvc_error(-ECONNRESET, "%s: pvd closed the connection (pvd stopped)", v->conn->name);
}

#define CREDIT_ASK  32  /* credit asked for when it runs low */

static int receive_locked(VumemServer *v, VumemReq *req, int timeout_ms)
{
        if (v->credit < CREDIT_ASK / 2) {
                struct pv_msg m;
                pv_msg_init(&m, VUMEM_OP_NEXT);
                pv_msg_set_u(&m, PV_K_SEQ, new_seq(v->conn));
                pv_msg_set_u(&m, PV_K_COUNT, CREDIT_ASK - v->credit);
                int rc = pv_msg_send(v->conn->fd, &m);
                if (rc == -EPIPE || rc == -ECONNRESET)
                        return gone(v);
                if (rc < 0)
                        return pvc_error(rc, "%s: cannot send to pvd: %s", v->conn->name, strerror(-rc));
                v->credit = CREDIT_ASK;
        }
        for (;;) {
                struct pollfd pf = { .fd = v->conn->fd, .events = POLLIN };
                int n = poll(&pf, 1, timeout_ms);
                if (n < 0 && errno == EINTR)
                        return pvc_error(-EINTR, "%s: interrupted by a signal", v->conn->name);
                if (n < 0)
                        return pvc_error(-errno, "%s: poll: %s", v->conn->name, strerror(errno));
                if (n == 0)
                        return pvc_error(-ETIMEDOUT, "%s: no request within %d ms", v->conn->name, timeout_ms);
                struct pv_msg m;
                int rc = pv_msg_recv(v->conn->fd, &m, v->buf, sizeof(v->buf), MSG_DONTWAIT);
                if (rc == -EAGAIN || rc == -EINTR)
                        continue;
                if (rc == -ECONNRESET)
                        return gone(v);
                if (rc < 0)
                        return pvc_error(rc, "%s: bad message from pvd: %s", v->conn->name, strerror(-rc));
                if (pv_msg_op(&m) == PV_OP_NONE) {
                        char text[256];
                        int diag = pv_msg_diag(&m);
                        pv_msg_close_fds(&m);
                        if (pv_msg_get_str(&m, PV_K_MSG, text, sizeof(text)) == 0)
                                return pvc_error(diag < 0 ? diag : -ECONNRESET, "%s", text);
                        return gone(v);
                }
                if (pv_msg_op(&m) != VUMEM_OP_REQUEST) {
                        pv_msg_close_fds(&m);
                        continue;
                }
                if (v->credit)
                        v->credit--;
                rc = fill_req(v, &m, req);
                pv_msg_close_fds(&m);
                return rc;
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

static struct srv_mem *mem_containing(VumemServer *v, const void *p, size_t size)
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
        pv_msg_set_u(m, PV_K_SEQ, new_seq(v->conn));
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
                                      ? mem_containing(v, vaddr, size) : NULL;
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
        pv_msg_set_u(&m, PV_K_OFFSET, off);
        pv_msg_set_u(&m, PV_K_OFFSET2, in - off);
        pv_msg_add_fd(&m, mem->fd);
        rc = send_respond(v, &m);
out:
        pthread_mutex_unlock(&v->lock);
        return rc;
}

/* ---- shareable memory ------------------------------------------------------------ */

static int mem_add(VumemServer *v, int fd, size_t size, void **vaddr)
{
        size_t pg = page_size();
        size_t len = (size + pg - 1) / pg * pg;
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
                int e = errno;
                close(fd);
                return pvc_error(-e, "%s: cannot map %zu bytes of shareable memory: %s", v->conn->name, len,
                                 strerror(e));
        }
        struct srv_mem *m = calloc(1, sizeof(*m));
        if (!m) {
                munmap(p, len);
                close(fd);
                return pvc_error(-ENOMEM, "out of memory");
        }
        m->vaddr = p;
        m->size = size;
        m->map_len = len;
        m->fd = fd;
        pthread_mutex_lock(&v->lock);
        m->next = v->mems;
        v->mems = m;
        pthread_mutex_unlock(&v->lock);
        *vaddr = p;
        return 0;
}

int vumemServerMemAlloc(VumemServer *v, size_t size, void **vaddr)
{
        pvc_error_clear();
        if (!v || !vaddr || !size)
                return pvc_error(-EINVAL, "vumemServerMemAlloc: NULL server or vaddr, or size 0");
        size_t pg = page_size();
        if (size > SIZE_MAX - pg)
                return pvc_error(-EINVAL, "vumemServerMemAlloc: size %zu too large", size);
        size_t len = (size + pg - 1) / pg * pg;
        int fd = memfd_create("vumem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return pvc_error(-errno, "vumemServerMemAlloc: memfd_create: %s", strerror(errno));
        if (ftruncate(fd, (off_t)len) < 0 ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = errno;
                close(fd);
                return pvc_error(-e, "vumemServerMemAlloc: %zu bytes: %s", len, strerror(e));
        }
        return mem_add(v, fd, len, vaddr);
}

int vumemServerFdRegister(VumemServer *v, int fd, size_t size, void **vaddr)
{
        pvc_error_clear();
        if (!v || !vaddr || !size || fd < 0)
                return pvc_error(-EINVAL, "vumemServerFdRegister: NULL server or vaddr, bad fd, or size 0");
        uint64_t objsize = 0;
        int kind = vumem_mem_check(fd, &objsize);
        if (kind == -EPERM) {
                if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
                        return pvc_error(-EINVAL, "vumemServerFdRegister: the memfd cannot be sealed against "
                                         "shrinking (create it with MFD_ALLOW_SEALING): a client's mapping could "
                                         "lose its pages");
                kind = vumem_mem_check(fd, &objsize);
        }
        if (kind < 0)
                return pvc_error(-EINVAL, "vumemServerFdRegister: fd %d is not a memfd or a dma-buf", fd);
        if (size > objsize)
                return pvc_error(-EINVAL, "vumemServerFdRegister: size %zu is beyond the memory's %llu bytes", size,
                                 (unsigned long long)objsize);
        int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dfd < 0)
                return pvc_error(-errno, "vumemServerFdRegister: dup: %s", strerror(errno));
        return mem_add(v, dfd, size, vaddr);
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
        pthread_mutex_unlock(&v->lock);
        if (!m)
                return pvc_error(-EINVAL, "vumemServerMemFree: %p is not memory of vumemServerMemAlloc or "
                                 "vumemServerFdRegister", vaddr);
        /* Clients that map buffers of it keep their pages. */
        mem_drop(m);
        return 0;
}
