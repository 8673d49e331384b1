/* Directories and lock files of pvd and pvhv. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockfile.h"

int pv_mkdir_p(const char *dir, mode_t mode)
{
        char buf[PATH_MAX];
        int n = snprintf(buf, sizeof(buf), "%s", dir);
        if (n < 0 || (size_t)n >= sizeof(buf))
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (stat(buf, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int pv_lockfile_take(const char *path, const char *line, char *holder, size_t holder_len)
{
        if (holder_len)
                holder[0] = 0;
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno == EWOULDBLOCK ? EBUSY : errno;
                if (holder_len > 1) {
                        ssize_t n = pread(fd, holder, holder_len - 1, 0);
                        holder[n > 0 ? n : 0] = 0;
                        holder[strcspn(holder, "\n")] = 0;
                }
                close(fd);
                return -e;
        }
        /* Written over the last holder's record, not truncated first: the
         * first line is what counts, and a truncation waits for the disk
         * while the page of the last record is being written back (it
         * held a pvd's start for over 10 s on a busy disk). */
        size_t len = strlen(line);
        if (pwrite(fd, line, len, 0) != (ssize_t)len) {
                /* Only the holder's name is lost: the lock is what counts. */
        }
        return fd;
}
