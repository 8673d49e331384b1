/* A program that knows nothing of vbpipes, for tests/test-pvrun.sh: it opens
 * a path with the C library call named on its command line. Built with
 * -D_FORTIFY_SOURCE=2 -O2 and flags only known at run time, so that open
 * and openat are the fortified __open64_2 and __openat64_2.
 *
 *   pvrun-open read open|openat|fopen PATH    copy PATH to stdout (O_RDONLY; "r")
 *   pvrun-open write open|openat|fopen|creat PATH
 *                                             copy stdin to PATH (O_WRONLY|O_CREAT|O_TRUNC; "w")
 *   pvrun-open busy PATH                      open PATH twice (O_RDWR|O_NONBLOCK): says EBUSY
 *   pvrun-open flags PATH                     open PATH with and without O_CLOEXEC|O_NONBLOCK
 *   pvrun-open errno PATH                     open PATH O_RDONLY|O_NONBLOCK: "ok" or the errno name
 *
 * A read half checks that writing to it fails with EPIPE; a write half that
 * reading it gives EOF. Exit 0 when all went as described.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int flags_of(const char *s)
{
        return (int)strtol(s, NULL, 0);
}

static int open_with(const char *api, const char *path, int flags, FILE **fp)
{
        *fp = NULL;
        if (strcmp(api, "open") == 0)
                return open(path, flags);
        if (strcmp(api, "openat") == 0)
                return openat(AT_FDCWD, path, flags);
        if (strcmp(api, "creat") == 0)
                return creat(path, 0644);
        if (strcmp(api, "fopen") == 0) {
                *fp = fopen(path, (flags & O_ACCMODE) == O_RDONLY ? "r" : "w");
                return *fp ? fileno(*fp) : -1;
        }
        fprintf(stderr, "pvrun-open: unknown call %s\n", api);
        exit(2);
}

static int copy(FILE *in, FILE *out)
{
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
                if (fwrite(buf, 1, n, out) != n)
                        return -1;
        return ferror(in) ? -1 : 0;
}

static int do_read(const char *api, const char *path)
{
        FILE *f;
        /* From a string: the compiler cannot see the flags, so fortify
         * calls the checking entry points. */
        int fd = open_with(api, path, flags_of("0"), &f);
        if (fd < 0) {
                perror(path);
                return 1;
        }
        if (!f)
                f = fdopen(fd, "r");
        if (!f || copy(f, stdout) < 0 || fflush(stdout) != 0) {
                perror("pvrun-open: read");
                return 1;
        }
        if (write(fd, "x", 1) != -1 || errno != EPIPE) {
                fprintf(stderr, "pvrun-open: the read half of %s is writable\n", path);
                return 1;
        }
        fclose(f);
        return 0;
}

static int do_write(const char *api, const char *path)
{
        FILE *f;
        int fd = open_with(api, path, O_WRONLY | flags_of("0") | O_CREAT | O_TRUNC, &f);
        if (fd < 0) {
                perror(path);
                return 1;
        }
        char c;
        if (read(fd, &c, 1) != 0) {
                fprintf(stderr, "pvrun-open: the write half of %s is readable\n", path);
                return 1;
        }
        if (!f)
                f = fdopen(fd, "w");
        if (!f || copy(stdin, f) < 0 || fclose(f) != 0) {
                perror("pvrun-open: write");
                return 1;
        }
        return 0;
}

int main(int argc, char **argv)
{
        signal(SIGPIPE, SIG_IGN);
        if (argc == 4 && strcmp(argv[1], "read") == 0)
                return do_read(argv[2], argv[3]);
        if (argc == 4 && strcmp(argv[1], "write") == 0)
                return do_write(argv[2], argv[3]);
        if (argc == 3 && strcmp(argv[1], "busy") == 0) {
                int a = open(argv[2], O_RDWR | O_NONBLOCK | flags_of("0"));
                int b = open(argv[2], O_RDWR | O_NONBLOCK | flags_of("0"));
                printf("%s\n", a >= 0 && b < 0 ? strerrorname_np(errno) : "both opened");
                return !(a >= 0 && b < 0 && errno == EBUSY);
        }
        if (argc == 3 && strcmp(argv[1], "flags") == 0) {
                int a = open(argv[2], O_RDWR | O_NONBLOCK | O_CLOEXEC | flags_of("0"));
                if (a < 0) {
                        perror(argv[2]);
                        return 1;
                }
                int fdf = fcntl(a, F_GETFD), fl = fcntl(a, F_GETFL);
                printf("%s %s\n", fdf & FD_CLOEXEC ? "cloexec" : "-", fl & O_NONBLOCK ? "nonblock" : "-");
                close(a);
                /* The same end again: a closed end can be opened anew. */
                int b = open(argv[2], O_RDWR | O_NONBLOCK | flags_of("0"));
                if (b < 0) {
                        perror(argv[2]);
                        return 1;
                }
                fdf = fcntl(b, F_GETFD);
                printf("%s\n", fdf & FD_CLOEXEC ? "cloexec" : "-");
                close(b);
                return 0;
        }
        if (argc == 3 && strcmp(argv[1], "errno") == 0) {
                int fd = open(argv[2], O_RDONLY | O_NONBLOCK | flags_of("0"));
                printf("%s\n", fd >= 0 ? "ok" : strerrorname_np(errno));
                return 0;
        }
        fprintf(stderr, "usage: pvrun-open read|write CALL PATH | busy|flags|errno PATH\n");
        return 2;
}
