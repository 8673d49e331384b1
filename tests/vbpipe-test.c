/* VBPIPE test programs, shared by the tests that kill things and the
 * hostile-peer test: a program in a VM of the platform opens the pipe and
 * streams, converses, reads or holds, checking every byte it reads against
 * the sender's stream (vbpipe-stream.h); what it saw goes to shared memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-stream.h"
#include "vbpipe-test.h"

#define IO_MAX     (64 * 1024)
#define CHILD_S    60           /* a stuck child ends by SIGALRM */

struct vbt_prog *vbt_pg;
struct pvt_platform *vbt_plat;
const char *vbt_pipe = "vbpipe0";
bool vbt_direct;

int vbt_init(struct pvt_platform *plat)
{
        vbt_plat = plat;
        vbt_pg = mmap(NULL, VBT_PROGS * sizeof(*vbt_pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (vbt_pg == MAP_FAILED) {
                vbt_pg = NULL;
                return -errno;
        }
        return 0;
}

void vbt_fini(void)
{
        if (vbt_pg)
                munmap(vbt_pg, VBT_PROGS * sizeof(*vbt_pg));
        vbt_pg = NULL;
}

uint64_t vbt_seed(int from)
{
        return 0xc0ffee00ull + (uint64_t)from;
}

static void *vbt_writer(void *arg)
{
        struct vbt_prog *p = arg;
        uint8_t *buf = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = vbt_seed(p->from) ^ 0x77;
        vbs_init(&st, vbt_seed(p->from));
        uint64_t limit = p->mode == VBT_STREAM ? UINT64_MAX : VBT_CONV_BYTES;
        while (buf && p->sent < limit) {
                size_t n = vbs_size(&rng, IO_MAX);
                if (n > limit - p->sent)
                        n = (size_t)(limit - p->sent);
                vbs_fill(&st, buf, n);
                for (size_t off = 0; off < n;) {
                        ssize_t w = vbpipeWrite(p->fd, buf + off, n - off);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0) {
                                p->werr = w < 0 ? errno : EIO;
                                goto out;
                        }
                        off += (size_t)w;
                        p->sent += (uint64_t)w;
                }
        }
        if (p->mode == VBT_CONV)
                shutdown(p->fd, SHUT_WR);
out:
        free(buf);
        return NULL;
}

static int program(void *arg)
{
        struct vbt_prog *p = arg;
        alarm(CHILD_S);
        signal(SIGPIPE, SIG_IGN);
        p->fd = vbpipeOpen(vbt_pipe, O_RDWR | (p->nonblock ? O_NONBLOCK : 0) | (vbt_direct ? O_DIRECT : 0));
        if (p->fd < 0) {
                p->open_err = errno;
                return 1;
        }
        p->opened = 1;
        if (p->mode == VBT_SEND)
                vbt_writer(p);
        if (p->mode == VBT_HOLD || p->mode == VBT_SEND)
                for (;;)
                        pause();
        pthread_t th;
        if (p->mode != VBT_READ && pthread_create(&th, NULL, vbt_writer, p) != 0)
                return 1;
        uint8_t *buf = malloc(IO_MAX), *scratch = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = vbt_seed(!p->from) ^ 0x99;
        vbs_init(&st, vbt_seed(!p->from));
        for (;;) {
                ssize_t r = vbpipeRead(p->fd, buf, vbs_size(&rng, IO_MAX));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0) {
                        p->rerr = r < 0 ? errno : 0;
                        break;
                }
                size_t ok = vbs_check(&st, buf, (size_t)r, scratch);
                if (ok != (size_t)r) {
                        p->wrong = true;
                        p->wrong_at = p->got + ok;
                        break;
                }
                p->got += (uint64_t)r;
        }
        /* The reading side ended: the writing one must end too (EPIPE),
         * or the alarm says it hangs. */
        if (p->mode != VBT_READ)
                pthread_join(th, NULL);
        /* After the first error, the pipe's usual answers. */
        ssize_t r = vbpipeRead(p->fd, buf, 1);
        p->rerr2 = r < 0 ? errno : r > 0 ? EIO : 0;
        p->werr2 = vbpipeWrite(p->fd, "x", 1) < 0 ? errno : 0;
        free(buf);
        free(scratch);
        vbpipeClose(p->fd);
        return p->wrong ? 2 : 0;
}

pid_t vbt_run(int i, const char *vm, enum vbt_mode mode, bool nonblock)
{
        memset(&vbt_pg[i], 0, sizeof(vbt_pg[i]));
        vbt_pg[i].mode = mode;
        vbt_pg[i].from = !strcmp(vm, "vm4");
        vbt_pg[i].nonblock = nonblock;
        pid_t pid = pvt_spawn(vbt_plat, vm, program, &vbt_pg[i]);
        CU_ASSERT(pid > 0);
        return pid;
}

/* Both programs stream until each has received some bytes. */
void vbt_start_streams(pid_t *a, pid_t *b)
{
        *a = vbt_run(0, "vm2", VBT_STREAM, false);
        *b = vbt_run(1, "vm4", VBT_STREAM, false);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[0].got > (1u << 20) && vbt_pg[1].got > (1u << 20), 20000));
}

/* A survivor: the bytes it read were the sender's, then EOF, and its
 * writes failed with EPIPE, all within VBT_PROMPT_MS. */
void vbt_check_survivor(pid_t pid, int i, const char *what, bool pvd_died)
{
        int rc = pvt_wait(pid, VBT_PROMPT_MS);
        if (rc != 0 || vbt_pg[i].rerr || vbt_pg[i].werr != EPIPE || vbt_pg[i].rerr2 || vbt_pg[i].werr2 != EPIPE) {
                printf("\n    %s: program %d: exit %d, read %llu (errno %d, then %d), wrote %llu (errno %d, then %d)",
                       what, i, rc, (unsigned long long)vbt_pg[i].got, vbt_pg[i].rerr, vbt_pg[i].rerr2,
                       (unsigned long long)vbt_pg[i].sent, vbt_pg[i].werr, vbt_pg[i].werr2);
                if (vbt_pg[i].wrong)
                        printf(", a wrong byte at %llu", (unsigned long long)vbt_pg[i].wrong_at);
                printf(" ");
        }
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_FALSE(vbt_pg[i].wrong);
        CU_ASSERT(vbt_pg[i].got > 0);
        if (pvd_died) {
                /* pvd's socket end closed with the program's bytes unread:
                 * the kernel says so once (ECONNRESET), then EOF / EPIPE. */
                CU_ASSERT(vbt_pg[i].rerr == 0 || vbt_pg[i].rerr == ECONNRESET);
                CU_ASSERT(vbt_pg[i].werr == EPIPE || vbt_pg[i].werr == ECONNRESET);
        } else {
                CU_ASSERT_EQUAL(vbt_pg[i].rerr, 0);
                CU_ASSERT_EQUAL(vbt_pg[i].werr, EPIPE);
        }
        CU_ASSERT_EQUAL(vbt_pg[i].rerr2, 0);
        CU_ASSERT_EQUAL(vbt_pg[i].werr2, EPIPE);
}

/* A new conversation: both programs send VBT_CONV_BYTES, and read them all. */
void vbt_conversation(void)
{
        pid_t a = vbt_run(2, "vm2", VBT_CONV, false), b = vbt_run(3, "vm4", VBT_CONV, false);
        vbt_conversation_end(a, b);
}

void vbt_conversation_end(pid_t a, pid_t b)
{
        int ra = pvt_wait(a, 20000), rb = pvt_wait(b, 20000);
        for (int i = 2; i < 4; i++) {
                int rc = i == 2 ? ra : rb;
                const struct vbt_prog *p = &vbt_pg[i];
                if (rc || p->sent != VBT_CONV_BYTES || p->got != VBT_CONV_BYTES || p->werr || p->rerr || p->wrong)
                        printf("\n    conversation, %s's program: exit %d, opened %d, read %llu (errno %d), "
                               "wrote %llu (errno %d)%s ",
                               i == 2 ? "vm2" : "vm4", rc, p->opened, (unsigned long long)p->got, p->rerr,
                               (unsigned long long)p->sent, p->werr, p->wrong ? ", a wrong byte" : "");
        }
        CU_ASSERT_EQUAL(ra, 0);
        CU_ASSERT_EQUAL(rb, 0);
        for (int i = 2; i < 4; i++) {
                if (vbt_pg[i].open_err)
                        printf("\n    open in %s: %s ", i == 2 ? "vm2" : "vm4", strerror(vbt_pg[i].open_err));
                CU_ASSERT_EQUAL(vbt_pg[i].open_err, 0);
                CU_ASSERT_EQUAL(vbt_pg[i].sent, VBT_CONV_BYTES);
                CU_ASSERT_EQUAL(vbt_pg[i].got, VBT_CONV_BYTES);
                CU_ASSERT_EQUAL(vbt_pg[i].werr, 0);
                CU_ASSERT_FALSE(vbt_pg[i].wrong);
        }
}

int vbt_suite_init(struct pvt_platform *plat)
{
        if (vbt_init(plat) < 0 || pvt_platform_init(plat, "test-2clients") < 0)
                goto fail;
        /* VBT_DEBUG=1: pvd logs at debug level (PVT_SHOW_LOGS=1 shows it). */
        static const char *const debug[] = { "--log-level", "debug", NULL };
        const char *const *opt = getenv("VBT_DEBUG") ? debug : NULL;
        if (pvt_pvd_start(plat, "vm2", opt) < 0 || pvt_pvd_start(plat, "vm4", opt) < 0 ||
            pvt_wait_vlink(plat, "vm4", NULL, "ON", 10000) < 0)
                goto fail;
        return 0;
fail:
        pvt_platform_fini(plat);
        return -1;
}

int vbt_suite_fini(const char *test)
{
        int left = pvt_platform_fini(vbt_plat);
        vbt_fini();
        if (left)
                fprintf(stderr, "%s: %d leftovers\n", test, left);
        return left ? -1 : 0;
}
