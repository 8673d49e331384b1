/* The seed's VUMEM server skeleton (3.2.3.2) as a complete program: a
 * "graphic allocator" in the server VM that answers buffer allocations of
 * client VMs with shareable memory, writes a greeting into each buffer, and
 * prints what the client wrote there when the buffer comes back.
 *
 *   PVD_RUNTIME_DIR=/tmp/plat/vm2 vumem-server [/dev/vumem-srv-vogl0]
 * Stops on SIGINT or SIGTERM.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <pv/vumem-server.h>

#include "vumem-example.h"

#define VUMEM_TEST_SRV_DEVICE "/dev/vumem-srv-vogl0"

static volatile sig_atomic_t stopping;

/* A signal that comes while vumemReceive sleeps makes it return -EINTR;
 * one that comes while a request is being answered is seen by the flag
 * within a wait's timeout. */
static void on_signal(int sig)
{
        (void)sig;
        stopping = 1;
}

int main(int argc, char **argv)
{
        const char *dev = argc > 1 ? argv[1] : VUMEM_TEST_SRV_DEVICE;
        setvbuf(stdout, NULL, _IOLBF, 0);
        struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART */
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        VumemServer *server;
        VumemReq req;
        VumemResp resp;
        int diag = vumemServerCreate(dev, &server);
        if (diag) {
                fprintf(stderr, "vumem-server: %s\n", pvLastError());
                return 1;
        }
        printf("vumem-server: serving %s\n", dev);
        fflush(stdout);
        while (!stopping) {
                diag = vumemReceiveTimeout(server, &req, 500); //listen to requests
                if (diag == -ETIMEDOUT)
                        continue;
                if (diag == -EINTR)
                        break;
                if (diag) {
                        fprintf(stderr, "vumem-server: %s\n", pvLastError());
                        break;
                }
                memset(&resp, 0, sizeof(resp));
                resp.header = req.header;
                //act depending on request type
                switch (req.header.cmd) {
                case VUMEM_CMD_BUFFER_ALLOC: {
                        struct ExampleAlloc a;
                        void *vaddr;
                        if (req.bufferAlloc.allocSize != sizeof(a)) {
                                resp.diag = -EINVAL;
                                break;
                        }
                        memcpy(&a, req.bufferAlloc.alloc, sizeof(a));
                        size_t size = (size_t)a.width * a.height * 4;
                        diag = vumemServerMemAlloc(server, size, &vaddr);
                        if (diag) {
                                resp.diag = diag;
                                break;
                        }
                        snprintf(vaddr, size, "hello from the server VM (%ux%u)", a.width, a.height);
                        a.stride = a.width * 4; /* the server may rewrite alloc */
                        memcpy(resp.bufferAlloc.alloc, &a, sizeof(a));
                        resp.bufferAlloc.allocSize = sizeof(a);
                        resp.bufferAlloc.vaddr = vaddr;
                        resp.bufferAlloc.size = size;
                        printf("vumem-server: ALLOC %zu bytes for session %llu of %s (%s)\n", size,
                               (unsigned long long)req.header.sessionId, req.header.clientVm,
                               req.header.master ? "master" : "standard");
                        break;
                }
                case VUMEM_CMD_BUFFER_FREE:
                        printf("vumem-server: FREE %zu bytes; the client left: \"%.40s\"\n", req.bufferFree.size,
                               (char *)req.bufferFree.vaddr + 64);
                        vumemServerMemFree(server, req.bufferFree.vaddr);
                        break;
                default:
                        resp.diag = -ENOSYS;
                        break;
                }
                fflush(stdout);
                diag = vumemRespond(server, &resp);
                if (diag)
                        fprintf(stderr, "vumem-server: %s\n", pvLastError());
        }
        diag = vumemServerDestroy(server);
        printf("vumem-server: stopped\n");
        return diag ? 1 : 0;
}
