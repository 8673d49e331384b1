/* VBPIPE direct access, program side: read and write straight between the
 * caller's buffer and the byte rings in vlink memory, while pvd lends them
 * (the rules are in proto/vbpipe-proto.h, "direct access").
 *
 * A read takes the rx ring's lock, first reads what pvd already put in the
 * socket (those bytes come first), then copies from the ring, spinning a
 * little while it waits (PVCLIENT_VBPIPE_SPIN_US, 50 by default; never with
 * O_NONBLOCK or on one CPU), and gives the ring back. When the peer runs on
 * another kernel (VBPIPE_INFO_REMOTE: a QEMU guest, or the host beside one)
 * a wake-up crosses the boundary through both pvds and costs far more
 * than a poll, and the peer runs whatever our CPUs do: a read's wait polls
 * also on one CPU, for a budget learnt from the last waits (at most
 * PVCLIENT_VBPIPE_REMOTE_SPIN_US, VBPD_REMOTE_SPIN_US by default; a poll
 * in vain halves it, so an idle end soon stops polling). Whatever it still
 * needs then comes through the socket, pvd moving it as before: a blocking
 * read never busy-waits for long. A read that comes soon after the last
 * one's return (twice in a row: the program reads in a loop) and gets all
 * it asked for leaves the rest in the ring for the next, and the peer's
 * new bytes too, with no xIRQ (rx.reading); pvd looks out for a program
 * that stops, and moves them into the socket then. A write copies into
 * the tx ring when the socket holds none of the program's bytes that pvd
 * has yet to move, and the rest goes through the socket.
 *
 * Everything read from the rings is checked (DESIGN 5): the peer's index
 * is read once and must be within the ring, or the read or write falls
 * back to the socket, where pvd reports the broken ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "pv-atomic.h"
#include "pv-ring.h"
#include "pvc-spin.h"
#include "vbpipe-direct.h"
#include "vbpipe-proto.h"

#define VBPD_MAX_FD       1024
#define VBPD_SPIN_US      50
#define VBPD_REMOTE_SPIN_US 1000
#define VBPD_ATOMIC_WRITE 4096   /* PIPE_BUF: such writes are never split */
/* A read that comes within this of the last one's return, twice in a row:
 * the program reads in a loop (a copy, a pvrun'd cat), and the next read
 * takes what this one leaves in the ring (rx.reading). */
#define VBPD_TIGHT_NS     20000u
#define VBPD_TIGHT_CALLS  2u

struct vbpd {
        int fd;
        dev_t dev;
        ino_t ino;
        int bell;
        int acc;
        bool any;                  /* flag 'a' */
        bool remote;               /* the peer runs on another kernel (VBPIPE_INFO_REMOTE) */
        struct pvc_spin_learn rx_learn;   /* remote: how long reads' polls paid lately */
        bool rx_over, tx_over;     /* the socket said EOF / EPIPE (or an error): that way is over */
        bool tx_sent;              /* bytes went through the socket since pvd was last seen alive */
        uint64_t rx_end_ns;        /* when the last read returned */
        unsigned rx_tight;         /* reads in a row that came soon after the one before */
        unsigned refs;             /* the table's, plus calls in progress */
        struct vbpipe_direct *page;
        uint8_t *mem;
        size_t mem_len;
        uint32_t size;
        struct pv_ring_hdr *rxh, *txh;
        uint8_t *rxd, *txd;
};

static struct vbpd *table[VBPD_MAX_FD];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint64_t spin_ns, remote_ns;

static void atfork_prepare(void)
{
        pthread_mutex_lock(&table_lock);
}

static void atfork_release(void)
{
        pthread_mutex_unlock(&table_lock);
}

/* Our pid marks the locks we take: asked once per process, not per call
 * (getpid is a system call). */
static uint32_t my_pid;

static void atfork_child(void)
{
        __atomic_store_n(&my_pid, (uint32_t)getpid(), __ATOMIC_RELAXED);
        pthread_mutex_unlock(&table_lock);
}

/* The longest poll for a peer on another kernel. */
static uint64_t remote_spin_ns(void)
{
        return pvc_spin_ns_remote("PVCLIENT_VBPIPE_REMOTE_SPIN_US", VBPD_REMOTE_SPIN_US);
}

static void init_once(void)
{
        spin_ns = pvc_spin_ns("PVCLIENT_VBPIPE_SPIN_US", VBPD_SPIN_US);
        remote_ns = remote_spin_ns();
        my_pid = (uint32_t)getpid();
        pthread_atfork(atfork_prepare, atfork_release, atfork_child);
}

static void vbpd_unref(struct vbpd *v)
{
        pthread_mutex_lock(&table_lock);
        bool last = --v->refs == 0;
        pthread_mutex_unlock(&table_lock);
        if (!last)
                return;
        int e = errno;   /* callers report the errno of their own calls */
        munmap(v->page, VBPIPE_DIRECT_SIZE);
        munmap(v->mem, v->mem_len);
        close(v->bell);
        free(v);
        errno = e;
}

int vbpd_attach(int fd, int page_fd, uint64_t page_off, int mem_fd, uint64_t mem_off, int bell_fd, uint32_t ring_size,
                int acc, bool any, bool remote)
{
        pthread_once(&once, init_once);
        int rc = -EINVAL;
        struct vbpd *v = NULL;
        void *page = MAP_FAILED, *mem = MAP_FAILED;
        size_t mem_len = (size_t)vbpipe_region_bytes(ring_size);
        struct stat st;
        if (fd < 0 || fd >= VBPD_MAX_FD || !pv_ring_size_valid(ring_size) || fstat(fd, &st) < 0)
                goto out;
        /* Sizes from our own answer, checked against the memory: a mapping
         * never reaches past its end. */
        if (pvc_map(page_fd, page_off, VBPIPE_DIRECT_SIZE, &page) < 0)
                page = MAP_FAILED;
        if (pvc_map(mem_fd, mem_off, mem_len, &mem) < 0)
                mem = MAP_FAILED;
        v = calloc(1, sizeof(*v));
        if (page == MAP_FAILED || mem == MAP_FAILED || !v) {
                rc = -ENOMEM;
                goto out;
        }
        struct vbpipe_direct *d = page;
        if (shm_read32(&d->magic) != VBPIPE_DIRECT_MAGIC || shm_read32(&d->version) != VBPIPE_DIRECT_VERSION ||
            shm_read32(&d->ring_size) != ring_size)
                goto out;
        bool server = shm_read32(&d->server) != 0;
        uint8_t *base = mem;
        struct vbpipe_region *h = mem;
        v->fd = fd;
        v->dev = st.st_dev;
        v->ino = st.st_ino;
        v->bell = bell_fd;
        v->acc = acc;
        v->any = any;
        v->remote = remote;
        pvc_spin_learn_init(&v->rx_learn);
        v->refs = 1;
        v->page = d;
        v->mem = mem;
        v->mem_len = mem_len;
        v->size = ring_size;
        v->txh = server ? &h->s2c : &h->c2s;
        v->rxh = server ? &h->c2s : &h->s2c;
        v->txd = base + (server ? vbpipe_s2c_data(ring_size) : vbpipe_c2s_data(ring_size));
        v->rxd = base + (server ? vbpipe_c2s_data(ring_size) : vbpipe_s2c_data(ring_size));
        close(page_fd);
        close(mem_fd);
        vbpd_forget(fd);
        pthread_mutex_lock(&table_lock);
        table[fd] = v;
        pthread_mutex_unlock(&table_lock);
        return 0;
out:
        if (page != MAP_FAILED)
                munmap(page, VBPIPE_DIRECT_SIZE);
        if (mem != MAP_FAILED)
                munmap(mem, mem_len);
        free(v);
        close(page_fd);
        close(mem_fd);
        close(bell_fd);
        return rc;
}

void vbpd_forget(int fd)
{
        if (fd < 0 || fd >= VBPD_MAX_FD)
                return;
        pthread_mutex_lock(&table_lock);
        struct vbpd *v = table[fd];
        table[fd] = NULL;
        pthread_mutex_unlock(&table_lock);
        if (v)
                vbpd_unref(v);
}

/* The end registered for fd, with a reference. No system call: the
 * number was the end's socket when it was registered, and the library
 * forgets it when the program closes it (vbpipeClose; pvrun's close, dup2,
 * dup3). Every call that goes to the socket checks again (still_ours). */
static struct vbpd *lookup(int fd)
{
        if (fd < 0 || fd >= VBPD_MAX_FD || !__atomic_load_n(&table[fd], __ATOMIC_RELAXED))
                return NULL;
        pthread_mutex_lock(&table_lock);
        struct vbpd *v = table[fd];
        if (v)
                v->refs++;
        pthread_mutex_unlock(&table_lock);
        return v;
}

/* fd is still the end's socket (not closed with close(2) and reused):
 * else forget it and drop the caller's reference; the caller then uses
 * read(2) or write(2) on whatever fd is now. */
static bool still_ours(struct vbpd *v, int fd)
{
        struct stat st;
        int e = errno;
        if (fstat(fd, &st) == 0 && st.st_dev == v->dev && st.st_ino == v->ino) {
                errno = e;
                return true;
        }
        vbpd_unref(v);
        vbpd_forget(fd);
        errno = e;
        return false;
}

static void bell(struct vbpd *v)
{
        uint64_t one = 1;
        ssize_t n = write(v->bell, &one, sizeof(one));
        (void)n;   /* a full eventfd already rings */
}

/* Take one ring from pvd: only while it lends it. */
static bool take_once(struct vbpipe_direct_dir *d)
{
        if (!ring_load_acquire(&d->ok) || ring_load_relaxed(&d->lock) != VBPIPE_LOCK_FREE)
                return false;
        if (!ring_cas(&d->lock, VBPIPE_LOCK_FREE, __atomic_load_n(&my_pid, __ATOMIC_RELAXED)))
                return false;
        if (!ring_load_acquire(&d->ok)) {   /* taken back just before: not ours */
                ring_store_release(&d->lock, VBPIPE_LOCK_FREE);
                return false;
        }
        return true;
}

/* pvd holds a lent ring only for a moment at each event of its own (a
 * doorbell, the peer's messages), and another thread of ours only for one
 * call: wait that moment out (TAKE_WAIT_NS at most) rather than go to the
 * socket, where the bytes that follow would have to queue behind these. */
#define TAKE_WAIT_NS 20000u
/* On one CPU the holder runs only when we let it: pvd, caught in its
 * event by the wake-up of ours that it caused, or another thread of ours.
 * An end with a remote peer gives it the CPU up to this many times (on one
 * kernel and one CPU the socket is as quick as waiting). Without that, a
 * guest's program that woke from the socket finds the ring held at its
 * next call, goes to the socket again and wakes pvd again, for ever. */
#define TAKE_YIELDS 4u

static bool take(struct vbpd *v, struct vbpipe_direct_dir *d)
{
        if (take_once(d))
                return true;
        if (!spin_ns && v->remote) {
                for (unsigned i = 0; i < TAKE_YIELDS && ring_load_acquire(&d->ok); i++) {
                        sched_yield();
                        if (ring_load_relaxed(&d->lock) == VBPIPE_LOCK_FREE && take_once(d))
                                return true;
                }
                return false;
        }
        uint64_t t0 = 0;
        for (unsigned i = 1; ring_load_acquire(&d->ok) && spin_ns; i++) {
                pvc_cpu_relax();
                if (ring_load_relaxed(&d->lock) == VBPIPE_LOCK_FREE && take_once(d))
                        return true;
                if ((i & 63) == 0) {
                        uint64_t t = pvc_now_ns();
                        if (!t0)
                                t0 = t;
                        else if (t - t0 >= TAKE_WAIT_NS)
                                break;
                        pvc_spin_yield(t - t0);   /* the holder may be queued behind us */
                }
        }
        return false;
}

/* Give it back; ring the doorbell if pvd waits or has work. */
static void give(struct vbpd *v, struct vbpipe_direct_dir *d, bool work)
{
        ring_store_release(&d->lock, VBPIPE_LOCK_FREE);
        ring_full_fence();
        if (work || ring_load_relaxed(&d->want))
                bell(v);
}

static void add64(uint64_t *p, uint64_t n)
{
        shm_store64(p, shm_read64(p) + n);
}

static void note_peak(uint32_t *p, uint32_t fill)
{
        if (fill > shm_read32(p))
                ring_store_relaxed(p, fill);
}

/* What the socket says once is what it says from then on: after EOF, or
 * EPIPE, or pvd's death (ECONNRESET), that direction goes to the socket
 * only, which keeps saying it; the rings, still mapped, would not. */
static void over(bool *flag)
{
        __atomic_store_n(flag, true, __ATOMIC_RELAXED);
}

static bool is_over(const bool *flag)
{
        return __atomic_load_n(flag, __ATOMIC_RELAXED);
}

/* The socket said EOF or failed: reading is over. When the whole socket
 * is hung up (pvd closed its end: pvd is gone), writing is over too,
 * although the tx ring still has room. */
static void rx_ended(struct vbpd *v, int fd)
{
        int e = errno;
        over(&v->rx_over);
        struct pollfd pf = { .fd = fd, .events = POLLOUT };
        if (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR)))
                over(&v->tx_over);
        errno = e;
}

/* The socket holds none of our bytes (SIOCOUTQ said 0): because pvd read
 * them, or because pvd died and they went with its end? After bytes went
 * through the socket, ask once: a hung-up socket means pvd is gone, and
 * bytes written into the ring now would follow a gap. */
static bool sock_drained(struct vbpd *v, int fd)
{
        if (!__atomic_load_n(&v->tx_sent, __ATOMIC_RELAXED))
                return true;
        struct pollfd pf = { .fd = fd, .events = POLLOUT };
        if (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR))) {
                over(&v->tx_over);
                return false;
        }
        __atomic_store_n(&v->tx_sent, false, __ATOMIC_RELAXED);
        return true;
}

static bool final_error(ssize_t r)
{
        return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static bool nonblocking(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        return fl < 0 || (fl & O_NONBLOCK);
}

/* How long a blocking call of this end polls for the peer before it
 * sleeps (0: not at all): a peer on this kernel gets the fixed
 * PVCLIENT_VBPIPE_SPIN_US (none on one CPU), a remote one the learnt
 * budget. */
static uint64_t poll_budget(struct vbpd *v, struct pvc_spin_learn *l)
{
        if (!v->remote)
                return spin_ns;
        bool off = __atomic_load_n(&l->budget, __ATOMIC_RELAXED) == 0;
        uint64_t b = pvc_spin_budget(l, remote_ns);
        /* Polling stopped paying (a slow stretch of the peer's, a stream
         * whose writer was late): its probes get the whole budget, since
         * an answer across the boundary never comes within the short probe
         * that suits a peer on our kernel, and polling would never resume.
         * One wait in PVC_SPIN_PROBE: an end that waits in vain polls
         * remote_ns / PVC_SPIN_PROBE a wait on average. */
        return off && b ? remote_ns : b;
}

/* A poll ended: the peer answered after spun_ns, or did not. */
static void poll_learned(struct vbpd *v, struct pvc_spin_learn *l, bool answered, uint64_t spun_ns)
{
        if (v->remote)
                pvc_spin_learned(l, remote_ns, answered, spun_ns);
}

/* Between bursts of polling the ring: true once the wait has polled for
 * spin_ns of this thread's CPU time (*c0: where it started; *t0, wall
 * time). Time yielded to the peer, which often shares our CPU, or taken by
 * preemption is not time polled in vain: counting it made a waiter give up
 * while the peer was about to answer, and then its bytes went the slow way
 * through pvd and the socket (the round trip's tail). Still bounded in
 * wall time. */
static bool spin_over(uint64_t *t0, uint64_t *c0)
{
        uint64_t t = pvc_now_ns(), c = pvc_thread_cpu_ns();
        if (!*t0) {
                *t0 = t;
                *c0 = c;
                return false;
        }
        if (c - *c0 >= spin_ns || t - *t0 >= spin_ns * PVC_SPIN_WALL_FACTOR)
                return true;
        pvc_spin_yield(c - *c0);   /* the peer may be queued behind us */
        return false;
}

/* ---- read ------------------------------------------------------------------------ */

static ssize_t ring_read(struct vbpd *v, int fd, uint8_t *buf, size_t n, int *nb, bool loop)
{
        bool spin = false, learnt = false;
        uint64_t budget = 0;
        struct vbpipe_direct_dir *d = &v->page->rx;
        struct pv_ring_hdr *h = v->rxh;
        uint32_t size = v->size, mask = size - 1;
        size_t got = 0;
        bool any = false, kick = false, quiet = false, broken = false;
        /* A remote peer's answer may come before the loop below starts
         * watching (a guest's CPU is slow and the host's program polls):
         * say at once that we watch, while polling pays, so that it needs
         * no xIRQ, which would wake our pvd on our CPU twice. The end of
         * the call says it again in any case, and looks for bytes left. */
        if (v->remote && __atomic_load_n(&v->rx_learn.budget, __ATOMIC_RELAXED))
                ring_store_relaxed(&h->cons_wait, 0);
        /* What pvd moved into the socket comes first. */
        if (ring_load_acquire(&d->sock)) {
                ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                        int e = errno;
                        rx_ended(v, fd);
                        give(v, d, false);
                        errno = e;
                        return r;
                }
                if (r > 0)
                        got = (size_t)r;
                else if (errno != EINTR)
                        ring_store_relaxed(&d->sock, 0);   /* pvd puts none there while we hold rx */
        }
        uint32_t cons = shm_read32(&d->index);
        uint64_t t0 = 0, c0 = 0;
        for (unsigned i = 0; got < n; i++) {
                if (!ring_load_acquire(&d->ok))
                        break;   /* pvd takes the ring back (its vlink goes down) */
                uint32_t prod = ring_load_acquire(&h->prod);
                uint32_t used = prod - cons;
                if (used > size) {
                        broken = true;   /* pvd sees it too, and says so */
                        break;
                }
                if (used) {
                        note_peak(&d->peak, used);
                        size_t k = n - got < used ? n - got : used;
                        uint32_t pos = cons & mask;
                        size_t first = size - pos < k ? size - pos : k;
                        memcpy(buf + got, v->rxd + pos, first);
                        if (k > first)
                                memcpy(buf + got + first, v->rxd, k - first);
                        /* pvd took the ring back during the copy (its
                         * vlink went down): these bytes are not ours to
                         * take, and on a memory that outlives the vlink's
                         * generation our index must not move again. */
                        if (!ring_load_acquire(&d->ok))
                                break;
                        cons += (uint32_t)k;
                        got += k;
                        any = true;
                        if (quiet && !learnt) {
                                learnt = true;
                                poll_learned(v, &v->rx_learn, true, t0 ? pvc_now_ns() - t0 : 0);
                        }
                        ring_store_release(&d->index, cons);
                        ring_store_release(&h->cons, cons);
                        add64(&d->bytes, k);
                        ring_full_fence();
                        if (ring_load_relaxed(&h->prod_wait) && ring_exchange(&h->prod_wait, 0)) {
                                kick = true;
                                add64(&d->xirq_asked, 1);
                        }
                        continue;
                }
                if (got && v->any)
                        break;   /* flag 'a': what is there */
                if (!quiet) {
                        /* Asked only now: a read that finds its bytes never
                         * pays for it. */
                        *nb = nonblocking(fd);
                        budget = *nb ? 0 : poll_budget(v, &v->rx_learn);
                        spin = budget != 0;
                }
                if (!spin)
                        break;
                if (!quiet) {
                        /* We are watching: the peer need not send xIRQs. */
                        ring_store_relaxed(&h->cons_wait, 0);
                        quiet = true;
                }
                /* A peer on our kernel: spin_ns of this thread's CPU time;
                 * a remote one: the learnt budget, in wall time (the
                 * answer crosses a boundary whatever we run). */
                if ((i & 63) == 0 && v->remote) {
                        uint64_t t = pvc_now_ns();
                        if (!t0) {
                                t0 = t;
                        } else if (t - t0 >= budget) {
                                if (!learnt)
                                        poll_learned(v, &v->rx_learn, false, t - t0);
                                learnt = true;
                                break;
                        }
                        pvc_spin_yield(t - t0);   /* the peer may be queued behind us */
                } else if ((i & 63) == 0 && spin_over(&t0, &c0)) {
                        break;
                }
                pvc_cpu_relax();
        }
        if (any)
                add64(&d->calls, 1);
        if (loop && !broken && (got == n || (got && v->any)) && ring_load_acquire(&d->ok)) {
                /* The program reads in a loop and this call is complete:
                 * what is left, and what the peer writes meanwhile, waits
                 * in the ring for its next read, with no xIRQ; pvd looks
                 * out for a program that stops (rx.reading). */
                ring_store_relaxed(&d->reading, 1);
                ring_store_relaxed(&h->cons_wait, 0);
                ring_full_fence();
                bool looks = ring_load_relaxed(&d->lookout) != 0;
                if (kick)
                        ring_store_relaxed(&d->kick, 1);
                give(v, d, kick || !looks);
                return (ssize_t)got;
        }
        ring_store_relaxed(&d->reading, 0);
        /* pvd is the consumer of record again: the peer wakes it for new
         * bytes, and bytes left in the ring go to the socket. */
        ring_store_relaxed(&h->cons_wait, 1);
        ring_full_fence();
        bool left = !broken && ring_load_acquire(&h->prod) != cons;
        if (kick)
                ring_store_relaxed(&d->kick, 1);
        give(v, d, kick || left);
        return (ssize_t)got;
}

int vbpd_read(int fd, void *buf, size_t n, ssize_t *res)
{
        if (n == 0)
                return 0;
        struct vbpd *v = lookup(fd);
        if (!v)
                return 0;
        int nb = -1;
        bool any = v->any;
        ssize_t got = 0;
        /* Racy between threads of one end: only a hint. */
        uint64_t now = pvc_now_ns();
        unsigned tight = now - __atomic_load_n(&v->rx_end_ns, __ATOMIC_RELAXED) < VBPD_TIGHT_NS
                                 ? __atomic_load_n(&v->rx_tight, __ATOMIC_RELAXED) + 1
                                 : 0;
        __atomic_store_n(&v->rx_tight, tight < VBPD_TIGHT_CALLS ? tight : VBPD_TIGHT_CALLS, __ATOMIC_RELAXED);
        if (v->acc != O_WRONLY && !is_over(&v->rx_over) && take(v, &v->page->rx))
                got = ring_read(v, fd, buf, n, &nb, tight >= VBPD_TIGHT_CALLS);
        else
                nb = 1;   /* nothing from the ring: the socket answers alone, as read(2) */
        if (got >= 0 && (size_t)got < n && nb < 0)
                nb = nonblocking(fd);
        if (got < 0 || (size_t)got == n || (got > 0 && (any || nb))) {
                __atomic_store_n(&v->rx_end_ns, pvc_now_ns(), __ATOMIC_RELAXED);
                vbpd_unref(v);
                *res = got;
                return 1;
        }
        if (got == 0 && !still_ours(v, fd))
                return 0;
        if (got == 0 && v->acc != O_WRONLY && ring_load_relaxed(&v->page->rx.reading)) {
                /* The ring was not ours this time (pvd held it), and the
                 * last read said it would come back for what is left: say
                 * that it sleeps in the socket now, so that pvd moves the
                 * bytes there at once. */
                ring_store_relaxed(&v->page->rx.reading, 0);
                ring_full_fence();
                bell(v);
        }
        /* The rest through the socket, as pvd moves it: blocks until it
         * is all there (or, with flag 'a', until something is), or EOF, a
         * signal, or EAGAIN with O_NONBLOCK. */
        ssize_t r = recv(fd, (uint8_t *)buf + got, n - (size_t)got, 0);
        if (final_error(r))
                rx_ended(v, fd);
        __atomic_store_n(&v->rx_end_ns, pvc_now_ns(), __ATOMIC_RELAXED);
        vbpd_unref(v);
        if (r < 0)
                *res = got > 0 ? got : -1;
        else
                *res = got + r;
        return 1;
}

/* ---- write ------------------------------------------------------------------------ */

static size_t ring_write(struct vbpd *v, int fd, const uint8_t *buf, size_t n)
{
        bool spin = false, asked = false;
        struct vbpipe_direct_dir *d = &v->page->tx;
        struct pv_ring_hdr *h = v->txh;
        uint32_t size = v->size, mask = size - 1;
        size_t put = 0;
        bool kick = false;
        /* A write of up to PIPE_BUF bytes is never split, so that writers
         * sharing the end do not mix their bytes: it waits for room for all
         * of it, or goes to the socket whole. */
        size_t atom = n <= VBPD_ATOMIC_WRITE && n <= size ? n : 1;
        uint32_t prod = shm_read32(&d->index);
        uint64_t t0 = 0, c0 = 0;
        for (unsigned i = 0; put < n; i++) {
                if (!ring_load_acquire(&d->ok))
                        break;   /* pvd takes the ring back (its vlink goes down) */
                uint32_t used = prod - ring_load_acquire(&h->cons);
                if (used > size)
                        break;   /* pvd sees it too, and says so */
                uint32_t room = size - used;
                if (room && room >= (put ? 1 : atom)) {
                        size_t k = n - put < room ? n - put : room;
                        uint32_t pos = prod & mask;
                        size_t first = size - pos < k ? size - pos : k;
                        memcpy(v->txd + pos, buf + put, first);
                        if (k > first)
                                memcpy(v->txd, buf + put + first, k - first);
                        /* As in ring_read: not published if pvd took the
                         * ring back meanwhile (the bytes go through the
                         * socket). */
                        if (!ring_load_acquire(&d->ok))
                                break;
                        prod += (uint32_t)k;
                        put += k;
                        ring_store_release(&d->index, prod);
                        ring_store_release(&h->prod, prod);
                        add64(&d->bytes, k);
                        note_peak(&d->peak, used + (uint32_t)k);
                        ring_full_fence();
                        if (ring_load_relaxed(&h->cons_wait) && ring_exchange(&h->cons_wait, 0)) {
                                kick = true;
                                add64(&d->xirq_asked, 1);
                        } else {
                                add64(&d->xirq_suppressed, 1);
                        }
                        continue;
                }
                if (!asked) {
                        asked = true;
                        /* Waiting for room stays short whatever the peer:
                         * a writer that polled a slow guest's ring for long
                         * took the host CPU that guest needed to drain it. */
                        spin = !nonblocking(fd) && spin_ns;
                }
                if (!spin)
                        break;
                if ((i & 63) == 0 && spin_over(&t0, &c0))
                        break;
                pvc_cpu_relax();
        }
        if (put)
                add64(&d->calls, 1);
        if (kick)
                ring_store_relaxed(&d->kick, 1);
        give(v, d, kick);
        return put;
}

int vbpd_write(int fd, const void *buf, size_t n, ssize_t *res)
{
        if (n == 0)
                return 0;
        struct vbpd *v = lookup(fd);
        if (!v)
                return 0;
        size_t put = 0;
        if (v->acc != O_RDONLY && !is_over(&v->tx_over) && take(v, &v->page->tx)) {
                /* Bytes the program wrote into the socket that pvd has not
                 * moved yet come first: then the socket takes these too.
                 * Asked every time: a plain write(2) of the program's own
                 * puts bytes there that no table of ours sees. */
                int queued = 0;
                if (ioctl(fd, SIOCOUTQ, &queued) < 0 || queued > 0 || !sock_drained(v, fd))
                        give(v, &v->page->tx, false);
                else
                        put = ring_write(v, fd, buf, n);
        }
        if (put == n) {
                vbpd_unref(v);
                *res = (ssize_t)n;
                return 1;
        }
        if (put == 0 && !still_ours(v, fd))
                return 0;
        /* The rest through the socket: pvd moves it as the ring drains. A
         * reader that is gone makes it fail with EPIPE (and SIGPIPE). */
        __atomic_store_n(&v->tx_sent, true, __ATOMIC_RELAXED);
        ssize_t r = send(fd, (const uint8_t *)buf + put, n - put, 0);
        if (r < 0 && final_error(r)) {
                int e = errno;
                over(&v->tx_over);
                errno = e;
        }
        vbpd_unref(v);
        if (r < 0)
                *res = put > 0 ? (ssize_t)put : -1;
        else
                *res = (ssize_t)put + r;
        return 1;
}
