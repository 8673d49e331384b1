/* ivshmem-pci-probe: run inside a QEMU guest (scripts/vm.sh --add), checks
 * the guest face of a vlink's ivshmem device (daemon/hv/ivshmem-pci.c)
 * against a host-side peer of the same vlink (tests/ivshmem-peer.c):
 *   - ivpci_open finds the device by the vlink's name and the header pvhv
 *     wrote names this VM on the side its peer id says;
 *   - ROUNDS round trips: the probe writes a fresh nonce in its side area
 *     of BAR2 and rings the peer's xIRQ vector through BAR0; the peer
 *     answers with ~nonce in its own side area and rings back; the probe
 *     waits for that on its MSI-X eventfd (timeout) and checks the value;
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

/* Interrupts the MSI-X eventfd counted so far. */
static uint64_t irqs;

static int take_irqs(int fd, int wait_ms)
{
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, wait_ms) > 0) {
                uint64_t v;
                if (read(fd, &v, sizeof(v)) == sizeof(v))
                        irqs += v;
                else if (errno != EAGAIN)
                        return -errno;
        }
        return 0;
}

/* One round: publish nonce, ring, wait for ~nonce from the peer. Returns
 * 0, or -ETIMEDOUT. *resent counts doorbells rung again after RESEND_MS
 * without an answer (the peer was not there yet). */
static int round_trip(struct ivpci *d, int side, uint32_t peer, uint64_t nonce, int wait_ms, unsigned *resent)
{
        int fd = ivpci_vector_fd(d, PV_IVSHM_VEC_XIRQ);
        volatile uint64_t *mine = side_word(d, side), *theirs = side_word(d, 1 - side);
        uint64_t start = now_ns();
        *mine = nonce;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        ivpci_ring(d, peer, PV_IVSHM_VEC_XIRQ);
        uint64_t last_ring = start;
        for (;;) {
                if (*theirs == ~nonce)
                        return 0;
                uint64_t t = now_ns();
                if (t - start > (uint64_t)wait_ms * 1000000u)
                        return -ETIMEDOUT;
                if (t - last_ring > RESEND_MS * 1000000ull) {
                        ivpci_ring(d, peer, PV_IVSHM_VEC_XIRQ);
                        last_ring = t;
                        (*resent)++;
                }
                int rc = take_irqs(fd, RESEND_MS);
                if (rc < 0)
                        return rc;
        }
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
        int side = own == PV_IVSHM_PEER_ID(PV_SERVER) ? PV_SERVER : own == PV_IVSHM_PEER_ID(PV_CLIENT) ? PV_CLIENT : -1;
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

        uint32_t peer = PV_IVSHM_PEER_ID(1 - side);
        uint64_t seed = now_ns() ^ ((uint64_t)getpid() << 32), min = UINT64_MAX, max = 0, sum = 0;
        unsigned resent_first = 0, resent = 0;
        for (unsigned i = 0; i < rounds; i++) {
                uint64_t nonce = seed + i * 0x9e3779b97f4a7c15ull;
                uint64_t t0 = now_ns();
                rc = round_trip(d, side, peer, nonce, i ? ROUND_WAIT_MS : FIRST_WAIT_MS, i ? &resent : &resent_first);
                uint64_t dt = now_ns() - t0;
                if (rc < 0)
                        return fail(d, "round trip %u: no answer from %s in %d ms", i, h->vm[1 - side],
                                    i ? ROUND_WAIT_MS : FIRST_WAIT_MS);
                if (i) {        /* the first one waited for the peer to be there */
                        min = dt < min ? dt : min;
                        max = dt > max ? dt : max;
                        sum += dt;
                }
        }
        if (resent)
                return fail(d, "%u doorbells went unanswered once the peer was there", resent);
        /* Each answer after the first round rang once: the vector must have
         * fired for each (the last ones may still be on their way). */
        for (int i = 0; i < 20 && irqs < rounds - 1; i++)
                take_irqs(ivpci_vector_fd(d, PV_IVSHM_VEC_XIRQ), 100);
        if (irqs < rounds - 1)
                return fail(d, "%" PRIu64 " MSI-X interrupts for %u answers", irqs, rounds - 1);
        printf("MSI-X vector %u raised its eventfd %" PRIu64 " times\n", PV_IVSHM_VEC_XIRQ, irqs);
        if (rounds > 1)
                printf("%u round trips guest -> %s -> guest: min %.1f us, mean %.1f us, max %.1f us\n",
                       rounds - 1, h->vm[1 - side], min / 1e3, sum / 1e3 / (rounds - 1), max / 1e3);

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
