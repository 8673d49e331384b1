/* The three drivers at once, the way a new user loads the platform
 * (conf/test-2clients.dts): for PV_LOAD_SECONDS (default 20),
 *   - the VRPQ examples (async, sync, callback) in a loop, vm3 -> vm2;
 *   - the VUMEM example client in a loop, vm3 -> vm2's vumem-server;
 *   - 300 VUMEM sessions at once, each allocating, mapping and freeing a
 *     buffer, again and again, vm5 -> vm2's second vumem-server;
 *   - a 4 MiB stream through vbpipe0 with pvrun dd and cat, vm4 -> vm2,
 *     compared byte for byte, again and again.
 * Then: every program succeeded, no vlink went down (no reset), no pvd
 * logged a reset or a corrupt message, the grants each side counts agree,
 * and every pvd is back to the fds and memfds it had before the load.
 *
 *   load-mixed PVRUN VRPQ_SERVER VRPQ_CLIENT VRPQ_SYNC VRPQ_CALLBACK VUMEM_SERVER VUMEM_CLIENT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pv/vumem.h>

#include "pvtest.h"

#define SESSIONS 300
#define STREAM_BYTES (4u << 20)

static struct pvt_platform plat;
static const char *pvrun, *vrpq_server, *vrpq_client, *vrpq_sync, *vrpq_callback, *vumem_server, *vumem_client;
static long long deadline;
static char dir[256];

/* What the example client and server agree on (examples/vumem-example.h). */
struct example_alloc {
        uint32_t width, height, stride, format;
};

/* Start argv in vm, its output appended to log; the pid. */
static pid_t start(const char *vm, const char *const *argv, const char *log)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                setenv("PVD_RUNTIME_DIR", pvt_vm(&plat, vm)->rt, 1);
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        return pid;
}

/*
 * Each run writes to a log of its own, emptied before the run; a failed
 * run's output is appended to the worker's log with a line saying what
 * failed, so the log holds failures only and the end of a long run shows
 * them.
 */
static void run_log_begin(const char *run)
{
        int fd = open(run, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0)
                close(fd);
}

static void run_log_keep(const char *run, const char *log, const char *what)
{
        FILE *in = fopen(run, "re"), *out = fopen(log, "ae");
        if (out) {
                char buf[4096];
                size_t n;
                while (in && (n = fread(buf, 1, sizeof(buf), in)) > 0)
                        fwrite(buf, 1, n, out);
                fprintf(out, "^^^ %s\n", what);
                fclose(out);
        }
        if (in)
                fclose(in);
}

/* Run a server in vm2 and its client in vm3; 0 if both succeeded. */
static int pair(const char *const *server, const char *const *client, const char *run, const char *log)
{
        run_log_begin(run);
        pid_t s = start("vm2", server, run);
        pid_t c = start("vm3", client, run);
        int cs = pvt_wait(c, 30000), ss = pvt_wait(s, 30000);
        if (cs || ss) {
                char what[400];
                snprintf(what, sizeof(what), "%s: server status %d, client status %d", client[0], ss, cs);
                run_log_keep(run, log, what);
        }
        return cs || ss;
}

static int vrpq_worker(void *arg)
{
        char log[320], run[320];
        snprintf(log, sizeof(log), "%s/vrpq.log", dir);
        snprintf(run, sizeof(run), "%s/vrpq.run.log", dir);
        unsigned runs = 0, fails = 0;
        while (pvt_now_ms() < deadline) {
                const char *as[] = { vrpq_server, NULL }, *ac[] = { vrpq_client, "7", "200", NULL };
                const char *ss[] = { vrpq_sync, "server", NULL }, *sc[] = { vrpq_sync, "client", "300", NULL };
                const char *cs[] = { vrpq_callback, "server", NULL }, *cc[] = { vrpq_callback, "client", "3", NULL };
                fails += pair(as, ac, run, log);
                fails += pair(ss, sc, run, log);
                fails += pair(cs, cc, run, log);
                runs += 3;
        }
        printf("vrpq: %u example pairs, %u failed\n", runs, fails);
        fflush(stdout);
        return fails ? 1 : 0;
}

static int vumem_client_worker(void *arg)
{
        char log[320], run[320];
        snprintf(log, sizeof(log), "%s/vumem-client.log", dir);
        snprintf(run, sizeof(run), "%s/vumem-client.run.log", dir);
        unsigned runs = 0, fails = 0;
        while (pvt_now_ms() < deadline) {
                const char *argv[] = { vumem_client, "/dev/vumem-clt-vogl0", NULL };
                run_log_begin(run);
                int st = pvt_wait(start("vm3", argv, run), 30000);
                if (st) {
                        char what[80];
                        snprintf(what, sizeof(what), "vumem-client run %u: status %d", runs, st);
                        run_log_keep(run, log, what);
                }
                fails += st != 0;
                runs++;
        }
        printf("vumem-client: %u runs, %u failed\n", runs, fails);
        fflush(stdout);
        return fails ? 1 : 0;
}

/* In vm5: SESSIONS sessions at once, each with a buffer, again and again. */
static int vumem_sessions_worker(void *arg)
{
        static VumemSession *s[SESSIONS];
        static VumemBufferHd b[SESSIONS];
        unsigned rounds = 0, fails = 0;
        while (pvt_now_ms() < deadline) {
                unsigned open = 0;
                for (unsigned i = 0; i < SESSIONS; i++) {
                        if (vumemSessionCreate("vumem-clt-vogl0", &s[i]) < 0) {
                                if (!fails++)
                                        fprintf(stderr, "vumem sessions: open %u: %s\n", i, pvLastError());
                                break;
                        }
                        open++;
                }
                for (unsigned i = 0; i < open; i++) {
                        struct example_alloc a = { .width = 16, .height = 16, .format = 1 };
                        char *p;
                        b[i] = NULL;
                        if (vumemBufferAlloc(s[i], &a, sizeof(a), &b[i]) < 0 || vumemBufferMap(b[i], (void **)&p) < 0 ||
                            strncmp(p, "hello from the server VM", 24) != 0) {
                                if (!fails++)
                                        fprintf(stderr, "vumem sessions: buffer %u: %s\n", i, pvLastError());
                        }
                }
                for (unsigned i = 0; i < open; i++) {
                        if (b[i] && vumemBufferFree(b[i]) < 0 && !fails++)
                                fprintf(stderr, "vumem sessions: free %u: %s\n", i, pvLastError());
                        if (vumemSessionDestroy(s[i]) < 0 && !fails++)
                                fprintf(stderr, "vumem sessions: close %u: %s\n", i, pvLastError());
                }
                rounds++;
        }
        printf("vumem sessions: %u rounds of %d sessions, %u failures\n", rounds, SESSIONS, fails);
        fflush(stdout);
        return fails ? 1 : 0;
}

static bool same_file(const char *a, const char *b)
{
        FILE *fa = fopen(a, "re"), *fb = fopen(b, "re");
        bool same = fa && fb;
        while (same) {
                int ca = fgetc(fa), cb = fgetc(fb);
                same = ca == cb;
                if (ca == EOF || cb == EOF)
                        break;
        }
        if (fa)
                fclose(fa);
        if (fb)
                fclose(fb);
        return same;
}

static int vbpipe_worker(void *arg)
{
        char log[320], run[320], data[320], out[320], cmd[700];
        snprintf(log, sizeof(log), "%s/vbpipe.log", dir);
        snprintf(run, sizeof(run), "%s/vbpipe.run.log", dir);
        snprintf(data, sizeof(data), "%s/stream.in", dir);
        snprintf(out, sizeof(out), "%s/stream.out", dir);
        snprintf(cmd, sizeof(cmd), "cat /dev/vbpipe0 > %s", out);
        char ifarg[340];
        snprintf(ifarg, sizeof(ifarg), "if=%s", data);
        unsigned runs = 0, fails = 0;
        while (pvt_now_ms() < deadline) {
                unlink(out);
                const char *rd[] = { pvrun, "/bin/sh", "-c", cmd, NULL };
                const char *wr[] = { pvrun, "/bin/dd", ifarg, "of=/dev/vbpipe0", "bs=65536", "status=none", NULL };
                run_log_begin(run);
                pid_t r = start("vm2", rd, run), w = start("vm4", wr, run);
                int ws = pvt_wait(w, 30000), rs = pvt_wait(r, 30000);
                bool ok = !ws && !rs && same_file(data, out);
                if (!ok) {
                        char what[120];
                        snprintf(what, sizeof(what), "stream %u: writer %d, reader %d%s", runs, ws, rs,
                                 ws || rs ? "" : ", the bytes differ");
                        run_log_keep(run, log, what);
                }
                fails += !ok;
                runs++;
        }
        printf("vbpipe: %u streams of %u bytes, %u failed\n", runs, STREAM_BYTES, fails);
        fflush(stdout);
        return fails ? 1 : 0;
}

/* Entries of /proc/PID/fd, and how many of them are memfds. */
static void fds_of(pid_t pid, int *fds, int *memfds)
{
        char path[64], target[256];
        *fds = *memfds = 0;
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return;
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                char link[300];
                snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n < 0)
                        continue;
                target[n] = 0;
                (*fds)++;
                *memfds += strncmp(target, "/memfd:", 7) == 0;
        }
        closedir(d);
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
        if (!map || map->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object_kv *kv = &map->via.map.ptr[i];
                if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
                    memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0)
                        return &kv->val;
        }
        return NULL;
}

static uint64_t u64_of(const msgpack_object *o)
{
        return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : UINT64_MAX;
}

/* The vlink's downs and its backend's grant counts, as vm sees them. */
static int vlink_figures(const char *vm, const char *link, uint64_t *downs, uint64_t *gout, uint64_t *gin)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        if (pvt_status(&plat, vm, &zone, &doc) < 0) {
                msgpack_zone_destroy(&zone);
                return -1;
        }
        int rc = -1;
        const msgpack_object *vls = get(&doc, "vlinks");
        for (uint32_t i = 0; vls && vls->type == MSGPACK_OBJECT_ARRAY && i < vls->via.array.size; i++) {
                const msgpack_object *vl = &vls->via.array.ptr[i], *name = get(vl, "name");
                if (!name || name->type != MSGPACK_OBJECT_STR || name->via.str.size != strlen(link) ||
                    memcmp(name->via.str.ptr, link, name->via.str.size))
                        continue;
                *downs = u64_of(get(vl, "downs"));
                *gout = u64_of(get(get(vl, "hv"), "grants_out"));
                *gin = u64_of(get(get(vl, "hv"), "grants_in"));
                rc = 0;
        }
        msgpack_zone_destroy(&zone);
        return rc;
}

/* Lines of a log that say a vlink was reset or a message was bad. */
static int bad_lines(const char *log)
{
        static const char *const bad[] = { "resetting the link", "corrupt", "malformed", "never gave",
                                           "no grant", "protocol error" };
        FILE *f = fopen(log, "re");
        if (!f)
                return 0;
        char line[1024];
        int n = 0;
        while (fgets(line, sizeof(line), f))
                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                        if (strstr(line, bad[i])) {
                                if (n++ < 5)
                                        fprintf(stderr, "%s: %s", log, line);
                                break;
                        }
        fclose(f);
        return n;
}

static void show(const char *name)
{
        char path[320];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        pvt_show_log_tail(path, 4000);
}

int main(int argc, char **argv)
{
        if (argc != 8) {
                fprintf(stderr, "usage: load-mixed PVRUN VRPQ_SERVER VRPQ_CLIENT VRPQ_SYNC VRPQ_CALLBACK "
                                "VUMEM_SERVER VUMEM_CLIENT\n");
                return 2;
        }
        pvrun = argv[1];
        vrpq_server = argv[2];
        vrpq_client = argv[3];
        vrpq_sync = argv[4];
        vrpq_callback = argv[5];
        vumem_server = argv[6];
        vumem_client = argv[7];
        /* Sanitized programs under pvrun: libpvrun (built without
         * sanitizers) is preloaded first. */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "", asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        const char *env = getenv("PV_LOAD_SECONDS");
        int seconds = env && atoi(env) > 0 ? atoi(env) : 20;

        if (pvt_platform_init(&plat, "test-2clients") < 0)
                return 1;
        snprintf(dir, sizeof(dir), "%s", plat.dir);
        int failed = 0;
        const char *vms[] = { "vm2", "vm3", "vm4", "vm5" };
        /* Notices and worse: the lines this test reads. */
        const char *quiet[] = { "--log-level", "notice", NULL };
        for (int i = 0; i < 4; i++)
                if (pvt_pvd_start(&plat, vms[i], quiet) < 0) {
                        fprintf(stderr, "pvd %s did not start\n", vms[i]);
                        failed = 1;
                }
        for (int i = 0; i < 4 && !failed; i++)
                if (pvt_wait_vlink(&plat, vms[i], NULL, "ON", 10000) < 0) {
                        fprintf(stderr, "%s's vlinks did not come up\n", vms[i]);
                        failed = 1;
                }
        /* Each pvd at rest (the status queries of the wait closed). */
        int base_fds[4], base_memfds[4];
        for (int i = 0; i < 4; i++) {
                int f = -1, m = -1;
                for (int t = 0; t < 20; t++) {
                        usleep(50 * 1000);
                        fds_of(pvt_vm(&plat, vms[i])->pid, &base_fds[i], &base_memfds[i]);
                        if (base_fds[i] == f && base_memfds[i] == m)
                                break;
                        f = base_fds[i];
                        m = base_memfds[i];
                }
        }

        char path[320], log[320];
        snprintf(path, sizeof(path), "%s/stream.in", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        for (uint32_t i = 0, x = 12345; fd >= 0 && i < STREAM_BYTES / 4; i++) {
                x = x * 1103515245u + 12345u;
                if (write(fd, &x, 4) != 4)
                        failed = 1;
        }
        if (fd >= 0)
                close(fd);

        pid_t srv[2] = { 0, 0 };
        if (!failed) {
                snprintf(log, sizeof(log), "%s/vumem-server.log", dir);
                const char *s0[] = { vumem_server, "/dev/vumem-srv-vogl0", NULL };
                const char *s1[] = { vumem_server, "/dev/vumem-srv-vogl1", NULL };
                srv[0] = start("vm2", s0, log);
                srv[1] = start("vm2", s1, log);
                usleep(300 * 1000);
                deadline = pvt_now_ms() + seconds * 1000LL;
                printf("load: %d s of the three drivers at once\n", seconds);
                pid_t w[4] = {
                        pvt_spawn(&plat, NULL, vrpq_worker, NULL),
                        pvt_spawn(&plat, NULL, vumem_client_worker, NULL),
                        pvt_spawn(&plat, "vm5", vumem_sessions_worker, NULL),
                        pvt_spawn(&plat, NULL, vbpipe_worker, NULL),
                };
                static const char *const names[] = { "vrpq", "vumem-client", "vumem sessions", "vbpipe" };
                static const char *const logs[] = { "vrpq.log", "vumem-client.log", NULL, "vbpipe.log" };
                for (int i = 0; i < 4; i++) {
                        int st = pvt_wait(w[i], (seconds + 120) * 1000);
                        if (st) {
                                fprintf(stderr, "FAIL: %s worker: status %d\n", names[i], st);
                                if (logs[i])
                                        show(logs[i]);
                                failed = 1;
                        }
                }
                for (int i = 0; i < 2; i++) {
                        kill(srv[i], SIGTERM);
                        int st = pvt_wait(srv[i], 10000);
                        if (st != 0) {
                                fprintf(stderr, "FAIL: vumem-server %d did not end cleanly (status %d)\n", i, st);
                                show("vumem-server.log");
                                failed = 1;
                        }
                }
        }

        /* No reset: every vlink stayed up, the two ends agree on grants. */
        static const struct {
                const char *server, *client, *link;
        } links[] = {
                { "vm2", "vm3", "vm2-vm3-vogl0" },
                { "vm2", "vm5", "vm2-vm5-vogl1" },
                { "vm2", "vm4", "vm2-vm4-vbpipe0" },
        };
        for (size_t i = 0; i < sizeof(links) / sizeof(links[0]) && !failed; i++) {
                uint64_t sd = 0, sgo = 0, sgi = 0, cd = 0, cgo = 0, cgi = 0;
                bool agree = false;
                for (int t = 0; t < 50 && !agree; t++) {
                        if (vlink_figures(links[i].server, links[i].link, &sd, &sgo, &sgi) < 0 ||
                            vlink_figures(links[i].client, links[i].link, &cd, &cgo, &cgi) < 0)
                                break;
                        agree = sgo == cgi && cgo == sgi;
                        if (!agree)
                                usleep(100 * 1000);
                }
                if (sd || cd) {
                        fprintf(stderr, "FAIL: vlink %s went down %llu/%llu times under load\n", links[i].link,
                                (unsigned long long)sd, (unsigned long long)cd);
                        failed = 1;
                }
                if (!agree) {
                        fprintf(stderr, "FAIL: vlink %s: grants out/in %llu/%llu on %s, %llu/%llu on %s\n",
                                links[i].link, (unsigned long long)sgo, (unsigned long long)sgi, links[i].server,
                                (unsigned long long)cgo, (unsigned long long)cgi, links[i].client);
                        failed = 1;
                }
        }
        /* Nothing kept: every pvd back to its fds and memfds (it may take a
         * moment for the last closes to be read). */
        for (int i = 0; i < 4; i++) {
                struct pvt_vm *vm = pvt_vm(&plat, vms[i]);
                int fds = -1, memfds = -1;
                for (int t = 0; t < 50; t++) {
                        fds_of(vm->pid, &fds, &memfds);
                        if (fds == base_fds[i] && memfds == base_memfds[i])
                                break;
                        usleep(100 * 1000);
                }
                if (fds != base_fds[i] || memfds != base_memfds[i]) {
                        fprintf(stderr, "FAIL: pvd %s holds %d fds (%d memfds), %d (%d) before the load\n", vms[i],
                                fds, memfds, base_fds[i], base_memfds[i]);
                        failed = 1;
                }
                if (bad_lines(vm->log)) {
                        fprintf(stderr, "FAIL: pvd %s logged resets or bad messages\n", vms[i]);
                        failed = 1;
                }
        }
        if (pvt_platform_fini(&plat) != 0) {
                fprintf(stderr, "FAIL: leftovers after the platform stopped\n");
                failed = 1;
        }
        printf("load: %s\n", failed ? "FAILED" : "passed");
        return failed;
}
