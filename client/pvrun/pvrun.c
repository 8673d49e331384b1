/* pvrun: run an unchanged program with libpvrun preloaded, so that its
 * open("/dev/vbpipe0", ...) reaches the vbpipe of this VM's pvd (see
 * pvrun-preload.c). The library is found, in order: $PVRUN_LIBRARY,
 * libpvrun.so beside this executable (the build tree), the installed one.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pv-config.h"

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: pvrun [--runtime-dir DIR] [--vm VM] PROGRAM [ARGS...]\n"
                "Run PROGRAM so that opening /dev/NAME, NAME a vbpipe of this VM's pvd, opens the vbpipe.\n"
                "\n"
                "Options:\n"
                "  -r, --runtime-dir DIR   pvd's runtime directory (sets PVD_RUNTIME_DIR; default\n"
                "                          $PVD_RUNTIME_DIR, else %s)\n"
                "  -m, --vm VM             use the pvd of VM among several on this host, whose\n"
                "                          nodes are in DIR/VM (sets PVD_VM, as pvd@VM.service)\n"
                "  -h, --help              this text\n"
                "  -V, --version           the version\n"
                "\n"
                "Exit status: PROGRAM's, or 127 when it cannot be run, 2 on bad usage.\n",
                PV_DEFAULT_RUNTIME_DIR);
}

/* libpvrun.so in the directory of this executable, if there is one. */
static int beside_self(char *out, size_t len)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return -1;
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (!slash)
                return -1;
        *slash = 0;
        int m = snprintf(out, len, "%s/libpvrun.so", self);
        if (m < 0 || (size_t)m >= len || access(out, R_OK) != 0)
                return -1;
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "runtime-dir", required_argument, NULL, 'r' },
                { "vm", required_argument, NULL, 'm' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { 0, 0, 0, 0 },
        };
        int c;
        bool dir_given = false, vm_given = false;
        /* "+": options end at PROGRAM, whose own options are its own. */
        while ((c = getopt_long(argc, argv, "+r:m:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'r':
                case 'm':
                        if (setenv(c == 'r' ? "PVD_RUNTIME_DIR" : "PVD_VM", optarg, 1) < 0) {
                                perror("pvrun: setenv");
                                return 127;
                        }
                        dir_given |= c == 'r';
                        vm_given |= c == 'm';
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("pvrun %s\n", PV_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return 2;
        }
        /* --runtime-dir names the very directory unless --vm goes with it. */
        if (dir_given && !vm_given)
                unsetenv("PVD_VM");

        char lib[PATH_MAX];
        const char *env = getenv("PVRUN_LIBRARY");
        if (env && *env)
                snprintf(lib, sizeof(lib), "%s", env);
        else if (beside_self(lib, sizeof(lib)) < 0)
                snprintf(lib, sizeof(lib), "%s", PVRUN_LIBRARY);
        /* The dynamic loader splits LD_PRELOAD at spaces and colons. */
        if (strpbrk(lib, " :")) {
                fprintf(stderr, "pvrun: %s: a preload library path cannot contain spaces or colons\n", lib);
                return 127;
        }
        if (access(lib, R_OK) != 0) {
                fprintf(stderr, "pvrun: %s: %s (set PVRUN_LIBRARY to libpvrun.so)\n", lib, strerror(errno));
                return 127;
        }

        /* Append: a preload already there (a sanitizer's runtime, another
         * tool) keeps its place before ours. */
        const char *old = getenv("LD_PRELOAD");
        size_t len = (old ? strlen(old) : 0) + strlen(lib) + 2;
        char *pre = malloc(len);
        if (!pre) {
                perror("pvrun");
                return 127;
        }
        if (old && *old && !strstr(old, lib))
                snprintf(pre, len, "%s %s", old, lib);
        else if (old && *old)
                snprintf(pre, len, "%s", old);  /* pvrun under pvrun */
        else
                snprintf(pre, len, "%s", lib);
        if (setenv("LD_PRELOAD", pre, 1) < 0) {
                perror("pvrun: setenv");
                return 127;
        }
        free(pre);
        execvp(argv[optind], argv + optind);
        fprintf(stderr, "pvrun: %s: %s\n", argv[optind], strerror(errno));
        return 127;
}
