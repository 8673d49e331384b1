/* pvctl stat vrpq: the vrpq driver's statistics. */
#include "pvctl.h"

int pvctl_stat_vrpq(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        return pvctl_stat_generic(doc, o, f);
}
