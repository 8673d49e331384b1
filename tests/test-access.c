/* Device node access: a program that the node's owner and mode do not
 * allow is refused, by the socket file's mode and again by pvd's own check
 * of its credentials (SO_PEERCRED). Needs root to switch users: skipped
 * (exit 77) otherwise. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "pv-msg.h"
#include "pv/pvclient.h"
#include "pvtest.h"

static struct pvt_platform plat;

/* In the child: become nobody, then try the node. */
static int as_nobody(void *arg)
{
        if (setgid(65534) < 0 || setuid(65534) < 0)
                return 10;
        struct pv_conn *c;
        int rc = pvc_conn_open("vbpipe0", &c);
        if (rc < 0)
                return -rc == EACCES && strstr(pvLastError(), "permission denied") ? 0 : 11;
        /* The socket let us in: pvd must refuse on its first answer. */
        char buf[4096];
        struct pv_msg req, resp;
        pv_msg_init(&req, 0x301);
        rc = pvc_conn_call(c, &req, &resp, buf, sizeof(buf));
        pvc_conn_close(c);
        if (rc == -EACCES && strstr(pvLastError(), "permission denied for uid 65534"))
                return 1;
        fprintf(stderr, "got %d: %s\n", rc, pvLastError());
        return 12;
}

int main(void)
{
        if (geteuid() != 0) {
                printf("test-access: needs root to run a program as another user; skipped\n");
                return 77;
        }
        int fails = 0;
        if (pvt_platform_init(&plat, "demo") < 0 || pvt_pvd_start(&plat, "vm4", NULL) < 0) {
                fprintf(stderr, "cannot start vm4\n");
                pvt_platform_fini(&plat);
                return 1;
        }
        /* The test directory must be reachable by nobody. */
        chmod(plat.dir, 0755);
        chmod(pvt_vm(&plat, "vm4")->rt, 0755);

        /* 1. The socket file's mode (0660, root) keeps nobody out. */
        pid_t pid = pvt_spawn(&plat, "vm4", as_nobody, NULL);
        int st = pvt_wait(pid, 5000);
        printf("refused by the socket's mode: %s\n", st == 0 ? "yes" : "NO");
        fails += st != 0;

        /* 2. Someone loosened the file's mode: pvd's own check still refuses. */
        char path[512];
        snprintf(path, sizeof(path), "%s/vbpipe0", pvt_vm(&plat, "vm4")->rt);
        chmod(path, 0666);
        pid = pvt_spawn(&plat, "vm4", as_nobody, NULL);
        st = pvt_wait(pid, 5000);
        printf("refused by pvd's credential check: %s\n", st == 1 ? "yes" : "NO");
        fails += st != 1;

        int left = pvt_platform_fini(&plat);
        fails += left != 0;
        printf("%s\n", fails ? "FAILED" : "OK");
        return fails ? 1 : 0;
}
