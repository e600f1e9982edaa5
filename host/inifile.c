/* INI loading on top of inih, with line numbers and duplicate checks. */
#include "config.h"

#include "inifile.h"
#include "services.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parse_state {
    ini_document *doc;
    FILE *fp;
    int line;           /* line number of the line inih is working on */
    int line_too_long;  /* first over-long line, or 0 */
    tp_status status;   /* first error found in a callback */
    const char *last_key_section;
    int last_key_line;  /* for continuation lines */
    int line_indented;  /* the current line starts with white space */
} parse_state;

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

/* inih's reader hook: counts lines, records section headers (so empty sections and their
 * line numbers are known), and catches lines longer than inih's buffer. */
static char *read_line(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (!fgets(str, num, ps->fp))
        return NULL;
    ps->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(ps->fp)) {
        if (!ps->line_too_long)
            ps->line_too_long = ps->line;
        int c; /* skip the rest so line counting stays right */
        while ((c = fgetc(ps->fp)) != EOF && c != '\n')
            ;
    }
    const char *p = str;
    ps->line_indented = *p == ' ' || *p == '\t';
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '[' && ps->status == TP_OK) {
        const char *end = strchr(p, ']');
        if (end) {
            char name[256];
            size_t n = (size_t)(end - p - 1);
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, p + 1, n);
            name[n] = '\0';
            /* trim, as inih does */
            char *b = name;
            while (*b == ' ' || *b == '\t')
                b++;
            char *e = b + strlen(b);
            while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                *--e = '\0';
            ini_section *existing = ini_find_section(ps->doc, b);
            if (existing)
                ps->status = services_fail(TP_ERR_INVALID,
                                           "%s:%d: section [%s] given twice (first at line %d)",
                                           ps->doc->path, ps->line, b, existing->line);
            else if (!add_section(ps->doc, b, ps->doc->path, ps->line))
                ps->status = services_fail(TP_ERR_NOMEM, "out of memory reading %s", ps->doc->path);
        }
    }
    return str;
}

static int on_value(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->status)
        return 0;
    ini_section *s = ini_find_section(ps->doc, section);
    if (!s || !*section) {
        ps->status = services_fail(TP_ERR_INVALID,
                                   "%s:%d: '%s' appears before any [section] header",
                                   ps->doc->path, ps->line, name);
        return 0;
    }
    const param_kv *prev = NULL;
    ini_get(s, name, &prev);
    if (prev) {
        /* inih reports an indented continuation line as the same key again. */
        if (ps->line_indented && ps->last_key_section == s->name &&
            prev == &s->kvs[s->n_kvs - 1] && ps->last_key_line < ps->line) {
            param_kv *kv = &s->kvs[s->n_kvs - 1];
            size_t n = strlen(kv->value) + 1 + strlen(value) + 1;
            char *joined = malloc(n);
            if (!joined) {
                ps->status = services_fail(TP_ERR_NOMEM, "out of memory");
                return 0;
            }
            snprintf(joined, n, "%s %s", kv->value, value);
            free((char *)kv->value);
            kv->value = joined;
            ps->last_key_line = ps->line;
            return 1;
        }
        ps->status = services_fail(TP_ERR_INVALID,
                                   "%s:%d: [%s] key '%s' given twice (first at line %d)",
                                   ps->doc->path, ps->line, section, name, prev->line);
        return 0;
    }
    ps->status = add_kv(s, name, value, ps->doc->path, ps->line);
    ps->last_key_section = s->name;
    ps->last_key_line = ps->line;
    return ps->status == TP_OK;
}

tp_status ini_load(const char *path, ini_document *doc)
{
    memset(doc, 0, sizeof *doc);
    doc->path = dup_string(path);
    if (!doc->path)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    FILE *fp = fopen(path, "r");
    if (!fp) {
        tp_status st = services_fail(errno == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO,
                                     "%s: cannot read configuration: %s", path, strerror(errno));
        ini_free(doc);
        return st;
    }
    parse_state ps = { .doc = doc, .fp = fp };
    int rc = ini_parse_stream(read_line, &ps, on_value, &ps);
    fclose(fp);
    tp_status st = ps.status;
    if (!st && ps.line_too_long)
        st = services_fail(TP_ERR_INVALID, "%s:%d: line too long (at most %d characters; "
                           "continue a long value on an indented next line)",
                           path, ps.line_too_long, INI_MAX_LINE - 2);
    if (!st && rc > 0)
        st = services_fail(TP_ERR_INVALID,
                           "%s:%d: syntax error (expected [section], key = value, or a comment)",
                           path, rc);
    if (!st && rc < 0)
        st = services_fail(TP_ERR_IO, "%s: cannot parse configuration", path);
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
