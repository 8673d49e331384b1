/* Directories and lock files of pvd and pvhv. */
#ifndef PVD_LOCKFILE_H
#define PVD_LOCKFILE_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p with mode: 0 or -errno. */
int pv_mkdir_p(const char *dir, mode_t mode);

/* An exclusive lock on path (created, never waited for), recording line
 * (one line, with its newline) as its holder. The fd, held for the
 * process's life; -EBUSY when another process holds it, with the first
 * line of its record in holder (the empty string when it wrote none); or
 * -errno when the file cannot be opened. */
int pv_lockfile_take(const char *path, const char *line, char *holder, size_t holder_len);

#endif
