/* hv/ivshmem.c: the hypervisor of a QEMU host. Each vlink is one shared
 * memory served by pvhv through QEMU's ivshmem protocol, with doorbell
 * vectors. pvd reaches it through one of two faces: on the host, as a peer
 * of its VM's side ("DIR/LINK.VM.sock", ivshmem-sock.c), the way a guest's
 * ivshmem-doorbell device does; inside a guest, through that device
 * (ivshmem-pci.c: BAR2, BAR0's doorbell, MSI-X through VFIO). Everything else comes
 * from that memory (proto/pv-ivshmem.h): the regions, the grantable heaps,
 * each side's state, and the doorbell bits that multiplex program xIRQs
 * over one vector. Grants and xIRQs are announced on the control ring.
 *
 * The other side is hostile: every word of its area and every announcement
 * is read once and checked; a bad one resets the vlink; a doorbell storm
 * too. Programs are handed the one memory fd of the vlink (with the offset
 * of what they get): there is no per-program slicing on this backend.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hv.h"
#include "id-table.h"
#include "ivshmem-heap.h"
#include "ivshmem-int.h"
#include "ivshmem-pci.h"
#include "ivshmem-sock.h"
#include "pv-atomic.h"
#include "pv-ivshmem.h"
#include "pvd.h"
#include "watch.h"

#define IVS_RETRY_MS     200
#define IVS_STORM_RINGS  200000 /* doorbells a second before the vlink is reset */
#define IVS_DEFAULT_DIR  "/run/pvhv"

/* ---- the two faces: what differs between a host process and a guest ----------- */

static bool joined(const struct ivs_link *l)
{
        return l->pci || (l->sock && ivsock_ready(l->sock));
}

int ivs_mem_fd(const struct ivs_link *l)
{
        return l->pci ? ivpci_mem_fd(l->pci) : ivsock_mem_fd(l->sock);
}

static uint64_t face_mem_size(const struct ivs_link *l)
{
        return l->pci ? ivpci_mem_size(l->pci) : ivsock_mem_size(l->sock);
}

static int face_own_id(const struct ivs_link *l)
{
        if (l->pci)
                return (int)ivpci_own_id(l->pci);
        return l->sock ? ivsock_own_id(l->sock) : -1;
}

static int face_vector_fd(const struct ivs_link *l, unsigned vec)
{
        return l->pci ? ivpci_vector_fd(l->pci, vec) : ivsock_own_vector_fd(l->sock, vec);
}

/* Is peer id there? The host face hears it from pvhv's socket; a guest has
 * only pvhv's header (read and checked by the caller) and its link
 * vector, rung at every change. */
static bool face_peer_present(const struct ivs_link *l, uint32_t id)
{
        return l->pci ? true : ivsock_peer_present(l->sock, id);
}

static int face_ring(struct ivs_link *l, uint32_t id, unsigned vec)
{
        return l->pci ? ivpci_ring(l->pci, id, vec) : ivsock_ring(l->sock, id, vec);
}

static void *beat_main(void *arg)
{
        struct ivs_global *g = arg;
        /* A few stores four times a second, so that they come on time on a
         * busy host: real-time where pvd may (root), else a better nice. */
        struct sched_param sp = { .sched_priority = 1 };
        if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0)
                setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10);
        pthread_mutex_lock(&g->lock);
        while (!g->stop) {
                for (unsigned i = 0; i < sizeof(g->beats) / sizeof(g->beats[0]); i++)
                        if (g->beats[i])
                                shm_store64(g->beats[i], shm_read64(g->beats[i]) + 1);
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += PV_IVSHM_BEAT_MS * 1000000L;
                ts.tv_sec += ts.tv_nsec / 1000000000L;
                ts.tv_nsec %= 1000000000L;
                pthread_cond_timedwait(&g->cv, &g->lock, &ts);
        }
        pthread_mutex_unlock(&g->lock);
        return NULL;
}

/* Beat for vlink index i (w NULL: stop, before its memory goes). */
static void beat_set(struct ivs_link *l, uint64_t *w)
{
        struct ivs_global *g = l->vl->pvd->hv_priv;
        if (l->vl->index >= sizeof(g->beats) / sizeof(g->beats[0]))
                return;
        pthread_mutex_lock(&g->lock);
        g->beats[l->vl->index] = w;
        pthread_mutex_unlock(&g->lock);
}

void ivs_log_once(struct ivs_link *l, const char *fmt, ...)
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

/* ---- doorbells ----------------------------------------------------------------------- */

static uint32_t peer_id(struct ivs_link *l)
{
        const struct pv_ivshm_hdr *h = (const struct pv_ivshm_hdr *)l->mem;
        uint32_t present = shm_read32(&h->presence[l->other].present);
        uint32_t id = shm_read32(&h->presence[l->other].peer_id);
        if (!present || !id || id > PV_IVSHM_PEER_ID_MAX || PV_IVSHM_PEER_SIDE(id) != (uint32_t)l->other ||
            !face_peer_present(l, id))
                return 0;
        return id;
}

int ivs_ring(struct ivs_link *l, unsigned vec)
{
        uint32_t id = peer_id(l);
        if (!id)
                return -ENOTCONN;
        l->rings_sent++;
        return face_ring(l, id, vec);
}

/* Too many doorbells from the peer (n rang since the last look): a storm,
 * not traffic (which rings only a peer that sleeps). */
static bool storm(struct ivs_link *l, uint64_t n)
{
        uint64_t now = uv_now(l->vl->pvd->loop);
        l->rings_recv += n;
        if (now - l->rings_window_ms >= 1000) {
                l->rings_window_ms = now;
                l->rings_in_window = 0;
        }
        l->rings_in_window += n;
        return l->rings_in_window > IVS_STORM_RINGS;
}

/* ---- link state ------------------------------------------------------------------------ */

static void schedule(struct ivs_link *l, uint64_t ms);

/* Our area is ours: each state we publish rewrites all we say there, so
 * a scribble on it lasts until our next step. */
static void own_state(struct ivs_link *l, uint32_t state, uint32_t gen)
{
        l->own_st = state;
        l->own_gen = gen;
        ring_store_relaxed(&l->own->magic, PV_IVSHM_SIDE_MAGIC);
        ring_store_relaxed(&l->own->incarnation, l->incarnation);
        ring_store_relaxed(&l->own->peer_id, (uint32_t)face_own_id(l));
        ring_store_relaxed(&l->own->gen, gen);
        ring_store_release(&l->own->state, state);
}

/* Forget what crossed the vlink in its last generation. */
static void forget(struct ivs_link *l)
{
        id_table_clear(&l->own_grant);
        id_table_clear(&l->peer_grant);
        ivs_xirqs_clear(l);
}

/* The vlink leaves ON (or its handshake stops): say so to the peer. */
static void go_down(struct ivs_link *l, const char *why)
{
        struct pvd_vlink *vl = l->vl;
        if (l->own)
                own_state(l, PV_IVSHM_OFF, l->gen);
        if (vl->state != PV_VLINK_OFF) {
                if (why)
                        pv_notice("vlink %s: %s", vl->cfg->link_name, why);
                pvd_vlink_set_state(vl, PV_VLINK_OFF);
        }
        forget(l);
        l->rings_in_window = 0; /* a new generation starts with a clean count */
        if (l->own && ivs_ring(l, PV_IVSHM_VEC_LINK) < 0)
                (void)0; /* the peer is not there: it finds OFF when it comes */
        schedule(l, 0);
}

/* Server: fresh regions for a new generation. */
static void make_ready(struct ivs_link *l)
{
        struct pvd_vlink *vl = l->vl;
        for (int r = 0; r < PV_REGION_COUNT; r++)
                if (vl->region[r].size)
                        memset(vl->region[r].base, 0, vl->region[r].size);
        pvd_vlink_regions_created(vl);
        l->gen = (l->gen + 1) ? l->gen + 1 : 1;
        own_state(l, PV_IVSHM_READY, l->gen);
        pvd_vlink_set_state(vl, PV_VLINK_RESET);
        ivs_ring(l, PV_IVSHM_VEC_LINK);
}

/* What the peer's area says, read once. */
struct peer_view {
        uint32_t magic, state, gen, inc;
        uint64_t beat;
};

static void peer_read(struct ivs_link *l, struct peer_view *p)
{
        p->magic = shm_read32(&l->peer_area->magic);
        p->state = ring_load_acquire(&l->peer_area->state);
        p->gen = shm_read32(&l->peer_area->gen);
        p->inc = shm_read32(&l->peer_area->incarnation);
        p->beat = shm_read64(&l->peer_area->heartbeat);
}

/* The client's view of the server's control region: what the emu backend
 * checks before it maps one. */
static bool regions_sane(struct ivs_link *l)
{
        const struct pv_vlink_ctl *ctl = l->vl->region[PV_REGION_CTL].base;
        return shm_read32(&ctl->magic) == PV_VLINK_MAGIC && shm_read32(&ctl->version) == PV_VLINK_VERSION &&
               shm_read32(&ctl->ring_size) == PV_CTL_RING_SIZE;
}

/* Look at both sides and move the link (the state machine of
 * proto/pv-ivshmem.h). */
static void evaluate(struct ivs_link *l)
{
        struct pvd_vlink *vl = l->vl;
        if (!l->mem || vl->pvd->stopping)
                return;
        /* Our area is ours, but the peer (or any mapping of the memory)
         * can write over it: write it again from what we know, or both
         * sides would wait for each other forever once it stops. */
        if (shm_read32(&l->own->magic) != PV_IVSHM_SIDE_MAGIC ||
            shm_read32(&l->own->incarnation) != l->incarnation ||
            shm_read32(&l->own->peer_id) != (uint32_t)face_own_id(l) || shm_read32(&l->own->gen) != l->own_gen ||
            ring_load_acquire(&l->own->state) != l->own_st) {
                ivs_log_once(l, "its own area in the vlink's memory was overwritten; writing it again");
                own_state(l, l->own_st, l->own_gen);
        }
        bool present = peer_id(l) != 0;
        struct peer_view p;
        peer_read(l, &p);
        bool alive = present && p.magic == PV_IVSHM_SIDE_MAGIC;
        if (vl->state == PV_VLINK_ON) {
                bool ok = alive && p.inc == l->peer_inc && p.gen == l->gen &&
                          (p.state == PV_IVSHM_ON || (l->side == PV_CLIENT && p.state == PV_IVSHM_READY));
                if (!ok)
                        go_down(l, present ? "the peer's pvd left the link" : "the peer VM left");
                return;
        }
        if (!alive) {
                /* A handshake the peer left half way. */
                if (vl->state == PV_VLINK_RESET) {
                        own_state(l, PV_IVSHM_OFF, l->gen);
                        pvd_vlink_set_state(vl, PV_VLINK_OFF);
                }
                return;
        }
        if (l->side == PV_SERVER) {
                uint32_t mine = ring_load_relaxed(&l->own->state);
                if (mine == PV_IVSHM_READY && p.state == PV_IVSHM_ON && p.gen == l->gen) {
                        l->peer_inc = p.inc;
                        l->peer_beat = p.beat;
                        l->peer_beat_ms = uv_now(vl->pvd->loop);
                        own_state(l, PV_IVSHM_ON, l->gen);
                        l->connects++;
                        l->last_err[0] = 0;
                        pvd_vlink_set_state(vl, PV_VLINK_ON);
                        return;
                }
                /* A client ON in another generation is about to see ours
                 * and leave that one (or is a dead pvd's area, which its
                 * VM's next pvd writes again): making more generations
                 * meanwhile would clear the regions under a client still
                 * writing in the last, and offer it one more it cannot
                 * join in time. */
                if (mine != PV_IVSHM_READY) {
                        make_ready(l);
                        return;
                }
                /* Ready, and the regions we made for this generation were
                 * written over since: a client finds them bad and waits for
                 * a generation it can join, which would never come. Make
                 * them again, once per heartbeat period at most (a mapping
                 * that keeps writing could otherwise keep us clearing). */
                uint64_t now = uv_now(vl->pvd->loop);
                if (!regions_sane(l) && now - l->remade_ms >= PV_IVSHM_BEAT_MS) {
                        l->remade_ms = now;
                        ivs_log_once(l, "our control region was written over while the peer had not joined; making "
                                     "the regions again");
                        make_ready(l);
                }
                return;
        }
        /* client: a generation we have not joined (a restarted server
         * counts generations from 1 again, under a new incarnation) */
        if (p.state != PV_IVSHM_READY || (p.gen == l->gen && p.inc == l->peer_inc))
                return;
        if (!regions_sane(l)) {
                ivs_log_once(l, "the server's control region has a bad magic or version");
                return;
        }
        l->gen = p.gen;
        l->peer_inc = p.inc;
        l->peer_beat = p.beat;
        l->peer_beat_ms = uv_now(vl->pvd->loop);
        /* A write of ours from the generation we leave can land after the
         * server cleared the regions for this one, before we saw it: the
         * server would take a stale index for this generation's, and skip
         * or read twice what we send now. */
        pvd_vlink_client_join(vl);
        own_state(l, PV_IVSHM_ON, l->gen);
        ivs_ring(l, PV_IVSHM_VEC_LINK);
        l->connects++;
        l->last_err[0] = 0;
        pvd_vlink_set_state(vl, PV_VLINK_ON);
}

/* ---- the connection to pvhv ------------------------------------------------------------- */

static void disconnect(struct ivs_link *l)
{
        struct pvd_vlink *vl = l->vl;
        if (vl->state != PV_VLINK_OFF)
                pvd_vlink_set_state(vl, PV_VLINK_OFF);
        forget(l);
        for (unsigned i = 0; i < PV_IVSHM_VECTORS; i++) {
                pvd_watch_close(l->vec_w[i]);
                l->vec_w[i] = NULL;
        }
        pvd_watch_close(l->sock_w);
        l->sock_w = NULL;
        if (l->mem) {
                beat_set(l, NULL);
                own_state(l, PV_IVSHM_OFF, l->gen);
                munmap(l->mem, l->mem_size);
        }
        l->mem = NULL;
        l->own = l->peer_area = NULL;
        for (int r = 0; r < PV_REGION_COUNT; r++)
                vl->region[r] = (struct pvd_region){ .fd = -1 };
        ivsock_close(l->sock);
        l->sock = NULL;
        ivpci_close(l->pci);
        l->pci = NULL;
        ivs_heap_fini(&l->heap);
}

static void vec_cb(struct pvd_watch *w, int status, int events, void *arg);

/* The memory came: check pvhv's header against our own layout, map the
 * regions, set up our area. */
static int attach_memory(struct ivs_link *l)
{
        struct pvd_vlink *vl = l->vl;
        uint64_t size = face_mem_size(l);
        if (size != l->lay.size) {
                ivs_log_once(l, "pvhv's memory is %llu bytes, this platform's layout needs %llu: do pvhv and pvd use "
                             "the same platform file?", (unsigned long long)size, (unsigned long long)l->lay.size);
                return -EPROTO;
        }
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ivs_mem_fd(l), 0);
        if (p == MAP_FAILED)
                return -errno;
        struct pv_ivshm_hdr h;
        memcpy(&h, p, sizeof(h)); /* once: any VM can rewrite it */
        bool same = h.magic == PV_IVSHM_MAGIC && h.version == PV_IVSHM_VERSION && h.size == size &&
                    h.vectors == PV_IVSHM_VECTORS && memcmp(h.side, l->lay.side, sizeof(h.side)) == 0 &&
                    memcmp(h.region, l->lay.region, sizeof(h.region)) == 0 &&
                    memcmp(h.heap, l->lay.heap, sizeof(h.heap)) == 0 &&
                    strncmp(h.link_name, vl->cfg->link_name, sizeof(h.link_name)) == 0;
        if (!same) {
                munmap(p, size);
                ivs_log_once(l, "pvhv's memory header does not match this platform's layout for the vlink");
                return -EPROTO;
        }
        struct stat st;
        if (fstat(ivs_mem_fd(l), &st) < 0) {
                munmap(p, size);
                return -errno;
        }
        l->mem = p;
        l->mem_size = size;
        l->mem_dev = st.st_dev;
        l->mem_ino = st.st_ino;
        l->own = (struct pv_ivshm_side *)(l->mem + l->lay.side[l->side].offset);
        l->peer_area = (struct pv_ivshm_side *)(l->mem + l->lay.side[l->other].offset);
        int fd = ivs_mem_fd(l);
        for (int r = 0; r < PV_REGION_COUNT; r++)
                vl->region[r] = l->lay.region[r].size
                                        ? (struct pvd_region){ .base = l->mem + l->lay.region[r].offset,
                                                               .size = l->lay.region[r].size, .fd = fd,
                                                               .offset = l->lay.region[r].offset }
                                        : (struct pvd_region){ .fd = -1 };
        ivs_heap_init(&l->heap, l->lay.heap[l->side].offset, l->lay.heap[l->side].size);
        /* A new incarnation, OFF: a peer that knew an earlier pvd of ours
         * starts over. */
        memset(l->own, 0, sizeof(*l->own));
        l->incarnation = (uint32_t)pvd_random64();
        own_state(l, PV_IVSHM_OFF, 0);
        beat_set(l, &l->own->heartbeat);
        /* A server counts its generations from a random start: a client
         * still ON in a generation of this pvd's predecessor is never
         * taken for one that joined ours. */
        l->gen = l->side == PV_SERVER ? (uint32_t)pvd_random64() : 0;
        for (unsigned i = 0; i < PV_IVSHM_VECTORS; i++) {
                int dfd = fcntl(face_vector_fd(l, i), F_DUPFD_CLOEXEC, 0);
                l->vec_w[i] = dfd >= 0 ? pvd_watch_new(vl->pvd->loop, dfd, UV_READABLE, vec_cb, l) : NULL;
                if (!l->vec_w[i])
                        return -ENOMEM;
        }
        pv_debug("vlink %s: joined pvhv as peer %d (%s)", vl->cfg->link_name, face_own_id(l),
                 l->pci ? ivpci_bdf(l->pci) : l->path);
        return 0;
}

static void sock_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct ivs_link *l = arg;
        unsigned ev = 0;
        int rc = status < 0 ? -ECONNRESET : ivsock_read(l->sock, &ev);
        if (rc == 0 && (ev & IVSOCK_EV_READY) && !l->mem)
                rc = attach_memory(l);
        if (rc < 0) {
                if (rc == -EPROTO)
                        ivs_log_once(l, "pvhv: %s", ivsock_error(l->sock)[0] ? ivsock_error(l->sock)
                                                                                : "bad memory or header");
                else
                        ivs_log_once(l, "pvhv closed the link socket %s", l->path);
                disconnect(l);
                schedule(l, IVS_RETRY_MS);
                return;
        }
        if (ev & (IVSOCK_EV_PEER_JOINED | IVSOCK_EV_PEER_LEFT | IVSOCK_EV_READY))
                evaluate(l);
}

static int try_connect(struct ivs_link *l)
{
        struct ivs_global *g = l->vl->pvd->hv_priv;
        if (g->guest) {
                char err[256];
                int rc = ivpci_open(l->vl->cfg->link_name, NULL, &l->pci, err, sizeof(err));
                if (rc < 0) {
                        ivs_log_once(l, "%s; retrying", err);
                        l->pci = NULL;
                        return rc;
                }
                rc = attach_memory(l);
                if (rc < 0) {
                        disconnect(l);
                        return rc;
                }
                evaluate(l);
                return 0;
        }
        int rc = ivsock_connect(l->path, &l->sock);
        if (rc < 0) {
                ivs_log_once(l, "no pvhv on %s yet (%s); retrying", l->path, strerror(-rc));
                return rc;
        }
        int fd = fcntl(ivsock_fd(l->sock), F_DUPFD_CLOEXEC, 0);
        l->sock_w = fd >= 0 ? pvd_watch_new(l->vl->pvd->loop, fd, UV_READABLE, sock_cb, l) : NULL;
        if (!l->sock_w) {
                ivsock_close(l->sock);
                l->sock = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* Every PV_IVSHM_BEAT_MS: the peer's heartbeat, a connection to make, a
 * look at the state that was put off. */
static void timer_cb(uv_timer_t *t)
{
        struct ivs_link *l = t->data;
        struct pvd_vlink *vl = l->vl;
        if (vl->pvd->stopping)
                return;
        if (!l->sock && !l->pci && try_connect(l) < 0) {
                schedule(l, IVS_RETRY_MS);
                return;
        }
        uint64_t now = uv_now(vl->pvd->loop);
        if (vl->state == PV_VLINK_ON) {
                uint64_t beat = shm_read64(&l->peer_area->heartbeat);
                if (beat != l->peer_beat) {
                        l->peer_beat = beat;
                        l->peer_beat_ms = now;
                } else if (now - l->peer_beat_ms > PV_IVSHM_DEAD_MS) {
                        go_down(l, "the peer's pvd stopped (no heartbeat)");
                }
        }
        evaluate(l);
        schedule(l, PV_IVSHM_BEAT_MS);
}

static void schedule(struct ivs_link *l, uint64_t ms)
{
        if (!l->vl->pvd->stopping)
                uv_timer_start(&l->timer, timer_cb, ms, 0);
}

/* ---- doorbells in ------------------------------------------------------------------------- */

static void vec_cb(struct pvd_watch *w, int status, int events, void *arg)
{
        struct ivs_link *l = arg;
        uint64_t v;
        if (read(pvd_watch_fd(w), &v, sizeof(v)) < 0 || !l->own)
                return;
        if (storm(l, v)) {
                pvd_vlink_fail(l->vl, "the peer rings its doorbells in a storm (over %d a second)", IVS_STORM_RINGS);
                return;
        }
        if (w == l->vec_w[PV_IVSHM_VEC_XIRQ]) {
                if (l->vl->state == PV_VLINK_ON)
                        ivs_xirqs_in(l);
                return;
        }
        ring_exchange(&l->own->causes, 0);
        evaluate(l);
        if (l->vl->state == PV_VLINK_ON)
                pvd_vlink_xirq(l->vl);
}

/* ---- the backend's life --------------------------------------------------------------------- */

static const struct hv_option ivs_options[] = {
        { "ivshmem-dir", "DIR", "where pvhv serves the vlinks' sockets (a host process); else " IVS_DEFAULT_DIR,
          "PVD_IVSHMEM_DIR" },
        { "ivshmem-face", "FACE", "host (pvhv's sockets), guest (the ivshmem PCI devices) or auto: guest when "
          "there is no --ivshmem-dir and this machine has ivshmem devices", "PVD_IVSHMEM_FACE" },
        { NULL, NULL, NULL, NULL },
};

/* An ivshmem-doorbell PCI device on this machine: we are a guest. */
static bool have_ivshmem_device(void)
{
        DIR *d = opendir("/sys/bus/pci/devices");
        bool found = false;
        for (struct dirent *e; d && !found && (e = readdir(d));) {
                char path[300], v[16] = "", dv[16] = "";
                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", e->d_name);
                FILE *f = fopen(path, "re");
                if (f) {
                        if (!fgets(v, sizeof(v), f))
                                v[0] = 0;
                        fclose(f);
                }
                snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", e->d_name);
                f = fopen(path, "re");
                if (f) {
                        if (!fgets(dv, sizeof(dv), f))
                                dv[0] = 0;
                        fclose(f);
                }
                found = strtoul(v, NULL, 16) == IVPCI_VENDOR && strtoul(dv, NULL, 16) == IVPCI_DEVICE;
        }
        if (d)
                closedir(d);
        return found;
}

static int ivs_init(struct pvd *pvd, const char *const *values)
{
        const char *dir = values[0] ? values[0] : IVS_DEFAULT_DIR;
        if (strlen(dir) >= PVD_DIR_MAX) {
                pv_err("the ivshmem directory path must be shorter than %d bytes (it holds UNIX sockets)",
                       PVD_DIR_MAX);
                return -ENAMETOOLONG;
        }
        struct ivs_global *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        snprintf(g->dir, sizeof(g->dir), "%s", dir);
        const char *face = values[1] ? values[1] : "auto";
        if (strcmp(face, "guest") == 0) {
                g->guest = true;
        } else if (strcmp(face, "auto") == 0) {
                g->guest = !values[0] && have_ivshmem_device();
        } else if (strcmp(face, "host") != 0) {
                pv_err("--ivshmem-face %s: not a face of the ivshmem backend (host, guest or auto)", face);
                free(g);
                return -EINVAL;
        }
        pv_info("ivshmem: the %s face (%s)", g->guest ? "guest" : "host",
                g->guest ? "ivshmem PCI devices through VFIO" : g->dir);
        pthread_mutex_init(&g->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g->cv, &ca);
        pthread_condattr_destroy(&ca);
        int rc = pthread_create(&g->beat, NULL, beat_main, g);
        if (rc) {
                pv_err("cannot start the heartbeat thread: %s", strerror(rc));
                free(g);
                return -rc;
        }
        g->beating = true;
        pvd->hv_priv = g;
        return 0;
}

static void ivs_fini(struct pvd *pvd)
{
        struct ivs_global *g = pvd->hv_priv;
        if (!g)
                return;
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->lock);
        if (g->beating)
                pthread_join(g->beat, NULL);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->cv);
        free(g);
        pvd->hv_priv = NULL;
}

static int ivs_start(struct pvd_vlink *vl)
{
        struct ivs_global *g = vl->pvd->hv_priv;
        struct ivs_link *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->vl = vl;
        l->side = vl->side;
        l->other = vl->side == PV_SERVER ? PV_CLIENT : PV_SERVER;
        for (unsigned b = 0; b < PV_IVSHM_XIRQS; b++)
                l->xirq[b] = (struct ivs_xirq){ .l = l, .bit = b, .fd = -1 };
        vl->hv = l;
        for (int i = 0; i < PV_REGION_COUNT; i++)
                vl->region[i].fd = -1;
        uv_timer_init(vl->pvd->loop, &l->timer);
        l->timer.data = l;
        size_t sizes[PV_REGION_COUNT];
        uint64_t rs[PV_REGION_COUNT];
        pvd_vlink_region_sizes(vl, sizes);
        for (int r = 0; r < PV_REGION_COUNT; r++)
                rs[r] = sizes[r];
        if (pv_ivshm_layout(rs, vl->cfg->hv_heap, &l->lay) < 0) {
                pv_err("vlink %s: its memory does not fit in 64 bits", vl->cfg->link_name);
                return -EINVAL;
        }
        int n = snprintf(l->path, sizeof(l->path), "%s/%s.%s.sock", g->dir, vl->cfg->link_name, vl->pvd->vm_name);
        if (n < 0 || (size_t)n >= sizeof(l->path)) {
                pv_err("vlink %s: the ivshmem directory path is too long for a socket", vl->cfg->link_name);
                return -ENAMETOOLONG;
        }
        schedule(l, 0);
        return 0;
}

static void ivs_free(uv_handle_t *h)
{
        free(h->data);
}

static void ivs_stop(struct pvd_vlink *vl)
{
        struct ivs_link *l = ivs(vl);
        if (!l)
                return;
        disconnect(l);
        uv_timer_stop(&l->timer);
        vl->hv = NULL;
        uv_close((uv_handle_t *)&l->timer, ivs_free);
}

static void ivs_reset(struct pvd_vlink *vl)
{
        go_down(ivs(vl), NULL);
}

static int ivs_notify(struct pvd_vlink *vl)
{
        struct ivs_link *l = ivs(vl);
        if (!l->own || !joined(l))
                return -ENOTCONN;
        atomic_fetch_or_explicit(PV_A32(&l->peer_area->causes), PV_IVSHM_CAUSE_RING, memory_order_release);
        return ivs_ring(l, PV_IVSHM_VEC_LINK);
}

/* ---- status ----------------------------------------------------------------------------------- */

static void ivs_status(struct pvd_vlink *vl, void *pkv)
{
        msgpack_packer *pk = pkv;
        struct ivs_link *l = ivs(vl);
        unsigned xirqs = 0;
        for (unsigned b = 0; b < PV_IVSHM_XIRQS; b++)
                xirqs += l->xirq[b].fd >= 0;
        msgpack_pack_map(pk, 15);
        pvd_pack_kv_str(pk, "hv", "ivshmem");
        pvd_pack_kv_str(pk, "link_socket", l->path);
        pvd_pack_kv_str(pk, "face", l->pci ? "guest" : "host");
        pvd_pack_kv_str(pk, "device", l->pci ? ivpci_bdf(l->pci) : "");
        pvd_pack_kv_i64(pk, "peer_id", l->mem ? face_own_id(l) : -1);
        pvd_pack_kv_u64(pk, "memory_size", l->lay.size);
        pvd_pack_kv_u64(pk, "generation", l->gen);
        pvd_pack_kv_u64(pk, "connects", l->connects);
        pvd_pack_kv_u64(pk, "doorbells_sent", l->rings_sent);
        pvd_pack_kv_u64(pk, "doorbells_received", l->rings_recv);
        pvd_pack_kv_u64(pk, "program_xirqs", xirqs);
        pvd_pack_kv_u64(pk, "grants_out", l->own_grant.n);
        pvd_pack_kv_u64(pk, "grants_in", l->peer_grant.n);
        pvd_pack_kv_u64(pk, "heap_used", l->heap.used);
        pvd_pack_kv_u64(pk, "heap_size", l->lay.heap[l->side].size);
}

static void ivs_global_status(struct pvd *pvd, void *pkv)
{
        msgpack_packer *pk = pkv;
        struct ivs_global *g = pvd->hv_priv;
        msgpack_pack_map(pk, 2);
        pvd_pack_kv_str(pk, "face", g && g->guest ? "guest" : "host");
        pvd_pack_kv_str(pk, "ivshmem_dir", g && !g->guest ? g->dir : "");
}

const struct hv_backend hv_ivshmem = {
        .name = "ivshmem",
        .summary = "QEMU's ivshmem-doorbell: one shared memory and doorbells per vlink, served by pvhv",
        .options = ivs_options,
        .caps = 0,
        .init = ivs_init,
        .fini = ivs_fini,
        .start = ivs_start,
        .stop = ivs_stop,
        .reset = ivs_reset,
        .notify = ivs_notify,
        .ring_msg = ivs_ring_msg,
        .xirq_alloc = ivs_xirq_alloc,
        .xirq_get = ivs_xirq_get,
        .xirq_free = ivs_xirq_free,
        .mem_alloc = ivs_mem_alloc,
        .mem_free = ivs_mem_free,
        .grant = ivs_grant,
        .grant_get = ivs_grant_get,
        .grant_revoke = ivs_grant_revoke,
        .status = ivs_status,
        .global_status = ivs_global_status,
};
