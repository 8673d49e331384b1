/* The honest programs of the campaign tools (see campaign.h): each runs in
 * its VM until killed or stopped, checks every answer, and starts over
 * after any failure, recording when it saw it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign.h"
#include "pv/vbpipe.h"
#include "pv/vrpq.h"
#include "pv/vumem-server.h"
#include "pv/vumem.h"

#define PROC_ADD   VRPQ_PROC_ID(7, 1)
#define RETRY_MS   20
#define WAIT_MS    200

struct talloc {
        uint64_t seed;
        uint32_t size;
        uint32_t pad;
};

static void pause_ms(int ms)
{
        usleep((useconds_t)ms * 1000);
}

/* CP_TRACE=1: every failure a program sees, on stderr with its time. */
static void failed(struct cp_slot *s, int diag, const char *what)
{
        if (getenv("CP_TRACE"))
                fprintf(stderr, "[%lld ms] %s[%d]: %s: %s\n", (long long)(cp_now_ns() / 1000000), what, (int)getpid(),
                        pvStrError(diag), pvLastError());
        s->fail_ns = cp_now_ns();
        s->last_diag = diag;
        snprintf(s->last_error, sizeof(s->last_error), "%s: %s (%s)", what, pvStrError(diag), pvLastError());
        s->fails++;
}

static void done_op(struct cp_slot *s)
{
        s->ok_ns = cp_now_ns();
        s->ops++;
}

static uint8_t pattern(uint64_t seed, size_t i)
{
        return (uint8_t)(seed * 0x9e3779b1u + i * 131u + (i >> 8));
}

/* ---- VRPQ ------------------------------------------------------------------------------- */

static int vrpq_server(struct cp_shared *sh, struct cp_slot *s)
{
        while (!sh->stop) {
                VrpqSession *se = NULL;
                VrpqChan *ch = NULL;
                void *shm;
                int rc = vrpqSessionAccept("vrpq-srv-vogl0", NULL, NULL, &se);
                if (!rc)
                        rc = vrpqChanAccept(se, NULL, NULL, &ch);
                if (!rc)
                        rc = vrpqShmMap(se, &shm);
                while (!rc && !sh->stop) {
                        VrpqReq *reqs[16];
                        int avail;
                        rc = vrpqReceiveTimeout(ch, reqs, 16, &avail, WAIT_MS);
                        if (rc == -ETIMEDOUT || rc == -EINTR) {
                                rc = 0;
                                continue;
                        }
                        for (int i = 0; !rc && i < avail; i++) {
                                if (reqs[i]->procId != PROC_ADD || vrpqParamInSize(reqs[i]) < 8 ||
                                    vrpqParamOutSize(reqs[i]) < 8) {
                                        s->corrupt++;
                                        continue;
                                }
                                void *in = vrpqParamInGet(reqs[i], shm), *out = vrpqParamOutGet(reqs[i], shm);
                                nku32_f a = VRPQ_PARAM_READ(in, 0, nku32_f), b = VRPQ_PARAM_READ(in, 4, nku32_f);
                                VRPQ_PARAM_WRITE(out, 0, nku64_f, (nku64_f)a + b);
                                rc = vrpqReply(ch, reqs[i]);
                                if (!rc)
                                        done_op(s);
                        }
                }
                if (rc)
                        failed(s, rc, "VRPQ server");
                if (ch)
                        vrpqChanDestroy(ch);
                if (se)
                        vrpqSessionDestroy(se);
                if (rc && rc != -ECONNRESET)
                        pause_ms(RETRY_MS);
        }
        return 0;
}

static int vrpq_client(struct cp_shared *sh, struct cp_slot *s)
{
        uint32_t n = 1;
        while (!sh->stop) {
                VrpqSession *se = NULL;
                VrpqChan *ch = NULL;
                int rc = vrpqSessionCreate("vrpq-clt-vogl0", "campaign", 8, &se);
                if (!rc)
                        rc = vrpqChanCreate(se, NULL, 0, &ch);
                for (unsigned done = 0; !rc && !sh->stop && (!sh->churn || done < sh->churn); done++) {
                        void *in, *out;
                        nku32_f a = n * 2654435761u, b = ~n;
                        rc = vrpqParamAlloc(ch, 8, 8, &in);
                        if (rc)
                                break;
                        VRPQ_PARAM_WRITE(in, 0, nku32_f, a);
                        VRPQ_PARAM_WRITE(in, 4, nku32_f, b);
                        rc = vrpqCall(ch, PROC_ADD, in, &out);
                        if (rc)
                                break;
                        if (VRPQ_PARAM_READ(out, 0, nku64_f) != (nku64_f)a + b)
                                s->corrupt++;
                        done_op(s);
                        n++;
                }
                if (rc)
                        failed(s, rc, "VRPQ client");
                if (ch)
                        vrpqChanDestroy(ch);
                if (se)
                        vrpqSessionDestroy(se);
                if (rc)
                        pause_ms(RETRY_MS);
        }
        return 0;
}

/* ---- VUMEM ------------------------------------------------------------------------------- */

int cp_vumem_serve(struct cp_shared *sh, struct cp_slot *s, const char *node)
{
        while (!sh->stop) {
                VumemServer *srv;
                int rc = vumemServerCreate(node, &srv);
                if (rc) {
                        /* -EBUSY: pvd has not yet seen the last one go. */
                        failed(s, rc, "VUMEM server start");
                        pause_ms(RETRY_MS);
                        continue;
                }
                while (!rc && !sh->stop) {
                        VumemReq req;
                        VumemResp resp;
                        rc = vumemReceiveTimeout(srv, &req, WAIT_MS);
                        if (rc == -ETIMEDOUT || rc == -EINTR) {
                                rc = 0;
                                continue;
                        }
                        if (rc)
                                break;
                        memset(&resp, 0, sizeof(resp));
                        resp.header = req.header;
                        if (req.header.cmd == VUMEM_CMD_BUFFER_ALLOC) {
                                struct talloc t;
                                void *p;
                                if (req.bufferAlloc.allocSize != sizeof(t)) {
                                        s->corrupt++;
                                        resp.diag = -EINVAL;
                                } else {
                                        memcpy(&t, req.bufferAlloc.alloc, sizeof(t));
                                        size_t size = t.size < 4096 || t.size > (1u << 20) ? 4096 : t.size;
                                        resp.diag = vumemServerMemAlloc(srv, size, &p);
                                        if (!resp.diag) {
                                                for (size_t i = 0; i < size; i++)
                                                        ((uint8_t *)p)[i] = pattern(t.seed, i);
                                                resp.bufferAlloc.vaddr = p;
                                                resp.bufferAlloc.size = size;
                                        }
                                }
                        } else if (req.header.cmd == VUMEM_CMD_BUFFER_FREE) {
                                vumemServerMemFree(srv, req.bufferFree.vaddr);
                        }
                        rc = vumemRespond(srv, &resp);
                        if (!rc)
                                done_op(s);
                }
                if (rc)
                        failed(s, rc, "VUMEM server");
                vumemServerDestroy(srv);
        }
        return 0;
}

static int vumem_client(struct cp_shared *sh, struct cp_slot *s)
{
        uint64_t seed = 1;
        while (!sh->stop) {
                VumemSession *se;
                int rc = vumemSessionCreate("vumem-clt-vogl0", &se);
                if (rc) {
                        failed(s, rc, "VUMEM session");
                        pause_ms(RETRY_MS);
                        continue;
                }
                for (unsigned done = 0; !rc && !sh->stop && (!sh->churn || done < sh->churn / 8 + 1); done++) {
                        struct talloc t = { .seed = seed, .size = 4096u << (seed % 5) };
                        VumemBufferHd b;
                        uint8_t *p;
                        rc = vumemBufferAlloc(se, &t, sizeof(t), &b);
                        if (rc)
                                break;
                        rc = vumemBufferMap(b, (void **)&p);
                        if (!rc) {
                                for (size_t i = 0; i < t.size; i += 509)
                                        if (p[i] != pattern(seed, i)) {
                                                s->corrupt++;
                                                break;
                                        }
                                vumemBufferUnmap(b);
                        }
                        int rf = vumemBufferFree(b);
                        if (!rc)
                                rc = rf;
                        if (!rc)
                                done_op(s);
                        seed++;
                }
                if (rc)
                        failed(s, rc, "VUMEM client");
                vumemSessionDestroy(se);
                if (rc)
                        pause_ms(RETRY_MS);
        }
        return 0;
}

/* ---- VBPIPE ------------------------------------------------------------------------------ */

/* Open vbpipe0, waiting for the peer while not told to stop: fd or -1. */
static int pipe_open(struct cp_shared *sh, struct cp_slot *s)
{
        while (!sh->stop) {
                int fd = vbpipeOpen("vbpipe0", O_RDWR | O_NONBLOCK);
                if (fd < 0) {
                        failed(s, -errno, "vbpipe open");
                        pause_ms(RETRY_MS);
                        continue;
                }
                while (!sh->stop) {
                        struct pollfd pf = { .fd = fd, .events = POLLOUT };
                        int n = poll(&pf, 1, WAIT_MS);
                        if (n == 1 && (pf.revents & POLLOUT)) {
                                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                                return fd;
                        }
                        if (n == 1) /* the peer came and went */
                                break;
                }
                vbpipeClose(fd);
        }
        return -1;
}

static bool pipe_io(int fd, void *buf, size_t n, bool rd)
{
        uint8_t *p = buf;
        while (n) {
                ssize_t r = rd ? vbpipeRead(fd, p, n) : vbpipeWrite(fd, p, n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return false;
                p += r;
                n -= (size_t)r;
        }
        return true;
}

/* One exchange: the client sends a counter, the server sends it back plus
 * one. 1 done, 0 nothing yet (server, within a wait), -1 the conversation
 * is over. */
static int pipe_step(struct cp_shared *sh, struct cp_slot *s, int fd, bool server, uint64_t *n)
{
        uint64_t m[2];
        if (server) {
                /* Wait for a counter without blocking past a stop. */
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                if (!sh->stop && poll(&pf, 1, WAIT_MS) == 0)
                        return 0;
                if (sh->stop || !pipe_io(fd, m, sizeof(m), true))
                        return -1;
                if (m[1] != ~m[0])
                        s->corrupt++;
                m[0]++;
                m[1] = ~m[0];
                return pipe_io(fd, m, sizeof(m), false) ? 1 : -1;
        }
        m[0] = *n;
        m[1] = ~*n;
        if (sh->stop || !pipe_io(fd, m, sizeof(m), false) || !pipe_io(fd, m, sizeof(m), true))
                return -1;
        if (m[0] != *n + 1 || m[1] != ~m[0])
                s->corrupt++;
        (*n)++;
        return 1;
}

static int pipe_prog(struct cp_shared *sh, struct cp_slot *s, bool server)
{
        uint64_t n = 1;
        while (!sh->stop) {
                int fd = pipe_open(sh, s);
                if (fd < 0)
                        break;
                int rc = 0;
                /* With churn, the client closes and opens a new conversation. */
                for (unsigned done = 0; rc >= 0 && (server || !sh->churn || done < sh->churn);) {
                        rc = pipe_step(sh, s, fd, server, &n);
                        if (rc > 0) {
                                done_op(s);
                                done++;
                        }
                }
                if (rc < 0 && !sh->stop)
                        failed(s, -errno ? -errno : -EPIPE, server ? "vbpipe server" : "vbpipe client");
                vbpipeClose(fd);
        }
        return 0;
}

int cp_prog_main(struct cp_shared *sh, enum cp_prog k)
{
        struct cp_slot *s = &sh->slot[k];
        signal(SIGPIPE, SIG_IGN);
        switch (k) {
        case CP_VRPQ_SRV:
                return vrpq_server(sh, s);
        case CP_VRPQ_CLT:
                return vrpq_client(sh, s);
        case CP_VUMEM_SRV:
                return cp_vumem_serve(sh, s, "vumem-srv-vogl0");
        case CP_VUMEM_CLT:
                return vumem_client(sh, s);
        case CP_PIPE_SRV:
                return pipe_prog(sh, s, true);
        case CP_PIPE_CLT:
                return pipe_prog(sh, s, false);
        default:
                return 2;
        }
}
