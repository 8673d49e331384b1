/* vbpipe-duplex: one end of a vbpipe busy both ways, for the guest tests
 * (tests/test-qemu-guests.sh): it opens the end with vbpipeOpen, writes a
 * stream into it from a thread and reads the other side's in the main
 * thread, until the other side goes away (its VM is killed); then it says
 * how each direction ended. The seed promises EOF on read and EPIPE on
 * write once the other end is gone.
 *
 *   vbpipe-duplex [DEVICE]      (default /dev/vbpipe0)
 *
 * Prints "open" once the rendezvous is done and some bytes came, then
 * "read N bytes, then EOF" (or the error) and "wrote N bytes, then EPIPE"
 * (or the error). Exit 0 when reading ended with EOF and writing with
 * EPIPE, 1 otherwise, 2 when the open failed.
 *
 *   vbpipe-duplex echo [DEVICE [US]]  echoes every byte until EOF, each
 *                                     answer US microseconds after its byte
 *   vbpipe-duplex ping N [DEVICE]   N one-byte round trips with an echo
 *
 * These two open the end with O_DIRECT, as a program that wants speed
 * does, for the test of the direct path's waits across the boundary: ping
 * checks each answer and exits 0 when all N came back right, echo exits 0
 * at EOF after echoing; 1 on a wrong byte or an error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pv/pvclient.h>
#include <pv/vbpipe.h>

#define CHUNK      65536
#define WRITER_END_MS 10000   /* the writer must see the end this soon after EOF */

static int fd;
static atomic_uint_fast64_t wrote;
static atomic_int write_err;    /* errno that ended writing; -1 while writing */

static void *writer(void *arg)
{
        static char buf[CHUNK];
        (void)arg;
        memset(buf, 0x5a, sizeof(buf));
        for (;;) {
                ssize_t n = vbpipeWrite(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        atomic_store(&write_err, n < 0 ? errno : 0);
                        return NULL;
                }
                atomic_fetch_add(&wrote, (uint64_t)n);
        }
}

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int io_fail(const char *what, ssize_t n)
{
        fprintf(stderr, "vbpipe-duplex: %s: %s\n", what, n < 0 ? strerror(errno) : "end of the pipe");
        return 1;
}

/* echo (rounds 0: until EOF; each answer delay_us after its byte) or ping
 * (rounds > 0) on an O_DIRECT end. */
static int one_byte(const char *dev, unsigned long rounds, unsigned long delay_us)
{
        int e = vbpipeOpen(dev, O_RDWR | O_DIRECT);
        if (e < 0) {
                fprintf(stderr, "vbpipe-duplex: open %s: %s (%s)\n", dev, strerror(errno), pvLastError());
                return 2;
        }
        unsigned long i = 0;
        for (;; i++) {
                char out = (char)('a' + i % 26), in;
                ssize_t n;
                if (rounds) {
                        if (i == rounds)
                                break;
                        if ((n = vbpipeWrite(e, &out, 1)) != 1)
                                return io_fail("writing", n);
                }
                if ((n = vbpipeRead(e, &in, 1)) != 1) {
                        if (n == 0 && !rounds)
                                break;   /* the pinger closed: done */
                        return io_fail("reading", n);
                }
                if (!rounds && delay_us) {
                        struct timespec d = { (time_t)(delay_us / 1000000), (long)(delay_us % 1000000) * 1000 };
                        while (nanosleep(&d, &d) < 0 && errno == EINTR)
                                ;
                }
                if (!rounds && (n = vbpipeWrite(e, &in, 1)) != 1)
                        return io_fail("echoing", n);
                if (rounds && in != out) {
                        fprintf(stderr, "vbpipe-duplex: round trip %lu: sent %c, got %c back\n", i, out, in);
                        return 1;
                }
        }
        printf("%s %lu bytes\n", rounds ? "round trips:" : "echoed", i);
        vbpipeClose(e);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc > 1 && !strcmp(argv[1], "echo"))
                return one_byte(argc > 2 ? argv[2] : "/dev/vbpipe0", 0, argc > 3 ? strtoul(argv[3], NULL, 10) : 0);
        if (argc > 2 && !strcmp(argv[1], "ping"))
                return one_byte(argc > 3 ? argv[3] : "/dev/vbpipe0", strtoul(argv[2], NULL, 10), 0);
        const char *dev = argc > 1 ? argv[1] : "/dev/vbpipe0";
        static char buf[CHUNK];
        uint64_t got = 0;
        int read_err = 0;
        bool said = false;

        setvbuf(stdout, NULL, _IOLBF, 0);
        signal(SIGPIPE, SIG_IGN); /* EPIPE, as a program that wants it sees it */
        fd = vbpipeOpen(dev, O_RDWR);
        if (fd < 0) {
                fprintf(stderr, "vbpipe-duplex: open %s: %s (%s)\n", dev, strerror(errno), pvLastError());
                return 2;
        }
        atomic_store(&write_err, -1);
        pthread_t t;
        if (pthread_create(&t, NULL, writer, NULL) != 0) {
                fprintf(stderr, "vbpipe-duplex: no thread\n");
                return 2;
        }
        for (;;) {
                ssize_t n = vbpipeRead(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        read_err = n < 0 ? errno : 0;
                        break;
                }
                got += (uint64_t)n;
                if (!said && got >= CHUNK) {
                        printf("open\n");
                        said = true;
                }
        }
        printf("read %" PRIu64 " bytes, then %s\n", got, read_err ? strerror(read_err) : "EOF");
        long long end = now_ms() + WRITER_END_MS;
        while (atomic_load(&write_err) < 0 && now_ms() < end)
                usleep(10 * 1000);
        int werr = atomic_load(&write_err);
        if (werr < 0) {
                printf("wrote %" PRIu64 " bytes, and writing did not end within %d ms of EOF\n",
                       (uint64_t)atomic_load(&wrote), WRITER_END_MS);
                return 1; /* the thread is left blocked: exit ends it */
        }
        pthread_join(t, NULL);
        printf("wrote %" PRIu64 " bytes, then %s\n", (uint64_t)atomic_load(&wrote),
               werr == EPIPE ? "EPIPE" : werr ? strerror(werr) : "a write of 0 bytes");
        vbpipeClose(fd);
        return read_err == 0 && werr == EPIPE ? 0 : 1;
}
