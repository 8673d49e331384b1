/* VBPIPE direct access across real pvds: ends opened with O_DIRECT and moved
 * with vbpipeRead/vbpipeWrite copy to and from the rings themselves. Part
 * of test-vbpipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-proto.h"
#include "vbpipe-sem.h"

#define ROUNDS 2000

/* ---- ping-pong ------------------------------------------------------------------- */

static int pp_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        for (unsigned i = 0; i < ROUNDS; i++) {
                uint8_t x = (uint8_t)i, y = 0;
                CK(vbpipeWrite(fd, &x, 1) == 1);
                CK(vbpipeRead(fd, &y, 1) == 1);
                CK(y == (uint8_t)(x + 1));
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int pp_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        for (;;) {
                uint8_t x;
                ssize_t n = vbpipeRead(fd, &x, 1);
                if (n == 0)
                        break;
                CK(n == 1);
                x++;
                CK(vbpipeWrite(fd, &x, 1) == 1);
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_pingpong(void)
{
        int sa, sb;
        vbt_run(pp_a, pp_b, &sa, &sb);
        CU_ASSERT_EQUAL(sa, 0);
        CU_ASSERT_EQUAL(sb, 0);
        CU_ASSERT(vbt_idle());
}

/* ---- small writes, large reads ------------------------------------------------------ */

#define SMALL_TOTAL (2u << 20)

/* A writes SMALL_TOTAL pattern bytes in 64-byte direct writes, then shuts
 * its writing and waits for B's close; B reads 64 KiB at a time: every
 * byte, in order, then EOF. */
static int small_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        uint8_t buf[64];
        for (uint64_t off = 0; off < SMALL_TOTAL; off += sizeof(buf)) {
                vbt_fill(buf, sizeof(buf), 7, off);
                CK(vbpipeWrite(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        }
        CK(shutdown(fd, SHUT_WR) == 0);
        uint8_t x;
        CK(vbpipeRead(fd, &x, 1) == 0);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int small_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[65536];
        uint64_t got = 0;
        for (;;) {
                ssize_t n = vbpipeRead(fd, buf, sizeof(buf));
                CK(n >= 0);
                if (n == 0)
                        break;
                CK(vbt_check(buf, (size_t)n, 7, got));
                got += (uint64_t)n;
        }
        if (got != SMALL_TOTAL)
                fprintf(stderr, "small writes: %llu bytes of %u, then EOF\n", (unsigned long long)got, SMALL_TOTAL);
        CK(got == SMALL_TOTAL);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_small_writes(void)
{
        int sa, sb;
        vbt_run(small_a, small_b, &sa, &sb);
        CU_ASSERT_EQUAL(sa, 0);
        CU_ASSERT_EQUAL(sb, 0);
        CU_ASSERT(vbt_idle());
}

/* ---- the rest, then EOF; EPIPE ------------------------------------------------------ */

#define EOF_BYTES 100000u

static int eof_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[EOF_BYTES];
        vbt_fill(buf, sizeof(buf), 3, 0);
        CK(vbpipeWrite(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        CK(vbpipeClose(fd) == 0);
        vbt_tell();
        return 0;
}

static int eof_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        CK(vbt_hear(10000));   /* A has closed: its bytes are in the ring or the socket */
        static uint8_t buf[EOF_BYTES];
        CK(vbpipeRead(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        CK(vbt_check(buf, sizeof(buf), 3, 0));
        CK(vbpipeRead(fd, buf, 1) == 0);
        CK(vbpipeRead(fd, buf, 1) == 0);   /* EOF stays */
        errno = 0;
        CK(vbpipeWrite(fd, buf, 1) == -1 && errno == EPIPE);
        errno = 0;
        CK(vbpipeWrite(fd, buf, 1) == -1 && errno == EPIPE);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_eof(void)
{
        vbt_run(eof_a, eof_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- poll and FIONREAD see what direct writes sent ---------------------------------- */

static int seen_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        uint8_t buf[2000];
        vbt_fill(buf, sizeof(buf), 5, 0);
        CK(vbpipeWrite(fd, buf, 1000) == 1000);
        CK(vbt_hear(10000));
        CK(vbpipeWrite(fd, buf + 1000, 1000) == 1000);
        CK(vbt_hear(10000));
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int seen_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        /* Nobody reads the ring: pvd moves the bytes into the socket,
         * where poll and FIONREAD see them. */
        CK(vbt_wait_ev(fd, POLLIN, 5000) & POLLIN);
        int avail = 0;
        long long end = pvt_now_ms() + 5000;
        while (ioctl(fd, FIONREAD, &avail) == 0 && avail < 1000 && pvt_now_ms() < end)
                usleep(1000);
        CK(avail == 1000);
        uint8_t buf[2000];
        CK(vbpipeRead(fd, buf, 400) == 400);
        CK(ioctl(fd, FIONREAD, &avail) == 0 && avail == 600);
        vbt_tell();
        /* What the socket holds comes before what is in the ring. */
        CK(vbpipeRead(fd, buf + 400, 1600) == 1600);
        CK(vbt_check(buf, sizeof(buf), 5, 0));
        vbt_tell();
        CK(vbpipeRead(fd, buf, 1) == 0);
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_seen(void)
{
        vbt_run(seen_a, seen_b, NULL, NULL);
        CU_ASSERT(vbt_idle());
}

/* ---- a reader that reads in a loop, then stops --------------------------------------- */

/* The reader (vm4) reads in a loop while the writer streams: what it
 * leaves in the ring stays there for its next read (rx.reading), with no
 * xIRQ and nothing moved into the socket. Then it stops for a while and
 * polls the socket, as an event loop does: pvd sees that it stopped and
 * moves the bytes there; every byte arrives once, in order. */
static struct vbpipe_direct *my_page(void);

#define LOOP_BYTES (1u << 20)
#define LOOP_CHUNK 4096u

static int loop_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[LOOP_BYTES];
        vbt_fill(buf, sizeof(buf), 9, 0);
        for (size_t off = 0; off < LOOP_BYTES; off += LOOP_CHUNK)
                CK(vbpipeWrite(fd, buf + off, LOOP_CHUNK) == (ssize_t)LOOP_CHUNK);
        CK(vbt_hear(20000));
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int loop_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[LOOP_BYTES];
        size_t got = 0;
        /* Half of it, and on until the last read left the rest to the
         * next (a read that had to sleep in the socket, its writer being
         * late, says it sleeps). */
        struct vbpipe_direct *page = my_page();
        CK(page != NULL);
        while (got < LOOP_BYTES / 2 ||
               (got < LOOP_BYTES - (256u << 10) && !__atomic_load_n(&page->rx.reading, __ATOMIC_RELAXED))) {
                CK(vbpipeRead(fd, buf + got, LOOP_CHUNK) == (ssize_t)LOOP_CHUNK);
                got += LOOP_CHUNK;
        }
        CK(__atomic_load_n(&page->rx.reading, __ATOMIC_RELAXED) == 1);
        /* Stopped: the writer fills the ring meanwhile. */
        usleep(100000);
        CK(vbt_wait_ev(fd, POLLIN, 5000) & POLLIN);
        int avail = 0;
        CK(ioctl(fd, FIONREAD, &avail) == 0 && avail > 0);
        /* Plain read(2) from here on: the socket alone, as pvd moves the
         * rest (the end's ring is not touched by read(2)). */
        while (got < LOOP_BYTES) {
                ssize_t r = read(fd, buf + got, LOOP_BYTES - got);
                CK(r > 0);
                got += (size_t)r;
        }
        CK(vbt_check(buf, sizeof(buf), 9, 0));
        vbt_tell();
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_loop_reader(void)
{
        uint64_t spells0 = 0, stops0 = 0, spells1 = 0, stops1 = 0;
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_lookouts", &spells0));
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_stops", &stops0));
        vbt_run(loop_a, loop_b, NULL, NULL);
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_lookouts", &spells1));
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_stops", &stops1));
        /* The loop made pvd look out, and the stop ended it. */
        CU_ASSERT(spells1 > spells0);
        CU_ASSERT(stops1 > stops0);
        CU_ASSERT(vbt_idle());
}

/* An event loop (O_NONBLOCK, poll, read until EAGAIN) reads in a loop too,
 * but its last read of each burst says that it sleeps: the next message
 * reaches its socket at once, and pvd need not find out that it stopped
 * (reader_stops moves only when the reader is preempted for a period
 * between two reads of a burst). */
#define EV_MSGS 100u
#define EV_MSG  (32u << 10)

static int ev_a(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        static uint8_t buf[EV_MSG];
        for (unsigned i = 0; i < EV_MSGS; i++) {
                vbt_fill(buf, sizeof(buf), 11, (uint64_t)i * EV_MSG);
                CK(vbpipeWrite(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
                CK(vbt_hear(10000));
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

static int ev_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        CK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
        static uint8_t buf[EV_MSG];
        uint8_t chunk[LOOP_CHUNK];
        for (unsigned i = 0; i < EV_MSGS; i++) {
                size_t got = 0;
                while (got < EV_MSG) {
                        CK(vbt_wait_ev(fd, POLLIN, 5000) & POLLIN);
                        ssize_t r;
                        while ((r = vbpipeRead(fd, chunk, sizeof(chunk))) > 0) {
                                CK(got + (size_t)r <= EV_MSG);
                                memcpy(buf + got, chunk, (size_t)r);
                                got += (size_t)r;
                        }
                        CK(r < 0 && errno == EAGAIN);
                }
                CK(vbt_check(buf, sizeof(buf), 11, (uint64_t)i * EV_MSG));
                vbt_tell();
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_event_loop_reader(void)
{
        uint64_t spells0 = 0, stops0 = 0, spells1 = 0, stops1 = 0;
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_lookouts", &spells0));
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_stops", &stops0));
        vbt_run(ev_a, ev_b, NULL, NULL);
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_lookouts", &spells1));
        CU_ASSERT(vbt_stat_u64("vm4", P0, NULL, "reader_stops", &stops1));
        /* Whether pvd looks out during a burst depends on whether it gets
         * a CPU meanwhile (it runs as SCHED_BATCH and gives way to the two
         * programs), so only what a look would cost is checked. Each
         * burst ends saying it sleeps: a stop pvd finds is one where
         * the reader was preempted between two reads for a whole period
         * (under load), never one per burst. */
        CU_ASSERT(stops1 - stops0 < EV_MSGS / 4);
        if (stops1 != stops0)
                fprintf(stderr, "test-vbpipe: the event loop was found stopped %llu times in %u bursts "
                        "(%llu looks)\n", (unsigned long long)(stops1 - stops0), EV_MSGS,
                        (unsigned long long)(spells1 - spells0));
        CU_ASSERT(vbt_idle());
}

/* ---- a program that writes nonsense into its direct page -------------------------- */

/* The end's direct page, as this process maps it. */
static struct vbpipe_direct *my_page(void)
{
        FILE *f = fopen("/proc/self/maps", "r");
        if (!f)
                return NULL;
        char line[512];
        void *page = NULL;
        while (!page && fgets(line, sizeof(line), f)) {
                unsigned long lo, hi;
                if (strstr(line, "pvd-vbpipe-direct") && sscanf(line, "%lx-%lx", &lo, &hi) == 2)
                        page = (void *)lo;
        }
        fclose(f);
        return page;
}

#define FAR 0x40000000u

static int log_count(const char *vm, const char *what)
{
        static char log[1 << 20];
        if (pvt_read_file(pvt_vm(&vbt_plat, vm)->log, log, sizeof(log)) < 0)
                return 0;
        int n = 0;
        for (const char *p = log; (p = strstr(p, what)); p++)
                n++;
        return n;
}

static int liar_a(void)
{
        int fd = vbt_open(P0, O_RDWR);
        CK(fd >= 0);
        vbt_tell();   /* open: B may lie now */
        static uint8_t buf[65536];
        size_t n = vbt_read_n(fd, buf, sizeof(buf));
        CK(vbt_check(buf, n, 9, 0));   /* the real bytes, however many */
        vbt_sh->count = n;
        CK(vbt_read_n(fd, buf, 1) == 0);
        close(fd);
        return 0;
}

/* B takes a ring's lock as the library would, hands back an index that
 * is behind where it took over (or, lie 2, far beyond the peer's), then
 * sends honestly. It lies once A's open returned: B's open returns as its
 * pvd accepts the pairing, A's when the acceptance reaches vm2, and the
 * vlink reset of lie 2 in between would leave A's open waiting for
 * another partner, as it should. */
enum lie { TX_BEHIND, RX_BEHIND, TX_BEYOND };

static enum lie the_lie;

static int liar_b(void)
{
        int fd = vbt_open(P0, O_RDWR | O_DIRECT);
        CK(fd >= 0);
        struct vbpipe_direct *d = my_page();
        CK(d && d->magic == VBPIPE_DIRECT_MAGIC);
        CK(vbt_hear(10000));
        struct vbpipe_direct_dir *dir = the_lie == RX_BEHIND ? &d->rx : &d->tx;
        long long end = pvt_now_ms() + 5000;
        while (!__atomic_compare_exchange_n(&dir->lock, &(uint32_t){ VBPIPE_LOCK_FREE }, (uint32_t)getpid(), false,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) &&
               pvt_now_ms() < end)
                usleep(1000);
        CK(dir->lock == (uint32_t)getpid());
        uint32_t at = dir->index;
        __atomic_store_n(&dir->index, the_lie == TX_BEYOND ? at + FAR : at - FAR, __ATOMIC_RELEASE);
        __atomic_store_n(&dir->lock, VBPIPE_LOCK_FREE, __ATOMIC_RELEASE);
        static uint8_t buf[65536];
        vbt_fill(buf, sizeof(buf), 9, 0);
        for (size_t off = 0; off < sizeof(buf); off += 4096) {
                ssize_t w = vbpipeWrite(fd, buf + off, 4096);
                if (the_lie == TX_BEYOND && w < 0) {
                        CK(errno == EPIPE);   /* the vlink was reset: the conversation is over */
                        break;
                }
                CK(w == 4096);
        }
        CK(vbpipeClose(fd) == 0);
        return 0;
}

void test_direct_liar(void)
{
        for (enum lie l = TX_BEHIND; l <= TX_BEYOND; l++) {
                the_lie = l;
                int bad = log_count("vm4", "in its direct page"), resets = log_count("vm4", "resetting the link");
                vbt_run(liar_a, liar_b, NULL, NULL);
                if (l == TX_BEYOND) {
                        /* Which index lies pvd cannot tell: the vlink is reset. */
                        CU_ASSERT_EQUAL(log_count("vm4", "resetting the link"), resets + 1);
                        CU_ASSERT_EQUAL(pvt_wait_vlink(&vbt_plat, "vm4", "vm2-vm4-vbpipe0", "ON", 10000), 0);
                } else {
                        /* Its own error: its end loses direct access, the vlink stays up
                         * and pvd carries every byte. */
                        CU_ASSERT_EQUAL(log_count("vm4", "in its direct page"), bad + 1);
                        CU_ASSERT_EQUAL(log_count("vm4", "resetting the link"), resets);
                        CU_ASSERT_EQUAL(vbt_sh->count, 65536);
                }
                CU_ASSERT(vbt_idle());
        }
}
