/* Support of the campaign tools (pvfuzz, pvkill, pvload, pvsoak): a
 * platform of real pvds (test-2clients: vm2 serves vogl to vm3 and a
 * vbpipe to vm4), honest programs of every driver that run until told to
 * stop, reconnect after every failure and report through shared memory,
 * pvd's resources read from /proc, options and figures.
 *
 * The honest programs (campaign-progs.c), each a forked child in its VM:
 *   CP_VRPQ_SRV   vm2  accepts a session and channel, answers calls a + b
 *   CP_VRPQ_CLT   vm3  calls, checks every sum
 *   CP_VUMEM_SRV  vm2  serves allocations, fills each buffer with a pattern
 *   CP_VUMEM_CLT  vm3  allocates, maps, checks the pattern, frees
 *   CP_PIPE_SRV   vm2  vbpipe0: reads a counter, writes it back plus one
 *   CP_PIPE_CLT   vm4  vbpipe0: writes counters, checks each answer
 * A failure (the peer or a pvd gone) is recorded with its time, and the
 * program starts over; data that is not what was sent is counted corrupt.
 * With churn set, the clients also start over on purpose now and then.
 */
#ifndef CAMPAIGN_H
#define CAMPAIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pvtest.h"

enum cp_prog {
        CP_VRPQ_SRV,
        CP_VRPQ_CLT,
        CP_VUMEM_SRV,
        CP_VUMEM_CLT,
        CP_PIPE_SRV,
        CP_PIPE_CLT,
        CP_NPROGS,
};

/* One program's report (shared memory; written by the program only). */
struct cp_slot {
        volatile uint64_t ops;          /* operations that succeeded and checked out */
        volatile uint64_t fails;        /* failures seen (then it started over) */
        volatile int64_t fail_ns;       /* when it saw the last one (cp_now_ns) */
        volatile int64_t ok_ns;         /* when an operation last succeeded */
        volatile uint64_t corrupt;      /* data that was not what was sent */
        volatile int last_diag;
        char last_error[200];
};

struct cp_shared {
        struct cp_slot slot[CP_NPROGS];
        volatile int stop;              /* the programs finish what they do and exit 0 */
        volatile unsigned churn;        /* non-zero: clients end their session (pipe: conversation)
                                         * after that many operations and open a new one */
};

struct cp_options {
        double duration_s;              /* how long the tool runs (--duration) */
        uint64_t seed;                  /* --seed (default: from the clock; printed) */
        unsigned workers;               /* --workers (pvfuzz, pvload) */
        const char *only;               /* --only WORD: the victims or targets whose name has it */
        bool keep_logs;                 /* --keep-logs: print pvd's logs at the end */
        bool all;                       /* --all (pvfuzz): every node, no honest programs */
        bool verbose;                   /* -v */
};

struct cp {
        struct pvt_platform plat;
        struct cp_shared *sh;
        pid_t prog[CP_NPROGS];
};

/* The VM and name of a program. */
const char *cp_prog_vm(enum cp_prog k);
const char *cp_prog_name(enum cp_prog k);
/* The VMs of the platform, in start order. */
extern const char *const cp_vms[3];

/* Set by SIGINT or SIGTERM (cp_options installs the handler): the tool
 * ends its run early, cleans up and reports what it ran. */
extern volatile int cp_interrupted;

/* "--duration S --seed N --workers N --only WORD --keep-logs -v" (the
 * tool's usage in usage):
 * 0, or 2 after printing the usage (or 1 on --help... then exit 0). */
int cp_options(int argc, char **argv, struct cp_options *o, double default_duration, const char *usage);

/* Start the platform's pvds, wait for the vlinks; start the honest
 * programs (if programs) and wait until every one has done an operation. */
int cp_start(struct cp *cp, bool programs);
/* Stop the programs (they exit 0 if they ended cleanly, checked), then
 * every pvd; the number of things that went wrong (0 is good). */
int cp_stop_programs(struct cp *cp);
int cp_stop(struct cp *cp);
/* Extra arguments of the pvds (PVD_DEBUG=1: --log-level debug). */
const char *const *cp_pvd_args(void);
/* (Re)start program k; its pid. */
pid_t cp_spawn(struct cp *cp, enum cp_prog k);
/* Any honest program that died on its own (not killed by us): its name,
 * or NULL. Reaps it. */
const char *cp_prog_died(struct cp *cp);
/* Any pvd that died on its own: its VM, or NULL. */
const char *cp_pvd_died(struct cp *cp);
/* Wait until every program has done an operation after since_ns (all
 * pairs work): 0, or -ETIMEDOUT naming the stuck ones on stderr. */
int cp_all_flowing(struct cp *cp, int64_t since_ns, int timeout_ms);

/* What a pvd holds. */
struct cp_res {
        int fds;
        int memfds;                     /* fds that are memfds */
        long rss_kb;
};
int cp_res(pid_t pid, struct cp_res *r);
/* Whether pid runs with AddressSanitizer: its quarantine keeps freed
 * memory, so RSS says nothing about growth there (its leak checker does,
 * when the process exits). */
bool cp_sanitized(pid_t pid);
/* Print what pid's fds are (after a leak), on stderr. */
void cp_show_fds(pid_t pid);
/* Wait (timeout_ms) until vm's pvd holds no more fds and memfds than base
 * (connections close asynchronously); its resources then. */
int cp_res_settle(struct cp *cp, const char *vm, const struct cp_res *base, int timeout_ms, struct cp_res *now);
/* Whether vm's pvd holds other fds or memfds now than at base (now: from
 * cp_res_settle); if so, its fds are printed on stderr. */
bool cp_leaked(struct cp *cp, const char *vm, const struct cp_res *base, const struct cp_res *now);

/* Clock, figures. */
int64_t cp_now_ns(void);
double cp_median(double *v, size_t n);
double cp_max(const double *v, size_t n);
uint64_t cp_rand(uint64_t *state);

/* The honest program k (campaign-progs.c), in a child. */
int cp_prog_main(struct cp_shared *sh, enum cp_prog k);
/* The VUMEM server program on another node, reporting in s. */
int cp_vumem_serve(struct cp_shared *sh, struct cp_slot *s, const char *node);

#endif
