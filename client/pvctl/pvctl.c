/* pvctl: the operator's view of pvd (the seed's vrpqstat, and more):
 * command line, the requests to pvd's control node, and the commands that
 * are not a view of one document (wait). The views are pvctl-*.c. */
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
                "Usage: pvctl [--runtime-dir DIR] [--vm VM] COMMAND [OPTIONS]\n"
                "Show what pvd, the para-virtualized driver daemon of this VM, is doing.\n"
                "\n"
                "Commands:\n"
                "  status [--json]                    the VM, its vlinks (state OFF, RESET or ON),\n"
                "                                     device nodes and connected programs\n"
                "  stat vrpq|vumem|vbpipe [--json] [--watch SECONDS [--count N]]\n"
                "                                     a driver's statistics, once or every SECONDS\n"
                "  top [--watch SECONDS] [--count N]  every vlink and driver, refreshed in place\n"
                "  wait [--timeout SECONDS] [VLINK...]\n"
                "                                     until the vlinks (default: all) are ON\n"
                "\n"
                "Options:\n"
                "  -r, --runtime-dir DIR   pvd's runtime directory (default $PVD_RUNTIME_DIR, else %s)\n"
                "  -m, --vm VM             the pvd of VM among several on this host: DIR/VM (PVD_VM)\n"
                "  -j, --json              JSON; under --watch, one compact document per line\n"
                "  -w, --watch SECONDS     sample every SECONDS (top: 1 by default)\n"
                "  -n, --count N           stop after N samples\n"
                "  -t, --timeout SECONDS   wait: give up after SECONDS (default 30; 0: never)\n"
                "  -h, --help              this text\n"
                "  -V, --version           the version\n"
                "\n"
                "Exit status: 0 on success; 1 when pvd cannot be reached or refuses, or wait timed\n"
                "out; 2 on bad usage; 3 when status finds a vlink that is not ON.\n",
                PV_DEFAULT_RUNTIME_DIR);
}

int pvctl_fetch(uint32_t op, const char *name, msgpack_zone *zone, msgpack_object *doc, char *buf, size_t cap)
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

void pvctl_say_error(int rc)
{
        fprintf(stderr, "pvctl: %s\n", pvLastError()[0] ? pvLastError() : pvStrError(rc));
}

/* A number of seconds >= 0 (> 0 unless zero_ok). */
static bool parse_seconds(const char *opt, const char *arg, bool zero_ok, double *out)
{
        char *end;
        double v = strtod(arg, &end);
        if (*end || end == arg || !(v >= 0) || (!zero_ok && v == 0) || v > 1e6) {
                fprintf(stderr, "pvctl: %s takes a number of seconds%s\n", opt, zero_ok ? "" : " > 0");
                return false;
        }
        *out = v;
        return true;
}

static volatile sig_atomic_t stop_now;

static void on_stop_signal(int sig)
{
        stop_now = 1;
}

bool pvctl_stopping(void)
{
        return stop_now;
}

void pvctl_sleep(double seconds)
{
        struct timespec ts = { .tv_sec = (time_t)seconds,
                               .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9) };
        while (!stop_now && nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

double pvctl_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The vlinks of a status document that are not ON: how many, and "name
 * (STATE)" of each in down (comma-separated). Only the vlinks named in
 * names, when there are any. */
static unsigned vlinks_down(const msgpack_object *doc, char **names, int nnames, char *down, size_t len)
{
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        unsigned ndown = 0;
        size_t used = 0;
        down[0] = 0;
        for (uint32_t i = 0; i < n; i++) {
                char name[128], state[16];
                doc_str(&vls[i], "name", name, sizeof(name));
                bool wanted = nnames == 0;
                for (int k = 0; k < nnames && !wanted; k++)
                        wanted = strcmp(names[k], name) == 0;
                if (!wanted || strcmp(doc_str(&vls[i], "state", state, sizeof(state)), "ON") == 0)
                        continue;
                ndown++;
                int w = snprintf(down + used, len - used, "%s%s (%s)", used ? ", " : "", name, state);
                if (w > 0 && (size_t)w < len - used)
                        used += (size_t)w;
        }
        return ndown;
}

static int run_status(const struct pvctl_opts *o)
{
        size_t cap = PV_MSG_DOC_MAX;
        char *buf = malloc(cap), down[1024];
        msgpack_zone zone;
        msgpack_object doc;
        if (!buf)
                return 1;
        msgpack_zone_init(&zone, 4096);
        int rc = pvctl_fetch(PV_OP_STATUS, NULL, &zone, &doc, buf, cap);
        int status = 0;
        if (rc < 0) {
                pvctl_say_error(rc);
                status = 1;
        } else {
                if (o->json)
                        doc_print_json(stdout, &doc, false);
                else
                        pvctl_status_print(&doc, o, stdout);
                /* Like systemctl is-active: scripts can test the VM. */
                if (vlinks_down(&doc, NULL, 0, down, sizeof(down)))
                        status = 3;
        }
        msgpack_zone_destroy(&zone);
        free(buf);
        return status;
}

/* pvctl wait: poll the status until the vlinks are ON. A pvd that is not
 * there yet (starting) is waited for too. */
static int run_wait(const struct pvctl_opts *o, char **names, int nnames)
{
        size_t cap = PV_MSG_DOC_MAX;
        char *buf = malloc(cap), down[1024] = "";
        int status = 1, last_rc = 0;
        bool checked = false;
        if (!buf)
                return 1;
        double deadline = o->timeout > 0 ? pvctl_now() + o->timeout : 0;
        for (;;) {
                msgpack_zone zone;
                msgpack_object doc;
                msgpack_zone_init(&zone, 4096);
                last_rc = pvctl_fetch(PV_OP_STATUS, NULL, &zone, &doc, buf, cap);
                if (last_rc == 0 && !checked) {
                        /* A name that is no vlink of this VM would never come up. */
                        checked = true;
                        uint32_t n;
                        const msgpack_object *vls = doc_array(&doc, "vlinks", &n);
                        for (int k = 0; k < nnames; k++) {
                                bool found = false;
                                char name[128], all[1024] = "";
                                size_t used = 0;
                                for (uint32_t i = 0; i < n; i++) {
                                        doc_str(&vls[i], "name", name, sizeof(name));
                                        found |= strcmp(name, names[k]) == 0;
                                        int w = snprintf(all + used, sizeof(all) - used, "%s%s", used ? ", " : "",
                                                         name);
                                        if (w > 0 && (size_t)w < sizeof(all) - used)
                                                used += (size_t)w;
                                }
                                if (!found) {
                                        fprintf(stderr, "pvctl: no vlink %s in this VM (its vlinks: %s)\n",
                                                names[k], n ? all : "none");
                                        msgpack_zone_destroy(&zone);
                                        free(buf);
                                        return 2;
                                }
                        }
                }
                bool up = last_rc == 0 && vlinks_down(&doc, names, nnames, down, sizeof(down)) == 0;
                msgpack_zone_destroy(&zone);
                if (up) {
                        status = 0;
                        break;
                }
                if (stop_now || (deadline > 0 && pvctl_now() >= deadline))
                        break;
                pvctl_sleep(0.05);
        }
        char why[64];
        if (stop_now)
                snprintf(why, sizeof(why), "interrupted");
        else
                snprintf(why, sizeof(why), "gave up waiting after %g s", o->timeout);
        if (status != 0 && last_rc < 0)
                fprintf(stderr, "pvctl: %s: %s\n", why, pvLastError()[0] ? pvLastError() : pvStrError(last_rc));
        else if (status != 0)
                fprintf(stderr, "pvctl: %s; not ON: %s\n", why, down);
        free(buf);
        return status;
}

static int run_view(uint32_t op, const char *name, const struct pvctl_opts *o0,
                    int (*view)(const msgpack_object *, const struct pvctl_opts *, FILE *))
{
        struct pvctl_opts o = *o0;
        size_t cap = PV_MSG_DOC_MAX;
        char *buf = malloc(cap);
        if (!buf)
                return 1;
        int status = 0;
        for (;;) {
                msgpack_zone zone;
                msgpack_object doc;
                msgpack_zone_init(&zone, 4096);
                int rc = pvctl_fetch(op, name, &zone, &doc, buf, cap);
                if (rc < 0) {
                        pvctl_say_error(rc);
                        msgpack_zone_destroy(&zone);
                        status = 1;
                        break;
                }
                if (o.json)
                        doc_print_json(stdout, &doc, o.watch > 0);
                else
                        view(&doc, &o, stdout);
                fflush(stdout);
                msgpack_zone_destroy(&zone);
                o.tick++;
                if (o.watch <= 0 || stop_now || (o.count && o.tick >= o.count))
                        break;
                pvctl_sleep(o.watch);
                if (stop_now)
                        break;
        }
        free(buf);
        return status;
}

static const struct {
        const char *name;
        int (*view)(const msgpack_object *, const struct pvctl_opts *, FILE *);
} stat_views[] = {
        { "vrpq", pvctl_stat_vrpq },
        { "vumem", pvctl_stat_vumem },
        { "vbpipe", pvctl_stat_vbpipe },
};

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "runtime-dir", required_argument, NULL, 'r' },
                { "vm", required_argument, NULL, 'm' },
                { "json", no_argument, NULL, 'j' },
                { "watch", required_argument, NULL, 'w' },
                { "count", required_argument, NULL, 'n' },
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        struct pvctl_opts o = { .timeout = 30 };
        bool dir_given = false, vm_given = false;
        char *args[64];
        int nargs = 0, c;
        /* Options go anywhere; the words left are the command and its
         * arguments. */
        while ((c = getopt_long(argc, argv, "r:m:jw:n:t:hV", opts, NULL)) != -1) {
                char *end;
                switch (c) {
                case 'r':
                case 'm':
                        setenv(c == 'r' ? "PVD_RUNTIME_DIR" : "PVD_VM", optarg, 1);
                        dir_given |= c == 'r';
                        vm_given |= c == 'm';
                        break;
                case 'j':
                        o.json = true;
                        break;
                case 'w':
                        if (!parse_seconds("--watch", optarg, false, &o.watch))
                                return 2;
                        break;
                case 't':
                        if (!parse_seconds("--timeout", optarg, true, &o.timeout))
                                return 2;
                        break;
                case 'n':
                        o.count = (unsigned)strtoul(optarg, &end, 10);
                        if (*end || end == optarg || o.count == 0) {
                                fprintf(stderr, "pvctl: --count takes a number of samples > 0\n");
                                return 2;
                        }
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
        /* --runtime-dir names the very directory unless --vm goes with it. */
        if (dir_given && !vm_given)
                unsetenv("PVD_VM");
        for (int i = optind; i < argc && nargs < (int)(sizeof(args) / sizeof(args[0])); i++)
                args[nargs++] = argv[i];
        if (nargs == 0) {
                usage(stderr);
                return 2;
        }
        signal(SIGINT, on_stop_signal);
        signal(SIGTERM, on_stop_signal);
        const char *cmd = args[0];

        if (strcmp(cmd, "status") == 0) {
                if (nargs > 1 || o.watch > 0) {
                        fprintf(stderr, "pvctl: status takes only --json\n");
                        return 2;
                }
                return run_status(&o);
        }
        if (strcmp(cmd, "stat") == 0) {
                if (nargs != 2) {
                        fprintf(stderr, "pvctl: stat takes one driver: vrpq, vumem or vbpipe\n");
                        return 2;
                }
                for (size_t i = 0; i < sizeof(stat_views) / sizeof(stat_views[0]); i++)
                        if (strcmp(args[1], stat_views[i].name) == 0)
                                return run_view(PV_OP_STAT, args[1], &o, stat_views[i].view);
                fprintf(stderr, "pvctl: no driver \"%s\"; pvctl stat takes vrpq, vumem or vbpipe\n", args[1]);
                return 2;
        }
        if (strcmp(cmd, "wait") == 0)
                return run_wait(&o, args + 1, nargs - 1);
        if (strcmp(cmd, "top") == 0) {
                if (nargs > 1 || o.json) {
                        fprintf(stderr, "pvctl: top takes only --watch and --count\n");
                        return 2;
                }
                return pvctl_top(&o);
        }
        fprintf(stderr, "pvctl: unknown command \"%s\" (status, stat, top, wait)\n", cmd);
        usage(stderr);
        return 2;
}
