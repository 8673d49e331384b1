/* pvhv's life: read the platform, take DIR's lock, create every vlink's
 * shared memory and write its header, listen on every side's socket, tell
 * systemd we are ready, run the loop, and on SIGTERM or SIGINT stop cleanly
 * (sockets removed). Also the QEMU options that attach a VM's vlinks.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockfile.h"
#include "log.h"
#include "pvd-core.h"
#include "pvhv.h"

/* Wait before accepting again on a socket paused for want of fds. */
#define RESUME_MS 200
/* Every guest of a vlink can write its header: pvhv writes it again this
 * often, so that a pvd (re)starting in a VM that did not rejoin, a guest's,
 * finds it whole after a scribble. pvhv writes it and never reads it. */
#define RESTORE_MS 1000

int pvhv_sock_path(const char *dir, const struct pv_vlink_cfg *cfg, const char *vm, char *buf, size_t len)
{
        size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);
        int n = snprintf(buf, len, "%s/%s.%s.sock", dir, cfg->link_name, vm);
        if (n < 0 || (size_t)n >= len || (size_t)n >= max)
                return -ENAMETOOLONG;
        return 0;
}

/* DIR/pvhv.lock, held for pvhv's life, names its holder. */
static int take_lock(const char *dir)
{
        char path[PVHV_DIR_MAX + 16], line[32], holder[64];
        snprintf(path, sizeof(path), "%s/pvhv.lock", dir);
        snprintf(line, sizeof(line), "pid %d\n", (int)getpid());
        int fd = pv_lockfile_take(path, line, holder, sizeof(holder));
        if (fd == -EBUSY)
                pv_err("another pvhv (%s) already serves %s; stop it first (lock %s)",
                       holder[0] ? holder : "pid unknown", dir, path);
        else if (fd < 0)
                pv_err("cannot open the lock %s: %s", path, strerror(-fd));
        return fd;
}

/* ---- a vlink's memory --------------------------------------------------------- */

static int link_create(struct pvhv *hv, struct pvhv_link *l, const struct pv_vlink_cfg *cfg)
{
        const struct pv_platform *plat = hv->plat;
        size_t sizes[PV_REGION_COUNT];
        uint64_t region[PV_REGION_COUNT];
        l->hv = hv;
        l->cfg = cfg;
        l->mem_fd = -1;
        pv_vlink_cfg_region_sizes(cfg, sizes);
        for (int r = 0; r < PV_REGION_COUNT; r++)
                region[r] = sizes[r];
        struct pv_ivshm_hdr *h = &l->hdr;
        memset(h, 0, sizeof(*h));
        if (pv_ivshm_layout(region, cfg->hv_heap, h) < 0) {
                pv_err("vlink %s: its regions and hv-heap do not fit in memory; lower hv-heap", cfg->link_name);
                return -EOVERFLOW;
        }
        h->magic = PV_IVSHM_MAGIC;
        h->version = PV_IVSHM_VERSION;
        h->vectors = PV_IVSHM_VECTORS;
        snprintf(h->link_name, sizeof(h->link_name), "%s", cfg->link_name);
        for (int s = 0; s < 2; s++) {
                snprintf(h->vm[s], sizeof(h->vm[s]), "%s", plat->vms[cfg->vm[s]].name);
                struct pvhv_side *sd = &l->side[s];
                sd->link = l;
                sd->side = (enum pv_side)s;
                sd->next_id = PV_IVSHM_PEER_ID_FIRST(s);
                sd->vm = plat->vms[cfg->vm[s]].name;
                for (unsigned v = 0; v < PV_IVSHM_VECTORS; v++)
                        sd->vec[v] = -1;
                if (pvhv_sock_path(hv->dir, cfg, sd->vm, sd->path, sizeof(sd->path)) < 0) {
                        pv_err("vlink %s: socket path %s/%s.%s.sock longer than %zu bytes; use a shorter --dir",
                               cfg->link_name, hv->dir, cfg->link_name, sd->vm, sizeof(sd->path) - 1);
                        return -ENAMETOOLONG;
                }
        }

        char name[200];
        snprintf(name, sizeof(name), "pvhv:%s", cfg->link_name);
        l->mem_fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (l->mem_fd < 0) {
                pv_err("vlink %s: memfd_create: %s", cfg->link_name, strerror(errno));
                return -errno;
        }
        /* Sealed, so that no peer can shrink it under the others' mappings
         * (SIGBUS) nor seal it further (F_SEAL_WRITE would break them). */
        if (ftruncate(l->mem_fd, (off_t)h->size) < 0 ||
            fcntl(l->mem_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = errno;
                pv_err("vlink %s: cannot size its shared memory (%llu bytes): %s", cfg->link_name,
                       (unsigned long long)h->size, strerror(e));
                return -e;
        }
        void *map = mmap(NULL, PV_IVSHM_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, l->mem_fd, 0);
        if (map == MAP_FAILED) {
                pv_err("vlink %s: cannot map its header: %s", cfg->link_name, strerror(errno));
                return -errno;
        }
        l->map = map;
        pvhv_link_write_hdr(l);
        pv_info("vlink %s (%s, %s<->%s): %llu MiB of shared memory, heaps of %llu KiB", cfg->link_name,
                cfg->compatible, h->vm[PV_SERVER], h->vm[PV_CLIENT], (unsigned long long)(h->size >> 20),
                (unsigned long long)(h->heap[0].size >> 10));
        return 0;
}

static void link_destroy(struct pvhv_link *l)
{
        if (l->map)
                munmap(l->map, PV_IVSHM_PAGE);
        if (l->mem_fd >= 0)
                close(l->mem_fd);
}

/* ---- the loop ------------------------------------------------------------------- */

static void on_resume(uv_timer_t *t)
{
        struct pvhv *hv = t->data;
        for (unsigned i = 0; i < hv->nlinks; i++)
                for (int s = 0; s < 2; s++)
                        pvhv_side_resume(&hv->links[i].side[s]);
}

void pvhv_resume_later(struct pvhv *hv)
{
        if (!hv->stopping && !uv_is_active((uv_handle_t *)&hv->resume))
                uv_timer_start(&hv->resume, on_resume, RESUME_MS, 0);
}

static void on_restore(uv_timer_t *t)
{
        struct pvhv *hv = t->data;
        for (unsigned i = 0; i < hv->nlinks; i++)
                if (hv->links[i].map)
                        pvhv_link_write_hdr(&hv->links[i]);
}

static void pvhv_stop(struct pvhv *hv)
{
        if (hv->stopping)
                return;
        hv->stopping = true;
        pvd_sd_notify("STOPPING=1");
        for (unsigned i = 0; i < hv->nlinks; i++)
                for (int s = 0; s < 2; s++)
                        pvhv_side_stop(&hv->links[i].side[s]);
        uv_timer_stop(&hv->resume);
        uv_timer_stop(&hv->restore);
        for (int i = 0; i < 3; i++)
                uv_signal_stop(&hv->sig[i]);
}

static void on_signal(uv_signal_t *h, int signum)
{
        if (signum == SIGHUP)
                return;
        pv_notice("%s received, stopping", strsignal(signum));
        pvhv_stop(h->data);
}

static void walk_close(uv_handle_t *h, void *arg)
{
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

int pvhv_run(const struct pvhv_options *opt)
{
        struct pvhv hv_obj = { .lock_fd = -1 };
        struct pvhv *hv = &hv_obj;
        char err[512];
        int rc = 1;

        hv->plat = calloc(1, sizeof(*hv->plat));
        if (!hv->plat)
                return 1;
        if (pv_config_load_file(opt->config, hv->plat, err, sizeof(err)) < 0) {
                pv_err("%s", err);
                goto out;
        }
        if (strlen(opt->dir) >= PVHV_DIR_MAX) {
                pv_err("--dir %s: longer than %d bytes (it holds UNIX sockets)", opt->dir, PVHV_DIR_MAX - 1);
                goto out;
        }
        snprintf(hv->dir, sizeof(hv->dir), "%s", opt->dir);
        int e = pv_mkdir_p(hv->dir, 0755);
        if (e < 0) {
                pv_err("cannot create %s: %s", hv->dir, strerror(-e));
                goto out;
        }
        hv->lock_fd = take_lock(hv->dir);
        if (hv->lock_fd < 0)
                goto out;

        /* Each side holds a socket, a peer and its eventfds: take all the
         * fds we may. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        signal(SIGPIPE, SIG_IGN);

        hv->links = calloc(hv->plat->nvlinks ? hv->plat->nvlinks : 1, sizeof(*hv->links));
        if (!hv->links)
                goto out_unlock;
        hv->loop = uv_default_loop();
        uv_timer_init(hv->loop, &hv->resume);
        hv->resume.data = hv;
        uv_timer_init(hv->loop, &hv->restore);
        hv->restore.data = hv;
        int signums[3] = { SIGTERM, SIGINT, SIGHUP };
        for (int i = 0; i < 3; i++) {
                uv_signal_init(hv->loop, &hv->sig[i]);
                hv->sig[i].data = hv;
                uv_signal_start(&hv->sig[i], on_signal, signums[i]);
        }
        for (unsigned i = 0; i < hv->plat->nvlinks; i++) {
                hv->nlinks++;
                if (link_create(hv, &hv->links[i], &hv->plat->vlinks[i]) < 0)
                        goto out_stop;
        }
        for (unsigned i = 0; i < hv->nlinks; i++)
                for (int s = 0; s < 2; s++)
                        if (pvhv_side_listen(&hv->links[i].side[s]) < 0)
                                goto out_stop;
        char status[PVHV_DIR_MAX + 96];
        snprintf(status, sizeof(status), "READY=1\nSTATUS=serving %u vlinks in %s", hv->nlinks, hv->dir);
        pvd_sd_notify(status);
        pv_notice("serving %u vlinks (%u sockets) in %s", hv->nlinks, 2 * hv->nlinks, hv->dir);
        uv_timer_start(&hv->restore, on_restore, RESTORE_MS, RESTORE_MS);
        uv_run(hv->loop, UV_RUN_DEFAULT);
        rc = 0;
        goto out_close;

out_stop:
        pvhv_stop(hv);
out_close:
        uv_walk(hv->loop, walk_close, NULL);
        uv_run(hv->loop, UV_RUN_DEFAULT);
        uv_loop_close(hv->loop);
        for (unsigned i = 0; i < hv->nlinks; i++)
                link_destroy(&hv->links[i]);
out_unlock:
        snprintf(err, sizeof(err), "%s/pvhv.lock", hv->dir);
        unlink(err);
        close(hv->lock_fd);
out:
        free(hv->links);
        free(hv->plat);
        return rc;
}

/* ---- --qemu-args ------------------------------------------------------------------ */

/* A QEMU option value: commas doubled (QEMU's escape). */
static void put_qemu_value(FILE *f, const char *s)
{
        for (; *s; s++) {
                if (*s == ',')
                        fputc(',', f);
                fputc(*s, f);
        }
}

int pvhv_print_qemu_args(const char *config, const char *dir, const char *vm)
{
        struct pv_platform *plat = calloc(1, sizeof(*plat));
        char err[512], absdir[PATH_MAX], path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        int rc = 1;
        if (!plat)
                return 1;
        if (pv_config_load_file(config, plat, err, sizeof(err)) < 0) {
                fprintf(stderr, "pvhv: %s\n", err);
                goto out;
        }
        int v = pv_config_vm_find(plat, vm);
        if (v < 0) {
                fprintf(stderr, "pvhv: %s: no VM called \"%s\" (this platform has:", config, vm);
                for (unsigned i = 0; i < plat->nvms; i++)
                        fprintf(stderr, "%s %s", i ? "," : "", plat->vms[i].name);
                fprintf(stderr, ")\n");
                rc = 2;
                goto out;
        }
        /* QEMU resolves a relative path from its own directory: print ours. */
        if (dir[0] == '/') {
                snprintf(absdir, sizeof(absdir), "%s", dir);
        } else {
                char cwd[PATH_MAX];
                if (!getcwd(cwd, sizeof(cwd))) {
                        fprintf(stderr, "pvhv: cannot find the current directory: %s\n", strerror(errno));
                        goto out;
                }
                snprintf(absdir, sizeof(absdir), "%s/%s", cwd, dir);
        }
        unsigned n = 0;
        for (unsigned i = 0; i < plat->nvlinks; i++) {
                const struct pv_vlink_cfg *cfg = &plat->vlinks[i];
                if (cfg->vm[PV_SERVER] != (unsigned)v && cfg->vm[PV_CLIENT] != (unsigned)v)
                        continue;
                if (pvhv_sock_path(absdir, cfg, vm, path, sizeof(path)) < 0) {
                        fprintf(stderr, "pvhv: %s/%s.%s.sock: longer than a UNIX socket path (%zu bytes); "
                                "use a shorter --dir\n", absdir, cfg->link_name, vm, sizeof(path) - 1);
                        goto out;
                }
                /* The id names the vlink: unique among this VM's vlinks. */
                printf("-chardev socket,id=pv-%s,path=", cfg->link_name);
                put_qemu_value(stdout, path);
                printf(" -device ivshmem-doorbell,chardev=pv-%s,vectors=%u\n", cfg->link_name, PV_IVSHM_VECTORS);
                n++;
        }
        if (n == 0)
                fprintf(stderr, "pvhv: %s has no vlinks in %s: no options to print\n", vm, config);
        rc = fflush(stdout) == 0 ? 0 : 1;
out:
        free(plat);
        return rc;
}
