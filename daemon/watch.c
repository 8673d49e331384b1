/* Fd watches for the loop. See watch.h. */
#include <stdlib.h>
#include <unistd.h>

#include "watch.h"

struct pvd_watch {
        uv_poll_t poll;
        int fd;
        int events;
        pvd_watch_cb cb;
        void *arg;
};

static void watch_poll_cb(uv_poll_t *h, int status, int events)
{
        struct pvd_watch *w = h->data;
        if (w->cb)
                w->cb(w, status, events, w->arg);
}

struct pvd_watch *pvd_watch_new(uv_loop_t *loop, int fd, int events, pvd_watch_cb cb, void *arg)
{
        struct pvd_watch *w = calloc(1, sizeof(*w));
        if (!w) {
                close(fd);
                return NULL;
        }
        w->fd = fd;
        w->cb = cb;
        w->arg = arg;
        if (uv_poll_init(loop, &w->poll, fd) < 0) {
                close(fd);
                free(w);
                return NULL;
        }
        w->poll.data = w;
        if (pvd_watch_set(w, events) < 0) {
                pvd_watch_close(w);
                return NULL;
        }
        return w;
}

int pvd_watch_fd(const struct pvd_watch *w)
{
        return w->fd;
}

int pvd_watch_events(const struct pvd_watch *w)
{
        return w->events;
}

int pvd_watch_set(struct pvd_watch *w, int events)
{
        if (w->events == events)
                return 0;
        w->events = events;
        if (!events)
                return uv_poll_stop(&w->poll);
        return uv_poll_start(&w->poll, events, watch_poll_cb);
}

static void watch_closed(uv_handle_t *h)
{
        struct pvd_watch *w = h->data;
        close(w->fd);
        free(w);
}

void pvd_watch_close(struct pvd_watch *w)
{
        if (!w)
                return;
        w->cb = NULL;
        uv_poll_stop(&w->poll);
        uv_close((uv_handle_t *)&w->poll, watch_closed);
}
