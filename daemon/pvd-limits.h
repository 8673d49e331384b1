/* What one user may make pvd hold, who sees what on the control node, and
 * pvd at the end of its file descriptors (pvd-pvd-limits.c). Internal to pvd's
 * core (node.c, control.c, pvd.c). */
#ifndef PVD_PVD_LIMITS_H
#define PVD_PVD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "pvd.h"

/* Defaults when the VM's node sets no pvd,limits (README "Limits"). */
#define PVD_CONNS_PER_USER_MAX   4096u  /* or half of the connection budget, if less */
#define PVD_NODE_CONNS_PER_USER  512u
#define PVD_FD_RESERVE_MIN       64u    /* fds kept for pvd's own work: at least this, */
#define PVD_FD_RESERVE_DIV       8u     /* ... or an eighth of RLIMIT_NOFILE */

/* Read RLIMIT_NOFILE and the VM's policy; resolve pvd,control-group. After
 * the rlimit is raised, before the nodes open. 0 or -errno (logged). */
int pvd_limits_init(struct pvd *pvd);
void pvd_limits_fini(struct pvd *pvd);

/* The control node's group and mode, from pvd,status and
 * pvd,control-group. */
void pvd_limits_control_access(const struct pvd *pvd, gid_t *gid, mode_t *mode);

/* A connection (fd, the number accept gave) from cr to node n: 0 and
 * counted for its user, or a refusal: -ENFILE (pvd's descriptors) or
 * -EMFILE (a limit of the user), with the sentence for the program in why. */
int pvd_limits_admit(struct pvd_node *n, int fd, const struct ucred *cr, char *why, size_t len);
/* A counted connection of uid to n closed (its fd too). */
void pvd_limits_release(struct pvd_node *n, uid_t uid);
/* Any fd of pvd's closed: accept again if pvd had stopped for lack of fds. */
void pvd_limits_fd_freed(struct pvd *pvd);
/* accept on n failed with EMFILE or ENFILE: refuse the waiting connection
 * with a reason (through a spare fd), or stop accepting until an fd is
 * free. true when the caller may try accept again now. */
bool pvd_limits_fd_exhausted(struct pvd_node *n);

/* Whether the program on c may see every program (root, or a member of
 * the control group): decided once, when it connects. */
bool pvd_limits_sees_all(const struct pvd *pvd, int fd, const struct ucred *cr);

/* The "limits" map of pvctl status, and one entry per user the viewer may
 * see. */
void pvd_limits_pack(struct pvd *pvd, msgpack_packer *pk);

/* Send a refusal (an operation-less message with diag and text) on a
 * connection pvd will close: the program's library makes it its error. */
void pvd_send_refusal(int fd, int diag, const char *text);
/* The same, then read what the program sent already and close fd. */
void pvd_refuse_now(int fd, int diag, const char *text);

#endif
