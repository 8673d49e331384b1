/* The backends' tables: objects (xIRQs, grants, fds waiting for their
 * announcement) by id, each owning an fd (or -1). */
#ifndef PVD_ID_TABLE_H
#define PVD_ID_TABLE_H

#include <stdbool.h>
#include <stdint.h>

struct id_ent {
        uint32_t id;
        uint32_t flags;
        int fd;
        uint64_t offset, size;
};

/* Sorted by id (ids are handed out in increasing order, so insertion is
 * almost always an append). */
struct id_table {
        struct id_ent *v;
        unsigned n, cap;
};

struct id_ent *id_table_find(struct id_table *t, uint32_t id);
/* Takes ownership of e->fd (closed on failure): 0, -EEXIST, -ENOMEM. */
int id_table_add(struct id_table *t, const struct id_ent *e);
/* Remove id, closing its fd: false if absent. */
bool id_table_del(struct id_table *t, uint32_t id);
void id_table_clear(struct id_table *t);

#endif
