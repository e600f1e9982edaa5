/* INI loading on top of inih, with line numbers and duplicate checks. */
#include "config.h"

#include "inifile.h"
#include "services.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* inih copies a section name into a buffer of this size (MAX_SECTION in its ini.c, not
 * exported): a longer name would reach on_value() cut short, under another section's name. */
#define INIH_MAX_SECTION 50

typedef struct parse_state {
    ini_document *doc;
    FILE *fp;
    int line;           /* line number of the line inih is working on */
    int line_too_long;  /* first over-long line, or 0 */
    tp_status status;   /* first error found in a callback */
    int after_key;      /* a named key came after the last header: inih's non-empty prev_name */
    int continuation;   /* inih takes the current line as a continuation of that key */
} parse_state;

static int is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r'); /* isspace() in the C locale, as inih */
}

static char *dup_string(const char *s)
{
    char *p = strdup(s ? s : "");
    return p;
}

static ini_section *add_section(ini_document *doc, const char *name, const char *file, int line)
{
    ini_section *grown = realloc(doc->sections, (doc->n_sections + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    doc->sections = grown;
    ini_section *s = &doc->sections[doc->n_sections];
    memset(s, 0, sizeof *s);
    s->name = dup_string(name);
    s->file = file;
    s->line = line;
    if (!s->name)
        return NULL;
    doc->n_sections++;
    return s;
}

static tp_status add_kv(ini_section *s, const char *key, const char *value, const char *file,
                        int line)
{
    param_kv *grown = realloc(s->kvs, (s->n_kvs + 1) * sizeof *grown);
    if (!grown)
        return services_fail(TP_ERR_NOMEM, "out of memory reading %s", file);
    s->kvs = grown;
    char *k = dup_string(key), *v = dup_string(value);
    if (!k || !v) {
        free(k);
        free(v);
        return services_fail(TP_ERR_NOMEM, "out of memory reading %s", file);
    }
    s->kvs[s->n_kvs++] = (param_kv){ k, v, file, line };
    return TP_OK;
}

/* The part of s (n bytes) without white space at either end, as inih strips a line. */
static const char *trim(const char *s, size_t *n)
{
    while (*n && is_space(*s)) {
        s++;
        (*n)--;
    }
    while (*n && is_space(s[*n - 1]))
        (*n)--;
    return s;
}

/* The ']' closing a header that starts at p (after its '['), or NULL where inih finds none:
 * it stops at an inline comment, a ';' after white space. */
static const char *header_end(const char *p)
{
    for (int after_space = 0; *p; p++) {
        if (*p == ']')
            return p;
        if (after_space && strchr(INI_INLINE_COMMENT_PREFIXES, *p))
            return NULL;
        after_space = is_space(*p);
    }
    return NULL;
}

/* Records an error about the current line unless an earlier one was recorded. */
static void line_error(parse_state *ps, tp_status status, const char *fmt, ...) TP_PRINTF(3, 4);
static void line_error(parse_state *ps, tp_status status, const char *fmt, ...)
{
    if (ps->status != TP_OK)
        return;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ps->status = services_fail(status, "%s:%d: %s", ps->doc->path, ps->line, what);
}

/* Sees a line the way inih is about to: a header records its section here (so empty
 * sections and their line numbers are known); an indented line after a key is that key's
 * continuation, even if it looks like a header. */
static void classify_line(parse_state *ps, const char *line)
{
    size_t n = strlen(line);
    const char *start = trim(line, &n);
    ps->continuation = 0;
    if (!n || strchr(INI_START_COMMENT_PREFIXES, *start))
        return;
    if (ps->after_key && start > line) {
        ps->continuation = 1;
        return;
    }
    const char *end = *start == '[' ? header_end(start + 1) : NULL;
    if (!end || ps->status != TP_OK)
        return; /* a key, or a header without ']' that inih reports as a syntax error */
    ps->after_key = 0;
    size_t name_len = (size_t)(end - start - 1);
    if (name_len >= INIH_MAX_SECTION) {
        line_error(ps, TP_ERR_INVALID, "section name longer than %d characters",
                   INIH_MAX_SECTION - 1);
        return;
    }
    const char *name = trim(start + 1, &name_len);
    if (!name_len) {
        line_error(ps, TP_ERR_INVALID, "empty section name");
        return;
    }
    char copy[INIH_MAX_SECTION];
    memcpy(copy, name, name_len);
    copy[name_len] = '\0';
    ini_section *existing = ini_find_section(ps->doc, copy);
    if (existing)
        line_error(ps, TP_ERR_INVALID, "section [%s] given twice (first at line %d)", copy,
                   existing->line);
    else if (!add_section(ps->doc, copy, ps->doc->path, ps->line))
        line_error(ps, TP_ERR_NOMEM, "out of memory");
}

/* inih's reader hook, in place of fgets: counts lines, catches lines longer than inih's
 * buffer and NUL bytes (either would make inih see other lines than the file has), then
 * classifies the line. */
static char *read_line(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    int len = 0, c = EOF;
    int saw_nul = 0;
    while (len < num - 1 && (c = getc(ps->fp)) != EOF) {
        saw_nul |= c == '\0';
        str[len++] = (char)c;
        if (c == '\n')
            break;
    }
    if (len == 0)
        return NULL;
    str[len] = '\0';
    ps->line++;
    if (len == num - 1 && c != '\n') {
        if (!ps->line_too_long)
            ps->line_too_long = ps->line;
        while ((c = getc(ps->fp)) != EOF && c != '\n')
            ; /* skip the rest so line counting stays right */
    }
    if (saw_nul)
        line_error(ps, TP_ERR_INVALID, "NUL byte (is this a text file?)");
    /* inih skips a UTF-8 byte order mark at the start of the file, one only. */
    int bom = ps->line == 1 && len >= 3 && memcmp(str, "\xef\xbb\xbf", 3) == 0;
    classify_line(ps, str + 3 * bom);
    return str;
}

static int on_value(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->status)
        return 0;
    size_t section_len = strlen(section);
    section = trim(section, &section_len);
    char section_name[INIH_MAX_SECTION];
    snprintf(section_name, sizeof section_name, "%.*s", (int)section_len, section);
    if (!section_len) {
        line_error(ps, TP_ERR_INVALID, "'%s' appears before any [section] header", name);
        return 0;
    }
    ini_section *s = ini_find_section(ps->doc, section_name);
    if (!s) { /* classify_line() and inih disagree on the headers: a bug here */
        line_error(ps, TP_ERR_LIBRARY, "inih reports section [%s], whose header was missed",
                   section_name);
        return 0;
    }
    if (ps->continuation) {
        /* inih names the key by a copy of at most 49 characters: extend the last key of the
         * section, which classify_line() saw this line continue. */
        if (!s->n_kvs) {
            line_error(ps, TP_ERR_INVALID, "continuation line without a key");
            return 0;
        }
        param_kv *kv = &s->kvs[s->n_kvs - 1];
        size_t n = strlen(kv->value) + 1 + strlen(value) + 1;
        char *joined = malloc(n);
        if (!joined) {
            line_error(ps, TP_ERR_NOMEM, "out of memory");
            return 0;
        }
        snprintf(joined, n, "%s %s", kv->value, value);
        free((char *)kv->value);
        kv->value = joined;
        return 1;
    }
    ps->after_key = *name != '\0';
    const param_kv *prev = NULL;
    ini_get(s, name, &prev);
    if (prev) {
        line_error(ps, TP_ERR_INVALID, "[%s] key '%s' given twice (first at line %d)", s->name,
                   name, prev->line);
        return 0;
    }
    ps->status = add_kv(s, name, value, ps->doc->path, ps->line);
    return ps->status == TP_OK;
}

tp_status ini_load(const char *path, ini_document *doc)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        memset(doc, 0, sizeof *doc);
        return services_fail(errno == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO,
                             "%s: cannot read configuration: %s", path, strerror(errno));
    }
    tp_status st = ini_load_stream(fp, path, doc);
    fclose(fp);
    return st;
}

tp_status ini_load_stream(FILE *fp, const char *name, ini_document *doc)
{
    memset(doc, 0, sizeof *doc);
    doc->path = dup_string(name);
    if (!doc->path)
        return services_fail(TP_ERR_NOMEM, "%s: out of memory", name);
    parse_state ps = { .doc = doc, .fp = fp };
    int rc = ini_parse_stream(read_line, &ps, on_value, &ps);
    tp_status st = ps.status;
    if (!st && ps.line_too_long)
        st = services_fail(TP_ERR_INVALID, "%s:%d: line too long (at most %d characters; "
                           "continue a long value on an indented next line)",
                           name, ps.line_too_long, INI_MAX_LINE - 2);
    if (!st && rc > 0)
        st = services_fail(TP_ERR_INVALID,
                           "%s:%d: syntax error (expected [section], key = value, or a comment)",
                           name, rc);
    /* fgets fails on a directory, which would otherwise read as an empty document. */
    if (!st && ferror(fp))
        st = services_fail(TP_ERR_IO, "%s: cannot read configuration (read error)", name);
    if (!st && rc < 0)
        st = services_fail(TP_ERR_IO, "%s: cannot parse configuration", name);
    if (st)
        ini_free(doc);
    return st;
}

ini_section *ini_find_section(ini_document *doc, const char *name)
{
    for (size_t i = 0; i < doc->n_sections; i++)
        if (strcmp(doc->sections[i].name, name) == 0)
            return &doc->sections[i];
    return NULL;
}

const char *ini_get(const ini_section *s, const char *key, const param_kv **kv_out)
{
    const param_kv *found = NULL;
    for (size_t i = 0; i < s->n_kvs; i++)
        if (strcmp(s->kvs[i].key, key) == 0)
            found = &s->kvs[i];
    if (kv_out)
        *kv_out = found;
    return found ? found->value : NULL;
}

void ini_remove_key(ini_section *s, const char *key)
{
    size_t out = 0;
    for (size_t i = 0; i < s->n_kvs; i++) {
        if (strcmp(s->kvs[i].key, key) == 0) {
            free((char *)s->kvs[i].key);
            free((char *)s->kvs[i].value);
            continue;
        }
        s->kvs[out++] = s->kvs[i];
    }
    s->n_kvs = out;
}

tp_status ini_override(ini_document *doc, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = NULL;
    for (const char *p = assignment; eq && p < eq; p++)
        if (*p == '.')
            dot = p;
    if (!eq || !dot || dot == assignment || dot + 1 == eq)
        return services_fail(TP_ERR_INVALID,
                             "--set %s: expected section.key=value (e.g. --set pipeline.seed=7)",
                             assignment);
    char section[256], key[256];
    size_t sn = (size_t)(dot - assignment), kn = (size_t)(eq - dot - 1);
    if (sn >= sizeof section || kn >= sizeof key)
        return services_fail(TP_ERR_INVALID, "--set %s: section or key too long", assignment);
    memcpy(section, assignment, sn);
    section[sn] = '\0';
    memcpy(key, dot + 1, kn);
    key[kn] = '\0';
    ini_section *s = ini_find_section(doc, section);
    if (!s && !(s = add_section(doc, section, "--set", 0)))
        return services_fail(TP_ERR_NOMEM, "out of memory");
    ini_remove_key(s, key);
    return add_kv(s, key, eq + 1, "--set", 0);
}

void ini_free(ini_document *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->n_sections; i++) {
        ini_section *s = &doc->sections[i];
        for (size_t k = 0; k < s->n_kvs; k++) {
            free((char *)s->kvs[k].key);
            free((char *)s->kvs[k].value);
        }
        free(s->kvs);
        free(s->name);
    }
    free(doc->sections);
    free(doc->path);
    memset(doc, 0, sizeof *doc);
}
