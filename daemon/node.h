/* Device nodes and the control node, inside pvd. */
#ifndef PVD_NODE_H
#define PVD_NODE_H

#include "pvd.h"

/* Create the listening socket of n (name, mode, uid, gid, drv, vl set). */
int pvd_node_open(struct pvd *pvd, struct pvd_node *n);
/* Watch the listening socket for connections (again, after pvd stopped
 * accepting for lack of file descriptors). */
void pvd_node_listen(struct pvd_node *n);
/* Drop every connection, close and unlink the socket. */
void pvd_node_close(struct pvd_node *n);

/* The control node's requests (pvctl): status and statistics. */
int pvd_control_msg(struct pvd_conn *c, struct pv_msg *m);

#endif
