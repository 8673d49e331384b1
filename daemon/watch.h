/* An fd watched by the loop, owning the fd: closing the watch stops the
 * poll handle and closes the fd only after libuv is done with the handle
 * (STYLE: never close an fd a uv_poll_t still watches). */
#ifndef PVD_WATCH_H
#define PVD_WATCH_H

#include <uv.h>

struct pvd_watch;
typedef void (*pvd_watch_cb)(struct pvd_watch *w, int status, int events, void *arg);

/* Watch fd for events (UV_READABLE, UV_WRITABLE, UV_DISCONNECT). Takes
 * ownership of fd (closed on failure too). NULL on failure. */
struct pvd_watch *pvd_watch_new(uv_loop_t *loop, int fd, int events, pvd_watch_cb cb, void *arg);
int pvd_watch_fd(const struct pvd_watch *w);
/* Change the events watched (0 stops watching, the watch stays). */
int pvd_watch_set(struct pvd_watch *w, int events);
int pvd_watch_events(const struct pvd_watch *w);
/* Stop, then close the fd and free once libuv releases the handle. The
 * callback is never called again. NULL is accepted. */
void pvd_watch_close(struct pvd_watch *w);

#endif
