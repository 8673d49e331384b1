/* libpvclient, VUMEM client side (<pv/vumem.h>): sessions are connections
 * to the client VM's pvd; a buffer handle holds the fd of the memory the
 * server VM granted, and mapping it is a plain mmap of that fd.
 *
 * Allocations go on the session's lane when it has one (vumem-proto.h):
 * the request is written on the lane page, the answer polled for up to
 * PVCLIENT_VUMEM_SPIN_US, then waited for on the connection (the server
 * library kicks through the pvds). The answer is read once and checked
 * against the memory object it names, whose fd is fetched from pvd once per
 * session. An answer "ask pvd" (the lane has no reservation left, a master
 * session exists) sends the request through pvd as without a lane.
 * PVCLIENT_VUMEM_LANE=0 never uses lanes. */
#include <errno.h>
#include <linux/dma-buf.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "pv/vumem.h"
#include "pvc-spin.h"
#include "vumem-int.h"

#define ANSWER_CAP 8192
#define LANE_SPIN_US 50
#define OBJ_CACHE 64        /* memory objects whose fd a session keeps */

int pvc_vumem_call(VumemSession *s, struct pv_msg *req, struct pv_msg *resp, void *buf)
{
        if (atomic_load(&s->reset))
                return pvc_error(-ECONNRESET, "%s: this session is over (its server or the vlink went away); "
                                 "open a new one", s->conn->name);
        resp->nfds = 0;
        int rc = pvc_conn_call(s->conn, req, resp, buf, ANSWER_CAP);
        if (rc < 0)
                pv_msg_close_fds(resp);
        if (rc == -ECONNRESET)
                atomic_store(&s->reset, true);
        return rc;
}

static int session_create(const char *dev, bool master, VumemSession **out)
{
        pvc_error_clear();
        if (!out)
                return pvc_error(-EINVAL, "vumemSessionCreate: session is NULL");
        VumemSession *s = calloc(1, sizeof(*s));
        if (!s)
                return pvc_error(-ENOMEM, "out of memory");
        int rc = pvc_conn_open(dev, &s->conn);
        if (rc < 0) {
                free(s);
                return rc;
        }
        pthread_mutex_init(&s->lock, NULL);
        s->master = master;
        struct pv_msg req, resp;
        char buf[ANSWER_CAP];
        pv_msg_init(&req, VUMEM_OP_SESSION_OPEN);
        pv_msg_set_u(&req, PV_K_FLAGS, master ? VUMEM_SESSION_MASTER : 0);
        resp.nfds = 0;
        rc = pvc_conn_call(s->conn, &req, &resp, buf, sizeof(buf));
        if (rc == 0 && resp.nfds > 1)
                rc = pvc_error(-EPROTO, "%s: unexpected fds in pvd's answer", s->conn->name);
        pthread_mutex_init(&s->lane_lock, NULL);
        const char *use = getenv("PVCLIENT_VUMEM_LANE");
        uint64_t lane_off = 0, flags = 0;
        if (rc == 0 && resp.nfds == 1 && !(use && strcmp(use, "0") == 0) &&
            pv_msg_get_u(&resp, PV_K_OFFSET, &lane_off) == 0) {
                void *p;
                pv_msg_get_u(&resp, PV_K_FLAGS, &flags);
                if (pvc_map(resp.fds[0], lane_off, VUMEM_LANE_SIZE, &p) == 0) {
                        if (ring_load_acquire(&((struct vumem_lane *)p)->magic) == VUMEM_LANE_MAGIC) {
                                s->lane = p;
                                s->one_kernel = flags & VUMEM_LANE_ONE_KERNEL;
                        } else {
                                munmap(p, VUMEM_LANE_SIZE);
                        }
                }
        }
        s->spin_ns = pvc_spin_ns("PVCLIENT_VUMEM_SPIN_US", LANE_SPIN_US);
        if (rc == 0)
                pv_msg_close_fds(&resp);
        if (rc < 0) {
                pv_msg_close_fds(&resp);
                pvc_conn_close(s->conn);
                pthread_mutex_destroy(&s->lock);
                pthread_mutex_destroy(&s->lane_lock);
                free(s);
                return rc;
        }
        *out = s;
        return 0;
}

int vumemSessionCreate(const char *dev, VumemSession **session)
{
        return session_create(dev, false, session);
}

int vumemSessionMasterCreate(const char *dev, VumemSession **session)
{
        return session_create(dev, true, session);
}

static void buffer_drop(VumemBuffer *b)
{
        if (b->base)
                munmap(b->base, b->len);
        if (b->fd >= 0)
                close(b->fd);
        free(b);
}

int vumemSessionDestroy(VumemSession *s)
{
        pvc_error_clear();
        if (!s)
                return pvc_error(-EINVAL, "vumemSessionDestroy: session is NULL");
        /* Closing the connection releases every handle in the server VM. */
        while (s->bufs) {
                VumemBuffer *b = s->bufs;
                s->bufs = b->next;
                buffer_drop(b);
        }
        int rc = atomic_load(&s->reset)
                         ? pvc_error(-ECONNRESET, "%s: the session had ended (its server or the vlink went away)",
                                     s->conn->name)
                         : 0;
        pvc_conn_close(s->conn);
        for (unsigned i = 0; i < s->nobjs; i++)
                close(s->objs[i].fd);
        if (s->lane)
                munmap(s->lane, VUMEM_LANE_SIZE);
        pthread_mutex_destroy(&s->lock);
        pthread_mutex_destroy(&s->lane_lock);
        free(s);
        return rc;
}

void pvc_vumem_buffer_link(VumemSession *s, VumemBuffer *b)
{
        pthread_mutex_lock(&s->lock);
        b->next = s->bufs;
        if (s->bufs)
                s->bufs->pprev = &b->next;
        b->pprev = &s->bufs;
        s->bufs = b;
        pthread_mutex_unlock(&s->lock);
}

/* A buffer answer from pvd (ALLOC or ACCESS) into a new handle. */
static int buffer_from(VumemSession *s, struct pv_msg *resp, VumemBufferHd *out)
{
        uint64_t handle, id, size, off, len, pgoff, flags = 0;
        if (pv_msg_get_u(resp, PV_K_ID, &handle) < 0 || handle > UINT32_MAX ||
            pv_msg_get_u(resp, PV_K_VALUE, &id) < 0 || pv_msg_get_u(resp, PV_K_SIZE, &size) < 0 ||
            pv_msg_get_u(resp, PV_K_OFFSET, &off) < 0 || pv_msg_get_u(resp, PV_K_SIZE2, &len) < 0 ||
            pv_msg_get_u(resp, PV_K_OFFSET2, &pgoff) < 0 ||
            (pv_msg_has(resp, PV_K_FLAGS) && pv_msg_get_u(resp, PV_K_FLAGS, &flags) < 0) || resp->nfds != 1 ||
            !size || pgoff > len || size > len - pgoff || len > SIZE_MAX) {
                pv_msg_close_fds(resp);
                return pvc_error(-EPROTO, "%s: malformed buffer answer from pvd", s->conn->name);
        }
        VumemBuffer *b = calloc(1, sizeof(*b));
        if (!b) {
                pv_msg_close_fds(resp);
                return pvc_error(-ENOMEM, "out of memory");
        }
        b->s = s;
        b->handle = (uint32_t)handle;
        b->id = id;
        b->size = size;
        b->off = off;
        b->len = len;
        b->pgoff = pgoff;
        b->dmabuf = flags & VUMEM_BUF_DMABUF;
        b->fd = resp->fds[0];
        resp->fds[0] = -1;
        pvc_vumem_buffer_link(s, b);
        *out = b;
        return 0;
}

int vumemBufferAlloc(VumemSession *s, void *alloc, size_t allocSize, VumemBufferHd *bufferHd)
{
        pvc_error_clear();
        if (!s || !bufferHd || (allocSize && !alloc))
                return pvc_error(-EINVAL, "vumemBufferAlloc: NULL session, handle or alloc");
        if (allocSize > VUMEM_ALLOC_MAX)
                return pvc_error(-EINVAL, "vumemBufferAlloc: allocSize %zu is over VUMEM_ALLOC_MAX (%d)", allocSize,
                                 VUMEM_ALLOC_MAX);
        int rc = pvc_vumem_lane_alloc(s, alloc, allocSize, bufferHd);
        if (rc <= 0)
                return rc;
        struct pv_msg req, resp;
        char buf[ANSWER_CAP];
        pv_msg_init(&req, VUMEM_OP_ALLOC);
        pv_msg_set_b(&req, PV_K_DATA, allocSize ? alloc : "", (uint32_t)allocSize);
        rc = pvc_vumem_call(s, &req, &resp, buf);
        if (rc < 0)
                return rc;
        const void *data;
        uint32_t dlen;
        if (allocSize && pv_msg_get_b(&resp, PV_K_DATA, &data, &dlen) == 0)
                memcpy(alloc, data, dlen < allocSize ? dlen : allocSize);
        return buffer_from(s, &resp, bufferHd);
}

int vumemBufferAccess(VumemSession *s, nku64_f id, VumemBufferHd *bufferHd)
{
        pvc_error_clear();
        if (!s || !bufferHd)
                return pvc_error(-EINVAL, "vumemBufferAccess: NULL session or handle");
        struct pv_msg req, resp;
        char buf[ANSWER_CAP];
        pv_msg_init(&req, VUMEM_OP_ACCESS);
        pv_msg_set_u(&req, PV_K_VALUE, id);
        int rc = pvc_vumem_call(s, &req, &resp, buf);
        if (rc < 0)
                return rc;
        return buffer_from(s, &resp, bufferHd);
}

int vumemBufferFree(VumemBufferHd b)
{
        pvc_error_clear();
        if (!b)
                return pvc_error(-EINVAL, "vumemBufferFree: NULL handle");
        VumemSession *s = b->s;
        pthread_mutex_lock(&s->lock);
        *b->pprev = b->next;
        if (b->next)
                b->next->pprev = b->pprev;
        bool note = s->note_due == b;
        if (note)
                s->note_due = NULL;
        pthread_mutex_unlock(&s->lock);
        int rc = 0;
        if (!atomic_load(&s->reset)) {
                /* Not waited for: the session's later requests come after it
                 * on the same connection, and a handle of this session
                 * cannot fail in pvd (a broken session is a reset). */
                struct pv_msg req;
                pv_msg_init(&req, VUMEM_OP_FREE);
                pv_msg_set_u(&req, PV_K_ID, b->handle);
                pv_msg_set_u(&req, PV_K_FLAGS, VUMEM_FREE_NOREPLY | (note ? VUMEM_FREE_NOTE : 0));
                if (note)
                        pv_msg_set_u(&req, PV_K_SIZE, b->size);
                rc = pvc_conn_post(s->conn, &req);
                if (rc == -ECONNRESET)
                        atomic_store(&s->reset, true);
        } else {
                rc = pvc_error(-ECONNRESET, "%s: the session had ended (its server or the vlink went away); the "
                               "handle is released", s->conn->name);
        }
        buffer_drop(b);
        return rc;
}

int vumemBufferMap(VumemBufferHd b, void **vaddr)
{
        pvc_error_clear();
        if (!b || !vaddr)
                return pvc_error(-EINVAL, "vumemBufferMap: NULL handle or vaddr");
        pthread_mutex_lock(&b->s->lock);
        if (!b->base) {
                void *p;
                int rc = pvc_map(b->fd, b->off, b->len, &p);
                if (rc < 0) {
                        pthread_mutex_unlock(&b->s->lock);
                        return pvc_error(rc, "vumemBufferMap: cannot map buffer 0x%016llx (%llu bytes): %s",
                                         (unsigned long long)b->id, (unsigned long long)b->len, strerror(-rc));
                }
                b->base = p;
        }
        *vaddr = (uint8_t *)b->base + b->pgoff;
        pthread_mutex_unlock(&b->s->lock);
        return 0;
}

int vumemBufferUnmap(VumemBufferHd b)
{
        pvc_error_clear();
        if (!b)
                return pvc_error(-EINVAL, "vumemBufferUnmap: NULL handle");
        pthread_mutex_lock(&b->s->lock);
        int rc = 0;
        if (!b->base)
                rc = pvc_error(-EINVAL, "vumemBufferUnmap: buffer 0x%016llx is not mapped", (unsigned long long)b->id);
        else if (munmap(b->base, (size_t)b->len) < 0)
                rc = pvc_error(-errno, "vumemBufferUnmap: %s", strerror(errno));
        else
                b->base = NULL;
        pthread_mutex_unlock(&b->s->lock);
        return rc;
}

int vumemBufferSizeGet(VumemBufferHd b, size_t *size)
{
        pvc_error_clear();
        if (!b || !size)
                return pvc_error(-EINVAL, "vumemBufferSizeGet: NULL handle or size");
        *size = (size_t)b->size;
        return 0;
}

int vumemBufferIdGet(VumemBufferHd b, nku64_f *id)
{
        pvc_error_clear();
        if (!b || !id)
                return pvc_error(-EINVAL, "vumemBufferIdGet: NULL handle or id");
        *id = b->id;
        return 0;
}

int vumemBufferFdGet(VumemBufferHd b, int *fd, nku64_f *offset, int *isDmaBuf)
{
        pvc_error_clear();
        if (!b || !fd)
                return pvc_error(-EINVAL, "vumemBufferFdGet: NULL handle or fd");
        *fd = b->fd;
        if (offset)
                *offset = b->off + b->pgoff;
        if (isDmaBuf)
                *isDmaBuf = b->dmabuf;
        return 0;
}

static int dmabuf_sync(VumemBufferHd b, uint64_t flags)
{
        struct dma_buf_sync sync = { .flags = flags };
        int rc;
        do
                rc = ioctl(b->fd, DMA_BUF_IOCTL_SYNC, &sync);
        while (rc < 0 && (errno == EINTR || errno == EAGAIN));
        if (rc < 0)
                return pvc_error(-errno, "vumemBufferCacheOp: DMA_BUF_IOCTL_SYNC on buffer 0x%016llx: %s",
                                 (unsigned long long)b->id, strerror(errno));
        return 0;
}

int vumemBufferCacheOp(VumemBufferHd b, int op, size_t offset, size_t size)
{
        pvc_error_clear();
        if (!b)
                return pvc_error(-EINVAL, "vumemBufferCacheOp: NULL handle");
        if (op != VUMEM_CACHE_CLEAN && op != VUMEM_CACHE_INVALIDATE && op != VUMEM_CACHE_FLUSH)
                return pvc_error(-EINVAL, "vumemBufferCacheOp: unknown operation %d (VUMEM_CACHE_CLEAN, "
                                 "VUMEM_CACHE_INVALIDATE or VUMEM_CACHE_FLUSH)", op);
        if (offset > b->size || size > b->size - offset)
                return pvc_error(-EINVAL, "vumemBufferCacheOp: range [%zu, +%zu) is outside the buffer (%llu bytes)",
                                 offset, size, (unsigned long long)b->size);
        if (b->dmabuf) {
                int rc = 0;
                if (op == VUMEM_CACHE_CLEAN)
                        rc = dmabuf_sync(b, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
                else if (op == VUMEM_CACHE_INVALIDATE)
                        rc = dmabuf_sync(b, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
                else if ((rc = dmabuf_sync(b, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW)) == 0)
                        rc = dmabuf_sync(b, DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
                return rc;
        }
        /* memfd: the host's CPUs are coherent; order our accesses. */
        if (op == VUMEM_CACHE_CLEAN)
                atomic_thread_fence(memory_order_release);
        else if (op == VUMEM_CACHE_INVALIDATE)
                atomic_thread_fence(memory_order_acquire);
        else
                atomic_thread_fence(memory_order_seq_cst);
        return 0;
}
