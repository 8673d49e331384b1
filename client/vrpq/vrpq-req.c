/* VRPQ in libpvclient: requests and callbacks on an established channel.
 * Nothing here talks to pvd: posting is a store into the ring, notifying an
 * xIRQ only when the other side sleeps, and waiting spins briefly before it
 * sleeps on the channel's xIRQ and its connection (hang-up: the channel
 * ended). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pvc-spin.h"
#include "vrpq-int.h"

#define SPIN_US_DEFAULT 50
/* A peer on another kernel (a QEMU guest, or the host beside one) answers
 * a wait that sleeps only through both pvds and an interrupt, which in a
 * guest cost hundreds of microseconds: poll longer, also on one CPU. */
#define REMOTE_SPIN_US_DEFAULT 1000

/* ---- waiting ------------------------------------------------------------------ */

static uint64_t spin_ns_value, remote_spin_ns_value;
static pthread_once_t spin_once = PTHREAD_ONCE_INIT;

static void spin_init(void)
{
        spin_ns_value = pvc_spin_ns("PVCLIENT_VRPQ_SPIN_US", SPIN_US_DEFAULT);
        remote_spin_ns_value = pvc_spin_ns_remote("PVCLIENT_VRPQ_REMOTE_SPIN_US", REMOTE_SPIN_US_DEFAULT);
}

uint64_t pvc_vrpq_spin_ns(bool remote)
{
        pthread_once(&spin_once, spin_init);
        return remote ? remote_spin_ns_value : spin_ns_value;
}

bool pvc_vrpq_closed(VrpqChan *c)
{
        if (c->dead)
                return true;
        if (shm_read32(&c->hdr->state) != VRPQ_CHAN_OPEN ||
            atomic_load_explicit(&c->session->destroyed, memory_order_relaxed))
                c->dead = true;
        return c->dead;
}

/* Empty the xIRQ fd. An eventfd's one read takes its whole count: a
 * second would only return EAGAIN, a system call per wake-up for nothing
 * (with many channels, one per batch of requests). */
static void drain_fd(VrpqChan *c)
{
        uint64_t v;
        while (read(c->wait_fd, &v, sizeof(v)) == sizeof(v) && !c->wait_eventfd)
                ;
}

/* Sleep until the xIRQ, a hang-up, or timeout_ms, through the bell (see
 * vrpq-int.h). g0: the bell's generation read before the caller's last
 * check: a wake-up since then returns at once. */
static int bell_sleep(VrpqChan *c, unsigned g0, int timeout_ms)
{
        pthread_mutex_lock(&c->bell_lock);
        if (atomic_load(&c->bell_gen) != g0) {
                pthread_mutex_unlock(&c->bell_lock);
                return 0;
        }
        if (!c->bell_polling) {
                c->bell_polling = true;
                pthread_mutex_unlock(&c->bell_lock);
                struct pollfd p[2] = {
                        { .fd = c->wait_fd, .events = POLLIN },
                        { .fd = c->conn->fd, .events = POLLIN | POLLRDHUP },
                };
                int n = poll(p, 2, timeout_ms), rc = 0;
                if (n < 0 && errno != EINTR)
                        rc = -errno;
                if (n > 0 && p[1].revents) {
                        /* pvd hung up or half-closed: the channel ended. */
                        c->dead = true;
                        rc = -ECONNRESET;
                }
                if (n > 0 && (p[0].revents & POLLIN))
                        drain_fd(c);
                pthread_mutex_lock(&c->bell_lock);
                c->bell_polling = false;
                atomic_fetch_add(&c->bell_gen, 1);
                pthread_cond_broadcast(&c->bell_cv);
                pthread_mutex_unlock(&c->bell_lock);
                return rc;
        }
        /* Another thread polls: it wakes us on its wake-up. */
        struct timespec ts;
        if (timeout_ms >= 0) {
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += timeout_ms / 1000;
                ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
        }
        while (atomic_load(&c->bell_gen) == g0 && c->bell_polling) {
                if (timeout_ms < 0)
                        pthread_cond_wait(&c->bell_cv, &c->bell_lock);
                else if (pthread_cond_timedwait(&c->bell_cv, &c->bell_lock, &ts) == ETIMEDOUT)
                        break;
        }
        pthread_mutex_unlock(&c->bell_lock);
        return c->dead ? -ECONNRESET : 0;
}

/* The caller looks without sleeping: empty the fd so that it shows only
 * later kicks, as a poller's wake-up would (so the bell's sleepers
 * re-check). */
static void bell_drain(VrpqChan *c)
{
        pthread_mutex_lock(&c->bell_lock);
        if (!c->bell_polling) {
                drain_fd(c);
                atomic_fetch_add(&c->bell_gen, 1);
                pthread_cond_broadcast(&c->bell_cv);
        }
        pthread_mutex_unlock(&c->bell_lock);
}

static void flags_set(uint32_t *flag, uint32_t *flag2, uint32_t v)
{
        ring_store_relaxed(flag, v);
        if (flag2)
                ring_store_relaxed(flag2, v);
}

/* The peer ended the channel: what it put in the ring before is still
 * delivered. The ring was looked at before the end was seen, and the peer
 * may have added its last items in between: look once more. */
static int closed_ready(VrpqChan *c, int (*ready)(VrpqChan *, void *), void *arg)
{
        ring_full_fence();
        int r = ready(c, arg);
        return r ? r : -ECONNRESET;
}

/* What moved: our own counters' copies on our lines, which the threads
 * that move them store atomically (a peer that rewrites them only chooses
 * our mode, and both modes are safe). */
static uint64_t fence_count(VrpqChan *c)
{
        return shm_read64(&c->tx.pl->posted) + shm_read64(&c->rx.cl->received);
}

/* Between raising our sleep flags and looking again (pv-atomic.h,
 * "asymmetric fences"): a full fence, or on one kernel a membarrier(2)
 * when we sleep rarely. A channel's waits may run in two threads (a poster
 * and a receiver): the step is one at a time, so that no wait settles for
 * a fence while another publishes that we call membarrier(2). */
static void sleep_fence(VrpqChan *c)
{
        if (!c->barrier_ok) {
                ring_full_fence();
                return;
        }
        pthread_mutex_lock(&c->fence_lock);
        pv_fence_sleep(true, c->my_barrier, &c->fence_mode, fence_count(c));
        pthread_mutex_unlock(&c->fence_lock);
}

/* A side that moves requests for long without sleeping publishes that
 * its sleeps will call membarrier(2), so that the peer's wakes stop
 * fencing (pv_fence_busy). Looked at every 64th wake, under the lock of
 * the waits' step. */
static inline void fence_busy(VrpqChan *c)
{
        if (!c->barrier_ok)
                return;
        unsigned t = atomic_load_explicit(&c->fence_tick, memory_order_relaxed) + 1;
        atomic_store_explicit(&c->fence_tick, t, memory_order_relaxed);
        if ((t & 63) || ring_load_relaxed(&c->fence_mode.state) == PV_FENCE_WORD_BARRIER)
                return;
        pthread_mutex_lock(&c->fence_lock);
        pv_fence_busy(c->my_barrier, &c->fence_mode, fence_count(c));
        pthread_mutex_unlock(&c->fence_lock);
}

int pvc_vrpq_wait(VrpqChan *c, uint32_t *flag, uint32_t *flag2, int (*ready)(VrpqChan *, void *), void *arg,
              int timeout_ms)
{
        int r;
        /* A peer we just woke runs only once it is scheduled, maybe on
         * this very CPU: give the CPU up between bursts at once, not after
         * PVC_SPIN_YIELD_NS. */
        bool woke = atomic_exchange_explicit(&c->peer_woken, false, memory_order_relaxed);
        uint64_t budget = timeout_ms != 0 && c->spin_ns ? pvc_spin_budget(&c->spin_learn, c->spin_ns) : 0;
        /* A remote peer's answer never comes within the short probe that
         * suits one on our kernel: a probe of a waiter that stopped polling
         * gets the whole budget, or polling would never resume. */
        if (c->remote && budget && !__atomic_load_n(&c->spin_learn.budget, __ATOMIC_RELAXED))
                budget = c->spin_ns;
        /* A peer on this very CPU cannot answer while we poll: sleep at
         * once (the wake-up hands it the CPU). CPU hints compare only
         * within one kernel. */
        uint32_t cpu = c->kernel ? pvc_cpu_hint() : 0;
        bool one_kernel = c->kernel && shm_read64(c->peer_kernel) == c->kernel;
        if (cpu)
                ring_store_relaxed(c->my_cpu, cpu);
        if (budget && one_kernel && cpu && shm_read32(c->peer_cpu) == cpu)
                budget = 0;
        if (budget) {
                uint64_t t0 = pvc_now_ns();
                for (unsigned i = 1;; i++) {
                        if ((r = ready(c, arg))) {
                                if (i > 1)
                                        pvc_spin_learned(&c->spin_learn, c->spin_ns, true, pvc_now_ns() - t0);
                                return r;
                        }
                        if (pvc_vrpq_closed(c))
                                return closed_ready(c, ready, arg);
                        pvc_cpu_relax();
                        if ((i & 63) == 0) {
                                uint64_t spun = pvc_now_ns() - t0;
                                if (spun >= budget) {
                                        pvc_spin_learned(&c->spin_learn, c->spin_ns, false, spun);
                                        break;
                                }
                                if (one_kernel && shm_read32(c->peer_cpu) == cpu)
                                        break;   /* it came to our CPU: let the wake-up hand it over */
                                if (woke)
                                        sched_yield();
                                else
                                        pvc_spin_yield(spun);
                        }
                }
        }
        uint64_t deadline = timeout_ms > 0 ? pvc_now_ns() + (uint64_t)timeout_ms * 1000000 : 0;
        for (;;) {
                if (timeout_ms == 0)
                        bell_drain(c);
                unsigned g0 = atomic_load(&c->bell_gen);
                flags_set(flag, flag2, 1);
                sleep_fence(c);
                if ((r = ready(c, arg))) {
                        flags_set(flag, flag2, 0);
                        return r;
                }
                if (pvc_vrpq_closed(c)) {
                        flags_set(flag, flag2, 0);
                        return closed_ready(c, ready, arg);
                }
                /* Just looking: stay armed, so that the next kick makes the
                 * fd readable for the caller's event loop. */
                if (timeout_ms == 0)
                        return -ETIMEDOUT;
                int left = -1;
                if (timeout_ms > 0) {
                        uint64_t now = pvc_now_ns();
                        if (now >= deadline) {
                                flags_set(flag, flag2, 0);
                                return -ETIMEDOUT;
                        }
                        left = (int)((deadline - now + 999999) / 1000000);
                }
                /* A hang-up only marks the channel dead: what is already
                 * in the ring is still delivered (checked first above). */
                int rc = bell_sleep(c, g0, left);
                if (rc < 0 && rc != -EINTR && rc != -ECONNRESET) {
                        flags_set(flag, flag2, 0);
                        return rc;
                }
        }
}

/* ---- common -------------------------------------------------------------------- */

/* The channel ended: pvd says why on the channel's connection right after
 * it marks the channel closed (the peer program destroyed it or went away,
 * the vlink went down), unless pvd itself died. */
static int chan_dead(VrpqChan *c, const char *what)
{
        struct pollfd pf = { .fd = c->conn->fd, .events = POLLIN | POLLRDHUP };
        poll(&pf, 1, 100);
        return pvc_conn_ended(c->conn, what);
}

static int chan_broken(VrpqChan *c, const char *what)
{
        if (c->rx.broken)
                return pvc_error(-EPROTO, "%s: the other side corrupted the channel: %s", what, c->rx.why);
        return pvc_error(-EPROTO, "%s: the other side corrupted the channel's ring indices", what);
}

/* A live, intact channel: what every call checks first, with loads only
 * (pvd marks the channel's end in its header; destroying the session ends
 * it too). The slow paths say what is wrong. */
static inline bool chan_live(VrpqChan *c)
{
        return !atomic_load_explicit(&c->dead, memory_order_relaxed) && !c->tx.broken && !c->rx.broken &&
               shm_read32(&c->hdr->state) == VRPQ_CHAN_OPEN &&
               !atomic_load_explicit(&c->session->destroyed, memory_order_relaxed);
}

static int chan_check(VrpqChan *c, bool server, const char *what)
{
        if (!c)
                return pvc_error(-EINVAL, "%s: channel is NULL", what);
        if (c->server != server)
                return pvc_error(-EINVAL, "%s: not for a %s channel", what, c->server ? "server" : "client");
        if (c->tx.broken || c->rx.broken)
                return chan_broken(c, what);
        if (pvc_vrpq_closed(c))
                return chan_dead(c, what);
        return 0;
}

/* A producer streams through its ring and its port, and a fresh channel's
 * memory has no pages yet: each first write of a page is a page fault
 * (a page cleared in the kernel), one per hundred or so requests. With many
 * channels the pages of each stay cold for long, and those faults become a
 * large part of a request's cost. Once per notification the producer asks
 * for the next PF_CHUNK ahead of it in one call (MADV_POPULATE_WRITE)
 * instead, until the whole ring and port have been through once. */
#define PF_CHUNK (256u << 10)

static int pf_region(uint32_t *done, uint8_t *base, size_t size, size_t pos)
{
#ifdef MADV_POPULATE_WRITE
        if (*done >= size || pos + PF_CHUNK / 2 < *done)
                return 0;
        size_t from = pos > *done ? pos : *done;
        size_t to = size - from > PF_CHUNK ? from + PF_CHUNK : size;
        uintptr_t pg = 4096, a = ((uintptr_t)base + from) & ~(pg - 1), e = ((uintptr_t)base + to) & ~(pg - 1);
        if (e > a && madvise((void *)a, e - a, MADV_POPULATE_WRITE) < 0)
                return -1;
        *done = (uint32_t)to;
        return 0;
#else
        (void)done, (void)base, (void)size, (void)pos;
        return -1;
#endif
}

static void prefault_ahead(VrpqChan *c)
{
        struct vrpq_txq *q = &c->tx;
        size_t ring_size = (size_t)q->cap * sizeof(*q->ring);
        if (c->pf_off || (c->pf_ring >= ring_size && c->pf_port >= q->port_size))
                return;
        if (ring_size > UINT32_MAX ||
            pf_region(&c->pf_ring, (uint8_t *)q->ring, ring_size, (size_t)(q->prod & q->mask) * sizeof(*q->ring)) < 0 ||
            pf_region(&c->pf_port, q->port, q->port_size, q->port_pos) < 0)
                c->pf_off = true; /* an older kernel: the pages fault in as they are used */
}

/* Wake the peer's receiver after posting. */
static void notify_rx(VrpqChan *c)
{
        prefault_ahead(c);
        fence_busy(c);
        if (vrpq_wake_needed(c->peer_rx_sleep, c->barrier_ok, c->peer_barrier)) {
                atomic_store_explicit(&c->peer_woken, true, memory_order_relaxed);
                uint64_t one = 1;
                if (write(c->kick_fd, &one, sizeof(one)) < 0) {
                        /* cannot fail on an eventfd short of 2^64 kicks */
                }
                vrpq_count(&c->tx.pl->xirq_sent, &c->tx.xirq_sent);
        } else {
                vrpq_count(&c->tx.pl->xirq_suppressed, &c->tx.xirq_suppressed);
        }
}

/* Wake the peer's poster after consuming (room, completions). */
static void notify_tx(VrpqChan *c)
{
        fence_busy(c);
        if (vrpq_wake_needed(c->peer_tx_sleep, c->barrier_ok, c->peer_barrier)) {
                atomic_store_explicit(&c->peer_woken, true, memory_order_relaxed);
                uint64_t one = 1;
                if (write(c->kick_fd, &one, sizeof(one)) < 0) {
                }
                vrpq_count(&c->rx.cl->xirq_sent, &c->rx.xirq_sent);
        } else {
                vrpq_count(&c->rx.cl->xirq_suppressed, &c->rx.xirq_suppressed);
        }
}

/* ---- producing: requests (client) and callbacks (server) ------------------------------- */

struct alloc_arg {
        uint64_t in, out;
        void **ptr;
        int rc;
};

static int ready_alloc(VrpqChan *c, void *arg)
{
        struct alloc_arg *a = arg;
        a->rc = vrpq_txq_alloc(&c->tx, a->in, a->out, a->ptr);
        if (a->rc == -EAGAIN)
                return 0;
        return a->rc < 0 ? a->rc : 1;
}

static int ready_room(VrpqChan *c, void *arg)
{
        return vrpq_txq_ring_room(&c->tx);
}

static int ready_done(VrpqChan *c, void *arg)
{
        return vrpq_txq_done(&c->tx, *(const uint32_t *)arg);
}

/* Waiting as a poster (for room, or for an answer). A client with a
 * callback handler runs the callbacks that come meanwhile: a server may
 * call back before it frees room or answers. */
#define CALLBACKS_PENDING 1000

struct tx_wait {
        int (*ready)(VrpqChan *, void *);
        void *arg;
        bool callbacks;
};

static int ready_tx(VrpqChan *c, void *p)
{
        struct tx_wait *w = p;
        int r = w->ready(c, w->arg);
        if (r || !w->callbacks)
                return r;
        int64_t n = vrpq_rxq_pending(&c->rx);
        return n < 0 ? (int)n : n > 0 ? CALLBACKS_PENDING : 0;
}

/* > 0 once ready, or an error. */
static int wait_tx(VrpqChan *c, int (*ready)(VrpqChan *, void *), void *arg)
{
        struct tx_wait w = { .ready = ready, .arg = arg, .callbacks = !c->server && c->cb_fn };
        for (;;) {
                int r = ready_tx(c, &w);
                if (r == 0)
                        r = pvc_vrpq_wait(c, c->my_tx_sleep, w.callbacks ? c->my_rx_sleep : NULL, ready_tx, &w, -1);
                if (r != CALLBACKS_PENDING)
                        return r;
                r = vrpqCallbackHandle(c, c->cb_fn, c->cb_ctx, 0);
                if (r == -EPROTO || r == -ECONNRESET)
                        return r;
                if (r == -EALREADY)
                        w.callbacks = false; /* another thread handles them */
        }
}

static int wait_error(VrpqChan *c, int rc, const char *what)
{
        if (rc == -ECONNRESET)
                return chan_dead(c, what);
        if (rc == -EPROTO)
                return chan_broken(c, what);
        return pvc_error(rc, "%s: %s", what, strerror(-rc));
}

static int param_alloc(VrpqChan *c, size_t in_size, size_t out_size, void **in, const char *what)
{
        if (!in)
                return pvc_error(-EINVAL, "%s: in is NULL", what);
        struct alloc_arg a = { .in = in_size, .out = out_size, .ptr = in };
        if (in_size > UINT32_MAX || out_size > UINT32_MAX || !vrpq_txq_block_size(&c->tx, in_size, out_size))
                return pvc_error(-E2BIG, "%s: a parameter block of %zu + %zu bytes does not fit this channel's "
                                 "port of %u bytes (its share of vrpq-pmem)", what, in_size, out_size,
                                 c->tx.port_size);
        int rc = ready_alloc(c, &a);
        if (rc == 0) {
                /* Full: the consumer must release first; make sure it runs. */
                notify_rx(c);
                rc = wait_tx(c, ready_alloc, &a);
        }
        if (rc < 0)
                return wait_error(c, rc, what);
        c->last_out = NULL;
        return 0;
}

/* Everything but the common case, out of line: the fast paths stay short
 * (no registers to save for code they seldom run). */
static __attribute__((noinline)) int param_alloc_slow(VrpqChan *chan, size_t inSize, size_t outSize, void **in)
{
        if (!chan)
                return pvc_error(-EINVAL, "vrpqParamAlloc: channel is NULL");
        int rc = chan->tx.broken ? chan_broken(chan, "vrpqParamAlloc") : 0;
        if (!rc && pvc_vrpq_closed(chan))
                rc = chan_dead(chan, "vrpqParamAlloc");
        return rc ? rc : param_alloc(chan, inSize, outSize, in, "vrpqParamAlloc");
}

int vrpqParamAlloc(VrpqChan *chan, size_t inSize, size_t outSize, void **in)
{
        /* The common case: a live channel whose port has room. */
        if (__builtin_expect(chan && in && (inSize | outSize) <= UINT32_MAX && chan_live(chan), 1)) {
                void *p = vrpq_txq_alloc_fast(&chan->tx, inSize, outSize);
                if (__builtin_expect(p != NULL, 1)) {
                        *in = p;
                        chan->last_out = NULL;
                        return 0;
                }
        }
        return param_alloc_slow(chan, inSize, outSize, in);
}

static int post(VrpqChan *c, uint32_t proc, uint32_t flags, void *in, uint32_t *seq, const char *what)
{
        if (VRPQ_GRP(proc) == 0)
                return pvc_error(-EINVAL, "%s: procedure group 0 is reserved (use VRPQ_PROC_ID(grp, func) with grp > 0)",
                                 what);
        int rc = vrpq_txq_ring_room(&c->tx);
        if (rc == 0) {
                notify_rx(c);
                rc = wait_tx(c, ready_room, NULL);
        }
        if (rc < 0)
                return wait_error(c, rc, what);
        uint32_t out_off = c->tx.blk_out_off, out_size = c->tx.blk_out_size;
        if (vrpq_txq_post(&c->tx, proc, flags, in, seq) < 0)
                return pvc_error(-EINVAL, "%s: in is not the block of the last vrpqParamAlloc on this channel "
                                 "(or was posted already)", what);
        c->last_out = in ? vrpq_txq_blk_out(&c->tx, out_off, out_size) : NULL;
        return 0;
}

/* The common case of a post: a live client channel with room in its
 * ring, by the copy of the consumer's index we hold. 0 when posted, 1 for
 * the slow path (which says what is wrong, or waits for room). */
static inline int post_fast(VrpqChan *c, uint32_t proc, void *in)
{
        uint32_t seq;
        if (!c || c->server || VRPQ_GRP(proc) == 0 || c->tx.prod - c->tx.cons >= c->tx.cap || !chan_live(c))
                return 1;
        uint32_t out_off = c->tx.blk_out_off, out_size = c->tx.blk_out_size;
        if (vrpq_txq_post(&c->tx, proc, 0, in, &seq) < 0)
                return 1;
        c->last_out = in ? vrpq_txq_blk_out(&c->tx, out_off, out_size) : NULL;
        return 0;
}

static __attribute__((noinline)) int post_slow(VrpqChan *chan, nku32_f procId, void *in, const char *what)
{
        int rc = chan_check(chan, false, what);
        uint32_t seq;
        return rc ? rc : post(chan, procId, 0, in, &seq, what);
}

int vrpqPost(VrpqChan *chan, nku32_f procId, void *in)
{
        if (__builtin_expect(!post_fast(chan, procId, in), 1))
                return 0;
        return post_slow(chan, procId, in, "vrpqPost");
}

int vrpqNotify(VrpqChan *chan)
{
        int rc = chan_check(chan, false, "vrpqNotify");
        if (rc)
                return rc;
        notify_rx(chan);
        return 0;
}

int vrpqPostAndNotify(VrpqChan *chan, nku32_f procId, void *in)
{
        int rc = __builtin_expect(!post_fast(chan, procId, in), 1) ? 0
                 : post_slow(chan, procId, in, "vrpqPostAndNotify");
        if (!rc)
                notify_rx(chan);
        return rc;
}

static int call(VrpqChan *c, uint32_t proc, void *in, void **out, const char *what)
{
        uint32_t seq;
        int rc = post(c, proc, VRPQ_DF_SYNC, in, &seq, what);
        if (rc)
                return rc;
        notify_rx(c);
        rc = wait_tx(c, ready_done, &seq);
        if (rc < 0)
                return wait_error(c, rc, what);
        if (out)
                *out = c->last_out;
        return 0;
}

int vrpqCallbackHandlerSet(VrpqChan *chan, VrpqCallbackFn fn, void *ctx)
{
        if (!chan || chan->server)
                return pvc_error(-EINVAL, "vrpqCallbackHandlerSet: needs a client channel");
        chan->cb_fn = fn;
        chan->cb_ctx = ctx;
        return 0;
}

int vrpqCall(VrpqChan *chan, nku32_f procId, void *in, void **out)
{
        int rc = chan_check(chan, false, "vrpqCall");
        return rc ? rc : call(chan, procId, in, out, "vrpqCall");
}

int vrpqCallbackPerform(VrpqChan *chan, nku32_f procId, void *in, void **out, int sync)
{
        int rc = chan_check(chan, true, "vrpqCallbackPerform");
        if (rc)
                return rc;
        if (sync)
                return call(chan, procId, in, out, "vrpqCallbackPerform");
        uint32_t seq;
        rc = post(chan, procId, 0, in, &seq, "vrpqCallbackPerform");
        if (!rc)
                notify_rx(chan);
        if (!rc && out)
                *out = NULL;
        return rc;
}

/* ---- consuming: requests (server) ------------------------------------------------------ */

static int ready_rx(VrpqChan *c, void *arg)
{
        int64_t n = vrpq_rxq_pending(&c->rx);
        return n < 0 ? (int)n : n > 0;
}

/* Release the previous batch: its parameter memory, and completion of
 * every request in it. */
static void release_batch(VrpqChan *c)
{
        if (!c->batch_n)
                return;
        const struct vrpq_item *last = &c->items[c->batch_n - 1];
        vrpq_rxq_complete(&c->rx, last->seq + 1);
        vrpq_rxq_release(&c->rx, last->pend);
        c->batch_n = 0;
}

static int batch_reserve(VrpqChan *c, unsigned max)
{
        if (max <= c->batch_cap)
                return 0;
        /* The previous batch is released: its VrpqReq may move. */
        VrpqReq *b = realloc(c->batch, max * sizeof(*b));
        if (!b)
                return -ENOMEM;
        c->batch = b;
        struct vrpq_item *it = realloc(c->items, max * sizeof(*it));
        if (!it)
                return -ENOMEM;
        c->items = it;
        c->batch_cap = max;
        return 0;
}

static int receive(VrpqChan *c, VrpqReq **reqs, unsigned max, int *avail, int timeout_ms)
{
        release_batch(c);
        if (batch_reserve(c, max) < 0) {
                notify_tx(c);
                return pvc_error(-ENOMEM, "vrpqReceive: out of memory for a batch of %u", max);
        }
        for (;;) {
                uint32_t n;
                int rc = vrpq_rxq_fetch(&c->rx, c->items, max, &n);
                if (rc < 0)
                        return chan_broken(c, "vrpqReceive");
                /* Room, released memory and completions may be what the
                 * client waits for: before returning, and before sleeping. */
                notify_tx(c);
                if (n) {
                        for (uint32_t i = 0; i < n; i++) {
                                const struct vrpq_item *it = &c->items[i];
                                VrpqReq *r = &c->batch[i];
                                r->procId = it->proc_id;
                                r->flags = it->flags;
                                r->_seq = it->seq;
                                r->_inSize = it->in_size;
                                r->_outSize = it->out_size;
                                r->_reserved = 0;
                                r->_in = it->in;
                                r->_out = it->out;
                                r->_chan = c;
                                reqs[i] = r;
                        }
                        c->batch_n = n;
                        *avail = (int)n;
                        return 0;
                }
                rc = pvc_vrpq_wait(c, c->my_rx_sleep, NULL, ready_rx, NULL, timeout_ms);
                if (rc == -ETIMEDOUT)
                        return pvc_error(-ETIMEDOUT, "vrpqReceive: no request within %d ms", timeout_ms);
                if (rc < 0)
                        return wait_error(c, rc, "vrpqReceive");
        }
}

int vrpqReceiveTimeout(VrpqChan *chan, VrpqReq **reqs, unsigned int max, int *avail, int timeoutMs)
{
        if (!chan || !reqs || !avail || !max)
                return pvc_error(-EINVAL, "vrpqReceive: needs a channel, a request array, max > 0 and avail");
        if (!chan->server)
                return pvc_error(-EINVAL, "vrpqReceive: not for a client channel");
        *avail = 0;
        if (atomic_exchange(&chan->rx_busy, 1))
                return pvc_error(-EALREADY, "vrpqReceive: another thread is receiving on this channel");
        int rc;
        if (chan->rx.broken || chan->tx.broken)
                rc = chan_broken(chan, "vrpqReceive");
        else
                rc = receive(chan, reqs, max, avail, timeoutMs);
        atomic_store(&chan->rx_busy, 0);
        return rc;
}

int vrpqReceive(VrpqChan *chan, VrpqReq **reqs, unsigned int max, int *avail)
{
        return vrpqReceiveTimeout(chan, reqs, max, avail, -1);
}

static bool req_valid(const VrpqReq *req)
{
        const VrpqChan *c = req ? req->_chan : NULL;
        return c && req >= c->batch && req < c->batch + c->batch_n;
}

void *vrpqParamInGet(const VrpqReq *req, void *shmBase)
{
        return req ? req->_in : NULL;
}

void *vrpqParamOutGet(const VrpqReq *req, void *shmBase)
{
        return req ? req->_out : NULL;
}

size_t vrpqParamInSize(const VrpqReq *req)
{
        return req && req->_in ? req->_inSize : 0;
}

size_t vrpqParamOutSize(const VrpqReq *req)
{
        return req && req->_out ? req->_outSize : 0;
}

int vrpqReply(VrpqChan *chan, VrpqReq *req)
{
        if (!chan || !req || req->_chan != chan || !req_valid(req))
                return pvc_error(-EINVAL, "vrpqReply: not a request of this channel's current batch");
        if (!(req->flags & VRPQ_REQ_SYNC))
                return 0;
        vrpq_rxq_complete(&chan->rx, req->_seq + 1);
        notify_tx(chan);
        return 0;
}

/* ---- consuming: callbacks (client) ------------------------------------------------------- */

int vrpqCallbackHandle(VrpqChan *chan, VrpqCallbackFn fn, void *ctx, int timeoutMs)
{
        if (!chan || !fn)
                return pvc_error(-EINVAL, "vrpqCallbackHandle: needs a channel and a function");
        if (chan->server)
                return pvc_error(-EINVAL, "vrpqCallbackHandle: not for a server channel");
        if (atomic_exchange(&chan->rx_busy, 1))
                return pvc_error(-EALREADY, "vrpqCallbackHandle: another thread handles this channel's callbacks");
        int rc = 0;
        unsigned handled = 0;
        /* One at a time, so that a callback returning an error leaves the
         * next ones in the ring for the next call. */
        for (;;) {
                struct vrpq_item it;
                uint32_t n;
                if (vrpq_rxq_fetch(&chan->rx, &it, 1, &n) < 0) {
                        rc = chan_broken(chan, "vrpqCallbackHandle");
                        break;
                }
                if (!n) {
                        if (handled)
                                break;
                        rc = pvc_vrpq_wait(chan, chan->my_rx_sleep, NULL, ready_rx, NULL, timeoutMs);
                        if (rc == -ETIMEDOUT)
                                break;
                        if (rc < 0) {
                                rc = wait_error(chan, rc, "vrpqCallbackHandle");
                                break;
                        }
                        rc = 0;
                        continue;
                }
                int r = fn(ctx, it.proc_id, it.in, it.out);
                vrpq_rxq_complete(&chan->rx, it.seq + 1);
                vrpq_rxq_release(&chan->rx, it.pend);
                handled++;
                if (r < 0) {
                        rc = r;
                        break;
                }
        }
        if (handled)
                notify_tx(chan);
        atomic_store(&chan->rx_busy, 0);
        return rc;
}
