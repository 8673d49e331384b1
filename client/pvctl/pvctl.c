/* pvctl: the operator's view of pvd (the seed's vrpqstat, and more). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "pv-config.h"
#include "pv/pvclient.h"
#include "pvctl.h"

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: pvctl [--runtime-dir DIR] COMMAND [OPTIONS]\n"
                "Show what pvd, the para-virtualized driver daemon of this VM, is doing.\n"
                "\n"
                "Commands:\n"
                "  status [--json]                    the VM, its vlinks (state OFF, RESET or ON),\n"
                "                                     device nodes and connected programs\n"
                "  stat vrpq|vumem|vbpipe [--json] [--watch SECONDS]\n"
                "                                     a driver's statistics, once or every SECONDS\n"
                "\n"
                "Options:\n"
                "  -r, --runtime-dir DIR   pvd's runtime directory (default $PVD_RUNTIME_DIR, else %s)\n"
                "  -h, --help              this text\n"
                "  -V, --version           the version\n"
                "\n"
                "Exit status: 0 on success, 1 when pvd cannot be reached or refuses, 2 on bad usage.\n",
                PV_DEFAULT_RUNTIME_DIR);
}

/* Ask pvd for a document; on success *doc lives in zone. */
static int fetch(uint32_t op, const char *name, msgpack_zone *zone, msgpack_object *doc, char *buf, size_t cap)
{
        struct pv_conn *c;
        int rc = pvc_conn_open("control", &c);
        if (rc < 0)
                return rc;
        struct pv_msg req, resp;
        pv_msg_init(&req, op);
        if (name)
                pv_msg_set_str(&req, PV_K_NAME, name);
        rc = pvc_conn_call(c, &req, &resp, buf, cap);
        pvc_conn_close(c);
        if (rc < 0)
                return rc;
        pv_msg_close_fds(&resp);
        const void *p;
        uint32_t len;
        if (pv_msg_get_b(&resp, PV_K_DOC, &p, &len) < 0)
                return pvc_error(-EPROTO, "pvd sent no document");
        size_t off = 0;
        if (msgpack_unpack(p, len, &off, zone, doc) != MSGPACK_UNPACK_SUCCESS)
                return pvc_error(-EPROTO, "pvd sent a malformed document");
        return 0;
}

/* --watch SECONDS: a number > 0. */
static bool parse_watch(const char *arg, struct pvctl_opts *o)
{
        char *end;
        o->watch = strtod(arg, &end);
        if (*end || end == arg || !(o->watch > 0)) {
                fprintf(stderr, "pvctl: --watch takes a number of seconds > 0\n");
                return false;
        }
        return true;
}

static volatile sig_atomic_t stop_watch;

static void on_sigint(int sig)
{
        stop_watch = 1;
}

static int run_view(uint32_t op, const char *name, const struct pvctl_opts *o0,
                    int (*view)(const msgpack_object *, const struct pvctl_opts *, FILE *))
{
        struct pvctl_opts o = *o0;
        size_t cap = PV_MSG_DOC_MAX;
        char *buf = malloc(cap);
        if (!buf)
                return 1;
        signal(SIGINT, on_sigint);
        int status = 0;
        for (;;) {
                msgpack_zone zone;
                msgpack_object doc;
                msgpack_zone_init(&zone, 4096);
                int rc = fetch(op, name, &zone, &doc, buf, cap);
                if (rc < 0) {
                        fprintf(stderr, "pvctl: %s\n", pvLastError()[0] ? pvLastError() : pvStrError(rc));
                        msgpack_zone_destroy(&zone);
                        status = 1;
                        break;
                }
                if (o.json)
                        doc_print_json(stdout, &doc);
                else
                        view(&doc, &o, stdout);
                fflush(stdout);
                msgpack_zone_destroy(&zone);
                if (o.watch <= 0 || stop_watch)
                        break;
                o.tick++;
                struct timespec ts = { .tv_sec = (time_t)o.watch,
                                       .tv_nsec = (long)((o.watch - (double)(time_t)o.watch) * 1e9) };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_watch)
                        ;
                if (stop_watch)
                        break;
        }
        free(buf);
        return status;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "runtime-dir", required_argument, NULL, 'r' },
                { "json", no_argument, NULL, 'j' },
                { "watch", required_argument, NULL, 'w' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        struct pvctl_opts o = { 0 };
        int c;
        while ((c = getopt_long(argc, argv, "+r:jw:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        setenv("PVD_RUNTIME_DIR", optarg, 1);
                        break;
                case 'j':
                        o.json = true;
                        break;
                case 'w':
                        if (!parse_watch(optarg, &o))
                                return 2;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("pvctl %s\n", PV_VERSION);
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
        const char *cmd = argv[optind++];
        /* Options may also follow the command. */
        const char *what = NULL;
        while (optind < argc) {
                int oc = getopt_long(argc, argv, "+r:jw:", opts, NULL);
                if (oc == -1) {
                        if (what) {
                                fprintf(stderr, "pvctl: unexpected argument \"%s\"\n", argv[optind]);
                                return 2;
                        }
                        what = argv[optind++];
                        continue;
                }
                if (oc == 'j')
                        o.json = true;
                else if (oc == 'w') {
                        if (!parse_watch(optarg, &o))
                                return 2;
                } else if (oc == 'r')
                        setenv("PVD_RUNTIME_DIR", optarg, 1);
                else
                        return 2;
        }

        if (strcmp(cmd, "status") == 0) {
                if (what || o.watch > 0) {
                        fprintf(stderr, "pvctl: status takes only --json\n");
                        return 2;
                }
                return run_view(PV_OP_STATUS, NULL, &o, pvctl_status_print);
        }
        if (strcmp(cmd, "stat") == 0) {
                static const struct {
                        const char *name;
                        int (*view)(const msgpack_object *, const struct pvctl_opts *, FILE *);
                } views[] = {
                        { "vrpq", pvctl_stat_vrpq },
                        { "vumem", pvctl_stat_vumem },
                        { "vbpipe", pvctl_stat_vbpipe },
                };
                for (size_t i = 0; what && i < sizeof(views) / sizeof(views[0]); i++)
                        if (strcmp(what, views[i].name) == 0)
                                return run_view(PV_OP_STAT, what, &o, views[i].view);
                fprintf(stderr, "pvctl: stat needs a driver: vrpq, vumem or vbpipe\n");
                return 2;
        }
        fprintf(stderr, "pvctl: unknown command \"%s\" (status, stat)\n", cmd);
        usage(stderr);
        return 2;
}
