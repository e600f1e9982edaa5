// fuzz-sources: host/inifile.c host/services.c
// fuzz-cflags: -I. -Isdk -Ihost
// fuzz-ldflags: -linih
// fuzz-seeds: tests/fuzz/seeds/ini
/* libFuzzer target: INI loading (host/inifile.c on inih) of arbitrary bytes, then `--set`
 * overrides, look-ups and key removal on what was read. A load must end in a one-line error
 * naming the file, or in a document that matches the text: every section where its header
 * is, every key between its own header and the next one, no name given twice. */
#define _GNU_SOURCE /* fmemopen */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inifile.h"
#include "services.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LABEL "fuzz.ini"

#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        if (!(cond))                                                                           \
            __builtin_trap();                                                                  \
    } while (0)

static void require_one_line_naming(const char *prefix)
{
    const char *err = services_last_error();
    REQUIRE(!strchr(err, '\n') && !strchr(err, '\r'));
    REQUIRE(strncmp(err, prefix, strlen(prefix)) == 0);
}

/* Lines as a text editor counts them: a last line without '\n' still counts. */
static int count_lines(const uint8_t *data, size_t size)
{
    int n = 0;
    for (size_t i = 0; i < size; i++)
        n += data[i] == '\n';
    return n + (size && data[size - 1] != '\n');
}

/* The document must describe the text it came from (see the comment at the top). */
static void check_document(const ini_document *doc, int n_lines)
{
    REQUIRE(strcmp(doc->path, LABEL) == 0);
    for (size_t i = 0; i < doc->n_sections; i++) {
        const ini_section *s = &doc->sections[i];
        REQUIRE(s->file == doc->path && s->line >= 1 && s->line <= n_lines);
        REQUIRE(!strchr(s->name, '\n'));
        int next = i + 1 < doc->n_sections ? doc->sections[i + 1].line : n_lines + 1;
        REQUIRE(next > s->line);
        for (size_t j = 0; j < i; j++)
            REQUIRE(strcmp(doc->sections[j].name, s->name) != 0);
        for (size_t k = 0; k < s->n_kvs; k++) {
            const param_kv *kv = &s->kvs[k];
            REQUIRE(kv->file == doc->path && kv->line > s->line && kv->line < next);
            REQUIRE(!strchr(kv->key, '\n') && !strchr(kv->value, '\n'));
            for (size_t m = 0; m < k; m++)
                REQUIRE(strcmp(s->kvs[m].key, kv->key) != 0);
        }
    }
}

/* Applies one override and, when it is accepted, reads the value back the way ini_override
 * documents it: the key is what lies between the last '.' and the first '='. */
static void override_and_check(ini_document *doc, const char *assignment, int must_succeed)
{
    if (ini_override(doc, assignment) != TP_OK) {
        REQUIRE(!must_succeed);
        require_one_line_naming("--set ");
        return;
    }
    const char *eq = strchr(assignment, '=');
    const char *dot = NULL;
    for (const char *p = assignment; p < eq; p++)
        if (*p == '.')
            dot = p;
    REQUIRE(eq && dot);
    char section[256], key[256];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    ini_section *s = ini_find_section(doc, section);
    REQUIRE(s);
    const param_kv *kv = NULL;
    const char *value = ini_get(s, key, &kv);
    REQUIRE(value && strcmp(value, eq + 1) == 0 && kv->line == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* fmemopen of zero bytes is refused by some C libraries; an empty file is the seeds'
     * business anyway. */
    if (size == 0)
        return 0;
    FILE *fp = fmemopen((void *)data, size, "r");
    if (!fp)
        return 0;
    ini_document doc;
    tp_status st = ini_load_stream(fp, LABEL, &doc);
    fclose(fp);
    if (st != TP_OK) {
        /* Only the text can be at fault (TP_ERR_LIBRARY: inih and inifile.c disagreed). */
        REQUIRE(st == TP_ERR_INVALID);
        require_one_line_naming(LABEL ":");
        REQUIRE(doc.n_sections == 0 && !doc.sections && !doc.path);
        return 0;
    }
    check_document(&doc, count_lines(data, size));

    /* An override taken from the input: the text after its last newline. */
    const uint8_t *tail = data + size;
    while (tail > data && tail[-1] != '\n')
        tail--;
    size_t tail_len = (size_t)(data + size - tail);
    char assignment[600];
    if (tail_len < sizeof assignment && !memchr(tail, '\0', tail_len)) {
        memcpy(assignment, tail, tail_len);
        assignment[tail_len] = '\0';
        override_and_check(&doc, assignment, 0);
    }

    /* One aimed at what was read: replace (or add) a key of an existing section. */
    if (doc.n_sections) {
        const ini_section *s = &doc.sections[data[0] % doc.n_sections];
        const char *key = s->n_kvs ? s->kvs[data[size - 1] % s->n_kvs].key : "added";
        if (*s->name && !strchr(s->name, '=') && *key && !strpbrk(key, "=.")) {
            snprintf(assignment, sizeof assignment, "%s.%s=overridden", s->name, key);
            override_and_check(&doc, assignment, 1);
        }
    }

    /* Remove the first key of every section; it must be gone and the rest kept. */
    for (size_t i = 0; i < doc.n_sections; i++) {
        ini_section *s = &doc.sections[i];
        REQUIRE(ini_find_section(&doc, s->name) == s);
        if (!s->n_kvs)
            continue;
        char *key = strdup(s->kvs[0].key);
        REQUIRE(key);
        size_t before = s->n_kvs;
        REQUIRE(ini_get(s, key, NULL));
        ini_remove_key(s, key);
        REQUIRE(!ini_get(s, key, NULL) && s->n_kvs < before);
        free(key);
    }
    ini_free(&doc);
    REQUIRE(!doc.sections && !doc.path);
    return 0;
}
