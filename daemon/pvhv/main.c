/* pvhv: the ivshmem server of a QEMU host (see pvhv.h): its command line. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pv-config.h"
#include "pvhv.h"

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: pvhv --config PLATFORM.dtb [--dir DIR] [OPTIONS]\n"
                "       pvhv --config PLATFORM.dtb [--dir DIR] --qemu-args VM\n"
                "Serve the vlinks of a platform to QEMU guests and host-process pvds: one shared\n"
                "memory per vlink, QEMU's ivshmem server protocol on DIR/LINK.VM.sock for each side.\n"
                "\n"
                "  -c, --config FILE        platform device tree (DTB), e.g. %s/demo.dtb\n"
                "  -d, --dir DIR            where the sockets go (default $PVHV_DIR, else %s)\n"
                "  -q, --qemu-args VM       print the QEMU options that attach VM's vlinks, and exit\n"
                "  -l, --log-level LEVEL    error, warning, notice, info (default) or debug\n"
                "  -h, --help               this text\n"
                "  -V, --version            the version\n"
                "\n"
                "Stops cleanly on SIGTERM or SIGINT. Under systemd (Type=notify) it reports READY=1\n"
                "once every socket listens.\n",
                PV_DATADIR, PV_DEFAULT_PVHV_DIR);
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "config", required_argument, NULL, 'c' },
                { "dir", required_argument, NULL, 'd' },
                { "qemu-args", required_argument, NULL, 'q' },
                { "log-level", required_argument, NULL, 'l' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        struct pvhv_options opt = { .dir = getenv("PVHV_DIR"), .log_level = PV_LOG_INFO };
        const char *qemu_vm = NULL;
        if (!opt.dir || !*opt.dir)
                opt.dir = PV_DEFAULT_PVHV_DIR;

        int c;
        while ((c = getopt_long(argc, argv, "c:d:q:l:hV", longopts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        opt.config = optarg;
                        break;
                case 'd':
                        opt.dir = optarg;
                        break;
                case 'q':
                        qemu_vm = optarg;
                        break;
                case 'l':
                        opt.log_level = pv_log_parse_level(optarg);
                        if (opt.log_level < 0) {
                                fprintf(stderr, "pvhv: unknown log level \"%s\" (error, warning, notice, info, debug)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("pvhv %s\n", PV_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "pvhv: unexpected argument \"%s\"\n", argv[optind]);
                usage(stderr);
                return 2;
        }
        if (!opt.config) {
                fprintf(stderr, "pvhv: --config is required\n");
                usage(stderr);
                return 2;
        }
        if (qemu_vm)
                return pvhv_print_qemu_args(opt.config, opt.dir, qemu_vm);
        pv_log_init("pvhv");
        pv_log_set_level(opt.log_level);
        return pvhv_run(&opt);
}
