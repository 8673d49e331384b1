/* The ivshmem backend under hostile input (demo platform on pvhv, whatever
 * PVT_HV says):
 *   - a fake vm3 joins pvhv in place of vm3's pvd and lies: it rings vm2's
 *     doorbells in a storm, announces a grant outside its heap, claims a
 *     generation it was not offered, scribbles the control region, the
 *     header and its own area; each time vm2 resets the vlink, keeps
 *     running, and offers a fresh generation;
 *   - a third mapping of the vlink's memory scribbles everything while the
 *     real vm2 and vm3 are ON: both survive, and the vlink comes back ON by
 *     itself once the scribbling stops;
 * then the real vm3 joins and the seed's VRPQ walkthrough runs across it.
 * pvhv never reads the memory: it stays up through all of it, and writes
 * the scribbled header again by itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "config.h"
#include "hv/hv.h"
#include "hv/ivshmem-sock.h"
#include "pv-atomic.h"
#include "pv-ivshmem.h"
#include "pv-ring.h"
#include "pv-vlink.h"
#include "vbpipe-proto.h"
#include "pvtest.h"
#include "pvt-run.h"

#define LINK "vm2-vm3-vogl0"

static struct pvt_platform plat;
static const char *vrpq_server, *vrpq_client;

struct fake {
        pthread_t beat;
        atomic_bool beating, stop;
        struct ivsock *s;
        uint8_t *mem;
        uint64_t size;
        struct pv_ivshm_hdr lay;    /* as pvhv wrote it */
        struct pv_ivshm_side *own, *vm2;
        struct pv_ring tx;          /* client -> server control ring */
};

/* The fake's heartbeat, as a pvd beats while it lives. */
static void *beat_main(void *arg)
{
        struct fake *f = arg;
        while (!atomic_load(&f->stop)) {
                if (atomic_load(&f->beating))
                        shm_store64(&f->own->heartbeat, shm_read64(&f->own->heartbeat) + 1);
                usleep(PV_IVSHM_BEAT_MS * 1000);
        }
        return NULL;
}

static bool alive(pid_t pid)
{
        return pid > 0 && kill(pid, 0) == 0;
}

static int fake_join(struct fake *f)
{
        memset(f, 0, sizeof(*f));
        char path[256];
        snprintf(path, sizeof(path), "%s/%s.vm3.sock", plat.platform_dir, LINK);
        int rc = ivsock_connect(path, &f->s);
        long long end = pvt_now_ms() + 5000;
        while (rc == 0 && !ivsock_ready(f->s) && pvt_now_ms() < end) {
                struct pollfd pf = { .fd = ivsock_fd(f->s), .events = POLLIN };
                poll(&pf, 1, 100);
                rc = ivsock_read(f->s, NULL);
        }
        if (rc < 0 || !ivsock_ready(f->s))
                return rc < 0 ? rc : -ETIMEDOUT;
        f->size = ivsock_mem_size(f->s);
        f->mem = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED, ivsock_mem_fd(f->s), 0);
        if (f->mem == MAP_FAILED)
                return -errno;
        memcpy(&f->lay, f->mem, sizeof(f->lay));
        f->own = (struct pv_ivshm_side *)(f->mem + f->lay.side[PV_CLIENT].offset);
        f->vm2 = (struct pv_ivshm_side *)(f->mem + f->lay.side[PV_SERVER].offset);
        memset(f->own, 0, sizeof(*f->own));
        f->own->incarnation = 0x12345678;
        ring_store_release(&f->own->magic, PV_IVSHM_SIDE_MAGIC);
        atomic_store(&f->beating, true);
        return pthread_create(&f->beat, NULL, beat_main, f) == 0 ? 0 : -EAGAIN;
}

static void fake_leave(struct fake *f)
{
        if (f->own) {
                atomic_store(&f->stop, true);
                pthread_join(f->beat, NULL);
        }
        if (f->mem && f->mem != MAP_FAILED)
                munmap(f->mem, f->size);
        ivsock_close(f->s);
        memset(f, 0, sizeof(*f));
}

static uint32_t vm2_id(struct fake *f)
{
        uint32_t ids[4];
        ivsock_read(f->s, NULL);
        return ivsock_peers(f->s, ids, 4) ? ids[0] : 0;
}

static void fake_ring(struct fake *f, unsigned vec)
{
        uint32_t id = vm2_id(f);
        if (id)
                ivsock_ring(f->s, id, vec);
}

/* Wait until vm2 offers a generation (READY); join it as a client would.
 * The generation, or 0. */
static uint32_t fake_join_gen(struct fake *f, uint32_t after)
{
        long long end = pvt_now_ms() + 5000;
        while (pvt_now_ms() < end) {
                ivsock_read(f->s, NULL);
                uint32_t state = ring_load_acquire(&f->vm2->state), gen = f->vm2->gen;
                if (state == PV_IVSHM_READY && gen != after) {
                        struct pv_vlink_ctl *ctl = (struct pv_vlink_ctl *)(f->mem + f->lay.region[PV_REGION_CTL].offset);
                        pv_ring_init(&f->tx, &ctl->c2s, (uint8_t *)ctl + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false);
                        f->own->gen = gen;
                        ring_store_release(&f->own->state, PV_IVSHM_ON);
                        fake_ring(f, PV_IVSHM_VEC_LINK);
                        return gen;
                }
                usleep(10 * 1000);
        }
        return 0;
}

/* How many times vm's log says needle. */
static int log_count(const char *vm, const char *needle)
{
        static char buf[1 << 20];
        int n = 0;
        if (pvt_read_file(pvt_vm(&plat, vm)->log, buf, sizeof(buf)) > 0)
                for (const char *p = buf; (p = strstr(p, needle)); p++)
                        n++;
        return n;
}

/* The VRPQ walkthrough across the vlink: server in vm2, client in vm3
 * (vrpq-client VALUE COUNT: COUNT requests carrying VALUE). */
static void walkthrough(const char *value, const char *count)
{
        static char out[4096], err[4096];
        const char *srv[] = { vrpq_server, NULL }, *clt[] = { vrpq_client, value, count, NULL };
        pid_t s = fork();
        if (s == 0) {
                setenv("PVD_RUNTIME_DIR", pvt_vm(&plat, "vm2")->rt, 1);
                int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);
                dup2(dn, 1);
                execv(srv[0], (char *const *)srv);
                _exit(127);
        }
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm3", clt, out, sizeof(out), err, sizeof(err), 10000), 0);
        CU_ASSERT_EQUAL(pvt_wait(s, 10000), 0);
}

/* vm2 logged needle (at least count times) within timeout_ms. */
static bool vm2_logged(const char *needle, int count, int timeout_ms)
{
        long long end = pvt_now_ms() + timeout_ms;
        do {
                if (log_count("vm2", needle) >= count)
                        return true;
                usleep(20 * 1000);
        } while (pvt_now_ms() < end);
        return false;
}

static void test_fake_peer(void)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        struct fake f;
        CU_ASSERT_EQUAL_FATAL(fake_join(&f), 0);
        uint32_t gen = fake_join_gen(&f, 0);
        CU_ASSERT_FATAL(gen != 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);

        /* A doorbell storm. */
        int efd = ivsock_peer_vector_fd(f.s, vm2_id(&f), PV_IVSHM_VEC_LINK);
        CU_ASSERT_FATAL(efd >= 0);
        uint64_t one = 1;
        long long end = pvt_now_ms() + 5000;
        bool seen = false;
        while (!seen && pvt_now_ms() < end) {
                for (int i = 0; i < 100000; i++)
                        if (write(efd, &one, sizeof(one)) != sizeof(one))
                                break;
                seen = vm2_logged("rings its doorbells in a storm", 1, 0);
        }
        CU_ASSERT(seen);
        CU_ASSERT(alive(pvt_vm(&plat, "vm2")->pid));
        usleep(1200 * 1000); /* the storm's second is over */

        /* A grant outside its heap, on the control ring. */
        uint32_t g2 = fake_join_gen(&f, gen);
        CU_ASSERT_FATAL(g2 != 0 && g2 != gen);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);
        struct pv_ivshm_ann a = { .id = 1, .offset = f.lay.region[PV_REGION_CTL].offset, .size = 4096 };
        CU_ASSERT_EQUAL(pv_ring_send(&f.tx, PV_TAG(PV_DRV_CORE, PV_IVSHM_ANN_GRANT_NEW), &a, sizeof(a)), 0);
        fake_ring(&f, PV_IVSHM_VEC_LINK);
        CU_ASSERT(vm2_logged("outside its heap", 1, 3000));
        CU_ASSERT(alive(pvt_vm(&plat, "vm2")->pid));

        /* Its pvd "dies" while its VM lives (the connection stays): the
         * heartbeat stops, and vm2 sees it within 2 s. */
        uint32_t gb = fake_join_gen(&f, g2);
        CU_ASSERT_FATAL(gb != 0 && gb != g2);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);
        long long t0 = pvt_now_ms();
        atomic_store(&f.beating, false);
        CU_ASSERT(vm2_logged("no heartbeat", 1, 3000));
        long long took = pvt_now_ms() - t0;
        CU_ASSERT(took < 2000 + 200); /* 2 s, and the time to read a log */
        printf("(seen after %lld ms) ", took);
        atomic_store(&f.beating, true);
        g2 = gb;

        /* A generation it was not offered. */
        uint32_t g3 = fake_join_gen(&f, g2);
        CU_ASSERT_FATAL(g3 != 0 && g3 != g2);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);
        f.own->gen = g3 + 77;
        fake_ring(&f, PV_IVSHM_VEC_LINK);
        CU_ASSERT(vm2_logged("the peer's pvd left the link", 1, 3000));

        /* Scribbles: the control region, pvhv's header, its own area. */
        uint32_t g4 = fake_join_gen(&f, g3);
        CU_ASSERT_FATAL(g4 != 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);
        memset(f.mem + f.lay.region[PV_REGION_CTL].offset, 0xa5, f.lay.region[PV_REGION_CTL].size);
        fake_ring(&f, PV_IVSHM_VEC_LINK);
        CU_ASSERT(vm2_logged("resetting the link", 1, 3000));
        memset(f.mem, 0x5a, PV_IVSHM_PAGE);
        for (uint64_t i = 0; i < sizeof(*f.own); i++)
                ((volatile uint8_t *)f.own)[i] = (uint8_t)rand();
        fake_ring(&f, PV_IVSHM_VEC_LINK);
        fake_ring(&f, PV_IVSHM_VEC_XIRQ);
        usleep(300 * 1000);
        CU_ASSERT(alive(pvt_vm(&plat, "vm2")->pid));
        CU_ASSERT(alive(plat.pvhv));
        fake_leave(&f);

        /* The real vm3: pvhv rewrites its header at the join, vm2 offers a
         * fresh generation, and the walkthrough runs across it. */
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000), 0);
        walkthrough("5", "20");
}

/* The memory object of a vlink, as a third party that got hold of it. */
static uint8_t *mapping_of(const char *link, size_t *size)
{
        char name[96];
        snprintf(name, sizeof(name), "pvhv:%s", link);
        char dir[64], path[320], target[256];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)plat.pvhv);
        DIR *d = opendir(dir);
        int fd = -1;
        for (struct dirent *e; d && fd < 0 && (e = readdir(d));) {
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                if (n <= 0)
                        continue;
                target[n] = 0;
                if (strstr(target, name))
                        fd = open(path, O_RDWR | O_CLOEXEC);
        }
        if (d)
                closedir(d);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
                if (fd >= 0)
                        close(fd);
                return NULL;
        }
        *size = (size_t)st.st_size;
        uint8_t *p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        return p == MAP_FAILED ? NULL : p;
}

static uint8_t *third_mapping(size_t *size)
{
        return mapping_of(LINK, size);
}

static void test_third_mapping(void)
{
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000), 0);
        size_t size = 0;
        uint8_t *mem = third_mapping(&size);
        CU_ASSERT_FATAL(mem != NULL);
        struct pv_ivshm_hdr h;
        memcpy(&h, mem, sizeof(h));
        /* Everything pvd reads: both sides' areas, the regions, the heaps'
         * first pages; the header last. */
        long long end = pvt_now_ms() + 1000;
        for (unsigned v = 1; pvt_now_ms() < end; v++) {
                for (int s = 0; s < 2; s++)
                        memset(mem + h.side[s].offset, (int)(v * 31), sizeof(struct pv_ivshm_side));
                for (int r = 0; r < PV_REGION_COUNT; r++)
                        if (h.region[r].size)
                                memset(mem + h.region[r].offset, (int)(v * 17), h.region[r].size < 65536
                                                                                 ? h.region[r].size : 65536);
                usleep(1000);
        }
        memset(mem, 0, PV_IVSHM_PAGE);
        /* pvhv writes its header again by itself: a pvd restarting in a
         * guest makes no rejoin that would. */
        long long until = pvt_now_ms() + 3000;
        while (memcmp(mem, &h, offsetof(struct pv_ivshm_hdr, presence)) != 0 && pvt_now_ms() < until)
                usleep(20 * 1000);
        CU_ASSERT_EQUAL(memcmp(mem, &h, offsetof(struct pv_ivshm_hdr, presence)), 0);
        munmap(mem, size);
        CU_ASSERT(alive(pvt_vm(&plat, "vm2")->pid));
        CU_ASSERT(alive(pvt_vm(&plat, "vm3")->pid));
        CU_ASSERT(alive(plat.pvhv));
        /* Each pvd writes its own area again and pvhv its header: the
         * vlink comes back ON with no restart. */
        int on3 = pvt_wait_vlink(&plat, "vm3", LINK, "ON", 5000), on2 = pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000);
        CU_ASSERT_EQUAL(on3, 0);
        CU_ASSERT_EQUAL(on2, 0);
        if (on3 || on2)
                pvt_show_logs(&plat, 3000);
        /* And a rejoin (here vm3's) finds it whole. */
        pvt_pvd_stop(&plat, "vm3", SIGTERM);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000), 0);
        walkthrough("9", "10");
}

/* A client pvd's late writes from the generation it leaves. The client's
 * pvd stops while ON; the server sees its heartbeat stop and offers a new
 * generation, one only, and waits (the client's area still says ON in the
 * old one). Then the writes the client made in the old generation land
 * after the server cleared the regions (written here, as if its last
 * stores had been that late): in the control ring, a producer index with a
 * record of zeros behind it, a producer asleep, a consumer index; in a
 * vbpipe's byte rings the same. The client goes on, sees the new generation
 * and joins it: the server must read none of that as the new generation's
 * (the zero record would be a malformed message and reset the vlink; the
 * zero bytes, a conversation's first bytes). */
static void late_writes(const char *link, const char *server, const char *client, uint64_t vbpipe_off)
{
        CU_ASSERT_EQUAL_FATAL(pvt_wait_vlink(&plat, server, link, "ON", 5000), 0);
        CU_ASSERT_EQUAL_FATAL(pvt_wait_vlink(&plat, client, link, "ON", 5000), 0);
        size_t size = 0;
        uint8_t *mem = mapping_of(link, &size);
        CU_ASSERT_FATAL(mem != NULL);
        struct pv_ivshm_hdr h;
        memcpy(&h, mem, sizeof(h));
        struct pv_ivshm_side *srv = (struct pv_ivshm_side *)(mem + h.side[PV_SERVER].offset);
        struct pv_vlink_ctl *ctl = (struct pv_vlink_ctl *)(mem + h.region[PV_REGION_CTL].offset);
        struct vbpipe_region *vb = vbpipe_off ? (struct vbpipe_region *)(mem + vbpipe_off) : NULL;
        uint32_t gen = shm_read32(&srv->gen);
        int resets = log_count(server, "resetting the link");
        pid_t cpid = pvt_vm(&plat, client)->pid;
        CU_ASSERT_FATAL(kill(cpid, SIGSTOP) == 0);
        long long end = pvt_now_ms() + 5000;
        while ((ring_load_acquire(&srv->state) != PV_IVSHM_READY || shm_read32(&srv->gen) == gen) &&
               pvt_now_ms() < end)
                usleep(10 * 1000);
        uint32_t offered = shm_read32(&srv->gen);
        bool ready = ring_load_acquire(&srv->state) == PV_IVSHM_READY && offered != gen;
        CU_ASSERT(ready);
        if (ready) {
                /* Four heartbeat periods: the server makes no other generation. */
                usleep(4 * PV_IVSHM_BEAT_MS * 1000);
                CU_ASSERT_EQUAL(shm_read32(&srv->gen), offered);
                CU_ASSERT_EQUAL(ring_load_acquire(&srv->state), PV_IVSHM_READY);
        }
        ring_store_relaxed(&ctl->c2s.prod, 8);
        ring_store_relaxed(&ctl->c2s.prod_wait, 1);
        ring_store_relaxed(&ctl->s2c.cons, 64);
        ring_store_relaxed(&ctl->s2c.cons_wait, 1);
        if (vb) {
                ring_store_relaxed(&vb->c2s.prod, 24);
                ring_store_relaxed(&vb->c2s.prod_wait, 1);
                ring_store_relaxed(&vb->s2c.cons, 40);
        }
        CU_ASSERT_FATAL(kill(cpid, SIGCONT) == 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, client, link, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, server, link, "ON", 5000), 0);
        if (vb) {
                /* No conversation since: nothing else wrote them. */
                CU_ASSERT_EQUAL(ring_load_relaxed(&vb->c2s.prod), 0);
                CU_ASSERT_EQUAL(ring_load_relaxed(&vb->c2s.prod_wait), 0);
                CU_ASSERT_EQUAL(ring_load_relaxed(&vb->s2c.cons), 0);
        }
        usleep(300 * 1000);
        int more = log_count(server, "resetting the link") - resets;
        CU_ASSERT_EQUAL(more, 0);
        if (more)
                pvt_show_logs(&plat, 3000);
        CU_ASSERT_EQUAL(shm_read32(&srv->gen), offered);
        CU_ASSERT_EQUAL(ring_load_relaxed(&ctl->c2s.prod_wait), 0);
        munmap(mem, size);
}

static void test_late_writes(void)
{
        late_writes(LINK, "vm2", "vm3", 0);
        walkthrough("3", "10");
        /* A vbpipe's rings too (vm2 serves, vm4 is the client). */
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        size_t size = 0;
        uint8_t *mem = mapping_of("vm2-vm4-vbpipe0", &size);
        CU_ASSERT_FATAL(mem != NULL);
        struct pv_ivshm_hdr h;
        memcpy(&h, mem, sizeof(h));
        munmap(mem, size);
        CU_ASSERT_FATAL(h.region[PV_REGION_VBPIPE].size != 0);
        late_writes("vm2-vm4-vbpipe0", "vm2", "vm4", h.region[PV_REGION_VBPIPE].offset);
        pvt_pvd_stop(&plat, "vm4", SIGTERM);
}

static int fds_before;

static int suite_init(void)
{
        fds_before = pvt_fd_count();
        setenv("PVT_HV", "ivshmem", 1);
        return pvt_platform_init(&plat, "demo") < 0 ? -1 : 0;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        if (left || pvt_fd_count() != fds_before)
                fprintf(stderr, "leftovers: %d, fds %d -> %d\n", left, fds_before, pvt_fd_count());
        return left || pvt_fd_count() != fds_before ? -1 : 0;
}

static const struct pvt_test tests[] = {
        { "a fake peer that lies and storms", test_fake_peer },
        { "a third mapping scribbles the vlink's memory", test_third_mapping },
        { "a client's late writes from the generation it left", test_late_writes },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "ivshmem-hostile", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

/* test-ivshmem-hostile VRPQ_SERVER VRPQ_CLIENT [pvt_main's options] */
int main(int argc, char **argv)
{
        if (argc < 3) {
                fprintf(stderr, "usage: test-ivshmem-hostile VRPQ_SERVER VRPQ_CLIENT [-t WORD]...\n");
                return 2;
        }
        vrpq_server = argv[1];
        vrpq_client = argv[2];
        argv[2] = argv[0];
        return pvt_main(argc - 2, argv + 2, suites);
}
