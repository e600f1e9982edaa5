/* INI files as trainpipe reads them: sections in file order, each with its key = value
 * lines and where each came from, plus `--set section.key=value` overrides.
 *
 * Parsing is inih's; this layer adds line numbers, duplicate detection (a key or section
 * given twice in one file is an error, as nginx does with its "unset" sentinel), and
 * continuation lines (indented lines extend the previous value, joined by a space). */
#ifndef TRAINPIPE_HOST_INIFILE_H
#define TRAINPIPE_HOST_INIFILE_H

#include <stddef.h>
#include <stdio.h>

#include <trainpipe/trainpipe.h>

#include "params.h"

typedef struct ini_section {
    char *name;
    const char *file; /* the document's path, or "--set" for a section created by an override */
    int line;         /* line of the [header], 0 for --set */
    param_kv *kvs;    /* keys in file order; strings owned by the document */
    size_t n_kvs;
} ini_section;

typedef struct ini_document {
    char *path;
    ini_section *sections;
    size_t n_sections;
} ini_document;

/* Reads path. Errors: the file cannot be read; a syntax error; a line longer than the
 * parser allows; a NUL byte; a section name that is empty or longer than 49 characters; a
 * section or key given twice. Each names FILE:LINE. Section names are trimmed ("[ a ]" is
 * [a]); a UTF-8 byte order mark at the start is skipped. */
tp_status ini_load(const char *path, ini_document *doc);
/* The same from an open stream (read to its end, not closed); `name` stands for it in the
 * document and in messages. */
tp_status ini_load_stream(FILE *fp, const char *name, ini_document *doc);

/* Applies "section.key=value" (the section may itself contain dots: the key is the part
 * after the last dot). Later overrides replace earlier values of the same key. */
tp_status ini_override(ini_document *doc, const char *assignment);

/* The section named `name`, or NULL. */
ini_section *ini_find_section(ini_document *doc, const char *name);
/* The value of key in section, or NULL; *kv_out (optional) receives the entry. */
const char *ini_get(const ini_section *s, const char *key, const param_kv **kv_out);
/* Removes key from s (host keys such as `plugin` are consumed before the rest is handed
 * to the component's parameter table). */
void ini_remove_key(ini_section *s, const char *key);

void ini_free(ini_document *doc);

#endif
