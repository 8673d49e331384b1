/* The emulated hypervisor's tables: objects (xIRQs, grants, fds waiting
 * for their announcement) by id, each owning an fd (or -1). */
#ifndef PVD_EMU_TABLE_H
#define PVD_EMU_TABLE_H

#include <stdbool.h>
#include <stdint.h>

struct emu_ent {
        uint32_t id;
        uint32_t flags;
        int fd;
        uint64_t offset, size;
};

/* Sorted by id (ids are handed out in increasing order, so insertion is
 * almost always an append). */
struct emu_table {
        struct emu_ent *v;
        unsigned n, cap;
};

struct emu_ent *emu_table_find(struct emu_table *t, uint32_t id);
/* Takes ownership of e->fd (closed on failure): 0, -EEXIST, -ENOMEM. */
int emu_table_add(struct emu_table *t, const struct emu_ent *e);
/* Remove id, closing its fd: false if absent. */
bool emu_table_del(struct emu_table *t, uint32_t id);
void emu_table_clear(struct emu_table *t);

#endif
