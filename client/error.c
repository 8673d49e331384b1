/* pvStrError, pvLastError, pvVersion. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "pv-config.h"
#include "pv/pvclient.h"

static __thread char last_error[512];

int pvc_error(int diag, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(last_error, sizeof(last_error), fmt, ap);
        va_end(ap);
        const char *dbg = getenv("PVCLIENT_DEBUG");
        if (dbg && *dbg && strcmp(dbg, "0") != 0)
                fprintf(stderr, "libpvclient: %s\n", last_error);
        return diag;
}

void pvc_error_clear(void)
{
        last_error[0] = 0;
}

const char *pvLastError(void)
{
        return last_error;
}

const char *pvVersion(void)
{
        return PV_VERSION;
}

const char *pvStrError(int diag)
{
        switch (diag) {
        case 0:
                return "success";
        case -ENOENT:
                return "no such device node or object (is this driver configured for this VM?)";
        case -ECONNREFUSED:
                /* Two causes share it; pvLastError() names the one. */
                return "nobody serves this: pvd is not running here (or PVD_RUNTIME_DIR points elsewhere), or no "
                       "server program serves the node";
        case -EACCES:
                return "permission denied by the device node's owner and mode";
        case -ECONNRESET:
                return "peer disconnected (the other program, its VM's pvd, or the vlink went away)";
        case -EPROTO:
                return "protocol error: corrupt shared memory or message from the other side";
        case -ENOSPC:
                return "configured memory exhausted (raise vrpq-reqs, vrpq-pmem or vumem-pdev)";
        case -E2BIG:
                return "larger than the configured memory can hold";
        case -ENOTCONN:
                return "the vlink to the peer VM is down";
        case -EMFILE:
                return "too many: a limit of this user in pvd (pvd,limits) or of the vlink (sessions, channels)";
        case -ENFILE:
                return "pvd has no file descriptor to spare; try again later (or raise pvd's LimitNOFILE)";
        case -EUSERS:
                return "too many sessions on this vlink";
        case -EFAULT:
                return "memory that VUMEM cannot share (not from vumemServerMemAlloc or vumemServerFdRegister)";
        case -EPERM:
                return "operation not permitted";
        case -EBUSY:
                return "busy: already open or in use";
        case -EALREADY:
                return "another thread is already doing this";
        case -ETIMEDOUT:
                return "timed out";
        case -ENOSYS:
                return "not implemented by this pvd";
        }
        if (diag < 0 && diag > -4096) {
                const char *s = strerrordesc_np(-diag);
                if (s)
                        return s;
        }
        return diag > 0 ? "not a diag (positive value)" : "unknown error";
}
