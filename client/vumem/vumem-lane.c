/* libpvclient's side of the VUMEM lanes (proto/vumem-lane.h): the client
 * library posts an ALLOC on its session's lane and polls for the answer
 * (then sleeps on its connection, woken through the pvds), fetching each
 * memory object's fd once; the server library scans its sessions' lanes in
 * vumemReceive, takes a reservation of pvd's for each request it hands the
 * program, and answers on the lane after logging the answer for pvd.
 * Everything the other side wrote is read once and checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pvc-spin.h"
#include "vumem-int.h"

/* ---- the lane --------------------------------------------------------------------- */

/* The session is over. The reason: pvd's last words on the connection
 * (said: this read's; else what an earlier call read, such as the post
 * that found the connection closed), or ours (why), or the usual one.
 * locked: the caller holds the connection's lock. */
static int lane_reset(VumemSession *s, const char *said, const char *why, bool locked)
{
        atomic_store(&s->reset, true);
        struct pv_conn *c = s->conn;
        char text[sizeof(c->last_word)] = "";
        if (!locked)
                pthread_mutex_lock(&c->lock);
        if (said && said[0])
                snprintf(c->last_word, sizeof(c->last_word), "%s", said);
        if (!why)
                snprintf(text, sizeof(text), "%s", c->last_word);
        if (!locked)
                pthread_mutex_unlock(&c->lock);
        if (text[0])
                return pvc_error(-ECONNRESET, "%s", text);
        return pvc_error(-ECONNRESET, "%s: %s", c->name,
                         why ? why : "the VUMEM server program went away; this session is over (mapped buffers "
                                     "stay valid until unmapped)");
}

/* Read what pvd sent while we wait: wake-ups, or the end of the session.
 * 0, or -ECONNRESET. */
static int lane_read_conn(VumemSession *s)
{
        if (pthread_mutex_trylock(&s->conn->lock) != 0) {
                /* A call of another thread reads it (and skips wake-ups). */
                usleep(100);
                return 0;
        }
        int rc = 0;
        for (;;) {
                struct pv_msg m;
                char buf[1024];
                int n = pv_msg_recv(s->conn->fd, &m, buf, sizeof(buf), MSG_DONTWAIT);
                if (n == -EAGAIN)
                        break;
                if (n == -EINTR)
                        continue;
                if (n < 0) {
                        rc = lane_reset(s, NULL, n == -ECONNRESET ? NULL : "bad message from pvd", true);
                        break;
                }
                pv_msg_close_fds(&m);
                if (pv_msg_op(&m) == PV_OP_NONE || (pv_msg_op(&m) == VUMEM_OP_WAKE && pv_msg_diag(&m) < 0)) {
                        char text[256];
                        rc = lane_reset(s, pv_msg_get_str(&m, PV_K_MSG, text, sizeof(text)) == 0 ? text : NULL, NULL,
                                        true);
                        break;
                }
        }
        pthread_mutex_unlock(&s->conn->lock);
        return rc;
}

/* Wait for the lane's answer to seq: poll, then sleep on the connection. */
static int lane_wait(VumemSession *s, uint32_t seq)
{
        struct vumem_lane *lane = s->lane;
        uint64_t t0 = pvc_now_ns(), spin_until = t0 + s->spin_ns;
        for (unsigned iter = 0;; iter++) {
                if (vumem_lane_answered(lane, seq))
                        return 0;
                if (ring_load_relaxed(&lane->dead) || atomic_load(&s->reset)) {
                        /* pvd's last words say why, when it sent them. */
                        int rc = lane_read_conn(s);
                        return rc < 0 ? rc : lane_reset(s, NULL, NULL, false);
                }
                if (iter % 64) {
                        pvc_cpu_relax();
                        continue;
                }
                uint64_t now = pvc_now_ns();
                if (now < spin_until) {
                        uint32_t my_cpu = 0, peer_cpu = 0;
                        if (s->one_kernel) {
                                my_cpu = pvc_cpu_hint();
                                ring_store_relaxed(&lane->clt_cpu, my_cpu);
                                peer_cpu = ring_load_relaxed(&lane->srv_cpu);
                        }
                        pvc_spin_yield_to(now - t0, my_cpu, peer_cpu);
                        continue;
                }
                ring_store_relaxed(&lane->clt_sleep, 1);
                ring_full_fence();
                if (!vumem_lane_answered(lane, seq)) {
                        struct pollfd pf = { .fd = s->conn->fd, .events = POLLIN };
                        int n = poll(&pf, 1, 100);
                        if (n > 0 && (pf.revents & (POLLHUP | POLLERR)) && !(pf.revents & POLLIN)) {
                                ring_store_relaxed(&lane->clt_sleep, 0);
                                return lane_reset(s, NULL, NULL, false);
                        }
                        if (n > 0) {
                                int rc = lane_read_conn(s);
                                if (rc < 0) {
                                        ring_store_relaxed(&lane->clt_sleep, 0);
                                        return rc;
                                }
                        }
                }
                ring_store_relaxed(&lane->clt_sleep, 0);
                t0 = pvc_now_ns();
                spin_until = t0 + s->spin_ns;
        }
}

/* The fd of memory object key, fetched once (under nothing; takes lock). */
static int lane_obj(VumemSession *s, uint64_t key, struct lane_obj *out)
{
        pthread_mutex_lock(&s->lock);
        for (unsigned i = 0; i < s->nobjs; i++)
                if (s->objs[i].key == key) {
                        *out = s->objs[i];
                        pthread_mutex_unlock(&s->lock);
                        return 0;
                }
        pthread_mutex_unlock(&s->lock);
        struct pv_msg req, resp;
        char buf[ANSWER_CAP];
        pv_msg_init(&req, VUMEM_OP_OBJECT);
        pv_msg_set_u(&req, PV_K_VALUE, key);
        int rc = pvc_vumem_call(s, &req, &resp, buf);
        if (rc < 0)
                return rc;
        uint64_t size = 0, off = 0, flags = 0;
        if (resp.nfds != 1 || pv_msg_get_u(&resp, PV_K_SIZE, &size) < 0 || pv_msg_get_u(&resp, PV_K_OFFSET, &off) < 0 ||
            (pv_msg_has(&resp, PV_K_FLAGS) && pv_msg_get_u(&resp, PV_K_FLAGS, &flags) < 0)) {
                pv_msg_close_fds(&resp);
                return pvc_error(-EPROTO, "%s: malformed memory object answer from pvd", s->conn->name);
        }
        struct lane_obj o = { .key = key, .off = off, .size = size, .fd = resp.fds[0],
                              .dmabuf = flags & VUMEM_BUF_DMABUF };
        pthread_mutex_lock(&s->lock);
        if (s->nobjs < OBJ_CACHE) {
                s->objs[s->nobjs++] = o;
        } else {
                /* The oldest goes (its buffers hold their own fds). */
                close(s->objs[s->obj_next].fd);
                s->objs[s->obj_next] = o;
                s->obj_next = (s->obj_next + 1) % OBJ_CACHE;
        }
        pthread_mutex_unlock(&s->lock);
        *out = o;
        return 0;
}

static void lane_note_free(VumemSession *s, uint32_t handle, uint64_t size, bool keep)
{
        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_NOTE);
        pv_msg_set_u(&m, PV_K_ID, handle);
        pv_msg_set_u(&m, PV_K_SIZE, size);
        if (pvc_conn_post(s->conn, &m) == -ECONNRESET)
                atomic_store(&s->reset, true);
        if (keep)
                return;
        pv_msg_init(&m, VUMEM_OP_FREE);
        pv_msg_set_u(&m, PV_K_ID, handle);
        pv_msg_set_u(&m, PV_K_FLAGS, VUMEM_FREE_NOREPLY);
        pvc_conn_post(s->conn, &m);
}

/* An ALLOC on the lane: 1 if it must go through pvd, else 0 or -errno. */
int pvc_vumem_lane_alloc(VumemSession *s, void *alloc, size_t allocSize, VumemBufferHd *out)
{
        if (!s->lane || s->lane_broken || atomic_load(&s->reset) || pthread_mutex_trylock(&s->lane_lock) != 0)
                return 1;
        struct vumem_lane *lane = s->lane;
        uint32_t seq = ++s->lane_seq;
        if (!seq)
                seq = ++s->lane_seq;
        if (vumem_lane_post(lane, seq, alloc, (uint32_t)allocSize)) {
                struct pv_msg m;
                pv_msg_init(&m, VUMEM_OP_KICK);
                if (pvc_conn_post(s->conn, &m) == -ECONNRESET)
                        atomic_store(&s->reset, true);
        }
        int rc = lane_wait(s, seq);
        struct vumem_lane_ans a;
        if (rc == 0)
                vumem_lane_answer_copy(lane, &a);
        pthread_mutex_unlock(&s->lane_lock);
        if (rc < 0)
                return rc;
        if (a.seq != seq || a.status > VUMEM_LANE_SLOW) {
                s->lane_broken = true;
                return pvc_error(-EPROTO, "%s: corrupt answer on the session's lane (request %u, answer %u); "
                                 "the session's allocations go through pvd from now on", s->conn->name, seq, a.seq);
        }
        if (a.status == VUMEM_LANE_SLOW)
                return 1;
        if (a.diag > 0 || a.diag < -4095)
                return pvc_error(-EPROTO, "%s: the server VM answered with a bad diag %d", s->conn->name, a.diag);
        if (a.diag < 0) {
                char text[VUMEM_MSG_TEXT];
                vumem_text_copy(text, sizeof(text), a.msg, sizeof(a.msg));
                return pvc_error(a.diag, "%s: the server program refused the allocation: %s", s->conn->name,
                                 text[0] ? text : strerror(-a.diag));
        }
        if (!a.handle || !a.size || a.alloc_size > VUMEM_ALLOC_MAX || a.size > (1ull << 48))
                return pvc_error(-EPROTO, "%s: malformed lane answer (handle %u, size %llu)", s->conn->name,
                                 a.handle, (unsigned long long)a.size);
        struct lane_obj o = { .fd = -1 };
        rc = lane_obj(s, a.key, &o);
        if (rc == -ENOENT)
                rc = pvc_error(-EPROTO, "%s: the lane answer names memory object %llu, which the server VM does "
                               "not know", s->conn->name, (unsigned long long)a.key);
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        uint64_t map_off = a.offset / pg * pg, pgoff = a.offset - map_off;
        uint64_t map_len = (pgoff + a.size + pg - 1) / pg * pg;
        if (rc == 0 && (map_off > o.size || map_len > o.size - map_off || map_len > SIZE_MAX))
                rc = pvc_error(-EPROTO, "%s: the lane answer names bytes [%llu, +%llu) outside its memory object "
                               "(%llu bytes)", s->conn->name, (unsigned long long)a.offset,
                               (unsigned long long)a.size, (unsigned long long)o.size);
        VumemBuffer *b = rc == 0 ? calloc(1, sizeof(*b)) : NULL;
        if (rc == 0 && !b)
                rc = pvc_error(-ENOMEM, "out of memory");
        if (b && (b->fd = fcntl(o.fd, F_DUPFD_CLOEXEC, 0)) < 0) {
                rc = pvc_error(-errno, "%s: dup: %s", s->conn->name, strerror(errno));
                free(b);
        }
        if (rc < 0) {
                lane_note_free(s, a.handle, a.size, false); /* what pvd made of it goes */
                return rc;
        }
        b->s = s;
        b->handle = a.handle;
        b->id = a.id;
        b->size = a.size;
        b->off = o.off + map_off;
        b->len = map_len;
        b->pgoff = pgoff;
        b->dmabuf = o.dmabuf;
        if (allocSize)
                memcpy(alloc, a.alloc, a.alloc_size < allocSize ? a.alloc_size : allocSize);
        /* pvd hears of the buffer with the session's next lane allocation,
         * or with its FREE when that comes first: a program that allocates
         * and frees in turn sends one message per buffer, not two. */
        pthread_mutex_lock(&s->lock);
        VumemBuffer *due = s->note_due;
        uint32_t due_handle = due ? due->handle : 0;
        uint64_t due_size = due ? due->size : 0;
        s->note_due = b;
        pthread_mutex_unlock(&s->lock);
        if (due)
                lane_note_free(s, due_handle, due_size, true);
        pvc_vumem_buffer_link(s, b);
        *out = b;
        return 0;
}


/* ---- the server library's lanes ---------------------------------------------- */

static void lane_drop(VumemServer *v, unsigned k)
{
        struct srv_lane *l = v->lanes[v->act[k]];
        v->lanes[v->act[k]] = NULL;
        v->act[k] = v->act[--v->nact];
        munmap(l->lane, VUMEM_LANE_SIZE);
        free(l);
}

/* VUMEM_OP_LANE: a session's lane (under lock). */
void vsrv_lane_add(VumemServer *v, struct pv_msg *m)
{
        uint64_t slot, gen, sid, off, master = 0, flags = 0;
        const void *name;
        uint32_t nlen = 0;
        if (!v->shm || m->nfds != 1 || pv_msg_get_u(m, PV_K_ID, &slot) < 0 || slot >= VUMEM_SESSIONS_MAX ||
            pv_msg_get_u(m, PV_K_GEN, &gen) < 0 || gen > 0x3fffffffu || pv_msg_get_u(m, PV_K_TOKEN, &sid) < 0 ||
            pv_msg_get_u(m, PV_K_OFFSET, &off) < 0)
                return;
        pv_msg_get_u(m, PV_K_STATE, &master);
        pv_msg_get_u(m, PV_K_FLAGS, &flags);
        void *p;
        if (pvc_map(m->fds[0], off, VUMEM_LANE_SIZE, &p) < 0)
                return;
        struct srv_lane *l = calloc(1, sizeof(*l));
        if (!l) {
                munmap(p, VUMEM_LANE_SIZE);
                return;
        }
        for (unsigned k = 0; k < v->nact; k++)
                if (v->act[k] == slot) {
                        lane_drop(v, k);
                        break;
                }
        l->lane = p;
        l->slot = (uint32_t)slot;
        l->gen = (uint32_t)gen;
        l->sid = sid;
        l->master = master != 0;
        l->one_kernel = flags & VUMEM_LANE_ONE_KERNEL;
        if (pv_msg_get_b(m, PV_K_NAME, &name, &nlen) == 0)
                vumem_text_copy(l->vm, sizeof(l->vm), name, nlen);
        v->lanes[slot] = l;
        v->act[v->nact++] = (uint16_t)slot;
}

static void lane_answer(VumemServer *v, struct srv_lane *l, const struct vumem_lane_ans *a)
{
        if (vumem_lane_publish(l->lane, a, l->one_kernel ? pvc_cpu_hint() : 0)) {
                struct pv_msg m;
                pv_msg_init(&m, VUMEM_OP_KICK);
                pv_msg_set_u(&m, PV_K_TOKEN, l->sid);
                vsrv_post(v, &m);
        }
}

static void lane_refuse(VumemServer *v, struct srv_lane *l, uint32_t seq, uint32_t status, int diag,
                        const char *text)
{
        struct vumem_lane_ans a;
        memset(&a, 0, sizeof(a));
        a.seq = seq;
        a.status = status;
        a.diag = diag;
        if (text)
                snprintf(a.msg, sizeof(a.msg), "%s", text);
        lane_answer(v, l, &a);
}

/* Take one reservation of pvd's; nudge pvd every VUMEM_NUDGE_EVERY taken
 * (pvd may be slow to run when the programs of both sides keep the CPUs
 * busy). Small nudges, not one at half the ring: what pvd does for each
 * (log the allocations, refill) runs on a CPU one of the polling sides
 * wants, and one refill of 32 held one allocation in 32 back by 40 to 100
 * us, the round trip's p99; refills of 8 hold it back less and less often. */
#define VUMEM_NUDGE_EVERY 8u
static bool resv_take(VumemServer *v, struct vumem_srv_resv *out)
{
        struct vumem_srv_shm *shm = v->shm;
        for (;;) {
                uint32_t cons = ring_load_acquire(&shm->resv_cons);
                uint32_t prod = ring_load_acquire(&shm->resv_prod);
                if (cons == prod || prod - cons > VUMEM_RESV_RING)
                        break;
                const struct vumem_srv_resv *e = &shm->resv[cons % VUMEM_RESV_RING];
                struct vumem_srv_resv r = { .id = atomic_load_explicit(PV_A64(&e->id), memory_order_relaxed),
                                            .handle = ring_load_relaxed(&e->handle) };
                if (!ring_cas(&shm->resv_cons, cons, cons + 1))
                        continue;
                *out = r;
                uint32_t left = prod - cons - 1;
                if (left % VUMEM_NUDGE_EVERY != 0 || left > VUMEM_RESV_RING - VUMEM_NUDGE_EVERY)
                        return true;
                struct pv_msg m;
                pv_msg_init(&m, VUMEM_OP_NUDGE);
                vsrv_post(v, &m);
                return true;
        }
        struct pv_msg m;
        pv_msg_init(&m, VUMEM_OP_NUDGE);
        vsrv_post(v, &m);
        return false;
}

/* A request waiting on a lane, into req (under lock). 1 if one, else 0. */
int vsrv_lane_scan(VumemServer *v, VumemReq *req)
{
        for (unsigned n = 0; n < v->nact; n++) {
                unsigned k = (v->next_scan + n) % v->nact;
                struct srv_lane *l = v->lanes[v->act[k]];
                uint32_t word = ring_load_acquire(&v->shm->slots[l->slot]);
                if (word >> 2 != l->gen || (word & 3) == VUMEM_SLOT_FREE) {
                        lane_drop(v, k); /* the session ended */
                        n--;
                        if (!v->nact)
                                return 0;
                        continue;
                }
                if (l->busy)
                        continue;
                uint32_t seq;
                if (!vumem_lane_request(l->lane, l->seen, &seq))
                        continue;
                l->seen = seq;
                uint32_t asize = ring_load_relaxed(&l->lane->req.alloc_size);
                if (asize > VUMEM_ALLOC_MAX) {
                        lane_refuse(v, l, seq, VUMEM_LANE_DONE, -EPROTO, "a lane request with too many alloc bytes");
                        continue;
                }
                struct vumem_srv_resv r;
                if ((word & 3) != VUMEM_SLOT_ALLOC || !resv_take(v, &r)) {
                        lane_refuse(v, l, seq, VUMEM_LANE_SLOW, 0, NULL);
                        continue;
                }
                struct srv_out *o = calloc(1, sizeof(*o));
                if (!o) {
                        lane_refuse(v, l, seq, VUMEM_LANE_SLOW, 0, NULL);
                        /* the reservation comes back through the log */
                        struct vumem_srv_log e = { .session = l->sid, .id = r.id, .handle = r.handle, .diag = -ENOMEM };
                        vumem_srv_log_put(v->shm, &v->log_prod, &e);
                        continue;
                }
                memset(req, 0, sizeof(*req));
                v->lane_req = (v->lane_req + 1) & ~VUMEM_LANE_REQ_BIT;
                req->header.cmd = VUMEM_CMD_BUFFER_ALLOC;
                req->header.reqId = VUMEM_LANE_REQ_BIT | v->lane_req;
                req->header.sessionId = l->sid;
                req->header.master = l->master;
                memcpy(req->header.clientVm, l->vm, sizeof(req->header.clientVm));
                memcpy(req->bufferAlloc.alloc, l->lane->req.alloc, asize);
                req->bufferAlloc.allocSize = asize;
                *o = (struct srv_out){ .req = req->header.reqId, .cmd = VUMEM_CMD_BUFFER_ALLOC, .lane = true,
                                       .slot = l->slot, .gen = l->gen, .seq = seq, .sid = l->sid, .resv = r,
                                       .next = v->out };
                v->out = o;
                l->busy = true;
                v->next_scan = k + 1;
                v->last_slot = (int)l->slot;
                return 1;
        }
        return 0;
}

/* On the lane that last brought a request: publish our CPU hint, *mine,
 * and return the client's (under lock; 0: unknown). */
uint32_t vsrv_lane_peer_cpu(VumemServer *v, uint32_t *mine)
{
        struct srv_lane *l = v->last_slot >= 0 ? v->lanes[v->last_slot] : NULL;
        if (!l || !l->one_kernel)
                return 0;
        *mine = pvc_cpu_hint();
        ring_store_relaxed(&l->lane->srv_cpu, *mine);
        return ring_load_relaxed(&l->lane->clt_cpu);
}

void vsrv_lanes_sleep(VumemServer *v, uint32_t on)
{
        for (unsigned k = 0; k < v->nact; k++)
                ring_store_relaxed(&v->lanes[v->act[k]]->lane->srv_sleep, on);
}

/* The call waiting ends with diag (the connection failed). */
/* The answer to a lane request: the log entry for pvd first, then the
 * answer on the lane (under lock). */
int vsrv_respond_lane(VumemServer *v, const struct srv_out *o, VumemResp *resp)
{
        struct vumem_lane_ans a;
        memset(&a, 0, sizeof(a));
        a.seq = o->seq;
        a.status = VUMEM_LANE_DONE;
        int rc = 0;
        const void *vaddr = resp->bufferAlloc.vaddr;
        size_t size = resp->bufferAlloc.size;
        struct srv_mem *mem = NULL;
        if (resp->diag > 0 || resp->diag < -4095) {
                a.diag = -EINVAL;
                snprintf(a.msg, sizeof(a.msg), "the server program answered with an invalid diag");
                rc = pvc_error(-EINVAL, "vumemRespond: diag %d is not 0 or a negative errno", resp->diag);
        } else if (resp->diag < 0) {
                a.diag = resp->diag;
        } else if (!size || resp->bufferAlloc.allocSize > VUMEM_ALLOC_MAX) {
                a.diag = -EINVAL;
                snprintf(a.msg, sizeof(a.msg), "the server answered with size %zu and allocSize %u (size must be > "
                         "0, allocSize <= %d)", size, resp->bufferAlloc.allocSize, VUMEM_ALLOC_MAX);
                rc = pvc_error(-EINVAL, "vumemRespond: %s", a.msg);
        } else if (!(mem = vsrv_mem_containing(v, vaddr, size))) {
                a.diag = -EFAULT;
                snprintf(a.msg, sizeof(a.msg), "the server answered with memory VUMEM cannot share: %p (%zu bytes) "
                         "is not inside memory of vumemServerMemAlloc or vumemServerFdRegister (malloc or stack "
                         "memory cannot be shared)", vaddr, size);
                rc = pvc_error(-EFAULT, "vumemRespond: %s", a.msg);
        }
        struct vumem_srv_log e = { .session = o->sid, .id = o->resv.id, .handle = o->resv.handle, .diag = a.diag };
        if (a.diag == 0) {
                e.key = mem->key;
                e.offset = (uint64_t)((const uint8_t *)vaddr - mem->vaddr);
                e.size = size;
                e.vaddr = (uint64_t)(uintptr_t)vaddr;
                a.handle = o->resv.handle;
                a.id = o->resv.id;
                a.key = mem->key;
                a.offset = e.offset;
                a.size = size;
                a.alloc_size = resp->bufferAlloc.allocSize;
                memcpy(a.alloc, resp->bufferAlloc.alloc, a.alloc_size);
        }
        vumem_srv_log_put(v->shm, &v->log_prod, &e);
        struct srv_lane *l = v->lanes[o->slot];
        if (l && l->gen == o->gen) {
                l->busy = false;
                lane_answer(v, l, &a);
        }
        return rc;
}

