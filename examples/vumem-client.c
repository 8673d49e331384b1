/* The seed's VUMEM client walkthrough (3.2.3.2) as a complete program: a
 * master session, a buffer allocated by the server VM, mapped here without
 * copies: it reads the server's greeting from the buffer and writes its own
 * for the server to read when the buffer is freed.
 *
 *   PVD_RUNTIME_DIR=/tmp/plat/vm3 vumem-client [/dev/vumem-clt-vogl0 [HOLD_MS]]
 * HOLD_MS: keep the buffer mapped that long (to look at pvctl stat vumem).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pv/vumem.h>

#include "vumem-example.h"

#define VUMEM_TEST_CLT_DEVICE "/dev/vumem-clt-vogl0"

int main(int argc, char **argv)
{
        const char *dev = argc > 1 ? argv[1] : VUMEM_TEST_CLT_DEVICE;
        int hold_ms = argc > 2 ? atoi(argv[2]) : 0;
        setvbuf(stdout, NULL, _IOLBF, 0);
        VumemSession *session;
        VumemBufferHd bufferHd;
        char *vaddr;
        size_t size;
        nku64_f id;

        int diag = vumemSessionMasterCreate(dev, &session);
        if (diag) {
                fprintf(stderr, "vumem-client: %s\n", pvLastError());
                return 1;
        }
        struct ExampleAlloc alloc = { .width = 640, .height = 480, .format = 1 };
        diag = vumemBufferAlloc(session, &alloc, sizeof(alloc), &bufferHd);
        if (diag) {
                fprintf(stderr, "vumem-client: alloc: %s\n", pvLastError());
                vumemSessionDestroy(session);
                return 1;
        }
        vumemBufferSizeGet(bufferHd, &size);
        vumemBufferIdGet(bufferHd, &id);
        printf("vumem-client: buffer 0x%016llx of %zu bytes, stride %u (set by the server)\n",
               (unsigned long long)id, size, alloc.stride);

        diag = vumemBufferMap(bufferHd, (void **)&vaddr);
        if (diag) {
                fprintf(stderr, "vumem-client: map: %s\n", pvLastError());
        } else {
                vumemBufferCacheOp(bufferHd, VUMEM_CACHE_INVALIDATE, 0, size);
                printf("vumem-client: the buffer says \"%s\"\n", vaddr);
                snprintf(vaddr + 64, size - 64, "hello from the client VM");
                vumemBufferCacheOp(bufferHd, VUMEM_CACHE_CLEAN, 0, size);
                if (hold_ms > 0)
                        usleep((useconds_t)hold_ms * 1000);
                diag = vumemBufferUnmap(bufferHd); //unmap the buffer
        }
        int d = vumemBufferFree(bufferHd); // free buffer allocated memory
        if (!diag)
                diag = d;
        d = vumemSessionDestroy(session); // destroy session
        if (!diag)
                diag = d;
        if (diag)
                fprintf(stderr, "vumem-client: %s\n", pvLastError());
        else
                printf("vumem-client: done\n");
        return diag ? 1 : 0;
}
