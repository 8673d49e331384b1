/* VUMEM, server side (the seed's server-lib.h): a program in the server VM
 * answers the buffer requests of client VMs' sessions.
 *
 *   VumemServer *server;
 *   VumemReq req;
 *   VumemResp resp;
 *   vumemServerCreate("vumem-srv-vogl0", &server);
 *   while (vumemReceive(server, &req) == 0) {
 *           resp.header = req.header;
 *           switch (req.header.cmd) {
 *           case VUMEM_CMD_BUFFER_ALLOC: ... resp.bufferAlloc.vaddr = ...; break;
 *           case VUMEM_CMD_BUFFER_FREE: ... release req.bufferFree.vaddr ...; break;
 *           }
 *           vumemRespond(server, &resp);
 *   }
 *   vumemServerDestroy(server);
 *
 * Memory. An ALLOC is answered with an address inside memory VUMEM can
 * share: from vumemServerMemAlloc (a sealed memfd, mapped here), or a memfd
 * or dma-buf registered with vumemServerFdRegister. The library finds the
 * memory the address lies in and hands it to the client VM (a grant of
 * those pages): the client maps the same pages. Any other address (malloc,
 * stack) is refused: vumemRespond returns -EFAULT and the client's
 * vumemBufferAlloc fails with -EFAULT, both saying why.
 *
 * FREE. Every buffer a successful ALLOC response created comes back exactly
 * once as VUMEM_CMD_BUFFER_FREE (bufferFree.vaddr is the address the
 * server answered), when its last holder in any client VM lets go, or at
 * once if it could not be handed out (the client went away, vumem-pdev was
 * full). Answering a FREE is optional (vumemRespond accepts it).
 *
 * One server program per server node at a time: a second
 * vumemServerCreate on the node gets -EBUSY until the first ends. When a
 * server program ends (vumemServerDestroy or death), the sessions it
 * served are over (their calls fail with -ECONNRESET; their mappings stay
 * valid); a new server program serves new sessions.
 *
 * Threads: one thread in vumemReceive at a time; vumemRespond and the
 * memory functions may be called from any thread.
 */
#ifndef PV_VUMEM_SERVER_H
#define PV_VUMEM_SERVER_H

#include <stddef.h>

#include <pv/nktypes.h>
#include <pv/pvclient.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef VUMEM_ALLOC_MAX
#define VUMEM_ALLOC_MAX 128
#endif

#define VUMEM_CMD_BUFFER_ALLOC 1u
#define VUMEM_CMD_BUFFER_FREE  2u

typedef struct VumemServer VumemServer;

typedef struct VumemReqHeader {
        nku32_f cmd;          /* VUMEM_CMD_BUFFER_ALLOC, VUMEM_CMD_BUFFER_FREE */
        nku32_f reqId;        /* names the request: copy the header into the response */
        nku64_f sessionId;    /* the client session (unique in this VM; 0 for a FREE of a
                                 buffer that could not be handed out) */
        nku32_f master;       /* 1 if that session is a master session */
        char clientVm[36];    /* the client VM's name, "vm3" */
} VumemReqHeader;

typedef struct VumemReq {
        VumemReqHeader header;
        union {
                struct {
                        nku8_f alloc[VUMEM_ALLOC_MAX]; /* the client's opaque bytes */
                        nku32_f allocSize;
                } bufferAlloc;
                struct {
                        void *vaddr;        /* the address the server answered */
                        size_t size;        /* and the size */
                        nku64_f bufferId;   /* the id clients knew it by (0 if never handed out) */
                } bufferFree;
        };
} VumemReq;

typedef struct VumemResp {
        VumemReqHeader header; /* resp.header = req.header */
        int diag;              /* 0, or a negative errno the client's call returns */
        union {
                struct {
                        nku8_f alloc[VUMEM_ALLOC_MAX]; /* the alloc bytes, rewritten or not */
                        nku32_f allocSize;
                        void *vaddr;                    /* the buffer, inside shareable memory */
                        size_t size;                    /* its size in bytes */
                } bufferAlloc;
        };
} VumemResp;

/* Serve a server node: "/dev/vumem-srv-vogl0" or "vumem-srv-vogl0". */
int vumemServerCreate(const char *dev, VumemServer **server);
/* Wait for the next request. -EINTR if a signal interrupted the wait;
 * -ECONNRESET if pvd went away. */
int vumemReceive(VumemServer *server, VumemReq *req);
/* The same, waiting at most timeoutMs (< 0: forever): -ETIMEDOUT. */
int vumemReceiveTimeout(VumemServer *server, VumemReq *req, int timeoutMs);
/* Answer a request received (resp.header = req.header). For an ALLOC with
 * diag 0, bufferAlloc.vaddr and size must lie inside memory of
 * vumemServerMemAlloc or vumemServerFdRegister (-EFAULT otherwise; the
 * client fails too). A diag < 0 fails the client's call with it. */
int vumemRespond(VumemServer *server, VumemResp *resp);
/* Stop serving: the sessions served end; memory from vumemServerMemAlloc
 * is unmapped (clients keep their mappings). */
int vumemServerDestroy(VumemServer *server);

/* size bytes (rounded up to pages) of shareable memory: a memfd sealed
 * against shrinking and growing, mapped read/write at *vaddr. */
int vumemServerMemAlloc(VumemServer *server, size_t size, void **vaddr);
/* Unmap memory of vumemServerMemAlloc or vumemServerFdRegister (clients
 * keep their mappings of buffers in it). */
int vumemServerMemFree(VumemServer *server, void *vaddr);
/* Make size bytes of fd (a memfd, or a dma-buf) shareable: the library
 * keeps a duplicate of fd and maps it at *vaddr. A memfd must allow
 * sealing (MFD_ALLOW_SEALING): it is sealed against shrinking, so that no
 * client mapping can lose its pages. Release with vumemServerMemFree. */
int vumemServerFdRegister(VumemServer *server, int fd, size_t size, void **vaddr);

#ifdef __cplusplus
}
#endif

#endif
