/* pvd: the per-VM daemon of the pvd user-level PV drivers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pv-config.h"
#include "pvd-core.h"

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: pvd --config PLATFORM.dtb --vm NAME [OPTIONS]\n"
                "Serve the para-virtualized drivers (VRPQ, VUMEM, VBPIPE) of one VM of a platform.\n"
                "\n"
                "  -c, --config FILE        platform device tree (DTB), e.g. %s/demo.dtb\n"
                "  -m, --vm NAME            the VM this pvd serves (a child of /vms in the tree)\n"
                "  -r, --runtime-dir DIR    where the device node sockets go\n"
                "                           (default $PVD_RUNTIME_DIR, else %s)\n"
                "  -p, --platform-dir DIR   where the emulated hypervisor's vlink sockets go, shared\n"
                "                           by the pvds of all VMs (default $PVD_PLATFORM_DIR, else %s)\n"
                "  -l, --log-level LEVEL    error, warning, notice, info (default) or debug\n"
                "  -h, --help               this text\n"
                "  -V, --version            the version\n"
                "\n"
                "Stops cleanly on SIGTERM or SIGINT. Under systemd (Type=notify) it reports READY=1\n"
                "once its vlinks and device nodes are set up.\n",
                PV_DATADIR, PV_DEFAULT_RUNTIME_DIR, PV_DEFAULT_PLATFORM_DIR);
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "config", required_argument, NULL, 'c' },
                { "vm", required_argument, NULL, 'm' },
                { "runtime-dir", required_argument, NULL, 'r' },
                { "platform-dir", required_argument, NULL, 'p' },
                { "log-level", required_argument, NULL, 'l' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        struct pvd_options opt = {
                .runtime_dir = getenv("PVD_RUNTIME_DIR"),
                .platform_dir = getenv("PVD_PLATFORM_DIR"),
                .log_level = PV_LOG_INFO,
        };
        if (!opt.runtime_dir || !*opt.runtime_dir)
                opt.runtime_dir = PV_DEFAULT_RUNTIME_DIR;
        if (!opt.platform_dir || !*opt.platform_dir)
                opt.platform_dir = PV_DEFAULT_PLATFORM_DIR;

        int c;
        while ((c = getopt_long(argc, argv, "c:m:r:p:l:hV", longopts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        opt.config = optarg;
                        break;
                case 'm':
                        opt.vm = optarg;
                        break;
                case 'r':
                        opt.runtime_dir = optarg;
                        break;
                case 'p':
                        opt.platform_dir = optarg;
                        break;
                case 'l':
                        opt.log_level = pv_log_parse_level(optarg);
                        if (opt.log_level < 0) {
                                fprintf(stderr, "pvd: unknown log level \"%s\" (error, warning, notice, info, debug)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("pvd %s\n", PV_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "pvd: unexpected argument \"%s\"\n", argv[optind]);
                usage(stderr);
                return 2;
        }
        if (!opt.config || !opt.vm) {
                fprintf(stderr, "pvd: --config and --vm are required\n");
                usage(stderr);
                return 2;
        }
        char ident[96];
        snprintf(ident, sizeof(ident), "pvd[%s]", opt.vm);
        pv_log_init(ident);
        pv_log_set_level(opt.log_level);
        return pvd_run(&opt);
}
