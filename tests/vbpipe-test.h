/* VBPIPE test programs (tests/vbpipe-test.c): forked into a VM of a running
 * platform, each opens vbt_pipe and does what its mode says, checking every
 * byte it reads against the sender's stream; its report is in vbt_pg[i]. */
#ifndef VBPIPE_TEST_H
#define VBPIPE_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "pvtest.h"

#define VBT_PROGS       4
#define VBT_PROMPT_MS   5000         /* "promptly": EOF and EPIPE come within this */
#define VBT_CONV_BYTES  (1u << 20)

enum vbt_mode {
        VBT_STREAM,             /* write until EPIPE, read and check until EOF */
        VBT_CONV,               /* send VBT_CONV_BYTES, shut down writing, read to EOF */
        VBT_HOLD,               /* open, then wait to be killed */
        VBT_SEND,               /* send VBT_CONV_BYTES, then wait to be killed (the end stays open) */
        VBT_READ,               /* only read and check, until EOF */
};

/* A program's orders and report (shared memory). */
struct vbt_prog {
        enum vbt_mode mode;
        int from;               /* 0: vm2's stream, 1: vm4's */
        bool nonblock;
        volatile int opened;
        int open_err;
        volatile uint64_t sent, got;
        int werr, rerr;         /* errno that ended writing / reading (0: EOF) */
        int rerr2, werr2;       /* a read and a write after that */
        bool wrong;             /* a byte that is not the sender's */
        uint64_t wrong_at;
        int fd;
};

extern struct vbt_prog *vbt_pg;      /* [VBT_PROGS] */
extern struct pvt_platform *vbt_plat;
extern const char *vbt_pipe;         /* "vbpipe0" */
/* Programs open with O_DIRECT (vbpipeRead and vbpipeWrite then copy to and
 * from the rings themselves); they always call vbpipeRead, vbpipeWrite and
 * vbpipeClose, which are read, write and close on other ends. */
extern bool vbt_direct;

/* Wait until cond holds (up to ms); its value. */
#define VBT_WAIT_FOR(cond, ms)                                                   \
        ({                                                                       \
                long long _end = pvt_now_ms() + (ms);                            \
                while (!(cond) && pvt_now_ms() < _end)                           \
                        usleep(2000);                                            \
                (cond);                                                          \
        })

/* The shared reports, for programs in plat's VMs. 0 or -errno. */
int vbt_init(struct pvt_platform *plat);
void vbt_fini(void);

/* CUnit suite set-up for the kill and hostile tests: vm2 and vm4 of
 * test-2clients started in plat, the vlink ON; the teardown fails when a
 * pvd, a directory or a descriptor of the test is left behind. */
int vbt_suite_init(struct pvt_platform *plat);
int vbt_suite_fini(const char *test);

/* The seed of the stream vm2 (from 0) or vm4 (from 1) sends. */
uint64_t vbt_seed(int from);
/* Fork program i in vm (vm2 or vm4). */
pid_t vbt_run(int i, const char *vm, enum vbt_mode mode, bool nonblock);
/* Programs 0 (vm2) and 1 (vm4) stream both ways until each has some bytes. */
void vbt_start_streams(pid_t *a, pid_t *b);
/* Program i ends within VBT_PROMPT_MS, having read only the sender's bytes,
 * then EOF, and its writes failed with EPIPE (pvd_died: its own pvd died,
 * so the kernel may say ECONNRESET once first). */
void vbt_check_survivor(pid_t pid, int i, const char *what, bool pvd_died);
/* Programs 2 (vm2) and 3 (vm4) open and exchange VBT_CONV_BYTES each way. */
void vbt_conversation(void);
/* The same for programs 2 (pid a) and 3 (pid b) started by the caller. */
void vbt_conversation_end(pid_t a, pid_t b);

#endif
