/* Platform configuration (libfdt). See config.h. */
#include "config.h"
