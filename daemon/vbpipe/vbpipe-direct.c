/* VBPIPE direct access, daemon side: lending the byte rings to the program.
 *
 * The program that holds an end may copy bytes between its buffers and the
 * rings itself (libpvclient's vbpipeRead/vbpipeWrite, and pvrun's read and
 * write), so that a busy conversation needs neither pvd nor a wake-up.
 * The rules are in proto/vbpipe-proto.h ("direct access"); here is pvd's
 * half:
 *
 *  - pvd holds both ring locks of an end whenever it is not steady (not
 *    paired yet, finishing, vlink down); at the end of every entry point
 *    (vbp_pipe_leave) vbp_dir_grant lends each ring that may be lent: it
 *    writes its index in the page, sets ok and lets go of the lock.
 *  - At the start of every entry point (vbp_enter) pvd takes the locks
 *    back and reads the program's indices (vbp_dir_claim): checked
 *    against the ring, since the program may write anything there. A lock
 *    the program holds now makes pvd put the event off: peer messages wait
 *    in a queue, socket and xIRQ events are looked at again when the
 *    program lets go and rings the doorbell.
 *  - pvd never waits for a program: a holder that keeps a lock for long is
 *    looked at by a timer, and its lock is taken from it when it is dead
 *    or its end is closed.
 */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vbpipe-int.h"
#include "vbpipe-proto.h"

#define STUCK_MS    20
#define WITHDRAW_MS 20

static void bell_cb(struct pvd_watch *w, int status, int events, void *arg);

int vbp_dir_create(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        e->dir_fd = -1;
        int fd = memfd_create("pvd-vbpipe-direct", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        void *m = MAP_FAILED;
        if (ftruncate(fd, VBPIPE_DIRECT_SIZE) == 0 &&
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
                m = mmap(NULL, VBPIPE_DIRECT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
                int err = -errno;
                close(fd);
                return err;
        }
        int bfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct pvd_watch *bell = bfd >= 0 ? pvd_watch_new(p->vl->pvd->loop, bfd, UV_READABLE, bell_cb, e) : NULL;
        if (!bell) {
                munmap(m, VBPIPE_DIRECT_SIZE);
                close(fd);
                return -ENOMEM;
        }
        struct vbpipe_direct *d = m;
        d->magic = VBPIPE_DIRECT_MAGIC;
        d->version = VBPIPE_DIRECT_VERSION;
        d->ring_size = p->size;
        d->server = p->vl->side == PV_SERVER;
        d->rx.lock = VBPIPE_LOCK_PVD;
        d->tx.lock = VBPIPE_LOCK_PVD;
        e->dir = d;
        e->dir_fd = fd;
        e->bell = bell;
        return 0;
}

void vbp_dir_free(struct vbp_end *e)
{
        if (!e->dir)
                return;
        vbp_dir_fold(e);
        munmap(e->dir, VBPIPE_DIRECT_SIZE);
        close(e->dir_fd);
        pvd_watch_close(e->bell);
        e->dir = NULL;
        e->dir_fd = -1;
        e->bell = NULL;
}

/* The fds of an open's answer after the end's own: direct page, vbpipe
 * memory, doorbell; the offsets of the two memories in theirs. Returns VBPIPE_INFO_DIRECT if they are there
 * (with VBPIPE_INFO_REMOTE when the peer runs on another kernel). Only
 * memory of the vlink's current generation is given, and only it is ever
 * lent (vbp_dir_grant checks the generation). */
uint64_t vbp_dir_answer_fds(struct vbp_end *e, struct pv_msg *r)
{
        struct vbp_pipe *p = e->p;
        const struct pvd_region *reg = &p->vl->region[PV_REGION_VBPIPE];
        if (!e->dir || !p->on || reg->fd < 0 || e->dir_bad)
                return 0;
        e->dir_vgen = p->vl->gen;
        e->dir->vgen = p->vl->gen;
        pv_msg_add_fd(r, e->dir_fd);
        pv_msg_add_fd(r, reg->fd);
        pv_msg_add_fd(r, pvd_watch_fd(e->bell));
        pv_msg_set_u(r, PV_K_OFFSET, reg->offset);   /* of the byte rings in their fd */
        pv_msg_set_u(r, PV_K_OFFSET2, 0);            /* of the direct page (pvd's own memfd) */
        return VBPIPE_INFO_DIRECT | (pvd_hv_caps(p->vl->pvd) & HV_CAP_ONE_KERNEL ? 0 : VBPIPE_INFO_REMOTE);
}

/* ---- program counters ------------------------------------------------------------ */

static void fold_one(uint64_t *seen, const uint64_t *now_p, uint64_t *into)
{
        uint64_t now = shm_read64(now_p);
        /* The program writes these: a smaller or absurd value is ignored. */
        if (now > *seen && now - *seen < (1ull << 48)) {
                *into += now - *seen;
                *seen = now;
        }
}

/* Add what the program moved itself to the pipe's figures. */
void vbp_dir_fold(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        struct vbpipe_direct *d = e->dir;
        if (!d)
                return;
        fold_one(&e->dir_seen[0], &d->rx.bytes, &p->in.bytes);
        fold_one(&e->dir_seen[1], &d->rx.calls, &p->in.xfers);
        fold_one(&e->dir_seen[2], &d->tx.bytes, &p->out.bytes);
        fold_one(&e->dir_seen[3], &d->tx.calls, &p->out.xfers);
        /* The program's own notifications of the peer (through pvd's
         * doorbell) and those it saved because the peer was watching. */
        fold_one(&e->dir_seen[4], &d->rx.xirq_asked, &p->xirq_sent);
        fold_one(&e->dir_seen[5], &d->rx.xirq_suppressed, &p->xirq_suppressed);
        fold_one(&e->dir_seen[6], &d->tx.xirq_asked, &p->xirq_sent);
        fold_one(&e->dir_seen[7], &d->tx.xirq_suppressed, &p->xirq_suppressed);
        uint32_t pk = shm_read32(&d->rx.peak);
        if (pk <= p->size && pk > p->in.peak)
                p->in.peak = pk;
        pk = shm_read32(&d->tx.peak);
        if (pk <= p->size && pk > p->out.peak)
                p->out.peak = pk;
}

/* ---- taking the rings back -------------------------------------------------------- */

static void dir_bad(struct vbp_end *e, const char *what, uint32_t got, uint32_t was)
{
        if (!e->dir_bad)
                pv_warn("vbpipe %s: %s[%d] wrote an impossible %s index (%u after %u) in its direct page: "
                        "it gets no direct access any more", e->p->name, e->comm, (int)e->pid, what, got, was);
        e->dir_bad = true;
}

/* The indices the program hands back are checked against what pvd knows
 * (DESIGN 5). Behind where it took the ring over: the program's own error,
 * and its end has no direct access any more (pvd goes on from its own
 * index). Beyond the peer's index (rx: more consumed than produced; tx:
 * more produced than there was room for): the program's index or the
 * peer's is impossible, which of them pvd cannot tell, so the ring is
 * corrupt and the vlink is reset, as for any impossible index. */
static bool behind(uint32_t v, uint32_t was)
{
        return (int32_t)(v - was) < 0;
}

static void sync_rx(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (!p->on || !p->rx.hdr || e->dir_vgen != p->vl->gen)
                return;
        uint32_t v = shm_read32(&e->dir->rx.index);
        uint32_t prod = ring_load_acquire(&p->rx.hdr->prod);
        if (behind(v, p->rx.cons)) {
                dir_bad(e, "consumer", v, p->rx.cons);
                ring_store_release(&p->rx.hdr->cons, p->rx.cons);
                return;
        }
        if (prod - v > p->size) {
                /* Neither index is to be trusted: the ring is broken (no
                 * byte of it reaches the program any more, not even at the
                 * vlink's end, since the holder may have read them), and
                 * the shared indices stay as they are: moving one back
                 * would make the peer write over bytes not yet read, or
                 * read bytes again. */
                pv_ring_fail(&p->rx);
                if (p->vl->state == PV_VLINK_ON)   /* not again while it goes down */
                        pvd_vlink_fail(p->vl, "vbpipe %s: impossible ring indices: %s[%d] consumed up to %u, "
                                       "the peer produced up to %u", p->name, e->comm, (int)e->pid, v, prod);
                return;
        }
        p->rx.cons = v;
        ring_store_release(&p->rx.hdr->cons, v);
}

static void sync_tx(struct vbp_end *e)
{
        struct vbp_pipe *p = e->p;
        if (!p->on || !p->tx.hdr || e->dir_vgen != p->vl->gen)
                return;
        uint32_t v = shm_read32(&e->dir->tx.index);
        uint32_t cons = ring_load_acquire(&p->tx.hdr->cons);
        if (behind(v, p->tx.prod)) {
                dir_bad(e, "producer", v, p->tx.prod);
                ring_store_release(&p->tx.hdr->prod, p->tx.prod);
                return;
        }
        if (v - cons > p->size) {
                pv_ring_fail(&p->tx);   /* as in sync_rx: nothing moves back */
                if (p->vl->state == PV_VLINK_ON)
                        pvd_vlink_fail(p->vl, "vbpipe %s: impossible ring indices: %s[%d] produced up to %u, "
                                       "the peer consumed up to %u", p->name, e->comm, (int)e->pid, v, cons);
                return;
        }
        p->tx.prod = v;
        ring_store_release(&p->tx.hdr->prod, v);
}

static bool holder_dead(uint32_t pid)
{
        return pid > VBPIPE_LOCK_PVD && pid <= INT32_MAX && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* 1: pvd holds it (2: just taken, index to read), 0: a program does. */
static int lock_take(struct vbpipe_direct_dir *d, enum vbp_claim mode)
{
        if (ring_load_acquire(&d->lock) == VBPIPE_LOCK_PVD)
                return 1;
        if (ring_cas(&d->lock, VBPIPE_LOCK_FREE, VBPIPE_LOCK_PVD))
                return 2;
        if (mode == CLAIM_FORCE) {
                ring_exchange(&d->lock, VBPIPE_LOCK_PVD);
                return 2;
        }
        if (mode == CLAIM_WAIT) {
                /* The holder looks at want after letting go (full fence
                 * on both sides): either it sees want, or we see the lock
                 * free here. */
                ring_store_relaxed(&d->want, 1);
                ring_full_fence();
                if (ring_cas(&d->lock, VBPIPE_LOCK_FREE, VBPIPE_LOCK_PVD))
                        return 2;
        }
        return 0;
}

static bool end_taken(struct vbp_end *e, enum vbp_claim mode)
{
        struct vbp_pipe *p = e->p;
        struct vbpipe_direct *d = e->dir;
        int rx = lock_take(&d->rx, mode), tx = lock_take(&d->tx, mode);
        if (rx == 2) {
                ring_store_relaxed(&d->rx.want, 0);
                sync_rx(e);
        }
        if (tx == 2) {
                ring_store_relaxed(&d->tx.want, 0);
                sync_tx(e);
        }
        bool kick = ring_exchange(&d->rx.kick, 0) | ring_exchange(&d->tx.kick, 0);
        if (kick && p->on)
                pvd_vlink_notify(p->vl);
        vbp_dir_fold(e);
        return rx && tx;
}

/* Take both rings of the current end back. false: a program holds one
 * now (with CLAIM_WAIT it rings the doorbell when it lets go). */
bool vbp_dir_claim(struct vbp_pipe *p, enum vbp_claim mode)
{
        struct vbp_end *e = p->cur;
        if (!e || !e->dir)
                return true;
        if (!p->on)
                mode = CLAIM_FORCE;   /* the memory is gone: nothing to wait for */
        return end_taken(e, mode);
}

/* The vlink goes down: take both rings back for good. ok goes to 0
 * first, which a holder looks at in every turn of its copy loop, so it
 * lets go within microseconds; pvd waits for that (up to WITHDRAW_MS) and
 * reads the holder's final index. A holder that keeps a ring longer
 * (stopped, or not scheduled) loses it anyway, at an index that may not be
 * final. Returns false when that happened to rx: the bytes left there must
 * not be handed on through the socket, as the holder may read them still
 * (no byte may arrive twice). */
bool vbp_dir_withdraw(struct vbp_pipe *p)
{
        struct vbp_end *e = p->cur;
        if (!e || !e->dir)
                return true;
        struct vbpipe_direct *d = e->dir;
        ring_store_release(&d->rx.ok, 0);
        ring_store_release(&d->tx.ok, 0);
        ring_full_fence();
        uint64_t end = uv_hrtime() + WITHDRAW_MS * 1000000ull;
        while (!end_taken(e, CLAIM_TRY) && uv_hrtime() < end)
                sched_yield();
        uint32_t rx = ring_load_acquire(&d->rx.lock), tx = ring_load_acquire(&d->tx.lock);
        bool rx_final = rx == VBPIPE_LOCK_PVD || holder_dead(rx);
        if (rx != VBPIPE_LOCK_PVD || tx != VBPIPE_LOCK_PVD) {
                if (!rx_final)
                        pv_notice("vbpipe %s: %s[%d] kept the ring while the vlink went down: the bytes left in it "
                                  "are dropped", p->name, e->comm, (int)e->pid);
                end_taken(e, CLAIM_FORCE);
        }
        return rx_final;
}

static void stuck_cb(uv_timer_t *t);

/* Outermost entry point: vbp_pipe_enter, and the rings back from the
 * program. false: put off (the caller does nothing more, and calls
 * vbp_pipe_leave). */
bool vbp_enter(struct vbp_pipe *p, enum vbp_claim mode)
{
        vbp_pipe_enter(p);
        if (p->depth > 1 || vbp_dir_claim(p, mode))
                return true;
        if (mode == CLAIM_WAIT) {
                p->dir_deferred++;
                if (p->stuck && !uv_is_active((uv_handle_t *)p->stuck))
                        uv_timer_start(p->stuck, stuck_cb, STUCK_MS, 0);
        }
        return false;
}

/* Lend one ring, or keep it. */
static void lend(struct vbpipe_direct_dir *d, bool ok, uint32_t index)
{
        if (ring_load_acquire(&d->lock) != VBPIPE_LOCK_PVD)
                return;   /* not ours now: put off, lent still */
        if (!ok) {
                ring_store_relaxed(&d->ok, 0);
                return;
        }
        ring_store_relaxed(&d->index, index);
        ring_store_relaxed(&d->ok, 1);
        ring_store_release(&d->lock, VBPIPE_LOCK_FREE);
}

static bool steady(struct vbp_pipe *p, struct vbp_end *e)
{
        return !e->dir_bad && p->on && e->dir_vgen == p->vl->gen && e->st == VBP_OPEN && !e->gone;
}

static bool rx_lendable(struct vbp_pipe *p, struct vbp_end *e)
{
        return steady(p, e) && p->seg.active && p->seg.to == e && !p->seg.fin && !e->rx_done && !e->tail &&
               !p->rx.broken;
}

/* ---- looking out for a program that reads in a loop ------------------------------ */

/* A program that reads in a loop comes back for the bytes left in the rx
 * ring, and for those the peer writes meanwhile: moving them into the
 * socket (and the peer's xIRQ for each) would only slow it down, as it
 * would read them from the socket next. So while it says so (rx.reading)
 * pvd leaves them in the ring and looks every VBPIPE_LOOKOUT_US whether
 * it still reads; when it stopped (it polls the socket now, or does
 * something else), pvd moves them as usual. The first look comes after
 * VBPIPE_LOOKOUT_US, and each that finds it still reading doubles the
 * period up to VBPIPE_LOOKOUT_MAX_US, so that a long stream costs pvd a
 * wake-up per millisecond, and a reader that stops finds its bytes in
 * the socket two periods later at most. An event loop that reads until
 * EAGAIN never waits for that: its last read says it sleeps. */

static void lookout_arm(struct vbp_pipe *p, uint64_t us)
{
        struct itimerspec it = { .it_value = { .tv_sec = 0, .tv_nsec = (long)us * 1000 } };
        timerfd_settime(pvd_watch_fd(p->lookout), 0, &it, NULL);
}

/* The next look, a period twice as long (up to VBPIPE_LOOKOUT_MAX_US). */
static void lookout_later(struct vbp_pipe *p)
{
        p->look_us = p->look_us * 2 < VBPIPE_LOOKOUT_MAX_US ? p->look_us * 2 : VBPIPE_LOOKOUT_MAX_US;
        lookout_arm(p, p->look_us);
}

static void lookout_stop(struct vbp_pipe *p, struct vbp_end *e)
{
        if (p->looking) {
                struct itimerspec it = { 0 };
                timerfd_settime(pvd_watch_fd(p->lookout), 0, &it, NULL);
        }
        p->looking = false;
        if (e && e->dir)
                ring_store_relaxed(&e->dir->rx.lookout, 0);
}

/* The program says it reads, and pvd may leave the bytes to it: rx may be
 * lent, and pvd looks (or starts to at the end of this entry). */
bool vbp_dir_reading(struct vbp_pipe *p, struct vbp_end *e)
{
        return e && e->dir && p->lookout && rx_lendable(p, e) && ring_load_relaxed(&e->dir->rx.reading) == 1;
}

/* The program moved on since the last look (read without the lock: a
 * hint, which only decides when to look again). */
static bool look_moved(struct vbp_pipe *p, struct vbpipe_direct_dir *d)
{
        uint32_t index = shm_read32(&d->index);
        uint64_t calls = shm_read64(&d->calls);
        bool moved = index != p->look_index || calls != p->look_calls;
        p->look_index = index;
        p->look_calls = calls;
        return moved;
}

/* End of an entry point, rx held by pvd: start or stop looking. */
static void lookout_update(struct vbp_pipe *p, struct vbp_end *e, bool rx_ok)
{
        struct vbpipe_direct_dir *d = &e->dir->rx;
        if (!p->lookout || ring_load_acquire(&d->lock) != VBPIPE_LOCK_PVD)
                return;
        if (!rx_ok || ring_load_relaxed(&d->reading) != 1) {
                ring_store_relaxed(&d->reading, 0);
                lookout_stop(p, e);
                return;
        }
        if (p->looking)
                return;
        p->looking = true;
        p->look_spells++;
        p->look_us = VBPIPE_LOOKOUT_US;
        look_moved(p, d);
        ring_store_relaxed(&d->lookout, 1);
        lookout_arm(p, p->look_us);
}

static void lookout_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        (void)status;
        (void)events;
        struct vbp_pipe *p = arg;
        uint64_t n;
        if (read(pvd_watch_fd(w), &n, sizeof(n)) < 0 && errno != EAGAIN)
                return;
        if (!p->looking)
                return;
        struct vbp_end *e = p->cur;
        if (!e || !e->dir) {
                lookout_stop(p, NULL);
                return;
        }
        struct vbpipe_direct_dir *d = &e->dir->rx;
        /* Still reading: look again, later, without taking the ring from
         * it. A holder (at the rings now) may say that it reads at the end
         * of this call. */
        uint32_t lock = ring_load_acquire(&d->lock);
        bool moved = look_moved(p, d);
        if ((lock != VBPIPE_LOCK_FREE && lock != VBPIPE_LOCK_PVD) ||
            (moved && ring_load_relaxed(&d->reading) == 1)) {
                lookout_later(p);
                return;
        }
        if (!vbp_enter(p, CLAIM_TRY)) {
                /* A ring was taken just now: rx, it reads; tx, it writes
                 * and may have stopped reading all the same. Look again,
                 * less often while that lasts: a program that keeps tx
                 * does not make pvd look more than once a period. */
                lookout_later(p);
                vbp_pipe_leave(p);
                return;
        }
        bool reading = ring_load_relaxed(&d->reading) == 1;
        if (reading && look_moved(p, d)) {
                lookout_arm(p, p->look_us);
        } else {
                /* It stopped reading (found here), or said it sleeps now:
                 * what is in the ring goes to the socket, and the peer
                 * wakes pvd for more. */
                ring_store_relaxed(&d->reading, 0);
                lookout_stop(p, e);
                if (reading)
                        p->look_stops++;
                vbp_rx_pump(p);
        }
        vbp_pipe_leave(p);
}

/* End of an entry point: lend the rings that may be lent. */
void vbp_dir_grant(struct vbp_pipe *p)
{
        struct vbp_end *e = p->cur;
        if (!e || !e->dir) {
                if (p->looking)
                        lookout_stop(p, NULL);
                return;
        }
        bool rx_ok = rx_lendable(p, e);
        bool tx_ok = steady(p, e) && p->txe == e && !e->tx_done && !e->filler && !p->tx.broken;
        lookout_update(p, e, rx_ok);
        lend(&e->dir->rx, rx_ok, p->rx.cons);
        lend(&e->dir->tx, tx_ok, p->tx.prod);
}

/* ---- the doorbell, and holders that keep a ring -------------------------------------- */

static void bell_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        (void)status;
        (void)events;
        struct vbp_end *e = arg;
        struct vbp_pipe *p = e->p;
        uint64_t v;
        if (read(pvd_watch_fd(w), &v, sizeof(v)) < 0 && errno != EAGAIN)
                return;
        if (vbp_enter(p, CLAIM_WAIT))
                vbp_refresh(p);
        vbp_pipe_leave(p);
}

static void stuck_cb(uv_timer_t *t)
{
        struct vbp_pipe *p = t->data;
        struct vbp_end *e = p->cur;
        vbp_pipe_enter(p);
        bool ok = vbp_dir_claim(p, CLAIM_WAIT);
        if (!ok && e && e->dir) {
                uint32_t rx = ring_load_acquire(&e->dir->rx.lock), tx = ring_load_acquire(&e->dir->tx.lock);
                if (holder_dead(rx) || holder_dead(tx) || vbp_end_closed(e)) {
                        pv_notice("vbpipe %s: the ring of %s[%d] was held by a process that is gone: taken back",
                                  p->name, e->comm, (int)e->pid);
                        p->dir_stolen++;
                        ok = vbp_dir_claim(p, CLAIM_FORCE);
                }
        }
        if (ok)
                vbp_refresh(p);
        else
                uv_timer_start(t, stuck_cb, STUCK_MS, 0);
        vbp_pipe_leave(p);
}

int vbp_dir_init(struct vbp_pipe *p)
{
        p->stuck = malloc(sizeof(*p->stuck));
        if (!p->stuck || uv_timer_init(p->vl->pvd->loop, p->stuck) < 0) {
                free(p->stuck);
                p->stuck = NULL;
                return -ENOMEM;
        }
        p->stuck->data = p;
        /* Without it, pvd moves the bytes a reader leaves, as before. */
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        p->lookout = tfd >= 0 ? pvd_watch_new(p->vl->pvd->loop, tfd, UV_READABLE, lookout_cb, p) : NULL;
        return 0;
}

static void timer_closed(uv_handle_t *h)
{
        free(h);
}

void vbp_dir_fini(struct vbp_pipe *p)
{
        if (p->stuck)
                uv_close((uv_handle_t *)p->stuck, timer_closed);
        p->stuck = NULL;
        pvd_watch_close(p->lookout);
        p->lookout = NULL;
        p->looking = false;
}
