/* ivshmem-pci-probe: run inside a QEMU guest (scripts/vm.sh --add), checks
 * the guest face of a vlink's ivshmem device (daemon/hv/ivshmem-pci.c)
 * against a host-side peer of the same vlink (tests/ivshmem-peer.c):
 *   - ivpci_open finds the device by the vlink's name and the header pvhv
 *     wrote names this VM on the side its peer id says (and the other
 *     side's current id, which the probe rings);
 *   - ROUNDS round trips: the probe writes a fresh nonce in its side area
 *     of BAR2 and rings the peer's xIRQ vector through BAR0; the peer
 *     answers with ~nonce in its own side area and rings back. The first
 *     round rings until the peer is there; each later one sleeps on the
 *     MSI-X eventfd (with a timeout) before it checks the answer;
 *   - the memory fd maps BAR2 at an offset in a process that dropped root
 *     (what pvd does for programs), and every fd is close-on-exec;
 *   - closing gives every fd back.
 * Prints the round trip times (figures, not checks). Exit 0 when all hold,
 * 1 with the reason otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hv/ivshmem-pci.h"

#define FIRST_WAIT_MS 30000     /* the peer may still be starting */
#define ROUND_WAIT_MS 5000
#define RESEND_MS     200

/* Says why on stderr, closes the device (d may be NULL), returns 1. */
static int fail(struct ivpci *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ivpci *d, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "ivshmem-pci-probe: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        ivpci_close(d);
        return 1;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int count_fds(void)
{
        int n = 0;
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static volatile uint64_t *side_word(struct ivpci *d, int side)
{
        const struct pv_ivshm_hdr *h = ivpci_header(d);
        return (volatile uint64_t *)((char *)ivpci_mem(d) + h->side[side].offset);
}

/* The other side's current peer id, as pvhv last wrote it in the header
 * (read once, checked: present, of that side, a doorbell can name it);
 * 0 while it is away. */
static uint32_t peer_now(struct ivpci *d, int other)
{
        const volatile struct pv_ivshm_presence *p = &((const struct pv_ivshm_hdr *)ivpci_mem(d))->presence[other];
        uint32_t present = p->present, id = p->peer_id;
        if (present != 1 || id == 0 || id > PV_IVSHM_PEER_ID_MAX || PV_IVSHM_PEER_SIDE(id) != (uint32_t)other)
                return 0;
        return id;
}

static void publish_and_ring(struct ivpci *d, int side, uint64_t nonce)
{
        *side_word(d, side) = nonce;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint32_t peer = peer_now(d, 1 - side);
        if (peer)
                ivpci_ring(d, peer, PV_IVSHM_VEC_XIRQ);
}

/* The first round: the peer may not be there yet, and a doorbell to an
 * absent peer is dropped, so ring again every RESEND_MS until ~nonce shows
 * up (or wait_ms pass: -ETIMEDOUT). Then take whatever interrupts came. */
static int first_round(struct ivpci *d, int side, uint64_t nonce, int wait_ms)
{
        int fd = ivpci_vector_fd(d, PV_IVSHM_VEC_XIRQ);
        volatile uint64_t *theirs = side_word(d, 1 - side);
        uint64_t start = now_ns();
        while (*theirs != ~nonce) {
                if (now_ns() - start > (uint64_t)wait_ms * 1000000u)
                        return -ETIMEDOUT;
                publish_and_ring(d, side, nonce);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                poll(&p, 1, RESEND_MS);
        }
        /* Let late interrupts of the resent rings arrive, then drop them. */
        usleep(100 * 1000);
        uint64_t v;
        while (read(fd, &v, sizeof(v)) == sizeof(v))
                ;
        return 0;
}

/* A round that only the interrupt can end: ring once, sleep on the MSI-X
 * eventfd, and only then look for the answer. Exactly one answer is due,
 * so the eventfd fires for this round and no other. 0; -ETIMEDOUT no
 * interrupt within wait_ms; -EPROTO an interrupt without the answer. */
static int irq_round(struct ivpci *d, int side, uint64_t nonce, int wait_ms)
{
        int fd = ivpci_vector_fd(d, PV_IVSHM_VEC_XIRQ);
        publish_and_ring(d, side, nonce);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, wait_ms);
        if (n < 0)
                return -errno;
        uint64_t v;
        if (n == 0 || read(fd, &v, sizeof(v)) != sizeof(v))
                return -ETIMEDOUT;
        /* The peer wrote the answer before it rang (a system call apart). */
        return *side_word(d, 1 - side) == ~nonce ? 0 : -EPROTO;
}

/* In a child that gave up root: map the page of the peer's side area
 * through the memory fd at its offset and read the peer's last answer. */
static int check_unprivileged_map(struct ivpci *d, int side, uint64_t expect)
{
        const struct pv_ivshm_hdr *h = ivpci_header(d);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (getuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
                        _exit(2);
                void *p = mmap(NULL, PV_IVSHM_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, ivpci_mem_fd(d),
                               (off_t)h->side[1 - side].offset);
                if (p == MAP_FAILED)
                        _exit(3);
                _exit(*(volatile uint64_t *)p == expect ? 0 : 4);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0)
                return -errno;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 5;
}

int main(int argc, char **argv)
{
        if (argc < 2 || argc > 3) {
                fprintf(stderr, "usage: ivshmem-pci-probe LINK [ROUNDS]\n");
                return 2;
        }
        const char *link = argv[1];
        unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 100;
        if (rounds == 0)
                rounds = 1;
        char err[512];
        int fds_before = count_fds();

        struct ivpci *d;
        int rc = ivpci_open(link, NULL, &d, err, sizeof(err));
        if (rc < 0)
                return fail(NULL, "%s (%s)", err, strerror(-rc));
        const struct pv_ivshm_hdr *h = ivpci_header(d);
        uint32_t own = ivpci_own_id(d);
        int side = own ? (int)PV_IVSHM_PEER_SIDE(own) : -1;
        printf("device %s: vlink %s (%s <-> %s), %" PRIu64 " bytes, peer id %u, %u vectors\n",
               ivpci_bdf(d), h->link_name, h->vm[0], h->vm[1], ivpci_mem_size(d), own, ivpci_vectors(d));
        if (side < 0)
                return fail(d, "peer id %u is not one pvhv gives a side", own);
        const char *vm = getenv("PVD_VM");
        if (vm && strcmp(vm, h->vm[side]) != 0)
                return fail(d, "the header names %s on this side, this guest is %s", h->vm[side], vm);
        int memfl = fcntl(ivpci_mem_fd(d), F_GETFD);
        int vecfl = fcntl(ivpci_vector_fd(d, PV_IVSHM_VEC_XIRQ), F_GETFD);
        if (memfl < 0 || !(memfl & FD_CLOEXEC) || vecfl < 0 || !(vecfl & FD_CLOEXEC))
                return fail(d, "a memory or vector fd is not close-on-exec");

        uint64_t seed = now_ns() ^ ((uint64_t)getpid() << 32), min = UINT64_MAX, max = 0, sum = 0;
        if (first_round(d, side, seed, FIRST_WAIT_MS) < 0)
                return fail(d, "no answer from %s in %d ms: is its peer on the host running?", h->vm[1 - side],
                            FIRST_WAIT_MS);
        for (unsigned i = 1; i < rounds; i++) {
                uint64_t t0 = now_ns();
                rc = irq_round(d, side, seed + i * 0x9e3779b97f4a7c15ull, ROUND_WAIT_MS);
                uint64_t dt = now_ns() - t0;
                if (rc == -ETIMEDOUT)
                        return fail(d, "round %u: no MSI-X interrupt in %d ms after ringing %s", i,
                                    ROUND_WAIT_MS, h->vm[1 - side]);
                if (rc < 0)
                        return fail(d, "round %u: an interrupt came without the answer of %s (%s)", i,
                                    h->vm[1 - side], strerror(-rc));
                min = dt < min ? dt : min;
                max = dt > max ? dt : max;
                sum += dt;
        }
        if (rounds > 1)
                printf("%u round trips guest -> %s -> guest, each ended by MSI-X vector %u: "
                       "min %.1f us, mean %.1f us, max %.1f us\n", rounds - 1, h->vm[1 - side],
                       PV_IVSHM_VEC_XIRQ, min / 1e3, sum / 1e3 / (rounds - 1), max / 1e3);

        uint64_t last = seed + (rounds - 1) * 0x9e3779b97f4a7c15ull;
        rc = check_unprivileged_map(d, side, ~last);
        if (rc != 0)
                return fail(d, "a process without root cannot map the memory fd at an offset "
                            "(child status %d: 2 setuid, 3 mmap, 4 wrong value)", rc);
        printf("memory fd maps at an offset in a process without root\n");

        ivpci_close(d);
        int fds_after = count_fds();
        if (fds_after != fds_before)
                return fail(NULL, "%d fds open before, %d after ivpci_close", fds_before, fds_after);
        printf("ivshmem-pci-probe: %u round trips ok\n", rounds);
        return 0;
}
