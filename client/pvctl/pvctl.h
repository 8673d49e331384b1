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
        unsigned tick;         /* sample number in --watch mode (0 first) */
};

/* The value of key in a msgpack map, or NULL. */
const msgpack_object *doc_get(const msgpack_object *map, const char *key);
/* A string value ("" if missing or not a string), copied into buf. */
const char *doc_str(const msgpack_object *map, const char *key, char *buf, size_t len);
/* An integer value (0 if missing). */
uint64_t doc_u64(const msgpack_object *map, const char *key);
int64_t doc_i64(const msgpack_object *map, const char *key);
/* An array value's items (n = 0 if missing). */
const msgpack_object *doc_array(const msgpack_object *map, const char *key, uint32_t *n);

/* Print a document as JSON (stable: the keys are pvd's). */
void doc_print_json(FILE *f, const msgpack_object *o);
/* Print a document as indented "key: value" lines. */
void doc_print_tree(FILE *f, const msgpack_object *o, int indent);
/* "2.0 MiB" */
const char *human_bytes(uint64_t n, char *buf, size_t len);

/* Views. */
int pvctl_status_print(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vrpq(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vumem(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
int pvctl_stat_vbpipe(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);
/* Generic: one block per vlink with its statistics as a tree. */
int pvctl_stat_generic(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f);

#endif
