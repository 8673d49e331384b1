/* pvd's entry points, between main() and the rest. */
#ifndef PVD_CORE_H
#define PVD_CORE_H

#include "pvd.h"

/* Run pvd until SIGTERM/SIGINT: 0 after a clean stop, 1 when it could not
 * start (the reason is logged). */
int pvd_run(const struct pvd_options *opt);
/* Tell systemd (if NOTIFY_SOCKET is set): "READY=1", "STOPPING=1", ... */
void pvd_sd_notify(const char *msg);

#endif
