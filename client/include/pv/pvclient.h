/* libpvclient: what every pvd driver API shares.
 *
 * Every function of libpvclient returns 0 or a negative errno ("diag"):
 *   -ENOENT       no such device node: the driver is not configured for this VM
 *   -ECONNREFUSED nobody serves this: pvd is not running (or its runtime
 *                 directory is elsewhere: set PVD_RUNTIME_DIR), or no VUMEM
 *                 server program serves the node
 *   -EACCES       the device node's owner and mode do not allow this program
 *   -ECONNRESET   the peer disconnected: the other program, the other VM's
 *                 pvd, or the vlink between the VMs went away
 *   -EPROTO       corrupt shared memory or message from the other side
 *   -ENOSPC       a configured memory (vrpq-reqs, vrpq-pmem, vumem-pdev) is
 *                 exhausted
 *   -E2BIG        larger than the configured memory can ever hold
 *   -EMFILE       a limit: of this user in pvd (pvd,limits in the platform),
 *                 or of the vlink (VRPQ_SESSIONS_MAX, VRPQ_CHANNELS_MAX)
 *   -ENFILE       pvd has no file descriptor to spare: try again later
 *   -EINVAL, -ENOMEM, -EAGAIN, -EBUSY, -EPERM, ...  as usual
 *
 * Device names are the seed's: "/dev/vrpq-clt-vogl0" or "vrpq-clt-vogl0";
 * both name the socket $PVD_RUNTIME_DIR/vrpq-clt-vogl0 (default /run/pvd).
 *
 * libpvclient is safe to use from several threads.
 */
#ifndef PV_PVCLIENT_H
#define PV_PVCLIENT_H

#ifdef __cplusplus
extern "C" {
#endif

/* A sentence for a diag, e.g. "peer disconnected (...)". Never NULL. */
const char *pvStrError(int diag);

/* What went wrong in this thread's last failing libpvclient call, in
 * detail ("vrpq-clt-vogl0: no such device node in /run/pvd; ..."), or "" if
 * nothing failed yet. It names the cause: for an error pvd gave, pvd's own
 * sentence (why it refused, or why it ended the object: the peer program
 * went away, the vlink went down, pvd dropped the connection and why). Valid until this thread's next libpvclient call. Set
 * PVCLIENT_DEBUG=1 to have every such message printed on stderr too. */
const char *pvLastError(void);

/* The library's version, "0.1.0". */
const char *pvVersion(void);

#ifdef __cplusplus
}
#endif

#endif
