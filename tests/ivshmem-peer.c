/* ivshmem-peer: the host-process side of a vlink for ivshmem-pci-probe in a
 * guest. It joins pvhv's socket for its VM as pvd's ivshmem backend does
 * (daemon/hv/ivshmem-sock.c), prints "ready" once it has the memory and its
 * vectors, and then answers every ring of its xIRQ vector: it reads the
 * nonce the other side left in its side area (once, into a local), writes
 * its complement into its own side area and rings the other side back.
 * Stops on SIGTERM or when pvhv goes; prints how many rings it answered.
 *
 * usage: ivshmem-peer SOCKET
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hv/ivshmem-pci.h"
#include "hv/ivshmem-sock.h"

#define CONNECT_WAIT_MS 10000

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
        (void)sig;
        stop = 1;
}

static int connect_retry(const char *path, struct ivsock **s)
{
        for (int waited = 0;; waited += 50) {
                int rc = ivsock_connect(path, s);
                if (rc == 0 || (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN) ||
                    waited >= CONNECT_WAIT_MS)
                        return rc;
                usleep(50 * 1000);
        }
}

int main(int argc, char **argv)
{
        if (argc != 2) {
                fprintf(stderr, "usage: ivshmem-peer SOCKET\n");
                return 2;
        }
        struct sigaction sa = { .sa_handler = on_term };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        struct ivsock *s;
        int rc = connect_retry(argv[1], &s);
        if (rc < 0) {
                fprintf(stderr, "ivshmem-peer: %s: %s (is pvhv running?)\n", argv[1], strerror(-rc));
                return 1;
        }
        void *mem = NULL;
        uint64_t size = 0, answered = 0, unanswerable = 0;
        volatile uint64_t *mine = NULL, *theirs = NULL;
        const volatile struct pv_ivshm_presence *presence = NULL;
        int side = 0;
        int status = 0;
        while (!stop) {
                struct pollfd p[2] = { { .fd = ivsock_fd(s), .events = POLLIN }, { .fd = -1, .events = POLLIN } };
                if (mem)
                        p[1].fd = ivsock_own_vector_fd(s, PV_IVSHM_VEC_XIRQ);
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        perror("ivshmem-peer: poll");
                        status = 1;
                        break;
                }
                if (p[0].revents) {
                        rc = ivsock_read(s, NULL);
                        if (rc < 0 && rc != -EAGAIN) {
                                fprintf(stderr, "ivshmem-peer: the server connection ended: %s %s\n",
                                        strerror(-rc), ivsock_error(s));
                                status = 1;
                                break;
                        }
                }
                if (!mem && ivsock_ready(s)) {
                        size = ivsock_mem_size(s);
                        mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ivsock_mem_fd(s), 0);
                        if (mem == MAP_FAILED) {
                                perror("ivshmem-peer: mmap");
                                mem = NULL;
                                status = 1;
                                break;
                        }
                        struct pv_ivshm_hdr h;
                        char err[256];
                        memcpy(&h, mem, sizeof(h));
                        if (ivpci_header_check(&h, size, err, sizeof(err)) < 0) {
                                fprintf(stderr, "ivshmem-peer: %s\n", err);
                                status = 1;
                                break;
                        }
                        int own = ivsock_own_id(s);
                        side = (int)PV_IVSHM_PEER_SIDE(own);
                        presence = &((const struct pv_ivshm_hdr *)mem)->presence[1 - side];
                        mine = (volatile uint64_t *)((char *)mem + h.side[side].offset);
                        theirs = (volatile uint64_t *)((char *)mem + h.side[1 - side].offset);
                        printf("ready: vlink %s, %s side, peer id %d\n", h.link_name, h.vm[side], own);
                        fflush(stdout);
                }
                if (mem && p[1].fd >= 0 && (p[1].revents & POLLIN)) {
                        uint64_t n;
                        if (read(p[1].fd, &n, sizeof(n)) != sizeof(n))
                                continue;
                        uint64_t nonce = *theirs;
                        *mine = ~nonce;
                        __atomic_thread_fence(__ATOMIC_SEQ_CST);
                        /* The other side's id now: pvhv's header says it,
                         * the server's messages confirm it. */
                        uint32_t other = presence->peer_id;
                        if (other && other <= PV_IVSHM_PEER_ID_MAX && PV_IVSHM_PEER_SIDE(other) == (uint32_t)(1 - side) &&
                            ivsock_peer_present(s, other) && ivsock_ring(s, other, PV_IVSHM_VEC_XIRQ) == 0)
                                answered++;
                        else
                                unanswerable++;
                }
        }
        printf("answered %" PRIu64 " rings (%" PRIu64 " while the other side was away)\n", answered, unanswerable);
        if (mem)
                munmap(mem, size);
        ivsock_close(s);
        return status;
}
