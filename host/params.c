/* Typed parameter conversion and validation, driven by a component's tp_param_def table. */
#include "config.h"

#include "params.h"
#include "services.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Storage owned by a config: a singly linked list of blocks. */
typedef struct arena_block {
    struct arena_block *next;
    max_align_t align[];
} arena_block;

static void *arena_alloc(param_config *cfg, size_t bytes)
{
    arena_block *b = malloc(sizeof(arena_block) + (bytes ? bytes : 1));
    if (!b)
        return NULL;
    b->next = cfg->arena;
    cfg->arena = b;
    return b->align;
}

static char *arena_strdup(param_config *cfg, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(cfg, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void params_release(param_config *cfg)
{
    if (!cfg)
        return;
    arena_block *b = cfg->arena;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(cfg->data);
    memset(cfg, 0, sizeof *cfg);
}

const char *params_type_name(tp_param_type type)
{
    switch (type) {
    case TP_PARAM_BOOL: return "bool";
    case TP_PARAM_INT: return "int";
    case TP_PARAM_FLOAT: return "float";
    case TP_PARAM_STRING: return "string";
    case TP_PARAM_PATH: return "path";
    case TP_PARAM_ENUM: return "enum";
    case TP_PARAM_INT_LIST: return "int list";
    case TP_PARAM_FLOAT_LIST: return "float list";
    }
    return "?";
}

static void format_number(double v, int integral, char *buf, size_t size)
{
    if (integral)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.10g", v);
}

void params_describe(const tp_param_def *def, char *buf, size_t size)
{
    int integral = def->type == TP_PARAM_INT || def->type == TP_PARAM_INT_LIST;
    const char *what = params_type_name(def->type);
    char lo[64], hi[64];
    format_number(def->min, integral, lo, sizeof lo);
    format_number(def->max, integral, hi, sizeof hi);
    switch (def->type) {
    case TP_PARAM_BOOL:
        snprintf(buf, size, "true or false");
        return;
    case TP_PARAM_ENUM: {
        size_t used = (size_t)snprintf(buf, size, "one of: ");
        for (size_t i = 0; def->choices && def->choices[i] && used < size; i++)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                     def->choices[i]);
        return;
    }
    case TP_PARAM_INT:
    case TP_PARAM_FLOAT:
    case TP_PARAM_INT_LIST:
    case TP_PARAM_FLOAT_LIST: {
        const char *prefix = def->type == TP_PARAM_INT_LIST || def->type == TP_PARAM_FLOAT_LIST
                                 ? "comma-separated "
                                 : "";
        int has_min = (def->flags & TP_PARAM_FLAG_HAS_MIN) != 0;
        int has_max = (def->flags & TP_PARAM_FLAG_HAS_MAX) != 0;
        if (has_min && has_max)
            snprintf(buf, size, "%s%s in [%s, %s]", prefix, what, lo, hi);
        else if (has_min)
            snprintf(buf, size, "%s%s >= %s", prefix, what, lo);
        else if (has_max)
            snprintf(buf, size, "%s%s <= %s", prefix, what, hi);
        else
            snprintf(buf, size, "%s%s", prefix, what);
        return;
    }
    case TP_PARAM_STRING:
    case TP_PARAM_PATH:
        snprintf(buf, size, "%s", what);
        return;
    }
    snprintf(buf, size, "?");
}

/* Levenshtein distance, bounded to short words (keys and names are short). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return (size_t)-1;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *params_closest(const char *word, const char *const *candidates)
{
    size_t limit = strlen(word) / 3;
    if (limit < 2)
        limit = 2;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; candidates && candidates[i]; i++) {
        size_t d = edit_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best;
}

/* "FILE:LINE: [SECTION] " or "FILE: [SECTION] " or "[SECTION] ". */
static void location(const param_kv *kv, const char *section, char *buf, size_t size)
{
    if (kv && kv->file && kv->line > 0)
        snprintf(buf, size, "%s:%d: [%s] ", kv->file, kv->line, section);
    else if (kv && kv->file)
        snprintf(buf, size, "%s: [%s] ", kv->file, section);
    else
        snprintf(buf, size, "[%s] ", section);
}

static tp_status bad_value(const char *section, const tp_param_def *def, const param_kv *kv,
                           const char *why)
{
    char where[512], allowed[512];
    location(kv, section, where, sizeof where);
    params_describe(def, allowed, sizeof allowed);
    return services_fail(TP_ERR_INVALID, "%s%s = %s: %s (expected %s)", where, def->name,
                         kv->value, why, allowed);
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Parses a whole string as a number; the INT form refuses fractions and overflow. */
static const char *parse_number(const char *s, int integral, double *out_d, int64_t *out_i)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return "empty value";
    char *end;
    errno = 0;
    if (integral) {
        long long v = strtoll(s, &end, 10);
        if (errno == ERANGE)
            return "integer out of range";
        while (isspace((unsigned char)*end))
            end++;
        if (*end)
            return "not an integer";
        *out_i = v;
        *out_d = (double)v;
    } else {
        double v = strtod(s, &end);
        while (isspace((unsigned char)*end))
            end++;
        if (*end || end == s)
            return "not a number";
        if (!isfinite(v))
            return "not a finite number";
        *out_d = v;
    }
    return NULL;
}

static const char *check_range(const tp_param_def *def, double v)
{
    if ((def->flags & TP_PARAM_FLAG_HAS_MIN) && v < def->min)
        return "out of range";
    if ((def->flags & TP_PARAM_FLAG_HAS_MAX) && v > def->max)
        return "out of range";
    return NULL;
}

/* Integers are checked as integers: as doubles, values beyond 2^53 round onto a bound
 * (9200000000000000001 would pass a max of 9.2e18). The bounds are rounded inward. */
static const char *check_int_range(const tp_param_def *def, int64_t n)
{
    if (def->flags & TP_PARAM_FLAG_HAS_MIN) {
        double lo = ceil(def->min);
        if (lo >= 0x1p63 || (lo > -0x1p63 && n < (int64_t)lo))
            return "out of range";
    }
    if (def->flags & TP_PARAM_FLAG_HAS_MAX) {
        double hi = floor(def->max);
        if (hi < -0x1p63 || (hi < 0x1p63 && n > (int64_t)hi))
            return "out of range";
    }
    return NULL;
}

static tp_status set_list(param_config *cfg, const char *section, const tp_param_def *def,
                          const param_kv *kv, void *slot)
{
    int integral = def->type == TP_PARAM_INT_LIST;
    size_t count = 0;
    const char *s = kv->value;
    int blank = 1;
    for (const char *p = s; *p; p++)
        if (!isspace((unsigned char)*p))
            blank = 0;
    if (!blank) {
        count = 1;
        for (const char *p = s; *p; p++)
            count += *p == ',';
    }
    void *values = arena_alloc(cfg, count * (integral ? sizeof(int64_t) : sizeof(double)));
    char *copy = arena_strdup(cfg, s);
    if (!values || !copy)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    char *save = NULL, *tok = count ? strtok_r(copy, ",", &save) : NULL;
    for (size_t i = 0; i < count; i++) {
        char elem[256];
        snprintf(elem, sizeof elem, "element %zu", i + 1);
        if (!tok)
            return bad_value(section, def, kv, "empty list element");
        double d = 0;
        int64_t n = 0;
        const char *why = parse_number(tok, integral, &d, &n);
        if (!why)
            why = integral ? check_int_range(def, n) : check_range(def, d);
        if (why) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s '%s' is %s", elem, tok, why);
            return bad_value(section, def, kv, msg);
        }
        if (integral)
            ((int64_t *)values)[i] = n;
        else
            ((double *)values)[i] = d;
        tok = strtok_r(NULL, ",", &save);
    }
    if (integral)
        *(tp_int_list *)slot = (tp_int_list){ count, values };
    else
        *(tp_float_list *)slot = (tp_float_list){ count, values };
    return TP_OK;
}

/* Resolves a relative path against the folder of the file that set it (an INI file), so a
 * config works from any current directory. Values from the command line stay as given. */
static char *resolve_path(param_config *cfg, const param_kv *kv)
{
    const char *v = kv->value;
    if (v[0] == '/' || v[0] == '\0' || !kv->file || kv->line <= 0 || v[0] == '~')
        return arena_strdup(cfg, v);
    const char *slash = strrchr(kv->file, '/');
    if (!slash)
        return arena_strdup(cfg, v);
    size_t dir_len = (size_t)(slash - kv->file);
    char *p = arena_alloc(cfg, dir_len + 1 + strlen(v) + 1);
    if (p) {
        memcpy(p, kv->file, dir_len);
        p[dir_len] = '/';
        strcpy(p + dir_len + 1, v);
    }
    return p;
}

tp_status params_set(param_config *cfg, const char *section, const tp_param_def *def,
                     const param_kv *kv, void *slot)
{
    double d = 0;
    int64_t n = 0;
    const char *why;
    switch (def->type) {
    case TP_PARAM_BOOL: {
        int b;
        if (parse_bool(kv->value, &b))
            return bad_value(section, def, kv, "not a boolean");
        *(int *)slot = b;
        return TP_OK;
    }
    case TP_PARAM_INT:
    case TP_PARAM_FLOAT:
        why = parse_number(kv->value, def->type == TP_PARAM_INT, &d, &n);
        if (!why)
            why = def->type == TP_PARAM_INT ? check_int_range(def, n) : check_range(def, d);
        if (why)
            return bad_value(section, def, kv, why);
        if (def->type == TP_PARAM_INT)
            *(int64_t *)slot = n;
        else
            *(double *)slot = d;
        return TP_OK;
    case TP_PARAM_STRING:
    case TP_PARAM_PATH: {
        char *s = def->type == TP_PARAM_PATH ? resolve_path(cfg, kv) : arena_strdup(cfg, kv->value);
        if (!s)
            return services_fail(TP_ERR_NOMEM, "out of memory");
        *(const char **)slot = s;
        return TP_OK;
    }
    case TP_PARAM_ENUM:
        for (int i = 0; def->choices[i]; i++)
            if (strcmp(def->choices[i], kv->value) == 0) {
                *(int *)slot = i;
                return TP_OK;
            }
        {
            const char *near = params_closest(kv->value, def->choices);
            char msg[256];
            if (near)
                snprintf(msg, sizeof msg, "unknown choice (did you mean '%s'?)", near);
            else
                snprintf(msg, sizeof msg, "unknown choice");
            return bad_value(section, def, kv, msg);
        }
    case TP_PARAM_INT_LIST:
    case TP_PARAM_FLOAT_LIST:
        return set_list(cfg, section, def, kv, slot);
    }
    return services_fail(TP_ERR_INVALID, "[%s] %s: parameter has unknown type %d", section,
                         def->name, (int)def->type);
}

static const tp_param_def *find_def(const tp_component *c, const char *key)
{
    for (size_t i = 0; i < c->n_params; i++)
        if (strcmp(c->params[i].name, key) == 0)
            return &c->params[i];
    return NULL;
}

static tp_status unknown_key(const tp_component *c, const char *section, const param_kv *kv)
{
    const char *names[256];
    size_t n = c->n_params < 255 ? c->n_params : 255;
    for (size_t i = 0; i < n; i++)
        names[i] = c->params[i].name;
    names[n] = NULL;
    const char *near = params_closest(kv->key, names);
    char where[512];
    location(kv, section, where, sizeof where);
    if (near)
        return services_fail(TP_ERR_INVALID,
                             "%sunknown key '%s' for %s '%s' (did you mean '%s'?)", where,
                             kv->key, section, c->name, near);
    return services_fail(TP_ERR_INVALID,
                         "%sunknown key '%s' for '%s' (see `trainpipe plugins %s`)", where,
                         kv->key, c->name, c->name);
}

tp_status params_build_at(const tp_component *c, const char *section, const param_kv *where,
                          const param_kv *kvs, size_t n_kvs, param_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->component = c;
    cfg->data = calloc(1, c->config_size ? c->config_size : 1);
    if (!cfg->data)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    tp_status st = TP_OK;
    /* Unknown keys first: a typo is the likeliest mistake and the most useful message. */
    for (size_t i = 0; i < n_kvs; i++)
        if (!find_def(c, kvs[i].key)) {
            st = unknown_key(c, section, &kvs[i]);
            goto fail;
        }
    for (size_t p = 0; p < c->n_params; p++) {
        const tp_param_def *def = &c->params[p];
        if (def->offset >= c->config_size && c->config_size) {
            st = services_fail(TP_ERR_INVALID, "%s: parameter '%s' lies outside its config struct",
                               c->name, def->name);
            goto fail;
        }
        void *slot = (char *)cfg->data + def->offset;
        const param_kv *given = NULL;
        for (size_t i = 0; i < n_kvs; i++) /* the last one wins: --set overrides the file */
            if (strcmp(kvs[i].key, def->name) == 0)
                given = &kvs[i];
        if (given) {
            st = params_set(cfg, section, def, given, slot);
        } else if (def->flags & TP_PARAM_FLAG_REQUIRED) {
            char loc[512];
            location(where, section, loc, sizeof loc);
            st = services_fail(TP_ERR_INVALID, "%smissing required key '%s' (%s)", loc,
                               def->name, def->help ? def->help : params_type_name(def->type));
        } else if (def->default_value) {
            param_kv dflt = { def->name, def->default_value, NULL, 0 };
            st = params_set(cfg, section, def, &dflt, slot);
            if (st)
                services_fail(st, "plugin '%s' has an invalid default for '%s': %s", c->name,
                              def->name, services_last_error());
        }
        if (st)
            goto fail;
    }
    return TP_OK;
fail:
    params_release(cfg);
    return st;
}

tp_status params_build(const tp_component *c, const char *section, const param_kv *kvs,
                       size_t n_kvs, param_config *cfg)
{
    return params_build_at(c, section, NULL, kvs, n_kvs, cfg);
}

void params_format(const tp_param_def *def, const void *config_data, char *buf, size_t size)
{
    const char *slot = (const char *)config_data + def->offset;
    switch (def->type) {
    case TP_PARAM_BOOL:
        snprintf(buf, size, "%s", *(const int *)slot ? "true" : "false");
        return;
    case TP_PARAM_INT:
        snprintf(buf, size, "%lld", (long long)*(const int64_t *)slot);
        return;
    case TP_PARAM_FLOAT:
        snprintf(buf, size, "%.10g", *(const double *)slot);
        return;
    case TP_PARAM_STRING:
    case TP_PARAM_PATH: {
        const char *s = *(const char *const *)slot;
        snprintf(buf, size, "%s", s ? s : "");
        return;
    }
    case TP_PARAM_ENUM:
        snprintf(buf, size, "%s", def->choices[*(const int *)slot]);
        return;
    case TP_PARAM_INT_LIST:
    case TP_PARAM_FLOAT_LIST: {
        size_t used = 0;
        buf[0] = '\0';
        if (def->type == TP_PARAM_INT_LIST) {
            const tp_int_list *l = (const tp_int_list *)slot;
            for (size_t i = 0; i < l->count && used < size; i++)
                used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "",
                                         (long long)l->values[i]);
        } else {
            const tp_float_list *l = (const tp_float_list *)slot;
            for (size_t i = 0; i < l->count && used < size; i++)
                used += (size_t)snprintf(buf + used, size - used, "%s%.10g", i ? "," : "",
                                         l->values[i]);
        }
        return;
    }
    }
    snprintf(buf, size, "?");
}

tp_status instance_create(const tp_component *c, const char *const *key_values, instance *out)
{
    memset(out, 0, sizeof *out);
    out->component = c;
    size_t n = 0;
    while (key_values && key_values[n])
        n++;
    param_kv *kvs = calloc(n ? n : 1, sizeof *kvs);
    char **copies = calloc(n ? n : 1, sizeof *copies);
    tp_status st = TP_OK;
    if (!kvs || !copies) {
        st = services_fail(TP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        copies[i] = strdup(key_values[i]);
        if (!copies[i]) {
            st = services_fail(TP_ERR_NOMEM, "out of memory");
            goto done;
        }
        char *eq = strchr(copies[i], '=');
        if (!eq) {
            st = services_fail(TP_ERR_INVALID, "<arguments>: [%s] '%s': expected key=value",
                               c->name, key_values[i]);
            goto done;
        }
        *eq = '\0';
        kvs[i] = (param_kv){ copies[i], eq + 1, "<arguments>", 0 };
    }
    st = params_build(c, c->name, kvs, n, &out->config);
    if (st)
        goto done;
    st = c->create(services_host(), out->config.data, &out->self);
    if (st)
        params_release(&out->config);
done:
    for (size_t i = 0; copies && i < n; i++)
        free(copies[i]);
    free(copies);
    free(kvs);
    return st;
}

void instance_destroy(instance *inst)
{
    if (!inst || !inst->component)
        return;
    if (inst->self)
        inst->component->destroy(inst->self);
    params_release(&inst->config);
    memset(inst, 0, sizeof *inst);
}
