/* The backends' tables of objects by id (id-table.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "id-table.h"

static unsigned table_pos(const struct id_table *t, uint32_t id)
{
        unsigned lo = 0, hi = t->n;
        while (lo < hi) {
                unsigned mid = lo + (hi - lo) / 2;
                if (t->v[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

struct id_ent *id_table_find(struct id_table *t, uint32_t id)
{
        unsigned i = table_pos(t, id);
        return i < t->n && t->v[i].id == id ? &t->v[i] : NULL;
}

static void close_fd(int fd)
{
        if (fd >= 0)
                close(fd);
}

int id_table_add(struct id_table *t, const struct id_ent *e)
{
        unsigned i = table_pos(t, e->id);
        if (i < t->n && t->v[i].id == e->id) {
                close_fd(e->fd);
                return -EEXIST;
        }
        if (t->n == t->cap) {
                unsigned cap = t->cap ? t->cap * 2 : 16;
                struct id_ent *v = realloc(t->v, cap * sizeof(*v));
                if (!v) {
                        close_fd(e->fd);
                        return -ENOMEM;
                }
                t->v = v;
                t->cap = cap;
        }
        memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
        t->v[i] = *e;
        t->n++;
        return 0;
}

bool id_table_del(struct id_table *t, uint32_t id)
{
        unsigned i = table_pos(t, id);
        if (i >= t->n || t->v[i].id != id)
                return false;
        close_fd(t->v[i].fd);
        memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
        t->n--;
        return true;
}

void id_table_clear(struct id_table *t)
{
        for (unsigned i = 0; i < t->n; i++)
                close_fd(t->v[i].fd);
        free(t->v);
        memset(t, 0, sizeof(*t));
}
