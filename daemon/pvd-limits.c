/* What one user may make pvd hold, and pvd at the end of its file
 * descriptors (see pvd-limits.h).
 *
 * Everything a program makes pvd hold hangs off a connection: each VRPQ
 * session and channel, VUMEM session, pipe end and pvctl is one, and what
 * it holds (buffers, requests in flight, pending messages) is bounded per
 * connection by its driver. So pvd bounds connections: per user in all
 * (pvd,limits connections=), per user on one device node
 * (node-connections=, which bounds one user's share of a vlink's sessions
 * and channels), and in all by the descriptors it has, keeping a reserve
 * for the work of the connections it already serves (vlinks, grants,
 * xIRQs, pipe sockets). accept() returns the lowest free descriptor, so
 * the number it returns is a lower bound of the descriptors in use.
 *
 * When accept itself fails for lack of descriptors, pvd closes a spare
 * descriptor it keeps for this, accepts, tells the program why and closes
 * it; if even that fails it stops listening until a descriptor is free,
 * instead of being woken again and again by the waiting connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "node.h"
#include "pvd-limits.h"
#include "pvd.h"

#define RESUME_MS 200

struct pvd_user {
        uid_t uid;
        unsigned conns;
        unsigned node_conns[];      /* per node of pvd->nodes */
};

struct pvd_limits {
        struct pvd *pvd;
        unsigned conns_per_user, node_conns_per_user;
        unsigned fd_limit, fd_reserve;
        gid_t control_gid;
        bool status_group_only;
        int spare_fd;
        bool paused;
        uv_timer_t resume;
        struct pvd_user **users;
        unsigned nusers, cap;
        uint64_t refused_user, refused_fds, paused_count;
        struct pv_log_limit log_user, log_fds, log_emfile, log_pause;
};

static bool lookup_gid(const char *name, gid_t *gid)
{
        char *end;
        unsigned long v = strtoul(name, &end, 10);
        if (*name && !*end) {
                *gid = (gid_t)v;
                return true;
        }
        struct group *gr = getgrnam(name);
        if (gr)
                *gid = gr->gr_gid;
        return gr != NULL;
}

int pvd_limits_init(struct pvd *pvd)
{
        const struct pv_vm_policy *pol = &pvd->plat->vms[pvd->vm].policy;
        struct pvd_limits *L = calloc(1, sizeof(*L));
        if (!L)
                return -ENOMEM;
        L->pvd = pvd;
        L->spare_fd = -1;
        struct rlimit rl;
        rlim_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        L->fd_limit = lim > 1u << 30 ? 1u << 30 : (unsigned)lim;
        L->fd_reserve = L->fd_limit / PVD_FD_RESERVE_DIV;
        if (L->fd_reserve < PVD_FD_RESERVE_MIN)
                L->fd_reserve = PVD_FD_RESERVE_MIN;
        if (L->fd_reserve > L->fd_limit / 2)
                L->fd_reserve = L->fd_limit / 2;
        unsigned budget = L->fd_limit - L->fd_reserve;
        L->conns_per_user = pol->conns_per_user;
        if (!L->conns_per_user)
                L->conns_per_user = budget / 2 < PVD_CONNS_PER_USER_MAX ? budget / 2 : PVD_CONNS_PER_USER_MAX;
        L->node_conns_per_user = pol->node_conns_per_user ? pol->node_conns_per_user : PVD_NODE_CONNS_PER_USER;
        L->status_group_only = pol->status_group_only;
        L->control_gid = getegid();
        if (pol->control_group[0] && !lookup_gid(pol->control_group, &L->control_gid)) {
                pv_err("%s: pvd,control-group \"%s\" is no group of this system", pvd->vm_name,
                       pol->control_group);
                free(L);
                return -EINVAL;
        }
        L->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        uv_timer_init(pvd->loop, &L->resume);
        L->resume.data = L;
        pvd->limits = L;
        pv_info("limits: %u connections per user, %u per user on one device node; %u file descriptors, "
                "%u kept for the vlinks", L->conns_per_user, L->node_conns_per_user, L->fd_limit, L->fd_reserve);
        return 0;
}

void pvd_limits_fini(struct pvd *pvd)
{
        struct pvd_limits *L = pvd->limits;
        if (!L)
                return;
        for (unsigned i = 0; i < L->nusers; i++)
                free(L->users[i]);
        free(L->users);
        if (L->spare_fd >= 0)
                close(L->spare_fd);
        /* The timer is closed with the loop's other handles (uv_walk). */
        L->resume.data = NULL;
        pvd->limits = NULL;
        free(L);
}

void pvd_limits_control_access(const struct pvd *pvd, gid_t *gid, mode_t *mode)
{
        const struct pvd_limits *L = pvd->limits;
        *gid = L->control_gid;
        *mode = L->status_group_only ? 0660 : 0666;
}

bool pvd_limits_sees_all(const struct pvd *pvd, int fd, const struct ucred *cr)
{
        const struct pvd_limits *L = pvd->limits;
        if (cr->uid == 0 || cr->gid == L->control_gid)
                return true;
        gid_t groups[256];
        socklen_t len = sizeof(groups);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
                for (size_t i = 0; i < len / sizeof(gid_t); i++)
                        if (groups[i] == L->control_gid)
                                return true;
        return false;
}

bool pvd_viewer_sees(const struct pvd *pvd, uid_t owner)
{
        const struct pvd_conn *v = pvd->viewer;
        if (!v || v->sees_all)
                return true;
        return owner != PVD_UID_PEER && owner == v->cred.uid;
}

/* ---- users -------------------------------------------------------------------- */

static struct pvd_user *user_get(struct pvd_limits *L, uid_t uid, bool create)
{
        for (unsigned i = 0; i < L->nusers; i++)
                if (L->users[i]->uid == uid)
                        return L->users[i];
        if (!create)
                return NULL;
        if (L->nusers == L->cap) {
                unsigned cap = L->cap ? L->cap * 2 : 8;
                struct pvd_user **v = realloc(L->users, cap * sizeof(*v));
                if (!v)
                        return NULL;
                L->users = v;
                L->cap = cap;
        }
        struct pvd_user *u = calloc(1, sizeof(*u) + L->pvd->nnodes * sizeof(u->node_conns[0]));
        if (!u)
                return NULL;
        u->uid = uid;
        L->users[L->nusers++] = u;
        return u;
}

static void user_put(struct pvd_limits *L, struct pvd_user *u)
{
        if (u->conns)
                return;
        for (unsigned i = 0; i < L->nusers; i++)
                if (L->users[i] == u) {
                        L->users[i] = L->users[--L->nusers];
                        free(u);
                        return;
                }
}

int pvd_limits_admit(struct pvd_node *n, int fd, const struct ucred *cr, char *why, size_t len)
{
        struct pvd *pvd = n->pvd;
        struct pvd_limits *L = pvd->limits;
        unsigned idx = (unsigned)(n - pvd->nodes);
        if ((unsigned)fd >= L->fd_limit - L->fd_reserve) {
                L->refused_fds++;
                pv_log_limited(&L->log_fds, PV_LOG_WARN,
                               "%s: refusing connections: %d of %u file descriptors in use, the rest are kept for "
                               "the vlinks (raise LimitNOFILE)", n->name, fd + 1, L->fd_limit);
                snprintf(why, len, "%s: pvd has no file descriptor to spare (%u in use, RLIMIT_NOFILE %u); try again "
                         "later, or raise pvd's LimitNOFILE", n->name, (unsigned)fd + 1, L->fd_limit);
                return -ENFILE;
        }
        struct pvd_user *u = user_get(L, cr->uid, true);
        if (!u) {
                snprintf(why, len, "%s: pvd is out of memory", n->name);
                return -ENOMEM;
        }
        const char *what = NULL;
        unsigned have = 0;
        if (u->conns >= L->conns_per_user) {
                what = "connections to pvd";
                have = u->conns;
        } else if (u->node_conns[idx] >= L->node_conns_per_user) {
                what = "connections to this device node";
                have = u->node_conns[idx];
        }
        if (what) {
                L->refused_user++;
                pv_log_limited(&L->log_user, PV_LOG_WARN, "%s: refusing a connection of uid %u: it has %u %s, "
                               "its limit (pvd,limits)", n->name, (unsigned)cr->uid, have, what);
                snprintf(why, len, "%s: uid %u has %u %s, the most one user may have (pvd,limits in the "
                         "platform's /vms/%s node); close some first", n->name, (unsigned)cr->uid, have, what,
                         pvd->vm_name);
                user_put(L, u);
                return -EMFILE;
        }
        u->conns++;
        u->node_conns[idx]++;
        return 0;
}

void pvd_limits_release(struct pvd_node *n, uid_t uid)
{
        struct pvd_limits *L = n->pvd->limits;
        struct pvd_user *u = L ? user_get(L, uid, false) : NULL;
        if (!u)
                return;
        unsigned idx = (unsigned)(n - n->pvd->nodes);
        if (u->conns)
                u->conns--;
        if (u->node_conns[idx])
                u->node_conns[idx]--;
        user_put(L, u);
}

/* ---- out of descriptors ---------------------------------------------------------- */

static void listen_all(struct pvd *pvd, bool on);

static void resume_cb(uv_timer_t *t)
{
        struct pvd_limits *L = t->data;
        if (L)
                pvd_limits_fd_freed(L->pvd);
}

static void listen_all(struct pvd *pvd, bool on)
{
        for (unsigned i = 0; i < pvd->nnodes; i++) {
                struct pvd_node *n = &pvd->nodes[i];
                if (n->fd < 0 || uv_is_closing((uv_handle_t *)&n->poll))
                        continue;
                if (on)
                        pvd_node_listen(n);
                else
                        uv_poll_stop(&n->poll);
        }
}

void pvd_limits_fd_freed(struct pvd *pvd)
{
        struct pvd_limits *L = pvd->limits;
        if (!L || !L->paused || pvd->stopping)
                return;
        if (L->spare_fd < 0)
                L->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (L->spare_fd < 0)
                return; /* still none: the timer tries again */
        L->paused = false;
        uv_timer_stop(&L->resume);
        listen_all(pvd, true);
}

bool pvd_limits_fd_exhausted(struct pvd_node *n)
{
        struct pvd *pvd = n->pvd;
        struct pvd_limits *L = pvd->limits;
        if (L->spare_fd >= 0) {
                close(L->spare_fd);
                L->spare_fd = -1;
                /* accept fails with EMFILE before it looks at the queue:
                 * there may be nobody waiting. */
                int fd = accept4(n->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                int e = errno;
                if (fd >= 0) {
                        char why[256];
                        L->refused_fds++;
                        pv_log_limited(&L->log_emfile, PV_LOG_WARN, "%s: out of file descriptors (RLIMIT_NOFILE "
                                       "%u): refusing new connections until some close", n->name, L->fd_limit);
                        snprintf(why, sizeof(why), "%s: pvd has run out of file descriptors (RLIMIT_NOFILE %u); try "
                                 "again later, or raise pvd's LimitNOFILE", n->name, L->fd_limit);
                        pvd_refuse_now(fd, -ENFILE, why);
                }
                L->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (L->spare_fd >= 0)
                        return fd >= 0; /* again while some wait */
                if (fd < 0 && e == EAGAIN)
                        return false;
        }
        /* No descriptor even for that: stop listening, so that the waiting
         * connections do not wake pvd again and again; a closing fd or the
         * timer starts it again. */
        if (!L->paused) {
                L->paused = true;
                L->paused_count++;
                pv_log_limited(&L->log_pause, PV_LOG_WARN, "not accepting connections until a file descriptor "
                               "is free");
                listen_all(pvd, false);
        }
        uv_timer_start(&L->resume, resume_cb, RESUME_MS, RESUME_MS);
        return false;
}

/* ---- status ------------------------------------------------------------------------ */

void pvd_limits_pack(struct pvd *pvd, msgpack_packer *pk)
{
        struct pvd_limits *L = pvd->limits;
        unsigned shown = 0;
        for (unsigned i = 0; i < L->nusers; i++)
                shown += pvd_viewer_sees(pvd, L->users[i]->uid);
        msgpack_pack_map(pk, 10);
        pvd_pack_kv_u64(pk, "connections_per_user", L->conns_per_user);
        pvd_pack_kv_u64(pk, "node_connections_per_user", L->node_conns_per_user);
        pvd_pack_kv_u64(pk, "fd_limit", L->fd_limit);
        pvd_pack_kv_u64(pk, "fd_reserve", L->fd_reserve);
        pvd_pack_kv_bool(pk, "accepting", !L->paused);
        pvd_pack_kv_u64(pk, "refused_user_limit", L->refused_user);
        pvd_pack_kv_u64(pk, "refused_no_fd", L->refused_fds);
        pvd_pack_kv_u64(pk, "stopped_accepting", L->paused_count);
        pvd_pack_kv_str(pk, "status", L->status_group_only ? "group" : "public");
        pvd_pack_str(pk, "users");
        msgpack_pack_array(pk, shown);
        for (unsigned i = 0; i < L->nusers; i++) {
                if (!pvd_viewer_sees(pvd, L->users[i]->uid))
                        continue;
                msgpack_pack_map(pk, 2);
                pvd_pack_kv_u64(pk, "uid", L->users[i]->uid);
                pvd_pack_kv_u64(pk, "connections", L->users[i]->conns);
        }
}
