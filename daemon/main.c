/* pvd: the per-VM daemon of the pvd user-level PV drivers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/hv.h"
#include "pv-config.h"
#include "pvd-core.h"

#define MAX_BACKENDS 8
#define OPT_HV 'H'
#define OPT_BACKEND 1000 /* + backend * HV_MAX_OPTIONS + option */

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: pvd --config PLATFORM.dtb --vm NAME [--hv BACKEND [BACKEND OPTIONS]] [OPTIONS]\n"
                "Serve the para-virtualized drivers (VRPQ, VUMEM, VBPIPE) of one VM of a platform.\n"
                "\n"
                "  -c, --config FILE        platform device tree (DTB), e.g. %s/demo.dtb\n"
                "  -m, --vm NAME            the VM this pvd serves (a child of /vms in the tree)\n"
                "  -r, --runtime-dir DIR    where the device node sockets go\n"
                "                           (default $PVD_RUNTIME_DIR, else %s)\n"
                "      --hv BACKEND         the hypervisor that carries the vlinks (default %s)\n"
                "  -l, --log-level LEVEL    error, warning, notice, info (default) or debug\n"
                "  -h, --help               this text\n"
                "  -V, --version            the version\n",
                PV_DATADIR, PV_DEFAULT_RUNTIME_DIR, hv_backends[0]->name);
        for (unsigned b = 0; hv_backends[b]; b++) {
                const struct hv_backend *hv = hv_backends[b];
                fprintf(f, "\n--hv %s: %s\n", hv->name, hv->summary);
                for (const struct hv_option *o = hv->options; o && o->name; o++) {
                        char left[64];
                        snprintf(left, sizeof(left), "--%s %s", o->name, o->arg);
                        fprintf(f, "      %-19s%s%s%s%s\n", left, o->help, o->env ? " (default $" : "",
                                o->env ? o->env : "", o->env ? ")" : "");
                }
        }
        fprintf(f, "\nStops cleanly on SIGTERM or SIGINT. Under systemd (Type=notify) it reports READY=1\n"
                   "once its vlinks and device nodes are set up. PVD_HV_CAPS_OFF=LIST turns backend\n"
                   "capabilities off (one_kernel, foreign_mem, slice, all), to test their fallbacks.\n");
}

int main(int argc, char **argv)
{
        struct option longopts[8 + MAX_BACKENDS * HV_MAX_OPTIONS] = {
                { "config", required_argument, NULL, 'c' },
                { "vm", required_argument, NULL, 'm' },
                { "runtime-dir", required_argument, NULL, 'r' },
                { "hv", required_argument, NULL, OPT_HV },
                { "log-level", required_argument, NULL, 'l' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
        };
        unsigned nopt = 7;
        const char *values[MAX_BACKENDS][HV_MAX_OPTIONS] = { { NULL } };
        for (unsigned b = 0; hv_backends[b] && b < MAX_BACKENDS; b++)
                for (unsigned i = 0; hv_backends[b]->options && hv_backends[b]->options[i].name && i < HV_MAX_OPTIONS;
                     i++)
                        longopts[nopt++] = (struct option){ hv_backends[b]->options[i].name, required_argument, NULL,
                                                            OPT_BACKEND + (int)(b * HV_MAX_OPTIONS + i) };
        longopts[nopt] = (struct option){ NULL, 0, NULL, 0 };

        struct pvd_options opt = {
                .runtime_dir = getenv("PVD_RUNTIME_DIR"),
                .log_level = PV_LOG_INFO,
        };
        if (!opt.runtime_dir || !*opt.runtime_dir)
                opt.runtime_dir = PV_DEFAULT_RUNTIME_DIR;

        int c;
        while ((c = getopt_long(argc, argv, "c:m:r:l:hV", longopts, NULL)) != -1) {
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
                case OPT_HV:
                        opt.hv = hv_backend_find(optarg);
                        if (!opt.hv) {
                                char names[128];
                                fprintf(stderr, "pvd: no hypervisor backend \"%s\" (this pvd has: %s)\n", optarg,
                                        hv_backend_names(names, sizeof(names)));
                                return 2;
                        }
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
                        if (c >= OPT_BACKEND && c < OPT_BACKEND + MAX_BACKENDS * HV_MAX_OPTIONS) {
                                unsigned k = (unsigned)(c - OPT_BACKEND);
                                values[k / HV_MAX_OPTIONS][k % HV_MAX_OPTIONS] = optarg;
                                break;
                        }
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
        if (!opt.hv)
                opt.hv = hv_backends[0];
        /* A backend's options go with that backend only; the chosen one's
         * missing values come from its environment variables. */
        for (unsigned b = 0; hv_backends[b] && b < MAX_BACKENDS; b++) {
                const struct hv_backend *hv = hv_backends[b];
                for (unsigned i = 0; hv->options && hv->options[i].name && i < HV_MAX_OPTIONS; i++) {
                        const struct hv_option *o = &hv->options[i];
                        if (hv != opt.hv) {
                                if (values[b][i]) {
                                        fprintf(stderr, "pvd: --%s is an option of --hv %s, not of --hv %s\n",
                                                o->name, hv->name, opt.hv->name);
                                        return 2;
                                }
                                continue;
                        }
                        const char *env = o->env ? getenv(o->env) : NULL;
                        opt.hv_values[i] = values[b][i] ? values[b][i] : env && *env ? env : NULL;
                }
        }
        char ident[96];
        snprintf(ident, sizeof(ident), "pvd[%s]", opt.vm);
        pv_log_init(ident);
        pv_log_set_level(opt.log_level);
        return pvd_run(&opt);
}
