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

int main(int argc, char **argv)
{
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
