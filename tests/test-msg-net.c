/* Transport tests of the control messages: pv_msg_send/pv_msg_recv over
 * socketpair(AF_UNIX, SOCK_SEQPACKET), with fds that must arrive working, and
 * every way a peer can get the fd count or the datagram wrong, each checked
 * for leaked fds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test-msg.h"

static uint8_t rbuf[PV_MSG_DOC_MAX];

static void seqpacket_pair(int sv[2])
{
        CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void close_pair(int sv[2])
{
        close(sv[0]);
        close(sv[1]);
}

/* Send len bytes with nfds copies of fd attached, bypassing pv_msg_send's
 * bookkeeping, as a buggy or hostile program could. */
static void raw_send(int sock, const void *data, size_t len, int fd, unsigned nfds)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 16)];
        } ctl;
        struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        CU_ASSERT_FATAL(nfds <= 16);
        if (nfds > 0) {
                struct cmsghdr *c;

                memset(&ctl, 0, sizeof(ctl));
                mh.msg_control = ctl.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                for (unsigned i = 0; i < nfds; i++)
                        memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        }
        CU_ASSERT_EQUAL(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* Send a message with nfds pipe write ends; the receiver writes one byte
 * through each fd it got and the sender reads it from the read end. */
static void send_recv_fds(unsigned nfds)
{
        int sv[2], pipes[PV_MSG_MAX_FDS][2];
        struct pv_msg m, d;
        uint64_t declared;
        char name[16];

        seqpacket_pair(sv);
        pv_msg_init(&m, PV_OP_TEST_FIRST + 1);
        pv_msg_set_u(&m, PV_K_SEQ, 42);
        pv_msg_set_str(&m, PV_K_NAME, "vbpipe0");
        for (unsigned i = 0; i < nfds; i++) {
                CU_ASSERT_EQUAL_FATAL(pipe2(pipes[i], O_CLOEXEC), 0);
                CU_ASSERT_EQUAL(pv_msg_add_fd(&m, pipes[i][1]), 0);
        }
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        /* from here on only the received copies keep the write ends open */
        for (unsigned i = 0; i < nfds; i++)
                close(pipes[i][1]);

        CU_ASSERT_EQUAL_FATAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), 0);
        CU_ASSERT_EQUAL(d.nfds, nfds);
        CU_ASSERT_EQUAL(pv_msg_has(&d, PV_K_NFDS), nfds > 0);
        if (nfds > 0)
                CU_ASSERT(pv_msg_get_u(&d, PV_K_NFDS, &declared) == 0 && declared == nfds);
        CU_ASSERT(pv_msg_get_str(&d, PV_K_NAME, name, sizeof(name)) == 0 &&
                  strcmp(name, "vbpipe0") == 0);
        for (unsigned i = 0; i < nfds && i < d.nfds; i++) {
                uint8_t c = (uint8_t)(0x40 + i), got = 0;

                CU_ASSERT(fcntl(d.fds[i], F_GETFD) & FD_CLOEXEC);
                CU_ASSERT_EQUAL(write(d.fds[i], &c, 1), 1);
                CU_ASSERT_EQUAL(read(pipes[i][0], &got, 1), 1);
                CU_ASSERT_EQUAL(got, c);
        }
        pv_msg_close_fds(&d);
        CU_ASSERT_EQUAL(d.nfds, 0);
        for (unsigned i = 0; i < nfds; i++) {
                uint8_t c;

                /* EOF: close_fds closed the last write end */
                CU_ASSERT_EQUAL(read(pipes[i][0], &c, 1), 0);
                close(pipes[i][0]);
        }
        close_pair(sv);
}

static void test_no_fd(void)
{
        send_recv_fds(0);
}

static void test_one_fd(void)
{
        send_recv_fds(1);
}

static void test_max_fds(void)
{
        send_recv_fds(PV_MSG_MAX_FDS);
}

/* Whatever NFDS the caller left in the message, the real count travels. */
static void test_nfds_set_by_sender(void)
{
        struct pv_msg m, d;
        uint64_t v;
        int sv[2];

        seqpacket_pair(sv);
        pv_msg_init(&m, 1);
        pv_msg_set_u(&m, PV_K_NFDS, 3);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), 0);
        CU_ASSERT_FALSE(pv_msg_has(&d, PV_K_NFDS));

        CU_ASSERT_EQUAL(pv_msg_add_fd(&m, sv[0]), 0);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), 0);
        CU_ASSERT(pv_msg_get_u(&d, PV_K_NFDS, &v) == 0 && v == 1);
        CU_ASSERT_EQUAL(d.nfds, 1);
        pv_msg_close_fds(&d);
        close_pair(sv);
}

/* Receive an encoded message declaring `declared` fds (-1: no NFDS) that
 * carries `attached` fds; return pv_msg_recv's result. */
static int recv_declared(int declared, unsigned attached, size_t cap)
{
        uint8_t buf[64];
        struct pv_msg m, d;
        size_t len = 0;
        int sv[2], fd, r;

        seqpacket_pair(sv);
        pv_msg_init(&m, 1);
        if (declared >= 0)
                pv_msg_set_u(&m, PV_K_NFDS, 0);
        pv_msg_set_str(&m, PV_K_DATA, "payload");
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, sizeof(buf), &len), 0);
        /* the encoder refuses a count above PV_MSG_MAX_FDS: write it in place
         * (map, OP 0 1, SEQ 1 0, NFDS 3 n) */
        if (declared >= 0) {
                CU_ASSERT_FATAL(buf[5] == PV_K_NFDS && declared <= 0x7f);
                buf[6] = (uint8_t)declared;
        }
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CU_ASSERT_FATAL(fd >= 0);
        raw_send(sv[0], buf, len, fd, attached);
        close(fd);
        r = pv_msg_recv(sv[1], &d, rbuf, cap, 0);
        if (r == 0) {
                CU_ASSERT_EQUAL(d.nfds, attached);
                pv_msg_close_fds(&d);
        } else {
                CU_ASSERT_EQUAL(d.nfds, 0);
                CU_ASSERT_EQUAL(d.has, 0);
        }
        close_pair(sv);
        return r;
}

static void test_fd_count_mismatch(void)
{
        CU_ASSERT_EQUAL(recv_declared(2, 2, PV_MSG_MAX), 0);
        CU_ASSERT_EQUAL(recv_declared(0, 0, PV_MSG_MAX), 0);
        CU_ASSERT_EQUAL(recv_declared(PV_MSG_MAX_FDS, PV_MSG_MAX_FDS, PV_MSG_MAX), 0);
        CU_ASSERT_EQUAL(recv_declared(1, 2, PV_MSG_MAX), -EPROTO);     /* more than declared */
        CU_ASSERT_EQUAL(recv_declared(2, 1, PV_MSG_MAX), -EPROTO);     /* fewer */
        CU_ASSERT_EQUAL(recv_declared(-1, 1, PV_MSG_MAX), -EPROTO);    /* no NFDS */
        CU_ASSERT_EQUAL(recv_declared(0, 3, PV_MSG_MAX), -EPROTO);
        /* more than fit the control buffer: MSG_CTRUNC */
        CU_ASSERT_EQUAL(recv_declared(PV_MSG_MAX_FDS, PV_MSG_MAX_FDS + 1, PV_MSG_MAX), -EPROTO);
        CU_ASSERT_EQUAL(recv_declared(PV_MSG_MAX_FDS + 1, PV_MSG_MAX_FDS + 1, PV_MSG_MAX), -EPROTO);
        CU_ASSERT_EQUAL(recv_declared(-1, 16, PV_MSG_MAX), -EPROTO);
        /* a datagram longer than the buffer: MSG_TRUNC, fds and all */
        CU_ASSERT_EQUAL(recv_declared(2, 2, 8), -EPROTO);
        CU_ASSERT_EQUAL(recv_declared(-1, 0, 8), -EPROTO);
}

static void test_bad_encoding_with_fds(void)
{
        static const uint8_t junk[] = { 0x83, 0x00, 0x01, 0x01, 0x02, 0x03, 0xc1 };
        struct pv_msg d;
        int sv[2];

        seqpacket_pair(sv);
        raw_send(sv[0], junk, sizeof(junk), sv[0], 2);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), -EPROTO);
        CU_ASSERT_EQUAL(d.nfds, 0);
        /* the connection is still in step: the next message is whole */
        pv_msg_init(&d, 7);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &d), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), 0);
        CU_ASSERT_EQUAL(pv_msg_op(&d), 7);
        close_pair(sv);
}

static void test_credentials_refused(void)
{
        struct pv_msg m, d;
        int sv[2], on = 1;

        seqpacket_pair(sv);
        CU_ASSERT_EQUAL(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
        pv_msg_init(&m, 1);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), -EPROTO);
        /* with an fd too (which no longer fits beside the credentials) */
        CU_ASSERT_EQUAL(pv_msg_add_fd(&m, sv[0]), 0);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), -EPROTO);
        CU_ASSERT_EQUAL(d.nfds, 0);
        close_pair(sv);
}

static void test_eof_eagain_epipe(void)
{
        struct pv_msg m, d;
        int sv[2];

        seqpacket_pair(sv);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, MSG_DONTWAIT), -EAGAIN);
        /* MSG_PEEK would hand out the same fds twice */
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, MSG_PEEK), -EINVAL);
        close(sv[0]);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), -ECONNRESET);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, MSG_DONTWAIT), -ECONNRESET);
        /* no SIGPIPE, which would end this process */
        pv_msg_init(&m, 1);
        CU_ASSERT_EQUAL(pv_msg_send(sv[1], &m), -EPIPE);
        close(sv[1]);
        CU_ASSERT_EQUAL(pv_msg_send(sv[1], &m), -EBADF);
}

static void test_datagram_limits(void)
{
        size_t doc_len = PV_MSG_DOC_MAX - 32;
        uint8_t *big = malloc(PV_MSG_DOC_MAX + 1);
        struct pv_msg m, d;
        const void *p;
        uint32_t n;
        int sv[2];

        CU_ASSERT_PTR_NOT_NULL_FATAL(big);
        for (size_t i = 0; i <= PV_MSG_DOC_MAX; i++)
                big[i] = (uint8_t)(i ^ (i >> 8));
        seqpacket_pair(sv);

        /* a status document near its limit, with an fd */
        pv_msg_init(&m, PV_OP_STATUS);
        pv_msg_set_b(&m, PV_K_DOC, big, doc_len);
        CU_ASSERT_EQUAL(pv_msg_add_fd(&m, sv[0]), 0);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_DOC_MAX, 0), 0);
        CU_ASSERT(pv_msg_get_b(&d, PV_K_DOC, &p, &n) == 0 && n == doc_len &&
                  memcmp(p, big, n) == 0);
        CU_ASSERT_EQUAL(d.nfds, 1);
        pv_msg_close_fds(&d);
        /* the same into an ordinary buffer is cut: refused, fd closed */
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), -EPROTO);

        /* over the datagram limits: refused before sending */
        pv_msg_set_b(&m, PV_K_DOC, big, PV_MSG_DOC_MAX);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), -EMSGSIZE);
        pv_msg_init(&m, 1);
        pv_msg_set_b(&m, PV_K_DATA, big, PV_MSG_BIN_MAX);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), 0);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, 0), 0);
        pv_msg_set_b(&m, PV_K_INFO, big, 8 * 1024);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), -EMSGSIZE);
        pv_msg_set_b(&m, PV_K_INFO, big, PV_MSG_BIN_MAX + 1);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), -EMSGSIZE);
        pv_msg_set_u(&m, PV_K_DATA, 1);
        CU_ASSERT_EQUAL(pv_msg_send(sv[0], &m), -EINVAL);
        CU_ASSERT_EQUAL(pv_msg_recv(sv[1], &d, rbuf, PV_MSG_MAX, MSG_DONTWAIT), -EAGAIN);
        close_pair(sv);
        free(big);
}

const struct pvt_test net_tests[] = {
        { "no fd", test_no_fd },
        { "one fd", test_one_fd },
        { "PV_MSG_MAX_FDS fds", test_max_fds },
        { "NFDS follows the fds sent", test_nfds_set_by_sender },
        { "fd count mismatch and truncation", test_fd_count_mismatch },
        { "bad encoding with fds", test_bad_encoding_with_fds },
        { "credentials refused", test_credentials_refused },
        { "EOF, EAGAIN, EPIPE", test_eof_eagain_epipe },
        { "datagram limits", test_datagram_limits },
        { NULL, NULL },
};
