/* libpvrun: the LD_PRELOAD library of pvrun(1). It makes open(2) and
 * fopen(3) of "/dev/NAME" reach the vbpipe NAME of this VM's pvd, so that
 * programs written for the original kernel driver run unchanged (as padsp
 * does for /dev/dsp). Everything else goes to the C library untouched.
 *
 * "/dev/NAME" is a vbpipe when NAME in pvd's runtime directory
 * ($PVD_RUNTIME_DIR, or $PVD_RUNTIME_DIR/$PVD_VM) is a socket and pvd's
 * status lists node NAME with driver "vbpipe". The socket test is one
 * lstat, done for every "/dev/..." open; the status question is asked only
 * when such a socket exists, so /dev/null and friends cost one failed
 * lstat. A device node of another driver (VRPQ, VUMEM) is never opened as
 * a pipe, and a name that pvd serves as a vbpipe wins over a real file of
 * the same name in /dev: that is what the program runs under pvrun for.
 *
 * read(2) and write(2) of such an end copy straight to and from the
 * pipe's rings while pvd lends them (client/vbpipe-direct.c), as
 * vbpipeRead and vbpipeWrite do; close, dup2 and dup3 tell that code when
 * a descriptor number stops being the end. Every other descriptor costs a
 * look at one table slot.
 *
 * Only the interposed functions are exported (libpvrun.map): the copy of
 * libpvclient inside stays private, and a program linking libpvclient
 * itself keeps its own.
 */
/* The functions are defined under their own names: no redirection of open
 * to open64, no fortify wrappers. */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "conn.h"
#include "pv-config.h"
#include "pv/pvclient.h"
#include "pv/vbpipe.h"
#include "vbpipe/vbpipe-direct.h"

#define PR_EXPORT __attribute__((visibility("default")))

/* The fortify entry points have no prototype in a header without
 * _FORTIFY_SOURCE. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

/* The base name when path is "/dev/NAME" and NAME could be a device node. */
static const char *dev_base(const char *path)
{
        if (!path || strncmp(path, "/dev/", 5) != 0)
                return NULL;
        const char *base = path + 5;
        if (!*base || strchr(base, '/') || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
            strcmp(base, "control") == 0 || strlen(base) >= PVC_NAME_MAX)
                return NULL;
        return base;
}

static bool str_is(const msgpack_object *o, const char *s)
{
        size_t n = strlen(s);
        return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
        if (map->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < map->via.map.size; i++)
                if (str_is(&map->via.map.ptr[i].key, key))
                        return &map->via.map.ptr[i].val;
        return NULL;
}

/* Does pvd's status list node `name` with driver "vbpipe"? */
static bool status_says_vbpipe(const char *name)
{
        struct pv_conn *c;
        if (pvc_conn_open("control", &c) < 0)
                return false;
        bool yes = false;
        size_t cap = PV_MSG_DOC_MAX;
        void *buf = malloc(cap);
        struct pv_msg req, resp;
        pv_msg_init(&req, PV_OP_STATUS);
        pv_msg_init(&resp, PV_OP_NONE);
        if (!buf || pvc_conn_call(c, &req, &resp, buf, cap) < 0)
                goto out;
        pv_msg_close_fds(&resp);
        const void *p;
        uint32_t len;
        if (pv_msg_get_b(&resp, PV_K_DOC, &p, &len) < 0)
                goto out;
        msgpack_zone zone;
        msgpack_object doc;
        size_t off = 0;
        msgpack_zone_init(&zone, 4096);
        if (msgpack_unpack(p, len, &off, &zone, &doc) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *nodes = map_get(&doc, "nodes");
                for (uint32_t i = 0; nodes && nodes->type == MSGPACK_OBJECT_ARRAY && i < nodes->via.array.size; i++) {
                        const msgpack_object *n = &nodes->via.array.ptr[i];
                        const msgpack_object *nm = map_get(n, "name"), *drv = map_get(n, "driver");
                        if (nm && drv && str_is(nm, name) && str_is(drv, "vbpipe"))
                                yes = true;
                }
        }
        msgpack_zone_destroy(&zone);
out:
        free(buf);
        pvc_conn_close(c);
        return yes;
}

static bool is_vbpipe(const char *path)
{
        const char *base = dev_base(path);
        if (!base)
                return false;
        char dir[PVC_PATH_MAX], sock[PVC_PATH_MAX + PVC_NAME_MAX];
        int saved = errno;
        bool yes = false;
        if (pvc_runtime_dir(dir, sizeof(dir)) == 0) {
                struct stat st;
                snprintf(sock, sizeof(sock), "%s/%s", dir, base);
                yes = lstat(sock, &st) == 0 && S_ISSOCK(st.st_mode) && status_says_vbpipe(base);
        }
        errno = saved;
        return yes;
}

/* An open of "/dev/NAME" that was not a vbpipe and that the C library could
 * not open either: the program will say "No such file or directory" and no
 * more, so say once, on stderr, where pvrun looked and why NAME was not a
 * pipe there (the usual cause: this VM's pvd is not running, or runs with
 * another runtime directory). */
static void explain_miss(const char *path)
{
        static int said;
        const char *base = dev_base(path);
        if (!base || errno != ENOENT || __atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
                return;
        int saved = errno;
        char dir[PVC_PATH_MAX], sock[PVC_PATH_MAX + PVC_NAME_MAX];
        struct stat st;
        if (pvc_runtime_dir(dir, sizeof(dir)) < 0) {
                fprintf(stderr, "pvrun: %s: %s\n", path, pvLastError());
                errno = saved;
                return;
        }
        snprintf(sock, sizeof(sock), "%s/control", dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        int e = fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? errno : 0;
        if (fd >= 0)
                close(fd);
        if (e)
                fprintf(stderr, "pvrun: %s is not a vbpipe: no pvd answers in %s (%s: %s). Start this VM's "
                                "pvd (systemctl start pvd, or pvd@VM), or name its runtime directory with "
                                "pvrun --runtime-dir DIR or --vm VM (PVD_RUNTIME_DIR, PVD_VM)\n",
                        path, dir, sock, strerror(e));
        else {
                snprintf(sock, sizeof(sock), "%s/%s", dir, base);
                if (lstat(sock, &st) == 0)
                        fprintf(stderr, "pvrun: %s is not a vbpipe: %s is a device node of another driver "
                                        "(pvctl status lists the device nodes)\n", path, sock);
                else
                        fprintf(stderr, "pvrun: %s is not a vbpipe: the pvd in %s serves no device node %s "
                                        "(pvctl status lists them)\n", path, dir, base);
        }
        errno = saved;
}

/* vbpipeOpen sets errno as open(2) would; O_PATH and O_DIRECTORY make no
 * sense for a pipe and go to the C library. */
static bool intercept(const char *path, int flags)
{
        return !(flags & (O_PATH | O_DIRECTORY)) && is_vbpipe(path);
}

/* The C library's function, looked up once per call site (a race only
 * stores the same pointer twice). */
static void *next_fn(void **cache, const char *name)
{
        void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
        if (!f) {
                f = dlsym(RTLD_NEXT, name);
                __atomic_store_n(cache, f, __ATOMIC_RELEASE);
        }
        if (!f)
                errno = ENOSYS; /* a C library without it: fail the call, do not crash */
        return f;
}

/* Each interposed function's own cache of the next one. */
#define NEXT(name) ({ static void *next_; next_fn(&next_, name); })

static mode_t mode_arg(int flags, va_list ap)
{
        return __OPEN_NEEDS_MODE(flags) ? va_arg(ap, mode_t) : 0;
}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef int (*creat_fn)(const char *, mode_t);

/* An end opened by the program itself: read and write go straight to the
 * rings (O_DIRECT, see vbpipe-direct.c); the close is interposed too. */
static int open_end(const char *path, int flags)
{
        return vbpipeOpen(path, flags | O_DIRECT);
}

static int do_open(void *next, const char *path, int flags, mode_t mode)
{
        if (intercept(path, flags))
                return open_end(path, flags);
        int fd = next ? ((open_fn)next)(path, flags, mode) : -1;
        if (fd < 0)
                explain_miss(path);
        return fd;
}

static int do_openat(void *next, int dirfd, const char *path, int flags, mode_t mode)
{
        if (intercept(path, flags))
                return open_end(path, flags);
        int fd = next ? ((openat_fn)next)(dirfd, path, flags, mode) : -1;
        if (fd < 0)
                explain_miss(path);
        return fd;
}

PR_EXPORT int open(const char *path, int flags, ...)
{
        va_list ap;
        va_start(ap, flags);
        mode_t mode = mode_arg(flags, ap);
        va_end(ap);
        return do_open(NEXT("open"), path, flags, mode);
}

PR_EXPORT int open64(const char *path, int flags, ...)
{
        va_list ap;
        va_start(ap, flags);
        mode_t mode = mode_arg(flags, ap);
        va_end(ap);
        return do_open(NEXT("open64"), path, flags, mode);
}

PR_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
        va_list ap;
        va_start(ap, flags);
        mode_t mode = mode_arg(flags, ap);
        va_end(ap);
        return do_openat(NEXT("openat"), dirfd, path, flags, mode);
}

PR_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
        va_list ap;
        va_start(ap, flags);
        mode_t mode = mode_arg(flags, ap);
        va_end(ap);
        return do_openat(NEXT("openat64"), dirfd, path, flags, mode);
}

PR_EXPORT int creat(const char *path, mode_t mode)
{
        if (intercept(path, O_WRONLY))
                return open_end(path, O_WRONLY);
        creat_fn f = (creat_fn)NEXT("creat");
        return f ? f(path, mode) : -1;
}

PR_EXPORT int creat64(const char *path, mode_t mode)
{
        if (intercept(path, O_WRONLY))
                return open_end(path, O_WRONLY);
        creat_fn f = (creat_fn)NEXT("creat64");
        return f ? f(path, mode) : -1;
}

/* What _FORTIFY_SOURCE turns open(path, flags) into when it cannot see
 * that no mode is needed. */
static int do_open2(void *next, const char *path, int flags)
{
        if (intercept(path, flags))
                return open_end(path, flags);
        int fd = next ? ((open2_fn)next)(path, flags) : -1;
        if (fd < 0)
                explain_miss(path);
        return fd;
}

static int do_openat2(void *next, int dirfd, const char *path, int flags)
{
        if (intercept(path, flags))
                return open_end(path, flags);
        int fd = next ? ((openat2_fn)next)(dirfd, path, flags) : -1;
        if (fd < 0)
                explain_miss(path);
        return fd;
}

PR_EXPORT int __open_2(const char *path, int flags)
{
        return do_open2(NEXT("__open_2"), path, flags);
}

PR_EXPORT int __open64_2(const char *path, int flags)
{
        return do_open2(NEXT("__open64_2"), path, flags);
}

PR_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
        return do_openat2(NEXT("__openat_2"), dirfd, path, flags);
}

PR_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
        return do_openat2(NEXT("__openat64_2"), dirfd, path, flags);
}

/* fopen's mode as open flags: r, w, a, optional + (and b), e for
 * O_CLOEXEC. -1 for a mode fopen would refuse. */
static int fopen_flags(const char *mode)
{
        int flags;
        switch (mode ? mode[0] : 0) {
        case 'r':
                flags = O_RDONLY;
                break;
        case 'w':
        case 'a':
                flags = O_WRONLY;
                break;
        default:
                return -1;
        }
        for (const char *m = mode + 1; *m && *m != ','; m++) {
                if (*m == '+')
                        flags = (flags & ~O_ACCMODE) | O_RDWR;
                else if (*m == 'e')
                        flags |= O_CLOEXEC;
        }
        return flags;
}

/* glibc's fopen opens with its internal open, which no preload reaches:
 * fopen itself is interposed, and the stream made with fdopen. Without
 * direct access: stdio reads and writes with the C library's internal
 * calls, which no preload reaches either. */
static FILE *do_fopen(void *next, const char *path, const char *mode)
{
        int flags = fopen_flags(mode);
        if (flags >= 0 && intercept(path, flags)) {
                int fd = vbpipeOpen(path, flags);
                if (fd < 0)
                        return NULL;
                FILE *f = fdopen(fd, mode);
                if (!f) {
                        int e = errno;
                        close(fd);
                        errno = e;
                }
                return f;
        }
        FILE *f = next ? ((fopen_fn)next)(path, mode) : NULL;
        if (!f)
                explain_miss(path);
        return f;
}

PR_EXPORT FILE *fopen(const char *path, const char *mode)
{
        return do_fopen(NEXT("fopen"), path, mode);
}

PR_EXPORT FILE *fopen64(const char *path, const char *mode)
{
        return do_fopen(NEXT("fopen64"), path, mode);
}

/* ---- read and write -------------------------------------------------------------- */

typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*read_chk_fn)(int, void *, size_t, size_t);
typedef int (*close_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);

PR_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
        ssize_t r;
        if (vbpd_read(fd, buf, n, &r))
                return r;
        read_fn f = (read_fn)NEXT("read");
        return f ? f(fd, buf, n) : -1;
}

/* What _FORTIFY_SOURCE makes of read() into a buffer of known size. */
PR_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
        ssize_t r;
        if (n <= buflen && vbpd_read(fd, buf, n, &r))
                return r;
        read_chk_fn f = (read_chk_fn)NEXT("__read_chk");
        return f ? f(fd, buf, n, buflen) : -1;
}

PR_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
        ssize_t r;
        if (vbpd_write(fd, buf, n, &r))
                return r;
        write_fn f = (write_fn)NEXT("write");
        return f ? f(fd, buf, n) : -1;
}

PR_EXPORT int close(int fd)
{
        vbpd_forget(fd);
        close_fn f = (close_fn)NEXT("close");
        return f ? f(fd) : -1;
}

PR_EXPORT int dup2(int oldfd, int newfd)
{
        if (oldfd != newfd)
                vbpd_forget(newfd);
        dup2_fn f = (dup2_fn)NEXT("dup2");
        return f ? f(oldfd, newfd) : -1;
}

PR_EXPORT int dup3(int oldfd, int newfd, int flags)
{
        if (oldfd != newfd)
                vbpd_forget(newfd);
        dup3_fn f = (dup3_fn)NEXT("dup3");
        return f ? f(oldfd, newfd, flags) : -1;
}
