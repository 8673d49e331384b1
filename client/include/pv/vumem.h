/* VUMEM, client side: buffers that a server program in another VM
 * allocates, mapped into this program without copies (seed 3.2).
 *
 *   VumemSession *s;
 *   VumemBufferHd b;
 *   void *p;
 *   vumemSessionMasterCreate("/dev/vumem-clt-vogl0", &s);
 *   vumemBufferAlloc(s, &myAlloc, sizeof(myAlloc), &b);  // the server decides
 *   vumemBufferMap(b, &p);                                // the server's pages
 *   ...
 *   vumemBufferUnmap(b);
 *   vumemBufferFree(b);
 *   vumemSessionDestroy(s);
 *
 * Every function returns 0 or a negative errno; pvLastError() says why.
 *
 * Sessions. A session is a connection to the client VM's pvd, bound to the
 * server program that serves the node when it opens (creation waits up to
 * VUMEM_SERVER_WAIT_MS for one, then fails with -ECONNREFUSED). While a
 * master session exists on a server node, only it may allocate (the others
 * get -EPERM); a second master gets -EBUSY. A session's buffers are
 * released when it ends (vumemSessionDestroy, or the program's death).
 *
 * Disconnection. When the server program or the server VM goes away, the
 * session is over: calls waiting or made later return -ECONNRESET. Buffers
 * already mapped stay valid (their memory lives until unmapped); Unmap
 * works as usual, and Free and SessionDestroy release what is left and
 * return -ECONNRESET.
 *
 * Sharing. vumemBufferIdGet gives a 64-bit id (random, not guessable) that
 * another session, in this VM or in another client VM of the same server
 * VM and vdev, passes to vumemBufferAccess to get its own handle to the
 * same buffer. A buffer lives until its last handle is freed; then the
 * server program gets one VUMEM_CMD_BUFFER_FREE. An unknown or freed id is
 * -ENOENT.
 *
 * Threads: a session may be used from several threads; a buffer handle
 * must not be freed while another thread uses it.
 */
#ifndef PV_VUMEM_H
#define PV_VUMEM_H

#include <stddef.h>

#include <pv/nktypes.h>
#include <pv/pvclient.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VUMEM_ALLOC_MAX 128          /* opaque alloc bytes, at most */
#define VUMEM_SERVER_WAIT_MS 2000    /* how long a new session waits for a server program */

/* Cache operations (vumemBufferCacheOp). On memory shared by memfd, every
 * CPU of the host sees the same pages coherently and the operations are
 * memory barriers; on a dma-buf they are DMA_BUF_IOCTL_SYNC on the whole
 * buffer (the range is checked, the kernel syncs the dma-buf).
 *   CLEAN       after writing: the writes made before the call are visible
 *               to the other side (device, server VM) once it is told,
 *               e.g. by a request sent after the call (release barrier;
 *               dma-buf: SYNC_END | SYNC_WRITE, caches written back).
 *   INVALIDATE  before reading: reads after the call see what the other
 *               side wrote before it told us (acquire barrier; dma-buf:
 *               SYNC_START | SYNC_READ, stale cache lines dropped).
 *   FLUSH       both (full barrier; dma-buf: SYNC_END | SYNC_RW then
 *               SYNC_START | SYNC_RW). */
#define VUMEM_CACHE_CLEAN      1
#define VUMEM_CACHE_INVALIDATE 2
#define VUMEM_CACHE_FLUSH      3

typedef struct VumemSession VumemSession;
typedef struct VumemBuffer *VumemBufferHd;

/* Open a standard / master session on a client node: "/dev/vumem-clt-vogl0"
 * or "vumem-clt-vogl0". */
int vumemSessionCreate(const char *dev, VumemSession **session);
int vumemSessionMasterCreate(const char *dev, VumemSession **session);
/* End the session: unmaps and frees its buffers still held. */
int vumemSessionDestroy(VumemSession *session);

/* Ask the server for a buffer. alloc (allocSize bytes, at most
 * VUMEM_ALLOC_MAX) is opaque to VUMEM: the server reads it, may rewrite it,
 * and the rewritten bytes come back into alloc (up to allocSize). Errors:
 * -EPERM (a master session exists), -ENOSPC (vumem-pdev full), -EFAULT
 * (the server answered with memory VUMEM cannot share), the server's own
 * diag, -EPROTO (corrupt answer), -ECONNRESET. */
int vumemBufferAlloc(VumemSession *session, void *alloc, size_t allocSize, VumemBufferHd *bufferHd);
/* Release the handle (unmapping it if mapped). */
int vumemBufferFree(VumemBufferHd bufferHd);
/* Map the buffer (read/write, shared): the server's pages, no copy. A
 * second call returns the same address. */
int vumemBufferMap(VumemBufferHd bufferHd, void **vaddr);
/* Unmap what vumemBufferMap mapped (the handle stays). */
int vumemBufferUnmap(VumemBufferHd bufferHd);
/* The buffer's size in bytes, as the server answered it. */
int vumemBufferSizeGet(VumemBufferHd bufferHd, size_t *size);
/* A 64-bit random id of the buffer, for other sessions (of any client VM
 * of the same vdev) to reach it with vumemBufferAccess. */
int vumemBufferIdGet(VumemBufferHd bufferHd, nku64_f *id);
/* A handle of this session on the buffer of another session named by id
 * (vumemBufferIdGet): -ENOENT for an unknown or freed id. The buffer lives
 * while any handle refers to it. */
int vumemBufferAccess(VumemSession *session, nku64_f id, VumemBufferHd *bufferHd);
/* op: VUMEM_CACHE_*; [offset, offset + size) within the buffer, else
 * -EINVAL. */
int vumemBufferCacheOp(VumemBufferHd bufferHd, int op, size_t offset, size_t size);

/* The memory behind a buffer, to import it elsewhere (EGL, V4L2): *fd (a
 * memfd or dma-buf, owned by the handle: dup it to keep it), *offset of
 * the buffer's first byte in it, and whether it is a dma-buf. */
int vumemBufferFdGet(VumemBufferHd bufferHd, int *fd, nku64_f *offset, int *isDmaBuf);

#ifdef __cplusplus
}
#endif

#endif
