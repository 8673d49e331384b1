/* bench-guest: the figures across the guest boundary (bench/guests.sh runs
 * it): VRPQ and VBPIPE between a host-process VM and a QEMU guest, beside a
 * TCP connection between the same two endpoints over the guest's virtio-net
 * (QEMU user networking, a forwarded port), the thing a user would pick
 * instead.
 *
 * One side times (the "client"), the other answers (the "server"):
 *   bench-guest server vrpq              answers calls, takes posts
 *   bench-guest server vbpipe            sinks the stream, echoes bytes
 *   bench-guest server tcp HOST PORT     both of the above, over TCP
 *   bench-guest client vrpq POSTS CALLS
 *   bench-guest client vbpipe MIB ECHOES
 *   bench-guest client tcp-listen PORT POSTS CALLS MIB ECHOES
 *                                        (0 POSTS or 0 MIB: not those figures)
 * The client prints one line per figure, "FIG name value unit"; the
 * server says what it saw on stderr. The byte transports carry phases,
 * each a header (phase, count) that the client sends first:
 *   MSGS   count 16-byte messages: a post, or a call answered with 8 bytes
 *   STREAM count bytes, then the server answers one byte
 *   ECHO   count single bytes, each sent back before the next
 *   END
 * Everything the peer sends is checked: a wrong answer ends the run with
 * status 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <pv/vbpipe.h>
#include <pv/vrpq.h>

#define PROC_POST VRPQ_PROC_ID(4, 1)   /* in: a nku32_f; no answer */
#define PROC_CALL VRPQ_PROC_ID(4, 2)   /* in: two nku32_f; out: their nku64_f sum */
#define CHUNK     (64 * 1024)

enum phase { PH_END, PH_MSGS, PH_STREAM, PH_ECHO };
struct hdr {
        uint32_t phase, pad;
        uint64_t count;
};
struct msg {
        uint32_t kind, a, b, pad;       /* kind 1: post, 2: call */
};

static int use_vbpipe;                  /* the fd is a vbpipe end, else a socket */

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int die(const char *what, int diag)
{
        fprintf(stderr, "bench-guest: %s: %s\n", what, strerror(diag < 0 ? -diag : diag));
        return 1;
}

static int vdie(const char *what, int diag)
{
        fprintf(stderr, "bench-guest: %s: %s (%s)\n", what, pvStrError(diag), pvLastError());
        return 1;
}

/* All of n bytes, or -1 (errno; EPIPE for an early end). */
static int put(int fd, const void *buf, size_t n)
{
        const char *p = buf;
        while (n) {
                ssize_t w = use_vbpipe ? vbpipeWrite(fd, p, n) : write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return -1;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

static int get(int fd, void *buf, size_t n)
{
        char *p = buf;
        while (n) {
                ssize_t r = use_vbpipe ? vbpipeRead(fd, p, n) : read(fd, p, n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r == 0)
                        errno = EPIPE;
                if (r <= 0)
                        return -1;
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

/* ---- the answering side of a byte transport ---- */

static int serve_bytes(int fd)
{
        static char buf[CHUNK];
        struct hdr h;
        unsigned long long posts = 0, calls = 0, bytes = 0, echoes = 0;
        while (get(fd, &h, sizeof(h)) == 0 && h.phase != PH_END) {
                if (h.phase == PH_MSGS) {
                        for (uint64_t i = 0; i < h.count; i++) {
                                struct msg m;
                                if (get(fd, &m, sizeof(m)) < 0)
                                        return die("reading a message", errno);
                                if (m.kind == 2) {
                                        uint64_t sum = (uint64_t)m.a + m.b;
                                        if (put(fd, &sum, sizeof(sum)) < 0)
                                                return die("answering a call", errno);
                                        calls++;
                                } else {
                                        posts++;
                                }
                        }
                } else if (h.phase == PH_STREAM) {
                        for (uint64_t left = h.count; left;) {
                                size_t n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
                                if (get(fd, buf, n) < 0)
                                        return die("reading the stream", errno);
                                left -= n;
                        }
                        bytes += h.count;
                        char ack = 'k';
                        if (put(fd, &ack, 1) < 0)
                                return die("acknowledging the stream", errno);
                } else if (h.phase == PH_ECHO) {
                        for (uint64_t i = 0; i < h.count; i++, echoes++) {
                                char c;
                                if (get(fd, &c, 1) < 0 || put(fd, &c, 1) < 0)
                                        return die("echoing", errno);
                        }
                } else {
                        fprintf(stderr, "bench-guest: unknown phase %u\n", h.phase);
                        return 1;
                }
        }
        fprintf(stderr, "bench-guest server: %llu posts, %llu calls, %llu bytes, %llu echoes\n", posts, calls,
                bytes, echoes);
        return 0;
}

/* ---- the timing side of a byte transport ---- */

static int phase(int fd, uint32_t ph, uint64_t count)
{
        struct hdr h = { .phase = ph, .count = count };
        return put(fd, &h, sizeof(h));
}

static int time_msgs(int fd, const char *name, unsigned long posts, unsigned long calls)
{
        struct msg m = { .kind = 1 };
        uint64_t sum;
        if (!posts || !calls)
                return 0; /* not this time */
        double t0 = now_s();
        if (phase(fd, PH_MSGS, posts + 1) < 0)
                return die("sending", errno);
        for (unsigned long i = 0; i < posts; i++) {
                m.a = (uint32_t)i;
                if (put(fd, &m, sizeof(m)) < 0)
                        return die("posting", errno);
        }
        m = (struct msg){ .kind = 2, .a = 1, .b = 2 };
        if (put(fd, &m, sizeof(m)) < 0 || get(fd, &sum, sizeof(sum)) < 0 || sum != 3)
                return die("the call after the posts", errno ? errno : EPROTO);
        double t1 = now_s();
        printf("FIG %s_posts %.0f posts/s\n", name, posts / (t1 - t0));
        if (phase(fd, PH_MSGS, calls) < 0)
                return die("sending", errno);
        t0 = now_s();
        for (unsigned long i = 0; i < calls; i++) {
                m = (struct msg){ .kind = 2, .a = (uint32_t)i, .b = 0xffffffffu };
                if (put(fd, &m, sizeof(m)) < 0 || get(fd, &sum, sizeof(sum)) < 0)
                        return die("calling", errno);
                if (sum != (uint64_t)m.a + m.b) {
                        fprintf(stderr, "bench-guest: %s: a wrong sum\n", name);
                        return 1;
                }
        }
        printf("FIG %s_call %.1f us\n", name, (now_s() - t0) * 1e6 / calls);
        return 0;
}

static int time_bytes(int fd, const char *name, unsigned long mib, unsigned long echoes)
{
        static char buf[CHUNK];
        memset(buf, 0x5a, sizeof(buf));
        uint64_t total = (uint64_t)mib << 20;
        if (!mib || !echoes)
                return phase(fd, PH_END, 0) < 0 ? die("sending", errno) : 0; /* not this time */
        double t0 = now_s();
        if (phase(fd, PH_STREAM, total) < 0)
                return die("sending", errno);
        for (uint64_t left = total; left; left -= CHUNK)
                if (put(fd, buf, CHUNK) < 0)
                        return die("streaming", errno);
        char c;
        if (get(fd, &c, 1) < 0 || c != 'k')
                return die("the stream's acknowledgement", errno ? errno : EPROTO);
        printf("FIG %s_64k %.1f MiB/s\n", name, mib / (now_s() - t0));
        if (phase(fd, PH_ECHO, echoes) < 0)
                return die("sending", errno);
        t0 = now_s();
        for (unsigned long i = 0; i < echoes; i++) {
                char out = (char)i, in;
                if (put(fd, &out, 1) < 0 || get(fd, &in, 1) < 0)
                        return die("a round trip", errno);
                if (in != out) {
                        fprintf(stderr, "bench-guest: %s: the echo differs\n", name);
                        return 1;
                }
        }
        printf("FIG %s_1b %.1f us\n", name, (now_s() - t0) * 1e6 / echoes);
        return phase(fd, PH_END, 0) < 0 ? die("sending", errno) : 0;
}

/* ---- VRPQ ---- */

static int vrpq_server(void)
{
        VrpqSession *s;
        VrpqChan *c;
        void *base;
        VrpqReq *reqs[64];
        int avail, diag;
        unsigned long posts = 0, calls = 0;
        if ((diag = vrpqSessionAccept("/dev/vrpq-srv-vogl0", NULL, NULL, &s)))
                return vdie("vrpqSessionAccept", diag);
        if ((diag = vrpqChanAccept(s, NULL, NULL, &c)) || (diag = vrpqShmMap(s, &base)))
                return vdie("vrpqChanAccept", diag);
        while ((diag = vrpqReceive(c, reqs, 64, &avail)) == 0) {
                for (int i = 0; i < avail; i++) {
                        VrpqReq *r = reqs[i];
                        if (r->procId == PROC_POST) {
                                posts++;
                                continue;
                        }
                        void *in = vrpqParamInGet(r, base), *out = vrpqParamOutGet(r, base);
                        if (r->procId != PROC_CALL || vrpqParamInSize(r) < 8 || vrpqParamOutSize(r) < 8)
                                continue;
                        nku32_f a = VRPQ_PARAM_READ(in, 0, nku32_f), b = VRPQ_PARAM_READ(in, 4, nku32_f);
                        VRPQ_PARAM_WRITE(out, 0, nku64_f, (nku64_f)a + b);
                        if ((diag = vrpqReply(c, r)))
                                return vdie("vrpqReply", diag);
                        calls++;
                }
        }
        fprintf(stderr, "bench-guest server: %lu posts, %lu calls (vrpq)\n", posts, calls);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return diag == -ECONNRESET ? 0 : vdie("vrpqReceive", diag);
}

static int vrpq_call(VrpqChan *c, nku32_f a, nku32_f b)
{
        void *in, *out;
        int diag = vrpqParamAlloc(c, 8, 8, &in);
        if (diag)
                return diag;
        VRPQ_PARAM_WRITE(in, 0, nku32_f, a);
        VRPQ_PARAM_WRITE(in, 4, nku32_f, b);
        if ((diag = vrpqCall(c, PROC_CALL, in, &out)))
                return diag;
        return VRPQ_PARAM_READ(out, 0, nku64_f) == (nku64_f)a + b ? 0 : -EPROTO;
}

static int vrpq_client(unsigned long posts, unsigned long calls)
{
        VrpqSession *s;
        VrpqChan *c;
        int diag;
        if ((diag = vrpqSessionCreate("/dev/vrpq-clt-vogl0", NULL, 0, &s)))
                return vdie("vrpqSessionCreate", diag);
        if ((diag = vrpqChanCreate(s, NULL, 0, &c)))
                return vdie("vrpqChanCreate", diag);
        double t0 = now_s();
        for (unsigned long i = 0; i < posts; i++) {
                void *in;
                if ((diag = vrpqParamAlloc(c, 4, 0, &in)))
                        return vdie("vrpqParamAlloc", diag);
                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)i);
                if ((diag = vrpqPostAndNotify(c, PROC_POST, in)))
                        return vdie("vrpqPostAndNotify", diag);
        }
        if ((diag = vrpq_call(c, 1, 2))) /* after every post was received */
                return vdie("vrpqCall", diag);
        printf("FIG vrpq_posts %.0f posts/s\n", posts / (now_s() - t0));
        t0 = now_s();
        for (unsigned long i = 0; i < calls; i++)
                if ((diag = vrpq_call(c, (nku32_f)i, 0xffffffffu)))
                        return vdie("vrpqCall", diag);
        printf("FIG vrpq_call %.1f us\n", (now_s() - t0) * 1e6 / calls);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

/* ---- TCP ---- */

static int tcp_nodelay(int fd)
{
        int one = 1;
        return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_connect(const char *host, int port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
                fprintf(stderr, "bench-guest: %s: not an IPv4 address\n", host);
                return -1;
        }
        /* The guest may not listen yet: try for 30 s. */
        for (int i = 0; i < 300; i++) {
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -1;
                if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && tcp_nodelay(fd) == 0) {
                        /* QEMU's forwarder accepts before the guest does:
                         * the guest's first byte says it is there. */
                        char c;
                        if (read(fd, &c, 1) == 1 && c == 'g')
                                return fd;
                }
                close(fd);
                usleep(100 * 1000);
        }
        fprintf(stderr, "bench-guest: no TCP connection to %s:%d within 30 s\n", host, port);
        return -1;
}

static int tcp_accept(int port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
                fprintf(stderr, "bench-guest: cannot listen on port %d: %s\n", port, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        close(fd);
        if (c < 0 || tcp_nodelay(c) < 0 || write(c, "g", 1) != 1) {
                fprintf(stderr, "bench-guest: accept on port %d: %s\n", port, strerror(errno));
                if (c >= 0)
                        close(c);
                return -1;
        }
        return c;
}

static unsigned long num(const char *s)
{
        char *end;
        unsigned long v = strtoul(s, &end, 0);
        if (*end || end == s) {
                fprintf(stderr, "bench-guest: %s: not a number\n", s);
                exit(2);
        }
        return v;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        int rc = 2, fd;
        if (argc == 3 && !strcmp(argv[1], "server") && !strcmp(argv[2], "vrpq"))
                return vrpq_server();
        if (argc == 3 && !strcmp(argv[1], "server") && !strcmp(argv[2], "vbpipe")) {
                use_vbpipe = 1;
                if ((fd = vbpipeOpen("/dev/vbpipe0", O_RDWR | O_DIRECT)) < 0)
                        return vdie("vbpipeOpen", -errno);
                rc = serve_bytes(fd);
                vbpipeClose(fd);
                return rc;
        }
        if (argc == 5 && !strcmp(argv[1], "server") && !strcmp(argv[2], "tcp")) {
                if ((fd = tcp_connect(argv[3], (int)num(argv[4]))) < 0)
                        return 1;
                rc = serve_bytes(fd);
                close(fd);
                return rc;
        }
        if (argc == 5 && !strcmp(argv[1], "client") && !strcmp(argv[2], "vrpq"))
                return vrpq_client(num(argv[3]), num(argv[4]));
        if (argc == 5 && !strcmp(argv[1], "client") && !strcmp(argv[2], "vbpipe")) {
                use_vbpipe = 1;
                if ((fd = vbpipeOpen("/dev/vbpipe0", O_RDWR | O_DIRECT)) < 0)
                        return vdie("vbpipeOpen", -errno);
                rc = time_bytes(fd, "vbpipe", num(argv[3]), num(argv[4]));
                vbpipeClose(fd);
                return rc;
        }
        if (argc == 8 && !strcmp(argv[1], "client") && !strcmp(argv[2], "tcp-listen")) {
                if ((fd = tcp_accept((int)num(argv[3]))) < 0)
                        return 1;
                rc = time_msgs(fd, "tcp", num(argv[4]), num(argv[5]));
                if (rc == 0)
                        rc = time_bytes(fd, "tcp", num(argv[6]), num(argv[7]));
                close(fd);
                return rc;
        }
        fprintf(stderr, "usage: bench-guest server vrpq | server vbpipe | server tcp HOST PORT\n"
                        "       bench-guest client vrpq POSTS CALLS | client vbpipe MIB ECHOES\n"
                        "       bench-guest client tcp-listen PORT POSTS CALLS MIB ECHOES\n");
        return rc;
}
