/* pvctl internals: documents from pvd (msgpack) and their views. */
#ifndef PVCTL_H
#define PVCTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

struct pvctl_opts {
        bool json;
        double watch;          /* seconds between samples; 0: once */
        unsigned count;        /* samples to take under --watch; 0: until stopped */
        double timeout;        /* wait: seconds; 0: forever */
        unsigned tick;         /* sample number in --watch mode (0 first) */
};

/* Ask pvd's control node for a document (PV_OP_STATUS, or PV_OP_STAT of
 * driver name); on success *doc lives in zone. 0 or a diag (pvLastError). */
int pvctl_fetch(uint32_t op, const char *name, msgpack_zone *zone, msgpack_object *doc, char *buf, size_t cap);
/* "pvctl: <what went wrong>" on stderr. */
void pvctl_say_error(int rc);
/* SIGINT or SIGTERM came: stop sampling. */
bool pvctl_stopping(void);
/* Sleep, cut short by SIGINT or SIGTERM. */
void pvctl_sleep(double seconds);
/* Monotonic seconds. */
double pvctl_now(void);

/* The value of key in a msgpack map, or NULL. */
const msgpack_object *doc_get(const msgpack_object *map, const char *key);
/* A string value ("" if missing or not a string), copied into buf, with
 * control characters and bytes that are not UTF-8 replaced by '?'. */
const char *doc_str(const msgpack_object *map, const char *key, char *buf, size_t len);
/* An integer value (0 if missing). */
uint64_t doc_u64(const msgpack_object *map, const char *key);
int64_t doc_i64(const msgpack_object *map, const char *key);
/* An array value's items (n = 0 if missing). */
const msgpack_object *doc_array(const msgpack_object *map, const char *key, uint32_t *n);

/* Print a document as JSON (stable: the keys are pvd's), indented or on one
 * line (compact). Bytes that are not UTF-8 become U+FFFD. */
void doc_print_json(FILE *f, const msgpack_object *o, bool compact);
/* Print a document as indented "key: value" lines. */
void doc_print_tree(FILE *f, const msgpack_object *o, int indent);
/* "2.0 MiB" */
const char *human_bytes(uint64_t n, char *buf, size_t len);

/* A user or group name for an id of this VM, else the number. */
const char *user_name(uint64_t uid, char *buf, size_t len);
const char *group_name(uint64_t gid, char *buf, size_t len);

/* Views. */
int pvctl_status_print(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vrpq(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vumem(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vbpipe(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
/* pvctl top: every vlink and driver, refreshed in place. Exit status. */
int pvctl_top(const struct pvctl_opts *o);
/* Generic: one block per vlink with its statistics as a tree. */
int pvctl_stat_generic(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);

#endif
