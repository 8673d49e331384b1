/* Support for the vbpipe tests (see vbpipe-test.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vbpipe.h"
#include "vbpipe-sem.h"

struct pvt_platform vbt_plat;
char vbt_wake[2][64];
struct vbt_shared *vbt_sh;

static int tok_ab[2] = { -1, -1 }, tok_ba[2] = { -1, -1 };   /* A -> B, B -> A */
static bool is_a;

static int suite_setup(void)
{
        vbt_sh = mmap(NULL, sizeof(*vbt_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (vbt_sh == MAP_FAILED) {
                vbt_sh = NULL;
                return -1;
        }
        /* wakeup= writes its wake locks into these files, one per pvd. */
        for (int i = 0; i < 2; i++) {
                snprintf(vbt_wake[i], sizeof(vbt_wake[i]), "/tmp/vbpipe-wake-XXXXXX");
                int fd = mkstemp(vbt_wake[i]);
                if (fd < 0)
                        return -1;
                close(fd);
        }
        if (pvt_platform_init(&vbt_plat, "test-2clients") < 0)
                return -1;
        const char *vms[] = { "vm2", "vm4" };
        for (int i = 0; i < 2; i++) {
                setenv("PVD_WAKE_LOCK", vbt_wake[i], 1);
                /* VBT_DEBUG=1: pvd logs at debug level (PVT_SHOW_LOGS=1 shows it). */
                static const char *const debug[] = { "--log-level", "debug", NULL };
                int rc = pvt_pvd_start(&vbt_plat, vms[i], getenv("VBT_DEBUG") ? debug : NULL);
                unsetenv("PVD_WAKE_LOCK");
                if (rc < 0)
                        return -1;
        }
        if (pvt_wait_vlink(&vbt_plat, "vm2", "vm2-vm4-vbpipe0", "ON", 5000) < 0 ||
            pvt_wait_vlink(&vbt_plat, "vm2", "vm2-vm4-vbpipe1", "ON", 5000) < 0)
                return -1;
        return 0;
}

int vbt_suite_init(void)
{
        if (suite_setup() == 0)
                return 0;
        /* CUnit does not run the cleanup of a suite whose setup failed. */
        vbt_suite_fini();
        return -1;
}

int vbt_suite_fini(void)
{
        /* VBT_KEEP_LOGS=DIR: keep the pvds' logs there. */
        const char *keep = getenv("VBT_KEEP_LOGS");
        for (unsigned i = 0; keep && i < vbt_plat.nvms; i++) {
                char cmd[512];
                snprintf(cmd, sizeof(cmd), "cp %s %s/", vbt_plat.vms[i].log, keep);
                if (system(cmd) != 0)
                        fprintf(stderr, "test-vbpipe: cannot keep %s\n", vbt_plat.vms[i].log);
        }
        int left = pvt_platform_fini(&vbt_plat);
        for (int i = 0; i < 2; i++)
                if (vbt_wake[i][0])
                        unlink(vbt_wake[i]);
        for (int i = 0; i < 2; i++)
                vbt_wake[i][0] = 0;
        if (vbt_sh)
                munmap(vbt_sh, sizeof(*vbt_sh));
        vbt_sh = NULL;
        return left ? -1 : 0;
}

int vbt_open(const char *name, int flags)
{
        int fd = vbpipeOpen(name, flags);
        if (fd < 0)
                fprintf(stderr, "test-vbpipe: vbpipeOpen(%s): %s\n", name, pvLastError());
        return fd;
}

static int (*child_fn)(void);

static int child_main(void *arg)
{
        (void)arg;
        alarm(30);
        signal(SIGPIPE, SIG_IGN);
        return child_fn();
}

pid_t vbt_spawn(const char *vm, int (*fn)(void))
{
        child_fn = fn;
        is_a = strcmp(vm, "vm2") == 0;
        return pvt_spawn(&vbt_plat, vm, child_main, NULL);
}

static void close_pair(int p[2])
{
        for (int i = 0; i < 2; i++) {
                if (p[i] >= 0)
                        close(p[i]);
                p[i] = -1;
        }
}

void vbt_run(int (*a)(void), int (*b)(void), int *sa, int *sb)
{
        memset(vbt_sh, 0, sizeof(*vbt_sh));
        if (pipe2(tok_ab, O_CLOEXEC) < 0 || pipe2(tok_ba, O_CLOEXEC) < 0) {
                CU_FAIL("pipe2");
                return;
        }
        pid_t pa = a ? vbt_spawn("vm2", a) : 0;
        pid_t pb = b ? vbt_spawn("vm4", b) : 0;
        close_pair(tok_ab);
        close_pair(tok_ba);
        /* A fork that failed is a failure, never a program that exited 0. */
        int ra = a ? pvt_wait(pa, 40000) : 0, rb = b ? pvt_wait(pb, 40000) : 0;
        if (ra || rb)
                printf("\n    exit statuses: A (vm2) %d, B (vm4) %d (above 128: killed by signal - 128)", ra, rb);
        if (sa)
                *sa = ra;
        else
                CU_ASSERT_EQUAL(ra, 0);
        if (sb)
                *sb = rb;
        else
                CU_ASSERT_EQUAL(rb, 0);
}

void vbt_tell_u64(uint64_t v)
{
        int fd = is_a ? tok_ab[1] : tok_ba[1];
        if (write(fd, &v, sizeof(v)) != sizeof(v))
                fprintf(stderr, "test-vbpipe: token lost: %m\n");
}

bool vbt_hear_u64(uint64_t *v, int timeout_ms)
{
        int fd = is_a ? tok_ba[0] : tok_ab[0];
        if (vbt_poll(fd, POLLIN, timeout_ms) <= 0)
                return false;
        return read(fd, v, sizeof(*v)) == sizeof(*v);
}

void vbt_tell(void)
{
        vbt_tell_u64(0);
}

bool vbt_hear(int timeout_ms)
{
        uint64_t v;
        return vbt_hear_u64(&v, timeout_ms);
}

void vbt_fill(uint8_t *buf, size_t n, unsigned seed, uint64_t off)
{
        for (size_t i = 0; i < n; i++)
                buf[i] = vbt_pat(seed, off + i);
}

bool vbt_check(const uint8_t *buf, size_t n, unsigned seed, uint64_t off)
{
        for (size_t i = 0; i < n; i++)
                if (buf[i] != vbt_pat(seed, off + i)) {
                        fprintf(stderr, "test-vbpipe: byte %llu is %#x, not %#x (pattern %u)\n",
                                (unsigned long long)(off + i), buf[i], vbt_pat(seed, off + i), seed);
                        return false;
                }
        return true;
}

bool vbt_write_all(int fd, const void *buf, size_t n)
{
        const uint8_t *p = buf;
        while (n) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                p += w;
                n -= (size_t)w;
        }
        return true;
}

size_t vbt_read_n(int fd, void *buf, size_t n)
{
        size_t got = 0;
        while (got < n) {
                ssize_t r = read(fd, (uint8_t *)buf + got, n - got);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        break;
                got += (size_t)r;
        }
        return got;
}

int vbt_poll(int fd, int events, int timeout_ms)
{
        struct pollfd pf = { .fd = fd, .events = (short)events };
        int n;
        do
                n = poll(&pf, 1, timeout_ms);
        while (n < 0 && errno == EINTR);
        return n < 0 ? -1 : n == 0 ? 0 : pf.revents;
}

int vbt_wait_ev(int fd, int events, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        int rev;
        do {
                rev = vbt_poll(fd, events, 10);
                if (rev < 0 || (rev & events) == events)
                        return rev;
        } while (pvt_now_ms() < deadline);
        return rev;
}

uint64_t vbt_fill_pipe(int fd, unsigned seed)
{
        static uint8_t buf[16384];
        uint64_t total = 0;
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        for (;;) {
                vbt_fill(buf, sizeof(buf), seed, total);
                ssize_t w = write(fd, buf, sizeof(buf));
                if (w > 0) {
                        total += (uint64_t)w;
                        continue;
                }
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                        break;
                /* pvd may still move bytes into the ring: full is when it stops. */
                if (!(vbt_poll(fd, POLLOUT, 500) & POLLOUT))
                        break;
        }
        fcntl(fd, F_SETFL, fl);
        return total;
}

/* ---- statistics ---------------------------------------------------------------- */

static bool str_eq(const msgpack_object *o, const char *s)
{
        return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
               memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < m->via.map.size; i++)
                if (str_eq(&m->via.map.ptr[i].key, key))
                        return &m->via.map.ptr[i].val;
        return NULL;
}

static const msgpack_object *pipe_stat(const msgpack_object *doc, const char *pipe, const char *sub, const char *key)
{
        const msgpack_object *vls = map_get(doc, "vlinks");
        if (!vls || vls->type != MSGPACK_OBJECT_ARRAY)
                return NULL;
        for (uint32_t i = 0; i < vls->via.array.size; i++) {
                const msgpack_object *st = map_get(&vls->via.array.ptr[i], "stat");
                if (!str_eq(map_get(st, "pipe"), pipe))
                        continue;
                if (sub)
                        st = map_get(st, sub);
                return map_get(st, key);
        }
        return NULL;
}

bool vbt_stat_str(const char *vm, const char *pipe, const char *sub, const char *key, char *out, size_t cap)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        bool ok = false;
        if (pvt_stat(&vbt_plat, vm, "vbpipe", &zone, &doc) == 0) {
                const msgpack_object *o = pipe_stat(&doc, pipe, sub, key);
                if (o && o->type == MSGPACK_OBJECT_STR) {
                        snprintf(out, cap, "%.*s", (int)o->via.str.size, o->via.str.ptr);
                        ok = true;
                } else if (o && o->type == MSGPACK_OBJECT_BOOLEAN) {
                        snprintf(out, cap, "%s", o->via.boolean ? "true" : "false");
                        ok = true;
                }
        }
        msgpack_zone_destroy(&zone);
        return ok;
}

bool vbt_stat_u64(const char *vm, const char *pipe, const char *sub, const char *key, uint64_t *out)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        bool ok = false;
        if (pvt_stat(&vbt_plat, vm, "vbpipe", &zone, &doc) == 0) {
                const msgpack_object *o = pipe_stat(&doc, pipe, sub, key);
                if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                        *out = o->via.u64;
                        ok = true;
                }
        }
        msgpack_zone_destroy(&zone);
        return ok;
}

bool vbt_wait_state(const char *vm, const char *pipe, const char *sub, const char *state, int timeout_ms)
{
        long long deadline = pvt_now_ms() + timeout_ms;
        char s[32] = "";
        do {
                if (vbt_stat_str(vm, pipe, sub, "state", s, sizeof(s)) && strcmp(s, state) == 0)
                        return true;
                usleep(10000);
        } while (pvt_now_ms() < deadline);
        fprintf(stderr, "test-vbpipe: %s %s %s: state %s, not %s\n", vm, pipe, sub, s, state);
        return false;
}

bool vbt_idle(void)
{
        static const char *const vms[] = { "vm2", "vm4" }, *const pipes[] = { "vbpipe0", "vbpipe1" };
        for (int v = 0; v < 2; v++)
                for (int p = 0; p < 2; p++)
                        if (!vbt_wait_state(vms[v], pipes[p], "local", "closed", 10000) ||
                            !vbt_wait_state(vms[v], pipes[p], "peer", "closed", 10000))
                                return false;
        return true;
}
