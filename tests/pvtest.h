/* Test support: an emulated platform in a temporary directory with real pvd
 * processes, their readiness (NOTIFY_SOCKET), status queries, and cleanup
 * that leaves no process, socket or file behind.
 *
 * Environment (set by tests/meson.build): PVD_BIN, PVCTL_BIN, PVHV_BIN,
 * PV_CONF_DIR (where demo.dtb and test-2clients.dtb are). PVT_HV picks the
 * hypervisor backend the platform runs on: emu (the default), or ivshmem
 * (a pvhv process serves the platform and every pvd joins through it).
 */
#ifndef PVTEST_H
#define PVTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <msgpack.h>

#define PVT_MAX_VMS 8

struct pvt_vm {
        char name[32];
        pid_t pid;                 /* 0 when not running */
        char rt[192];              /* its runtime directory */
        char log[224];             /* its stderr */
};

struct pvt_platform {
        char dir[128];             /* the temporary directory */
        char platform_dir[160];    /* emu: --platform-dir; ivshmem: pvhv's --dir */
        pid_t pvhv;                /* ivshmem: the pvhv process */
        char dtb[512];
        struct pvt_vm vms[PVT_MAX_VMS];
        unsigned nvms;
        unsigned nofile;           /* non-zero: pvds start with this RLIMIT_NOFILE */
};

/* The backend the platforms of this run use: "emu" or "ivshmem". */
const char *pvt_hv(void);
/* A test that needs the emu backend (it speaks its wire format or opens
 * its memfds): print why and exit 77 (skipped) on another backend. */
void pvt_need_emu(const char *why);

/* Make a temporary platform for conf/<dtb_name>.dtb ("demo"); on ivshmem,
 * pvhv serves it. 0 or -errno. */
int pvt_platform_init(struct pvt_platform *p, const char *dtb_name);
/* Stop every pvd (SIGTERM, then SIGKILL after 5 s), remove the directory.
 * Returns the number of leftovers found (processes that had to be killed,
 * sockets pvd did not remove): a test asserts 0. */
int pvt_platform_fini(struct pvt_platform *p);

struct pvt_vm *pvt_vm(struct pvt_platform *p, const char *vm);
/* Start pvd for vm and wait for its READY=1 (10 s). extra: more arguments
 * (NULL-terminated list, may be NULL). 0, or -errno / -ETIMEDOUT. */
int pvt_pvd_start(struct pvt_platform *p, const char *vm, const char *const *extra);
/* Send sig and wait for the exit (5 s, then SIGKILL). Returns the exit
 * status as from waitpid, or -1. */
int pvt_pvd_stop(struct pvt_platform *p, const char *vm, int sig);

/* Point this process's libpvclient at vm (PVD_RUNTIME_DIR). */
void pvt_use_vm(struct pvt_platform *p, const char *vm);

/* Fetch vm's status document. The object lives in zone (destroy it). */
int pvt_status(struct pvt_platform *p, const char *vm, msgpack_zone *zone, msgpack_object *doc);
/* Same for "pvctl stat DRIVER". */
int pvt_stat(struct pvt_platform *p, const char *vm, const char *driver, msgpack_zone *zone, msgpack_object *doc);
/* The value of key in the msgpack map m (NULL: none, or m is no map). */
const msgpack_object *pvt_get(const msgpack_object *m, const char *key);
/* o is the string s. */
bool pvt_str_eq(const msgpack_object *o, const char *s);
/* The state ("OFF", "RESET", "ON") of vm's vlink link (NULL: any vlink
 * must match) -- wait up to timeout_ms for it. 0 or -ETIMEDOUT. */
int pvt_wait_vlink(struct pvt_platform *p, const char *vm, const char *link, const char *state, int timeout_ms);

/* Run a program (argv[0] a path), capturing stdout and stderr (up to cap
 * bytes each, NUL-terminated). Environment: PVD_RUNTIME_DIR of vm if vm is
 * not NULL. Returns the exit status (0..255), 128+signal, or -errno. */
int pvt_run(struct pvt_platform *p, const char *vm, const char *const *argv, char *out, size_t outcap,
            char *err, size_t errcap, int timeout_ms);

/* Fork a "program" in vm: the child sets PVD_RUNTIME_DIR and returns
 * fn(arg) as its exit status. -errno when fork fails. */
pid_t pvt_spawn(struct pvt_platform *p, const char *vm, int (*fn)(void *), void *arg);
/* Wait for a child (timeout_ms; then SIGKILL and -ETIMEDOUT). Returns its
 * exit status, 128+signal, or -errno; -ECHILD for a pid <= 0 (a failed
 * fork), which is never waited for nor signalled. */
int pvt_wait(pid_t pid, int timeout_ms);

/* kill(pid, sig) for a child pvt_spawn gave: refuses a pid <= 0 (kill(-1)
 * signals every process we may signal). 0 or -errno. */
int pvt_kill(pid_t pid, int sig);

/* Entries in /proc/self/fd. */
int pvt_fd_count(void);
/* Map the memory object of a memfd the emu backend made (a region, a
 * lane: it starts PV_EMU_MEM_OFFSET in), as a third mapping would; its
 * size in *size. NULL on failure. */
void *pvt_map_emu_object(int fd, size_t *size);
/* Open, through /proc, the memfd of process pid whose name contains want;
 * of several, the one with the greatest number right after want. -1 when
 * there is none. */
int pvt_open_emu_object(pid_t pid, const char *want);
/* Entries in /proc/PID/fd, or -1. */
int pvt_fd_count_of(pid_t pid);
/* Nanoseconds of CPU used so far by every task of pid (its schedstat), or -1. */
long long pvt_cpu_ns(pid_t pid);
/* Milliseconds on a monotonic clock. */
long long pvt_now_ms(void);
/* Read a whole file into buf (NUL-terminated). Bytes read or -errno. */
ssize_t pvt_read_file(const char *path, char *buf, size_t cap);
/* The last max bytes (at most 64 KiB) of a log, on stderr. */
void pvt_show_log_tail(const char *path, size_t max);
/* On stderr: where a process that does not move is (its state, wait
 * channel, system call and kernel stack, those the kernel lets us read). */
void pvt_show_stuck(pid_t pid);
/* On stderr: every task of the system but pid in uninterruptible sleep
 * (state D), with its kernel stack: who waits in the kernel, and on what. */
void pvt_show_waiting(pid_t pid);
/* The end (max bytes) of every pvd's log and of pvhv's, on stderr. */
void pvt_show_logs(const struct pvt_platform *p, size_t max);
/* Wait timeout_ms for pid, just sent sig, to end (after 1 s of a SIGKILL,
 * say where it waits: what names it). Its wait status, or -ETIMEDOUT once
 * it was killed and reaped. */
int pvt_reap(pid_t pid, int sig, const char *what, int timeout_ms);

/* A path inside the build tree's conf directory. */
const char *pvt_conf(const char *file, char *buf, size_t len);

#endif
