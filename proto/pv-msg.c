/* Control-message codec (msgpack) and transport. See pv-msg.h. */
#include "pv-msg.h"
