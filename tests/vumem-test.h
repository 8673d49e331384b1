/* VUMEM test support: a test server program (a child process "in" the
 * server VM) whose answers the test chooses through the alloc bytes, and
 * the events it reports back (allocations answered, buffers freed and what
 * they held). */
#ifndef VUMEM_TEST_H
#define VUMEM_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pvtest.h"

/* What the test asks the test server for, in the alloc bytes. */
enum talloc_op {
        TA_MEMFD = 1,  /* memory of its own: a registered memfd (vumemServerFdRegister), or where the
                          backend cannot share that, a vumemServerMemAlloc object of its own */
        TA_POOL,       /* carved from vumemServerMemAlloc memory at pgoff (unaligned ok) */
        TA_MALLOC,     /* answer with malloc memory: refused */
        TA_STACK,      /* answer with a stack address: refused */
        TA_FAIL,       /* answer diag -ENOMEM */
        TA_HANG,       /* never answer */
        TA_DMABUF,     /* a udmabuf (skipped if /dev/udmabuf is missing) */
        TA_FOREIGN,    /* a registered memfd whatever the backend says (TEV_ALLOC: diag and
                          head "did not make" when the library says why it cannot) */
};

struct talloc {
        uint32_t op;
        uint32_t size;
        uint32_t fill;     /* byte the server fills the buffer with */
        uint32_t pgoff;    /* TA_POOL */
        char tag[16];      /* rewritten by the server to "rewritten" */
};

enum tev_type { TEV_READY = 1, TEV_ALLOC, TEV_FREE, TEV_RESPOND_ERR, TEV_EXIT };

struct tev {
        int type;
        int node;          /* which test server */
        int diag;
        uint32_t pad;
        uint64_t id, size, ino, session;
        uint8_t head[16];  /* FREE: the buffer's first bytes, as the client left them */
};

/* Start a test server on node ("vumem-srv-vogl0") in vm; index names it in
 * events. Waits for its TEV_READY; returns its pid (or -errno), and its
 * vumemServerCreate diag in *diag. */
pid_t tsrv_start(struct pvt_platform *p, const char *vm, const char *node, int index, int *diag);
/* SIGKILL it and reap it. */
void tsrv_kill(pid_t pid);
/* The next event of type (from any test server unless node >= 0), within
 * timeout_ms: 0, or -ETIMEDOUT. Events of other types are kept for later. */
int tev_wait(int type, int node, int timeout_ms, struct tev *ev);
/* How many events of type arrive within ms (they are consumed). */
int tev_count(int type, int node, int ms);
void tev_flush(void);
void tev_init(void);
void tev_fini(void);

bool udmabuf_available(void);
/* The platform cannot share memory the backend did not make (the backend
 * cannot, or PVD_HV_CAPS_OFF turned it off). */
bool foreign_mem_off(void);
/* In a forked child: close every fd but 0, 1, 2 and keep (a program "in
 * a VM" holds nothing of the test's). */
void child_close_fds(int keep);

#endif
