/* VRPQ: remote procedure queues between VMs (the user guide's section 3.1).
 *
 * A client program in one VM posts requests that a server program in
 * another VM receives in batches. Requests carry a procedure id and a
 * parameter block in PMEM, parameter memory shared by both programs. The
 * request rings and PMEM are mapped straight into both programs: while both
 * sides are busy, a request costs no system call and no daemon on either
 * side.
 *
 * Objects:
 *   session  one per communicating process (vrpqSessionCreate on a client
 *            node "/dev/vrpq-clt-vogl0", vrpqSessionAccept on the matching
 *            server node "/dev/vrpq-srv-vogl0"; a server VM has one server
 *            node per client VM: ...vogl0, ...vogl1).
 *   channel  one per communicating thread: a request ring, a callback ring
 *            and two ports (vrpqChanCreate / vrpqChanAccept).
 *   port     the channel's share of PMEM. Parameter blocks are allocated
 *            from it in order and released in the same order, so channels
 *            never contend on an allocator.
 *
 * Every function returns 0 or a negative errno; pvLastError() (pvclient.h)
 * says what happened and what to do:
 *   -ECONNRESET  the other side went away: the peer program destroyed the
 *                channel or session or died, or a pvd or the vlink went down.
 *                Every blocked and later call on the object returns it.
 *   -EPROTO      the other side wrote nonsense into the shared rings (only
 *                that channel is affected; destroy it).
 *   -ENOSPC      vrpq-reqs (request slots) or vrpq-pmem (PMEM) cannot give a
 *                new channel its rings and ports: destroy channels or raise
 *                them in the platform's device tree.
 *   -EMFILE      the vlink has VRPQ_SESSIONS_MAX sessions or
 *                VRPQ_CHANNELS_MAX channels already.
 *   -E2BIG       a parameter block larger than the channel's port, or info
 *                longer than VRPQ_INFO_MAX.
 *   -EALREADY    another thread is already receiving on this channel.
 *   -ENOTCONN    the vlink to the peer VM is down (its pvd is not running).
 *   -EINVAL      bad arguments (a NULL object, procedure group 0, ...).
 *
 * Limits per vlink: VRPQ_SESSIONS_MAX sessions and VRPQ_CHANNELS_MAX
 * channels (1024 each, like the original driver). Each channel gets a
 * request ring of vrpq-reqs/8 slots and a port of vrpq-pmem/8 bytes by
 * default (a callback ring and port an eighth of those), falling back to
 * smaller shares (down to 16 slots and 4 KiB) when the vlink's memory is
 * taken; `pvctl stat vrpq` shows what each channel got and uses.
 *
 * Full ring or port: vrpqPost, vrpqParamAlloc, vrpqCall (and their server
 * twins for callbacks) first notify the other side, then wait until it has
 * freed room (the server frees a batch at its next vrpqReceive). They never
 * fail for lack of room, only for a block that can never fit: -E2BIG.
 *
 * Lifetime of parameter memory:
 *   client  the block of vrpqParamAlloc is written by the caller, then
 *           handed over by vrpqPost/vrpqPostAndNotify/vrpqCall; never touch
 *           `in` afterwards. The `out` pointer of vrpqCall stays valid until
 *           the next vrpqParamAlloc or vrpqCall on that channel.
 *   server  the requests vrpqReceive returns, and their parameter memory
 *           (vrpqParamInGet, vrpqParamOutGet), stay valid until the next
 *           vrpqReceive on that channel, which releases them: the server
 *           never frees anything itself. Parameters are in memory the
 *           client can still write: copy a value before checking it.
 *
 * Threads. libpvclient is thread-safe per object: different channels can be
 * used by different threads at once. A channel's posting side (vrpqParamAlloc,
 * vrpqPost..., vrpqCall on the client; vrpqCallbackPerform on the server) is
 * used by one thread at a time, like the seed's "channel per thread";
 * vrpqReceive by one thread at a time (-EALREADY otherwise); the client may
 * handle callbacks in another thread than the one that posts. Destroy a
 * channel (or session) once no other thread uses it.
 *
 * Waiting. A waiting call polls for up to a few tens of microseconds (so
 * that a busy peer answers without any system call), then sleeps on the
 * channel's xIRQ; it polls less when its last waits polled in vain, and not
 * at all while the peer runs on its CPU. PVCLIENT_VRPQ_SPIN_US sets the
 * most it polls (0: never).
 */
#ifndef PV_VRPQ_H
#define PV_VRPQ_H

#include <stddef.h>

#include <pv/nktypes.h>
#include <pv/pvclient.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VRPQ_SESSIONS_MAX 1024  /* per vlink */
#define VRPQ_CHANNELS_MAX 1024  /* per vlink */
#define VRPQ_INFO_MAX     4096  /* bytes of session or channel info */

typedef struct VrpqSession VrpqSession;
typedef struct VrpqChan VrpqChan;

/* A request as the server sees it (vrpqReceive), or a callback. */
typedef struct VrpqReq {
        nku32_f procId;
        nku32_f flags;          /* VRPQ_REQ_SYNC: the client waits for vrpqReply */
        /* private */
        nku32_f _seq;
        nku32_f _inSize;
        nku32_f _outSize;
        nku32_f _reserved;
        void *_in;
        void *_out;
        VrpqChan *_chan;
} VrpqReq;

/* Procedure ids: a 16-bit group id and a 16-bit function id. Group 0 is
 * reserved for the library. */
#define VRPQ_PROC_ID(grp, func)         ((nku32_f)((((nku32_f)(grp) & 0xffffu) << 16) | ((nku32_f)(func) & 0xffffu)))
#define VRPQ_PROC_ID_GRP_GET(procId)    ((nku32_f)(((nku32_f)(procId) >> 16) & 0xffffu))
#define VRPQ_PROC_ID_FUNC_GET(procId)   ((nku32_f)((nku32_f)(procId) & 0xffffu))

/* Parameter (de)serialisation at a byte offset of a parameter block.
 * Blocks start 8-byte aligned; keep each value aligned to its size. */
#define VRPQ_PARAM_WRITE(buf, offset, type, value) \
        (*(type *)((char *)(buf) + (offset)) = (type)(value))
#define VRPQ_PARAM_READ(buf, offset, type) \
        (*(const type *)((const char *)(buf) + (offset)))

#define VRPQ_REQ_SYNC 0x1u      /* flag: the client waits for an answer */

/* ---- sessions and channels ------------------------------------------------- */

/* Client: open a session on a client node ("/dev/vrpq-clt-vogl0"). info
 * (may be NULL, at most VRPQ_INFO_MAX bytes) reaches the server's
 * vrpqSessionAccept. Returns as soon as the server VM has the session,
 * before a server program accepts it. */
int vrpqSessionCreate(const char *dev, const void *info, size_t infoSize, VrpqSession **session);
/* Server: wait for a client's session on a server node
 * ("/dev/vrpq-srv-vogl0"). info may be NULL; otherwise *infoSize is its
 * capacity on entry and the length of the client's info on return: a
 * larger value than the capacity means the info was truncated. */
int vrpqSessionAccept(const char *dev, void *info, size_t *infoSize, VrpqSession **session);
/* Either side: end the session and free it. Its channels end too (the
 * other side gets -ECONNRESET); destroy them as well to free their handles.
 * Always frees the handle; returns 0, or -EINVAL for NULL. */
int vrpqSessionDestroy(VrpqSession *session);

/* Client: a new channel. info as for sessions, to vrpqChanAccept. */
int vrpqChanCreate(VrpqSession *session, const void *info, size_t infoSize, VrpqChan **chan);
/* Server: wait for the client's next channel of this session. */
int vrpqChanAccept(VrpqSession *session, void *info, size_t *infoSize, VrpqChan **chan);
/* Either side: end the channel and free it (always; 0 or -EINVAL). */
int vrpqChanDestroy(VrpqChan *chan);

/* The base of PMEM in this process (both sides map it with the session);
 * vrpqParamInGet/OutGet take it as the seed does. */
int vrpqShmMap(VrpqSession *session, void **shmBase);

/* ---- client: requests -------------------------------------------------------- */

/* A parameter block of inSize input bytes, followed by outSize output bytes
 * that the server fills for a synchronous request. *in points to the input
 * bytes. Waits for room if the port is full (see above); -E2BIG if the
 * block cannot fit the port at all. A second call before posting gives the
 * first block back. */
int vrpqParamAlloc(VrpqChan *chan, size_t inSize, size_t outSize, void **in);
/* Queue an asynchronous request: in is the block of the last
 * vrpqParamAlloc, or NULL for a request without parameters. No system
 * call: the server learns of it at its next look at the ring, or at the
 * next vrpqNotify. */
int vrpqPost(VrpqChan *chan, nku32_f procId, void *in);
/* Wake the server if it sleeps (an xIRQ only then). */
int vrpqNotify(VrpqChan *chan);
/* vrpqPost, then vrpqNotify: the seed's usual way to send a request. */
int vrpqPostAndNotify(VrpqChan *chan, nku32_f procId, void *in);
/* A synchronous request: returns when the server has called vrpqReply on
 * it (or received its next batch), after every request posted before it
 * on the channel was received. *out (may be NULL) gets the output bytes of
 * the block (NULL if in is NULL). */
int vrpqCall(VrpqChan *chan, nku32_f procId, void *in, void **out);

/* ---- server: requests --------------------------------------------------------- */

/* Wait until at least one request is there and return up to max of them, in
 * posting order, in reqs[0 .. *avail - 1]. Releases the requests of the
 * previous call (and completes its VRPQ_REQ_SYNC ones). Returns
 * -ECONNRESET once the client is gone and every request it posted was
 * received. */
int vrpqReceive(VrpqChan *chan, VrpqReq **reqs, unsigned int max, int *avail);
/* The same with a timeout in milliseconds (-1 forever, 0 just look):
 * -ETIMEDOUT when nothing came. With timeoutMs 0 this is the call for event
 * loops, after vrpqChanFdGet's fd became readable. */
int vrpqReceiveTimeout(VrpqChan *chan, VrpqReq **reqs, unsigned int max, int *avail, int timeoutMs);
/* The request's input and output parameters, inside PMEM (NULL when the
 * request has none). The pointer lies in the channel's port and the sizes
 * below were checked against it; shmBase is vrpqShmMap's (the channel's own
 * mapping is used whatever it is). */
void *vrpqParamInGet(const VrpqReq *req, void *shmBase);
void *vrpqParamOutGet(const VrpqReq *req, void *shmBase);
/* The sizes of a request's input and output parameters, in bytes. */
size_t vrpqParamInSize(const VrpqReq *req);
size_t vrpqParamOutSize(const VrpqReq *req);
/* Complete a VRPQ_REQ_SYNC request now: its output parameters are written
 * and the client's vrpqCall returns. A request that is not synchronous, or
 * already complete, is accepted and ignored. */
int vrpqReply(VrpqChan *chan, VrpqReq *req);

/* ---- callbacks: server -> client --------------------------------------------------- */

typedef int (*VrpqCallbackFn)(void *ctx, nku32_f procId, void *in, void *out);

/* Server: send a callback to the channel's client. in comes from
 * vrpqParamAlloc on this (server) channel, which allocates from the
 * callback port, or is NULL. sync: wait until the client handled it; *out
 * then gets its output bytes (valid until the next vrpqParamAlloc or
 * vrpqCallbackPerform on the channel). */
int vrpqCallbackPerform(VrpqChan *chan, nku32_f procId, void *in, void **out, int sync);
/* Client: wait up to timeoutMs (-1 forever, 0 just look) for callbacks and
 * call fn for each, in order, with the input and output parameters (out is
 * NULL without output bytes). 0 when at least one was handled, -ETIMEDOUT
 * when none came; a negative return of fn stops the batch and is returned
 * (the callback is complete nevertheless). */
int vrpqCallbackHandle(VrpqChan *chan, VrpqCallbackFn fn, void *ctx, int timeoutMs);

/* Client: let the calls that wait (vrpqCall for its answer, vrpqPost and
 * vrpqParamAlloc for room) handle the callbacks that come meanwhile: a
 * server may call back, synchronously, before it answers or frees room,
 * and without a handler both sides would wait forever. fn NULL: no
 * handler. A thread blocked in vrpqCallbackHandle on the channel keeps
 * handling them itself. */
int vrpqCallbackHandlerSet(VrpqChan *chan, VrpqCallbackFn fn, void *ctx);

/* A file descriptor that becomes readable when the channel may have work:
 * requests for a server channel, callbacks for a client channel. For
 * poll/epoll/libuv loops: when it is readable, call vrpqReceiveTimeout(...,
 * 0) or vrpqCallbackHandle(..., 0) until they return -ETIMEDOUT (which
 * re-arms the notification); any other error ends the channel. It also
 * becomes readable when the channel ends. Owned by the channel. */
int vrpqChanFdGet(VrpqChan *chan, int *fd);

#ifdef __cplusplus
}
#endif

#endif
