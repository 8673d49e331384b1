/* ivshmem-hostile-guest: a hostile guest, run inside a QEMU guest
 * (scripts/vm.sh --add) by the qemu suite (tests/test-qemu-hostile.sh).
 *
 *   ivshmem-hostile-guest LINK lies
 *     with this guest's pvd stopped, it takes the vlink's ivshmem device
 *     through VFIO (daemon/hv/ivshmem-pci.c) and plays the client side's
 *     pvd, a lying one, against the real pvd of the server side. After
 *     each lie the server must leave the generation it was in (the vlink
 *     resets), and offer a fresh one, which this program joins before the
 *     next lie:
 *       storm     it rings the server's doorbells through BAR0 as fast as
 *                 it can;
 *       grant     it announces a grant outside its heap on the control ring;
 *       heartbeat it stops its heartbeat while it says ON;
 *       gen       it claims a generation it was not offered;
 *       scribble  it writes garbage over the control region, pvhv's
 *                 header, its own area and the server's area, and rings;
 *     then it joins once more (the vlink came back) and leaves.
 *   ivshmem-hostile-guest LINK scribble SECONDS
 *     beside this guest's running pvd, it maps BAR2 through sysfs (the
 *     resource2 file) and scribbles both sides' areas, the regions and
 *     pvhv's header for SECONDS.
 *
 * What it sees of the server is what the server writes in its area: read
 * once per look, as a pvd does. Prints a line per step; exit 0 when every
 * lie reset the vlink and it came back, 1 otherwise, 2 on bad usage or no
 * device.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hv/ivshmem-pci.h"
#include "pv-atomic.h"
#include "pv-ivshmem.h"
#include "pv-ring.h"
#include "pv-vlink.h"

#define JOIN_MS  10000  /* the server offers a generation this soon */
#define RESET_MS 5000   /* the server leaves a generation this soon after a lie */

static struct ivpci *dev;
static uint8_t *mem;
static struct pv_ivshm_hdr lay;         /* the header as checked at open */
static struct pv_ivshm_side *own, *srv;
static uint32_t srv_id;                 /* the server's peer id before any scribble */
static atomic_bool beating = true, stop_beat;

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        printf("ivshmem-hostile-guest: ");
        vprintf(fmt, ap);
        printf("\n");
        fflush(stdout);
        va_end(ap);
}

static void *beat_main(void *arg)
{
        (void)arg;
        while (!atomic_load(&stop_beat)) {
                if (atomic_load(&beating))
                        shm_store64(&own->heartbeat, shm_read64(&own->heartbeat) + 1);
                usleep(PV_IVSHM_BEAT_MS * 1000);
        }
        return NULL;
}

/* The server's peer id as pvhv last wrote it (read once, checked), or the
 * one seen before a scribble of the header. */
static uint32_t server_id(void)
{
        const struct pv_ivshm_presence *p = &((const struct pv_ivshm_hdr *)mem)->presence[PV_SERVER];
        uint32_t present = shm_read32(&p->present), id = shm_read32(&p->peer_id);
        if (present == 1 && id && id <= PV_IVSHM_PEER_ID_MAX && PV_IVSHM_PEER_SIDE(id) == PV_SERVER)
                srv_id = id;
        return srv_id;
}

static void ring(unsigned vec)
{
        uint32_t id = server_id();
        if (id)
                ivpci_ring(dev, id, vec);
}

struct view {
        uint32_t magic, state, gen;
};

static struct view server_view(void)
{
        struct view v;
        v.magic = shm_read32(&srv->magic);
        v.state = ring_load_acquire(&srv->state);
        v.gen = shm_read32(&srv->gen);
        return v;
}

/* Join the first generation the server offers after `after`, as a client
 * pvd does, and wait until the server is ON in it. The generation, or 0. */
static uint32_t join(uint32_t after)
{
        long long end = now_ms() + JOIN_MS;
        uint32_t gen = 0;
        while (now_ms() < end) {
                struct view v = server_view();
                if (!gen && v.magic == PV_IVSHM_SIDE_MAGIC && v.state == PV_IVSHM_READY && v.gen != after) {
                        gen = v.gen;
                        ring_store_relaxed(&own->gen, gen);
                        ring_store_release(&own->state, PV_IVSHM_ON);
                        ring(PV_IVSHM_VEC_LINK);
                }
                if (gen && v.magic == PV_IVSHM_SIDE_MAGIC && v.state == PV_IVSHM_ON && v.gen == gen)
                        return gen;
                if (gen && (v.state != PV_IVSHM_READY || v.gen != gen) && v.state != PV_IVSHM_ON)
                        gen = 0; /* the offer went away: wait for the next */
                usleep(5 * 1000);
        }
        return 0;
}

/* The server left generation gen (the vlink reset): after how many ms, or
 * -1. "Left" is what the server itself writes: its magic, and a state that
 * is not ON in gen. */
static long long reset_seen(uint32_t gen, long long since, int wait_ms)
{
        long long end = now_ms() + wait_ms;
        do {
                struct view v = server_view();
                if (v.magic == PV_IVSHM_SIDE_MAGIC && (v.state != PV_IVSHM_ON || v.gen != gen))
                        return now_ms() - since;
                if (wait_ms)
                        usleep(2 * 1000);
        } while (now_ms() < end);
        return -1;
}

static int failed;

static void verdict(const char *lie, uint32_t gen, long long t0, int wait_ms)
{
        long long ms = reset_seen(gen, t0, wait_ms);
        if (ms < 0) {
                say("%s: the server stayed ON in generation %u for %d ms", lie, gen, wait_ms);
                failed = 1;
        } else {
                say("%s: the server left generation %u after %lld ms (the vlink reset)", lie, gen, ms);
        }
}

static void scribble(void *p, size_t n, unsigned seed)
{
        volatile uint8_t *b = p;
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)(seed * 2654435761u >> 24) ^ (uint8_t)(i * 31);
}

static int lies(const char *link)
{
        char err[512];
        int rc = ivpci_open(link, NULL, &dev, err, sizeof(err));
        if (rc < 0) {
                say("%s (%s); is this guest's pvd stopped?", err, strerror(-rc));
                return 2;
        }
        mem = ivpci_mem(dev);
        lay = *ivpci_header(dev);
        uint32_t own_id = ivpci_own_id(dev);
        if (!own_id || PV_IVSHM_PEER_SIDE(own_id) != PV_CLIENT) {
                say("this guest is not the client side of %s (peer id %u): run it in %s", link, own_id,
                    lay.vm[PV_CLIENT]);
                ivpci_close(dev);
                return 2;
        }
        own = (struct pv_ivshm_side *)(mem + lay.side[PV_CLIENT].offset);
        srv = (struct pv_ivshm_side *)(mem + lay.side[PV_SERVER].offset);
        memset(own, 0, sizeof(*own));
        ring_store_relaxed(&own->incarnation, (uint32_t)now_ms() * 2654435761u);
        ring_store_relaxed(&own->peer_id, own_id);
        ring_store_release(&own->magic, PV_IVSHM_SIDE_MAGIC);
        pthread_t beat;
        if (pthread_create(&beat, NULL, beat_main, NULL) != 0) {
                ivpci_close(dev);
                return 2;
        }
        say("device %s: vlink %s, %s is the server; this guest lies as %s", ivpci_bdf(dev), lay.link_name,
            lay.vm[PV_SERVER], lay.vm[PV_CLIENT]);

        uint32_t gen = join(0);
        if (!gen) {
                say("the server offered no generation within %d ms", JOIN_MS);
                failed = 1;
                goto out;
        }
        say("joined generation %u", gen);

        /* A storm: rings as fast as BAR0 takes them, until the server
         * resets or RESET_MS pass. */
        long long t0 = now_ms();
        unsigned long rings = 0;
        while (reset_seen(gen, t0, 0) < 0 && now_ms() - t0 < RESET_MS) {
                for (int i = 0; i < 2000; i++, rings++)
                        ivpci_ring(dev, srv_id, i & 1 ? PV_IVSHM_VEC_XIRQ : PV_IVSHM_VEC_LINK);
        }
        long long took = now_ms() - t0;
        say("storm: %lu doorbells in %lld ms (%.0f a second)", rings, took, took ? rings * 1000.0 / took : 0.0);
        verdict("storm", gen, t0, 1);

        /* A grant outside its heap (the control region's first page). */
        if (!(gen = join(gen)))
                goto gone;
        struct pv_vlink_ctl *ctl = (struct pv_vlink_ctl *)(mem + lay.region[PV_REGION_CTL].offset);
        struct pv_ring tx;
        struct pv_ivshm_ann a = { .id = 1, .offset = lay.region[PV_REGION_CTL].offset, .size = PV_IVSHM_PAGE };
        t0 = now_ms();
        if (pv_ring_init(&tx, &ctl->c2s, (uint8_t *)ctl + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false) < 0 ||
            pv_ring_send(&tx, PV_TAG(PV_DRV_CORE, PV_IVSHM_ANN_GRANT_NEW), &a, sizeof(a)) < 0) {
                say("grant: cannot write the control ring");
                failed = 1;
        }
        ring(PV_IVSHM_VEC_LINK);
        verdict("grant outside its heap", gen, t0, RESET_MS);

        /* A pvd that stops while its VM lives: no heartbeat. */
        if (!(gen = join(gen)))
                goto gone;
        t0 = now_ms();
        atomic_store(&beating, false);
        verdict("no heartbeat", gen, t0, RESET_MS);
        atomic_store(&beating, true);

        /* A generation it was not offered. */
        if (!(gen = join(gen)))
                goto gone;
        t0 = now_ms();
        ring_store_relaxed(&own->gen, gen + 77);
        ring(PV_IVSHM_VEC_LINK);
        verdict("a generation it was not offered", gen, t0, RESET_MS);

        /* Scribbles: the control region, pvhv's header, both areas. */
        if (!(gen = join(gen)))
                goto gone;
        t0 = now_ms();
        scribble(mem + lay.region[PV_REGION_CTL].offset, lay.region[PV_REGION_CTL].size, 1);
        scribble(mem, PV_IVSHM_PAGE, 2);
        scribble(own, sizeof(*own), 3);
        scribble(srv, sizeof(*srv), 4);
        ring(PV_IVSHM_VEC_LINK);
        ring(PV_IVSHM_VEC_XIRQ);
        verdict("scribbles", gen, t0, RESET_MS);

        /* Behave: a clean area, and the vlink comes back. */
        memset(own, 0, sizeof(*own));
        ring_store_relaxed(&own->incarnation, (uint32_t)now_ms() * 2654435761u);
        ring_store_relaxed(&own->peer_id, own_id);
        ring_store_release(&own->magic, PV_IVSHM_SIDE_MAGIC);
        if (!(gen = join(gen)))
                goto gone;
        say("the vlink came back: joined generation %u", gen);
        goto out;
gone:
        say("the server offered no new generation within %d ms", JOIN_MS);
        failed = 1;
out:
        ring_store_release(&own->state, PV_IVSHM_OFF);
        ring(PV_IVSHM_VEC_LINK);
        atomic_store(&stop_beat, true);
        pthread_join(beat, NULL);
        ivpci_close(dev);
        return failed;
}

/* A third mapping beside this guest's own pvd: BAR2 through sysfs. */
static int scribble_beside(const char *link, int seconds)
{
        char bdf[IVPCI_BDF_MAX], err[512], path[128];
        struct pv_ivshm_hdr h;
        int rc = ivpci_find("/sys", link, bdf, &h, err, sizeof(err));
        if (rc < 0) {
                say("%s", err);
                return 2;
        }
        snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource2", bdf);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        void *p = fd < 0 ? MAP_FAILED : mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (fd >= 0)
                close(fd);
        if (p == MAP_FAILED) {
                say("%s: cannot map: %s", path, strerror(errno));
                return 2;
        }
        uint8_t *m = p;
        long long end = now_ms() + seconds * 1000LL;
        unsigned v = 1;
        for (; now_ms() < end; v++) {
                for (int s = 0; s < 2; s++)
                        scribble(m + h.side[s].offset, sizeof(struct pv_ivshm_side), v + (unsigned)s);
                for (int r = 0; r < PV_REGION_COUNT; r++)
                        if (h.region[r].size)
                                scribble(m + h.region[r].offset, h.region[r].size < 65536 ? h.region[r].size : 65536,
                                         v * 7 + (unsigned)r);
                scribble(m, PV_IVSHM_PAGE, v * 13);
                usleep(1000);
        }
        munmap(p, h.size);
        say("scribbled the areas, the regions and the header of %s (%s) %u times in %d s", link, bdf, v - 1,
            seconds);
        return 0;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc == 3 && strcmp(argv[2], "lies") == 0)
                return lies(argv[1]);
        if (argc == 4 && strcmp(argv[2], "scribble") == 0)
                return scribble_beside(argv[1], atoi(argv[3]));
        fprintf(stderr, "usage: ivshmem-hostile-guest LINK lies | LINK scribble SECONDS\n");
        return 2;
}
