/* pvd's life: validate everything, take the VM's locks, create vlinks and
 * device nodes, tell systemd we are ready, run the loop, and on SIGTERM or
 * SIGINT stop cleanly (every socket removed, the peers see the vlinks go
 * OFF).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/hv.h"
#include "lockfile.h"
#include "pvd-limits.h"
#include "node.h"
#include "pvd-core.h"
#include "pvd.h"

const struct pvd_driver *const pvd_drivers[PV_DRV_COUNT] = {
        [PV_DRV_CORE] = NULL,
        [PV_DRV_VRPQ] = &pvd_drv_vrpq,
        [PV_DRV_VUMEM] = &pvd_drv_vumem,
        [PV_DRV_VBPIPE] = &pvd_drv_vbpipe,
};

uint64_t pvd_random64(void)
{
        uint64_t v = 0;
        while (getrandom(&v, sizeof(v), 0) != sizeof(v))
                ;
        return v;
}

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
void pvd_sd_notify(const char *msg)
{
        const char *path = getenv("NOTIFY_SOCKET");
        if (!path || !*path)
                return;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(path);
        if (len >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
                return;
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = 0; /* abstract namespace */
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return;
        if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
                pv_warn("cannot notify systemd at %s: %s", path, strerror(errno));
        close(fd);
}

int pvd_mkdir_p(const char *dir, mode_t mode)
{
        return pv_mkdir_p(dir, mode);
}

/* Take an exclusive lock on path, recording who holds it. On conflict, say
 * who holds it. */
int pvd_lock_take(struct pvd *pvd, const char *path, const char *what)
{
        char line[128], holder[128];
        snprintf(line, sizeof(line), "%s, pid %d\n", pvd->vm_name, (int)getpid());
        int fd = pv_lockfile_take(path, line, holder, sizeof(holder));
        if (fd == -EBUSY)
                pv_err("another pvd (%s) already %s; stop it first (lock %s)", holder[0] ? holder : "unknown", what,
                       path);
        else if (fd < 0)
                pv_err("cannot open lock %s: %s", path, strerror(-fd));
        return fd;
}

/* A user or group from the configuration: "" (the default), a number, or a
 * name looked up with lookup (getpwnam/getgrnam through small adapters). */
static int resolve_id(const char *s, unsigned dflt, bool (*lookup)(const char *, unsigned *), unsigned *out)
{
        char *end;
        if (!*s) {
                *out = dflt;
                return 0;
        }
        unsigned long v = strtoul(s, &end, 10);
        if (*end == 0 && end != s) {
                *out = (unsigned)v;
                return 0;
        }
        return lookup(s, out) ? 0 : -ENOENT;
}

/* The backend's capabilities less those PVD_HV_CAPS_OFF names. */
static int hv_caps_init(struct pvd *pvd)
{
        pvd->hv_caps = pvd->hv->caps;
        const char *env = getenv("PVD_HV_CAPS_OFF");
        if (!env || !*env)
                return 0;
        unsigned off;
        const char *bad = "";
        if (hv_caps_parse(env, &off, &bad) < 0) {
                pv_err("PVD_HV_CAPS_OFF=%s: unknown capability \"%s\" (known: one_kernel, foreign_mem, slice, all)",
                       env, bad);
                return -EINVAL;
        }
        pvd->hv_caps &= ~off;
        pv_notice("capabilities turned off by PVD_HV_CAPS_OFF=%s", env);
        return 0;
}

static bool lookup_user(const char *name, unsigned *id)
{
        struct passwd *pw = getpwnam(name);
        if (pw)
                *id = pw->pw_uid;
        return pw != NULL;
}

static bool lookup_group(const char *name, unsigned *id)
{
        struct group *gr = getgrnam(name);
        if (gr)
                *id = gr->gr_gid;
        return gr != NULL;
}

/* Device nodes belong to this group unless the platform names one
 * (pvd,group), so that a user added to it may run every program; where the
 * group does not exist, to pvd's own. */
#define PVD_NODE_GROUP "pvd"

static unsigned node_gid_default(void)
{
        unsigned gid;
        if (lookup_group(PVD_NODE_GROUP, &gid))
                return gid;
        pv_info("no group \"%s\" on this system: device nodes without pvd,group belong to group %u; create it "
                "(systemd-sysusers) to let its members use them", PVD_NODE_GROUP, (unsigned)getegid());
        return getegid();
}

/* Build vlinks and node descriptions (nothing created on the system yet). */
static int pvd_plan(struct pvd *pvd)
{
        const struct pv_platform *plat = pvd->plat;
        unsigned nvl = 0, node_gid = node_gid_default();
        for (unsigned i = 0; i < plat->nvlinks; i++)
                nvl += plat->vlinks[i].vm[PV_SERVER] == (unsigned)pvd->vm ||
                       plat->vlinks[i].vm[PV_CLIENT] == (unsigned)pvd->vm;
        pvd->vlinks = calloc(nvl ? nvl : 1, sizeof(*pvd->vlinks));
        pvd->nodes = calloc(nvl * PV_DRV_COUNT + 1, sizeof(*pvd->nodes));
        if (!pvd->vlinks || !pvd->nodes)
                return -ENOMEM;

        for (unsigned i = 0; i < plat->nvlinks; i++) {
                const struct pv_vlink_cfg *cfg = &plat->vlinks[i];
                enum pv_side side;
                if (cfg->vm[PV_SERVER] == (unsigned)pvd->vm)
                        side = PV_SERVER;
                else if (cfg->vm[PV_CLIENT] == (unsigned)pvd->vm)
                        side = PV_CLIENT;
                else
                        continue;
                struct pvd_vlink *vl = &pvd->vlinks[pvd->nvlinks];
                vl->pvd = pvd;
                vl->cfg = cfg;
                vl->index = pvd->nvlinks++;
                vl->side = side;
                vl->peer_vm = plat->vms[cfg->vm[side == PV_SERVER ? PV_CLIENT : PV_SERVER]].name;
                for (int r = 0; r < PV_REGION_COUNT; r++)
                        vl->region[r].fd = -1;

                for (int d = 0; d < PV_DRV_COUNT; d++) {
                        const struct pvd_driver *drv = pvd_drivers[d];
                        if (!drv || !drv->region_size || !drv->region_size(cfg))
                                continue;
                        struct pvd_node *n = &pvd->nodes[pvd->nnodes];
                        if (pv_config_dev_name(cfg, side, drv->name, n->name, sizeof(n->name)) < 0)
                                continue;
                        const struct pv_access *acc = &cfg->access[side];
                        unsigned uid, gid;
                        if (resolve_id(acc->owner, geteuid(), lookup_user, &uid) < 0) {
                                pv_err("%s: %s: pvd,owner \"%s\" is no user of this system", n->name,
                                       cfg->path[side], acc->owner);
                                return -EINVAL;
                        }
                        if (resolve_id(acc->group, node_gid, lookup_group, &gid) < 0) {
                                pv_err("%s: %s: pvd,group \"%s\" is no group of this system", n->name,
                                       cfg->path[side], acc->group);
                                return -EINVAL;
                        }
                        n->uid = uid;
                        n->gid = gid;
                        n->mode = acc->mode;
                        n->drv = drv;
                        n->vl = vl;
                        n->fd = -1;
                        n->pvd = pvd;
                        pvd->nnodes++;
                }
        }
        struct pvd_node *ctl = &pvd->nodes[pvd->nnodes++];
        snprintf(ctl->name, sizeof(ctl->name), "control");
        ctl->uid = geteuid();
        ctl->gid = getegid();
        ctl->mode = 0666; /* status is for everyone, like ip link, unless pvd,status says "group" */
        ctl->fd = -1;
        ctl->pvd = pvd;
        return 0;
}

static void pvd_stop(struct pvd *pvd);

static void on_signal(uv_signal_t *h, int signum)
{
        struct pvd *pvd = h->data;
        if (signum == SIGHUP)
                return;
        pv_notice("%s received, stopping", strsignal(signum));
        pvd_stop(pvd);
}

static void pvd_stop(struct pvd *pvd)
{
        if (pvd->stopping)
                return;
        pvd->stopping = true;
        pvd_sd_notify("STOPPING=1");
        for (unsigned i = 0; i < pvd->nnodes; i++)
                pvd_node_close(&pvd->nodes[i]);
        for (unsigned i = 0; i < pvd->nvlinks; i++)
                pvd->hv->stop(&pvd->vlinks[i]);
        for (unsigned i = 0; i < pvd->nvlinks; i++) {
                struct pvd_vlink *vl = &pvd->vlinks[i];
                for (int d = 0; d < PV_DRV_COUNT; d++)
                        if (pvd_drivers[d] && vl->drv[d] && pvd_drivers[d]->detach)
                                pvd_drivers[d]->detach(vl);
        }
        for (int i = 0; i < 3; i++)
                uv_close((uv_handle_t *)&pvd->sig[i], NULL);
}

/* ---- hot polling ------------------------------------------------------------ */

#define PVD_SPIN_US_DEFAULT 200

static void hot_cb(uv_idle_t *h)
{
        struct pvd *pvd = h->data;
        if (pvd->stopping || uv_hrtime() >= pvd->hot_until_ns) {
                pvd->hot = false;
                uv_idle_stop(h);
                return;
        }
        sched_yield(); /* a program woken on this CPU runs first */
}

void pvd_hot(struct pvd *pvd)
{
        if (!pvd->hot_ns || pvd->stopping)
                return;
        pvd->hot_until_ns = uv_hrtime() + pvd->hot_ns;
        if (pvd->hot)
                return;
        pvd->hot = true;
        pvd->hot_spells++;
        uv_idle_start(&pvd->hot_idle, hot_cb);
}

uint64_t pvd_spin_ns(unsigned default_us)
{
        long us = (long)default_us;
        const char *env = getenv("PVD_SPIN_US");
        if (env && *env) {
                char *end;
                errno = 0;
                us = strtol(env, &end, 10);
                if (errno || *end || us < 0 || us > 1000000) {
                        pv_warn("PVD_SPIN_US=%s is not a number of microseconds (0 to 1000000): using %u", env,
                                default_us);
                        us = (long)default_us;
                }
        }
        if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
                us = 0; /* the poller would only keep the other side from running */
        return (uint64_t)us * 1000u;
}

static void hot_init(struct pvd *pvd)
{
        pvd->hot_ns = pvd_spin_ns(PVD_SPIN_US_DEFAULT);
        uv_idle_init(pvd->loop, &pvd->hot_idle);
        pvd->hot_idle.data = pvd;
}

static void walk_close(uv_handle_t *h, void *arg)
{
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* pvd gives way to the programs it serves: under SCHED_BATCH its wake-ups
 * never preempt a running program, and it runs once a CPU is free or at
 * the scheduler's next tick. Its fast paths are the programs' own (lanes,
 * direct rings, VRPQ queues); what pvd does on a wake-up (a free passed
 * on, a note, a vlink message) can wait for a CPU, while a program
 * preempted in the middle of polling for its peer's answer pays it in its
 * tail (VUMEM's p99 went from 7.8x to 4.7x the local one). A policy the
 * operator chose (a real-time one, say) is kept; PVD_SCHED=other keeps
 * SCHED_OTHER. */
static void sched_policy(void)
{
        const char *env = getenv("PVD_SCHED");
        if (env && *env && strcmp(env, "batch") != 0) {
                if (strcmp(env, "other") != 0)
                        pv_warn("PVD_SCHED=%s: want batch or other; using batch", env);
                else
                        return;
        }
        if (sched_getscheduler(0) != SCHED_OTHER)
                return;
        struct sched_param sp = { 0 };
        if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
                pv_warn("cannot run as SCHED_BATCH (%s): pvd's wake-ups may preempt the programs it serves",
                        strerror(errno));
}

int pvd_run(const struct pvd_options *opt)
{
        struct pvd pvd_obj = { .lock_fd = -1 };
        struct pvd *pvd = &pvd_obj;
        int rc = 1;
        bool hv_up = false;
        char err[512];

        sched_policy();
        pvd->plat = calloc(1, sizeof(*pvd->plat));
        if (!pvd->plat)
                return 1;
        if (pv_config_load_file(opt->config, pvd->plat, err, sizeof(err)) < 0) {
                pv_err("%s", err);
                goto out;
        }
        pvd->vm = pv_config_vm_find(pvd->plat, opt->vm);
        if (pvd->vm < 0) {
                char names[256] = "";
                for (unsigned i = 0; i < pvd->plat->nvms; i++)
                        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                                 pvd->plat->vms[i].name);
                pv_err("%s: no VM called \"%s\" (this platform has: %s)", opt->config, opt->vm, names);
                goto out;
        }
        pvd->vm_name = pvd->plat->vms[pvd->vm].name;
        if (strlen(opt->runtime_dir) >= PVD_DIR_MAX) {
                pv_err("the runtime directory path must be shorter than %d bytes (it holds UNIX sockets)",
                       PVD_DIR_MAX);
                goto out;
        }
        snprintf(pvd->runtime_dir, sizeof(pvd->runtime_dir), "%s", opt->runtime_dir);
        pvd->hv = opt->hv ? opt->hv : hv_backends[0];
        if (hv_caps_init(pvd) < 0 || pvd_plan(pvd) < 0)
                goto out;

        int e = pvd_mkdir_p(pvd->runtime_dir, 0755);
        if (e < 0) {
                pv_err("cannot create %s: %s", pvd->runtime_dir, strerror(-e));
                goto out;
        }
        char path[PVD_DIR_MAX + PV_NAME_MAX + 16], what[PVD_DIR_MAX + PV_NAME_MAX + 32];
        snprintf(path, sizeof(path), "%s/pvd.lock", pvd->runtime_dir);
        snprintf(what, sizeof(what), "runs in %s", pvd->runtime_dir);
        pvd->lock_fd = pvd_lock_take(pvd, path, what);
        if (pvd->lock_fd < 0)
                goto out;
        if (pvd->hv->init(pvd, opt->hv_values) < 0)
                goto out_unlock;
        hv_up = true;

        /* Every vlink and grant is an fd or two: take all we may. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        signal(SIGPIPE, SIG_IGN);

        pvd->loop = uv_default_loop();
        pvd->start_ms = uv_now(pvd->loop);
        hot_init(pvd);
        if (pvd_limits_init(pvd) < 0)
                goto out_stop;
        struct pvd_node *ctl = &pvd->nodes[pvd->nnodes - 1];
        pvd_limits_control_access(pvd, &ctl->gid, &ctl->mode);
        for (unsigned i = 0; i < pvd->nvlinks; i++) {
                struct pvd_vlink *vl = &pvd->vlinks[i];
                for (int d = 0; d < PV_DRV_COUNT; d++) {
                        const struct pvd_driver *drv = pvd_drivers[d];
                        if (drv && drv->region_size && drv->region_size(vl->cfg) && drv->attach(vl) < 0) {
                                pv_err("vlink %s: driver %s cannot start", vl->cfg->link_name, drv->name);
                                goto out_stop;
                        }
                }
        }
        for (unsigned i = 0; i < pvd->nnodes; i++)
                if (pvd_node_open(pvd, &pvd->nodes[i]) < 0)
                        goto out_stop;
        for (unsigned i = 0; i < pvd->nvlinks; i++)
                if (pvd->hv->start(&pvd->vlinks[i]) < 0)
                        goto out_stop;

        int signums[3] = { SIGTERM, SIGINT, SIGHUP };
        for (int i = 0; i < 3; i++) {
                uv_signal_init(pvd->loop, &pvd->sig[i]);
                pvd->sig[i].data = pvd;
                uv_signal_start(&pvd->sig[i], on_signal, signums[i]);
        }

        char status[128];
        snprintf(status, sizeof(status), "READY=1\nSTATUS=serving %s: %u vlinks, %u device nodes", pvd->vm_name,
                 pvd->nvlinks, pvd->nnodes - 1);
        pvd_sd_notify(status);
        pv_notice("serving %s: %u vlinks, %u device nodes in %s", pvd->vm_name, pvd->nvlinks, pvd->nnodes - 1,
                  pvd->runtime_dir);
        uv_run(pvd->loop, UV_RUN_DEFAULT);
        rc = 0;
        goto out_close;

out_stop:
        pvd->stopping = true;
        for (unsigned i = 0; i < pvd->nnodes; i++)
                pvd_node_close(&pvd->nodes[i]);
        for (unsigned i = 0; i < pvd->nvlinks; i++)
                if (pvd->vlinks[i].hv)
                        pvd->hv->stop(&pvd->vlinks[i]);
        for (unsigned i = 0; i < pvd->nvlinks; i++)
                for (int d = 0; d < PV_DRV_COUNT; d++)
                        if (pvd_drivers[d] && pvd->vlinks[i].drv[d] && pvd_drivers[d]->detach)
                                pvd_drivers[d]->detach(&pvd->vlinks[i]);
out_close:
        uv_walk(pvd->loop, walk_close, NULL);
        uv_run(pvd->loop, UV_RUN_DEFAULT);
        uv_loop_close(pvd->loop);
        pvd_limits_fini(pvd);
out_unlock:
        if (hv_up && pvd->hv->fini)
                pvd->hv->fini(pvd);
        snprintf(path, sizeof(path), "%s/pvd.lock", pvd->runtime_dir);
        unlink(path);
        close(pvd->lock_fd);
out:
        free(pvd->vlinks);
        free(pvd->nodes);
        free(pvd->plat);
        return rc;
}
