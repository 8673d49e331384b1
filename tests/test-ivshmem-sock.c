/* Unit tests of the ivshmem protocol client (daemon/hv/ivshmem-sock.c)
 * against a fake server in this process: a correct server (handshake in
 * pieces, peers joining, ringing, leaving, coming back) and a lying one
 * (every kind of malformed message). Every case checks that no fd is left
 * behind. pvhv itself is the server of test-pvhv. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "hv/ivshmem-sock.h"

#define OWN 2u
#define PEER 1u

/* The fake server: a listening socket, the accepted connection, the
 * memory and the eventfds it hands out (its own copies). */
struct fake {
        char dir[64];
        char path[128];
        int lfd, cfd;
        int mem;
        int own_vec[PV_IVSHM_VECTORS];
        int peer_vec[PV_IVSHM_VECTORS];
        struct ivsock *s;
        int fds_before;
};

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static int sealed_memfd(uint64_t size, bool seal)
{
        int fd = memfd_create("test-ivsock", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_FATAL(ftruncate(fd, (off_t)size) == 0);
        if (seal)
                CU_ASSERT_FATAL(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
        return fd;
}

static void fake_open(struct fake *f)
{
        memset(f, 0, sizeof(*f));
        f->fds_before = count_fds();
        snprintf(f->dir, sizeof(f->dir), "/tmp/pvd-test-ivsock-XXXXXX");
        CU_ASSERT_FATAL(mkdtemp(f->dir) != NULL);
        snprintf(f->path, sizeof(f->path), "%s/link.vm.sock", f->dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
        f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(f->lfd >= 0);
        CU_ASSERT_FATAL(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        CU_ASSERT_FATAL(listen(f->lfd, 4) == 0);
        CU_ASSERT_FATAL(ivsock_connect(f->path, &f->s) == 0);
        f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        CU_ASSERT_FATAL(f->cfd >= 0);
        f->mem = sealed_memfd(PV_IVSHM_MIN_SIZE, true);
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                f->own_vec[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                f->peer_vec[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        }
}

/* Closes everything, then checks that the module left no fd open. */
static void fake_close(struct fake *f)
{
        ivsock_close(f->s);
        if (f->cfd >= 0)
                close(f->cfd);
        close(f->lfd);
        close(f->mem);
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++) {
                close(f->own_vec[v]);
                close(f->peer_vec[v]);
        }
        unlink(f->path);
        rmdir(f->dir);
        CU_ASSERT_EQUAL(count_fds(), f->fds_before);
}

/* Bytes of a message (or part of one) with nfds fds. */
static void send_raw(struct fake *f, const void *buf, size_t len, const int *fds, int nfds)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 64)];
        } cm;
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds > 0) {
                memset(&cm, 0, sizeof(cm));
                mh.msg_control = cm.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
        }
        CU_ASSERT_EQUAL_FATAL(sendmsg(f->cfd, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

static void send_msg(struct fake *f, int64_t v, int fd)
{
        uint64_t le = htole64((uint64_t)v);
        send_raw(f, &le, sizeof(le), &fd, fd >= 0);
}

static void send_vectors(struct fake *f, uint32_t id, const int *vec)
{
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++)
                send_msg(f, id, vec[v]);
}

/* What pvhv sends a newcomer, with or without the other peer there. */
static void handshake(struct fake *f, bool peer_there)
{
        send_msg(f, PV_IVSHM_PROTO_VERSION, -1);
        send_msg(f, OWN, -1);
        send_msg(f, PV_IVSHM_MSG_SHM, f->mem);
        if (peer_there)
                send_vectors(f, PEER, f->peer_vec);
        send_vectors(f, OWN, f->own_vec);
}

static int read_ev(struct fake *f, unsigned *ev)
{
        return ivsock_read(f->s, ev);
}

static uint64_t counter(int efd)
{
        uint64_t v = 0;
        if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v))
                return 0;
        return v;
}

/* ---- a correct server --------------------------------------------------- */

static void test_join_ring_leave(void)
{
        struct fake f;
        unsigned ev;
        fake_open(&f);
        CU_ASSERT_FALSE(ivsock_ready(f.s));
        CU_ASSERT_EQUAL(ivsock_own_id(f.s), -1);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0); /* nothing there yet */
        CU_ASSERT_EQUAL(ev, 0);
        handshake(&f, true);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
        CU_ASSERT_EQUAL(ev, IVSOCK_EV_READY | IVSOCK_EV_PEER_JOINED);
        CU_ASSERT_TRUE(ivsock_ready(f.s));
        CU_ASSERT_EQUAL(ivsock_own_id(f.s), (int)OWN);
        CU_ASSERT_EQUAL(ivsock_mem_size(f.s), PV_IVSHM_MIN_SIZE);
        CU_ASSERT_TRUE(ivsock_peer_present(f.s, PEER));
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, OWN));
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, 3));
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, 1000));

        /* The memory is the server's. */
        uint32_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ivsock_mem_fd(f.s), 0);
        CU_ASSERT_FATAL(m != MAP_FAILED);
        m[1] = 0xabcd;
        uint32_t back = 0;
        CU_ASSERT_EQUAL(pread(f.mem, &back, 4, 4), 4);
        CU_ASSERT_EQUAL(back, 0xabcd);
        munmap(m, 4096);

        /* Ringing the peer writes its eventfd; the server's rings arrive on ours. */
        CU_ASSERT_EQUAL(ivsock_ring(f.s, PEER, PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(ivsock_ring(f.s, PEER, PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(counter(f.peer_vec[PV_IVSHM_VEC_XIRQ]), 2);
        CU_ASSERT_EQUAL(counter(f.peer_vec[PV_IVSHM_VEC_LINK]), 0);
        CU_ASSERT_EQUAL(ivsock_ring(f.s, OWN, 0), -ENOTCONN);
        CU_ASSERT_EQUAL(ivsock_ring(f.s, PEER, PV_IVSHM_VECTORS), -ENOTCONN);
        uint64_t one = 1;
        CU_ASSERT_EQUAL(write(f.own_vec[PV_IVSHM_VEC_LINK], &one, 8), 8);
        CU_ASSERT_EQUAL(counter(ivsock_own_vector_fd(f.s, PV_IVSHM_VEC_LINK)), 1);
        CU_ASSERT_EQUAL(counter(ivsock_own_vector_fd(f.s, PV_IVSHM_VEC_XIRQ)), 0); /* non-blocking: nothing */
        CU_ASSERT_EQUAL(ivsock_own_vector_fd(f.s, PV_IVSHM_VECTORS), -1);

        /* The peer leaves: its vectors are closed. */
        send_msg(&f, PEER, -1);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
        CU_ASSERT_EQUAL(ev, IVSOCK_EV_PEER_LEFT);
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, PEER));
        CU_ASSERT_EQUAL(ivsock_peer_vector_fd(f.s, PEER, 0), -1);
        CU_ASSERT_EQUAL(ivsock_ring(f.s, PEER, PV_IVSHM_VEC_XIRQ), -ENOTCONN);

        /* It comes back with fresh eventfds: rings go to those. */
        int fresh[PV_IVSHM_VECTORS];
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++)
                fresh[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        send_vectors(&f, PEER, fresh);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
        CU_ASSERT_EQUAL(ev, IVSOCK_EV_PEER_JOINED);
        CU_ASSERT_EQUAL(ivsock_ring(f.s, PEER, PV_IVSHM_VEC_LINK), 0);
        CU_ASSERT_EQUAL(counter(fresh[PV_IVSHM_VEC_LINK]), 1);
        CU_ASSERT_EQUAL(counter(f.peer_vec[PV_IVSHM_VEC_LINK]), 0);
        for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++)
                close(fresh[v]);

        /* The server goes away. */
        close(f.cfd);
        f.cfd = -1;
        CU_ASSERT_EQUAL(read_ev(&f, &ev), -ECONNRESET);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), -ECONNRESET); /* and stays so */
        fake_close(&f);
}

/* A handshake without the other peer, in pieces: each fd rides with the
 * second half of its message, and a peer comes later. */
static void test_pieces(void)
{
        struct fake f;
        unsigned ev;
        fake_open(&f);
        int64_t msgs[] = { PV_IVSHM_PROTO_VERSION, OWN, PV_IVSHM_MSG_SHM, OWN, OWN };
        int fds[] = { -1, -1, f.mem, f.own_vec[0], f.own_vec[1] };
        for (unsigned i = 0; i < 5; i++) {
                uint64_t le = htole64((uint64_t)msgs[i]);
                send_raw(&f, &le, 3, NULL, 0);
                CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
                CU_ASSERT_EQUAL(ev, 0);
                send_raw(&f, (char *)&le + 3, 5, &fds[i], fds[i] >= 0);
                CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
                CU_ASSERT_EQUAL(ev, i == 4 ? IVSOCK_EV_READY : 0u);
        }
        CU_ASSERT_TRUE(ivsock_ready(f.s));
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, PEER));
        send_vectors(&f, PEER, f.peer_vec);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
        CU_ASSERT_EQUAL(ev, IVSOCK_EV_PEER_JOINED);
        fake_close(&f);
}

/* A peer that joins and leaves thousands of times: the module holds no
 * more fds at the end than after the first join. */
static void test_churn(void)
{
        struct fake f;
        unsigned ev;
        fake_open(&f);
        handshake(&f, false);
        CU_ASSERT_EQUAL(read_ev(&f, &ev), 0);
        int held = count_fds();
        for (int i = 0; i < 3000; i++) {
                send_vectors(&f, PEER, f.peer_vec);
                send_msg(&f, PEER, -1);
                int rc;
                while ((rc = read_ev(&f, &ev)) == 0 && ev)
                        ;
                CU_ASSERT_EQUAL_FATAL(rc, 0);
        }
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, PEER));
        CU_ASSERT_EQUAL(count_fds(), held);
        fake_close(&f);
}

/* ---- a lying server --------------------------------------------------------- */

enum step { V0, ID, SHM, ALL };

/* The handshake up to (not including) a step. */
static void until(struct fake *f, enum step st)
{
        if (st > V0)
                send_msg(f, PV_IVSHM_PROTO_VERSION, -1);
        if (st > ID)
                send_msg(f, OWN, -1);
        if (st > SHM)
                send_msg(f, PV_IVSHM_MSG_SHM, f->mem);
}

static void expect_proto(struct fake *f, const char *why)
{
        unsigned ev;
        int rc = ivsock_read(f->s, &ev);
        if (rc != -EPROTO || !strstr(ivsock_error(f->s), why))
                fprintf(stderr, "\n    got %d \"%s\" (want -EPROTO \"%s\")\n", rc, ivsock_error(f->s), why);
        CU_ASSERT_EQUAL(rc, -EPROTO);
        CU_ASSERT_PTR_NOT_NULL(strstr(ivsock_error(f->s), why));
        CU_ASSERT_EQUAL(ivsock_read(f->s, &ev), -EPROTO); /* the connection stays dead */
        CU_ASSERT_EQUAL(ev, 0);
}

static void lie_msg(enum step st, int64_t v, int fd, const char *why)
{
        struct fake f;
        fake_open(&f);
        until(&f, st);
        send_msg(&f, v, fd);
        expect_proto(&f, why);
        fake_close(&f);
}

static void test_lies_handshake(void)
{
        int ev = eventfd(0, EFD_CLOEXEC);
        lie_msg(V0, 1, -1, "protocol version 1");
        lie_msg(V0, 0, ev, "version message came with an fd");
        lie_msg(ID, PV_IVSHM_PEER_ID_MAX + 1, -1, "own peer id 65536 out of range");
        lie_msg(ID, -3, -1, "own peer id -3 out of range");
        lie_msg(ID, OWN, ev, "peer id message came with an fd");
        lie_msg(SHM, PV_IVSHM_MSG_SHM, -1, "came without its fd");
        lie_msg(SHM, -2, ev, "message -2 is neither");
        lie_msg(SHM, 70000, -1, "message 70000 is neither");
        lie_msg(ALL, PV_IVSHM_MSG_SHM, ev, "a second shared memory");
        lie_msg(ALL, OWN, -1, "this side itself (peer 2) left");
        lie_msg(ALL, PEER, -1, "peer 1 left without having joined");
        lie_msg(ALL, 70000, ev, "message 70000 is neither");
        close(ev);
}

static void test_lies_memory(void)
{
        int odd = sealed_memfd(3 << 20, true);                    /* not a power of two */
        int unsealed = sealed_memfd(PV_IVSHM_MIN_SIZE, false);    /* could shrink under us */
        int tiny = sealed_memfd(4096, true);
        int p[2];
        CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
        lie_msg(SHM, PV_IVSHM_MSG_SHM, odd, "expected a power of two");
        lie_msg(SHM, PV_IVSHM_MSG_SHM, unsealed, "not sealed");
        lie_msg(SHM, PV_IVSHM_MSG_SHM, tiny, "shared memory of 4096 bytes");
        lie_msg(SHM, PV_IVSHM_MSG_SHM, p[0], "not a memory file");
        close(odd);
        close(unsealed);
        close(tiny);
        close(p[0]);
        close(p[1]);
}

static void test_lies_vectors(void)
{
        struct fake f;
        unsigned ev;
        /* More vectors than PV_IVSHM_VECTORS, for the peer and for us. */
        fake_open(&f);
        until(&f, ALL);
        send_vectors(&f, PEER, f.peer_vec);
        send_msg(&f, PEER, f.peer_vec[0]);
        expect_proto(&f, "more than 2 vectors for peer 1");
        fake_close(&f);

        fake_open(&f);
        handshake(&f, false);
        CU_ASSERT_EQUAL(ivsock_read(f.s, &ev), 0);
        send_msg(&f, OWN, f.own_vec[0]);
        expect_proto(&f, "more than 2 vectors for peer 2 (this side)");
        fake_close(&f);

        /* More peers at once than a vlink has; a peer that leaves frees
         * its place. */
        fake_open(&f);
        until(&f, ALL);
        for (uint32_t id = 10; id < 10 + IVSOCK_MAX_PEERS; id++)
                send_vectors(&f, id, f.peer_vec);
        send_msg(&f, 10, -1);
        send_vectors(&f, 500, f.peer_vec);
        CU_ASSERT_EQUAL(ivsock_read(f.s, &ev), 0);
        uint32_t ids[8];
        CU_ASSERT_EQUAL(ivsock_peers(f.s, ids, 8), IVSOCK_MAX_PEERS);
        CU_ASSERT_FALSE(ivsock_peer_present(f.s, 10));
        CU_ASSERT_TRUE(ivsock_peer_present(f.s, 500));
        send_msg(&f, 600, f.peer_vec[0]);
        expect_proto(&f, "peer 600 joins while 3 others are there");
        fake_close(&f);

        /* A vector that is not an eventfd (a pipe could block a ring). */
        int p[2];
        CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
        lie_msg(ALL, PEER, p[1], "is not an eventfd");
        lie_msg(ALL, OWN, p[0], "is not an eventfd");
        close(p[0]);
        close(p[1]);
}

static void test_lies_fds(void)
{
        struct fake f;
        int many[40];
        for (int i = 0; i < 40; i++)
                many[i] = eventfd(0, EFD_CLOEXEC);
        uint64_t le = htole64(PEER);

        /* Several fds with one message. */
        fake_open(&f);
        until(&f, ALL);
        send_raw(&f, &le, sizeof(le), many, 20);
        expect_proto(&f, "20 fds with one message");
        fake_close(&f);

        /* So many that the kernel truncates them. */
        fake_open(&f);
        until(&f, ALL);
        send_raw(&f, &le, sizeof(le), many, 40);
        expect_proto(&f, "fds with one message");
        fake_close(&f);

        /* One fd with each half of a message. */
        fake_open(&f);
        until(&f, ALL);
        send_raw(&f, &le, 4, &many[0], 1);
        send_raw(&f, (char *)&le + 4, 4, &many[1], 1);
        expect_proto(&f, "2 fds with one message");
        fake_close(&f);
        for (int i = 0; i < 40; i++)
                close(many[i]);
}

static void test_lies_truncated(void)
{
        struct fake f;
        unsigned ev;
        uint64_t le = htole64(PEER);
        fake_open(&f);
        until(&f, ALL);
        send_raw(&f, &le, 5, &f.peer_vec[0], 1);
        close(f.cfd);
        f.cfd = -1;
        expect_proto(&f, "inside a message (5 of 8 bytes)");
        fake_close(&f);

        /* A server that closes at a message boundary is merely gone. */
        fake_open(&f);
        until(&f, SHM);
        close(f.cfd);
        f.cfd = -1;
        CU_ASSERT_EQUAL(ivsock_read(f.s, &ev), -ECONNRESET);
        CU_ASSERT_STRING_EQUAL(ivsock_error(f.s), "");
        fake_close(&f);

        CU_ASSERT_EQUAL(ivsock_connect("/nonexistent/dir/x.sock", &f.s), -ENOENT);
}

/* A flood of well-formed messages is handled a bounded number at a time. */
static void test_budget(void)
{
        struct fake f;
        unsigned ev;
        fake_open(&f);
        handshake(&f, false);
        for (int i = 0; i < 30; i++) { /* what the socket holds without a reader */
                send_vectors(&f, PEER, f.peer_vec);
                send_msg(&f, PEER, -1);
        }
        int calls = 0, rc;
        do {
                rc = ivsock_read(f.s, &ev);
                calls++;
        } while (rc == 0 && ev);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT(calls >= 3); /* 97 messages, at most 64 per call, then one that finds none */
        fake_close(&f);
}

int main(void)
{
        static const struct {
                const char *name;
                CU_TestFunc fn;
        } tests[] = {
                { "join, ring, leave, come back, server gone", test_join_ring_leave },
                { "handshake in pieces, peer later", test_pieces },
                { "join/leave churn holds no more fds", test_churn },
                { "lies in the handshake and peer ids", test_lies_handshake },
                { "lies about the memory", test_lies_memory },
                { "lies about the vectors", test_lies_vectors },
                { "fd floods", test_lies_fds },
                { "truncated messages", test_lies_truncated },
                { "bounded work per read", test_budget },
        };
        int fds_before = count_fds();
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite suite = CU_add_suite("ivshmem-sock", NULL, NULL);
        if (!suite)
                return 1;
        for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
                if (!CU_add_test(suite, tests[i].name, tests[i].fn))
                        return 1;
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        if (count_fds() != fds_before) {
                fprintf(stderr, "fd leak: %d open before, %d after\n", fds_before, count_fds());
                failed++;
        }
        return failed ? 1 : 0;
}
