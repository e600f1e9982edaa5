// fuzz-sources: host/params.c host/services.c
// fuzz-cflags: -I. -Isdk -Ihost
// fuzz-ldflags: -lm
// fuzz-seeds: tests/fuzz/seeds/params
/* libFuzzer target: the typed parameter parser (host/params.c) that turns every INI value and
 * --set a user writes into a component's config. The input is split into lines, each line
 * into key=value at its first '='; the pairs go to params_build() for a fixed table that has
 * every parameter type with ranges, choices and one required key, and (as "key=value"
 * strings) to instance_create(). A refusal must be one line naming the section and the key
 * at fault; an acceptance must hold exactly the values given (or the defaults), each within
 * its declared range, and print (params_format) as text that reads back to the same value. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "params.h"
#include "services.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FILE_LABEL "conf/fuzz.ini" /* has a folder, so relative paths get resolved */
#define SECTION "model.fuzz"
#define MAX_PAIRS 64

#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        if (!(cond))                                                                           \
            __builtin_trap();                                                                  \
    } while (0)

typedef struct fuzz_config {
    int flag;
    int64_t count;
    int64_t seed;
    int64_t offset;
    double rate;
    double scale;
    const char *label;
    const char *file;
    int mode;
    tp_int_list steps;
    tp_float_list factors;
    const char *data;
} fuzz_config;

static const char *const modes[] = { "fast", "careful", "exact", NULL };

/* One of each type; the bounds are those real tables use, including the wide int range of
 * pipeline.seed (beyond 2^53, where doubles no longer hold every integer). */
static const tp_param_def defs[] = {
    TP_PARAM_DEF_BOOL(fuzz_config, flag, "flag", "false", "a boolean"),
    TP_PARAM_DEF_INT(fuzz_config, count, "count", "3", 1, 1024, "an integer in [1, 1024]"),
    TP_PARAM_DEF_INT(fuzz_config, seed, "seed", "1", 0, 9.2e18, "a seed"),
    { "offset", TP_PARAM_INT, "-2", TP_PARAM_FLAG_HAS_MIN, -5, 0, NULL,
      offsetof(fuzz_config, offset), "an integer >= -5" },
    TP_PARAM_DEF_FLOAT(fuzz_config, rate, "rate", "0.5", 1e-6, 10, "a float in [1e-6, 10]"),
    { "scale", TP_PARAM_FLOAT, NULL, TP_PARAM_FLAG_HAS_MAX, 0, 1e30, NULL,
      offsetof(fuzz_config, scale), "a float <= 1e30" },
    TP_PARAM_DEF_STRING(fuzz_config, label, "label", "none", "a string"),
    TP_PARAM_DEF_PATH(fuzz_config, file, "file", NULL, "an optional path"),
    TP_PARAM_DEF_ENUM(fuzz_config, mode, "mode", "fast", modes, "an enum"),
    { "steps", TP_PARAM_INT_LIST, "10,20", TP_PARAM_FLAG_HAS_MIN | TP_PARAM_FLAG_HAS_MAX, 0,
      1e15, NULL, offsetof(fuzz_config, steps), "integers in [0, 1e15]" },
    { "factors", TP_PARAM_FLOAT_LIST, "", TP_PARAM_FLAG_HAS_MIN | TP_PARAM_FLAG_HAS_MAX, 0, 1,
      NULL, offsetof(fuzz_config, factors), "floats in [0, 1]" },
    TP_PARAM_DEF_REQUIRED_PATH(fuzz_config, data, "data", "the data to read"),
};
#define N_DEFS (sizeof defs / sizeof defs[0])

/* instance_create() needs a component that can be created: it copies the config, so that
 * a missed destroy shows as a leak. */
static tp_status fuzz_create(const tp_host *host, const void *config, void **self)
{
    (void)host;
    *self = malloc(sizeof(fuzz_config));
    REQUIRE(*self);
    memcpy(*self, config, sizeof(fuzz_config));
    return TP_OK;
}

static void fuzz_destroy(void *self) { free(self); }

static const tp_component component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_MODEL,
    .name = "fuzz",
    .summary = "every parameter type",
    .params = defs,
    .n_params = N_DEFS,
    .config_size = sizeof(fuzz_config),
    .create = fuzz_create,
    .destroy = fuzz_destroy,
};

/* Messages are folded to one line (services.c turns CR and LF into spaces): does `message`
 * continue at `at` with `text` so folded? A message cut at the buffer's end matches too. */
static int has_folded_at(const char *message, size_t at, const char *text)
{
    size_t len = strlen(message);
    for (size_t i = 0; text[i]; i++) {
        if (at + i >= len)
            return len >= 1000; /* cut by the message buffer */
        char want = text[i] == '\n' || text[i] == '\r' ? ' ' : text[i];
        if (message[at + i] != want)
            return 0;
    }
    return 1;
}

static const tp_param_def *find_def(const char *key)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (!strcmp(defs[i].name, key))
            return &defs[i];
    return NULL;
}

/* The refusal of kvs: one line that starts where the culprit is and names its key. */
static void check_refusal(const param_kv *kvs, size_t n, const char *file, const char *section)
{
    const char *err = services_last_error();
    REQUIRE(!strchr(err, '\n') && !strchr(err, '\r'));
    const param_kv *first_unknown = NULL;
    for (size_t i = 0; i < n && !first_unknown; i++)
        if (!find_def(kvs[i].key))
            first_unknown = &kvs[i];
    char prefix[128];
    int missing_data = 1;
    for (size_t i = 0; i < n; i++)
        missing_data &= strcmp(kvs[i].key, "data") != 0;
    snprintf(prefix, sizeof prefix, "[%s] missing required key 'data'", section);
    if (!first_unknown && missing_data && !strncmp(err, prefix, strlen(prefix)))
        return; /* the only message that has no line to name */
    /* Otherwise the message starts at a line of the input (line 0: no line number). */
    const param_kv *culprit = first_unknown;
    if (!culprit) {
        for (size_t i = n; i-- > 0 && !culprit;) {
            if (kvs[i].line)
                snprintf(prefix, sizeof prefix, "%s:%d: [%s] ", file, kvs[i].line, section);
            else
                snprintf(prefix, sizeof prefix, "%s: [%s] ", file, section);
            if (!strncmp(err, prefix, strlen(prefix)) &&
                has_folded_at(err, strlen(prefix), kvs[i].key) &&
                !strncmp(err + strlen(prefix) + strlen(kvs[i].key), " = ", 3))
                culprit = &kvs[i];
        }
        REQUIRE(culprit);
        /* The value named is the one that counts: the last given for that key. */
        for (size_t i = (size_t)(culprit - kvs) + 1; i < n; i++)
            REQUIRE(strcmp(kvs[i].key, culprit->key) != 0);
        return;
    }
    if (culprit->line)
        snprintf(prefix, sizeof prefix, "%s:%d: [%s] unknown key '", file, culprit->line,
                 section);
    else
        snprintf(prefix, sizeof prefix, "%s: [%s] unknown key '", file, section);
    REQUIRE(!strncmp(err, prefix, strlen(prefix)));
    REQUIRE(has_folded_at(err, strlen(prefix), culprit->key));
}

/* Is the integer n within [min, max] exactly (the bounds are doubles)? */
static int int_in_range(const tp_param_def *def, int64_t n)
{
    if (def->flags & TP_PARAM_FLAG_HAS_MIN) {
        /* n >= min  <=>  n >= ceil(min); a ceil beyond int64's range is beyond n too. */
        double lo = ceil(def->min);
        if (lo > 9223372036854775807.0 || (lo > -9223372036854775808.0 && n < (int64_t)lo))
            return 0;
    }
    if (def->flags & TP_PARAM_FLAG_HAS_MAX) {
        double hi = floor(def->max);
        if (hi < -9223372036854775808.0 || (hi < 9223372036854775807.0 && n > (int64_t)hi))
            return 0;
    }
    return 1;
}

static int float_in_range(const tp_param_def *def, double v)
{
    return isfinite(v) && (!(def->flags & TP_PARAM_FLAG_HAS_MIN) || v >= def->min) &&
           (!(def->flags & TP_PARAM_FLAG_HAS_MAX) || v <= def->max);
}

static int is_blank(const char *s)
{
    while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
        s++;
    return !*s;
}

/* The list element after the one at p (or the end of the text). */
static const char *next_element(const char *p)
{
    const char *comma = strchr(p, ',');
    return comma ? comma + 1 : p + strlen(p);
}

/* The value in the config is in range and agrees with the text that set it: its slot is
 * what params_set() makes of that text. */
static void check_value(const tp_param_def *def, const fuzz_config *c, const char *text,
                        int from_file)
{
    const char *slot = (const char *)c + def->offset;
    switch (def->type) {
    case TP_PARAM_BOOL: {
        int b = *(const int *)slot;
        REQUIRE(b == 0 || b == 1);
        int yes = !strcasecmp(text, "true") || !strcasecmp(text, "yes") ||
                  !strcasecmp(text, "on") || !strcmp(text, "1");
        REQUIRE(b == yes);
        return;
    }
    case TP_PARAM_INT: {
        int64_t n = *(const int64_t *)slot;
        REQUIRE(int_in_range(def, n));
        REQUIRE(n == strtoll(text, NULL, 10));
        return;
    }
    case TP_PARAM_FLOAT: {
        double v = *(const double *)slot;
        REQUIRE(float_in_range(def, v));
        REQUIRE(v == strtod(text, NULL));
        return;
    }
    case TP_PARAM_STRING:
        REQUIRE(!strcmp(*(const char *const *)slot, text));
        return;
    case TP_PARAM_PATH: {
        const char *path = *(const char *const *)slot;
        if (from_file && text[0] && text[0] != '/' && text[0] != '~')
            REQUIRE(!strncmp(path, "conf/", 5) && !strcmp(path + 5, text));
        else
            REQUIRE(!strcmp(path, text));
        return;
    }
    case TP_PARAM_ENUM: {
        int i = *(const int *)slot;
        REQUIRE(i >= 0 && i < 3 && !strcmp(def->choices[i], text));
        return;
    }
    case TP_PARAM_INT_LIST:
    case TP_PARAM_FLOAT_LIST: {
        size_t commas = 0;
        for (const char *p = text; *p; p++)
            commas += *p == ',';
        size_t expected = is_blank(text) ? 0 : commas + 1;
        const char *p = text;
        if (def->type == TP_PARAM_INT_LIST) {
            const tp_int_list *l = (const tp_int_list *)slot;
            REQUIRE(l->count == expected);
            for (size_t i = 0; i < l->count; i++, p = next_element(p))
                REQUIRE(int_in_range(def, l->values[i]) && l->values[i] == strtoll(p, NULL, 10));
        } else {
            const tp_float_list *l = (const tp_float_list *)slot;
            REQUIRE(l->count == expected);
            for (size_t i = 0; i < l->count; i++, p = next_element(p))
                REQUIRE(float_in_range(def, l->values[i]) && l->values[i] == strtod(p, NULL));
        }
        return;
    }
    }
    REQUIRE(0);
}

/* What `trainpipe check` prints must read back (as a --set) to the same value, or for
 * floats, printed to 10 digits, to the nearest such. */
static void check_format_reads_back(const tp_param_def *def, const void *config)
{
    static char printed[1 << 16];
    params_format(def, config, printed, sizeof printed);
    if (strlen(printed) >= sizeof printed - 1)
        return; /* cut: nothing to read back */
    param_config back = { .component = &component };
    fuzz_config again;
    memset(&again, 0, sizeof again);
    param_kv kv = { def->name, printed, "--set", 0 };
    void *slot = (char *)&again + def->offset;
    REQUIRE(params_set(&back, SECTION, def, &kv, slot) == TP_OK);
    const char *orig = (const char *)config + def->offset;
    switch (def->type) {
    case TP_PARAM_FLOAT: {
        double a = *(const double *)orig, b = *(const double *)slot;
        REQUIRE(fabs(a - b) <= 1e-9 * fabs(a) + 1e-300);
        break;
    }
    case TP_PARAM_FLOAT_LIST: {
        const tp_float_list *a = (const tp_float_list *)orig, *b = (const tp_float_list *)slot;
        REQUIRE(a->count == b->count);
        for (size_t i = 0; i < a->count; i++)
            REQUIRE(fabs(a->values[i] - b->values[i]) <= 1e-9 * fabs(a->values[i]) + 1e-300);
        break;
    }
    default: {
        static char reprinted[sizeof printed];
        params_format(def, &again, reprinted, sizeof reprinted);
        REQUIRE(!strcmp(printed, reprinted));
    }
    }
    params_release(&back);
}

static void check_accepted(const param_kv *kvs, size_t n, const fuzz_config *c, int from_file)
{
    for (size_t d = 0; d < N_DEFS; d++) {
        const param_kv *given = NULL;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(kvs[i].key, defs[d].name))
                given = &kvs[i];
        if (given)
            check_value(&defs[d], c, given->value, from_file);
        else if (defs[d].default_value)
            check_value(&defs[d], c, defs[d].default_value, 0);
        check_format_reads_back(&defs[d], c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0; /* long inputs add nothing but time */
    char *text = malloc(size + 1);
    REQUIRE(text);
    memcpy(text, data, size);
    text[size] = '\0';

    /* Lines become pairs: key up to the first '=', value after it (none: an empty value;
     * instance_create() then sees a pair without '='). A NUL byte ends the text early, as
     * it would a C string from inih or argv. */
    param_kv kvs[MAX_PAIRS];
    char *assignments[MAX_PAIRS + 1];
    size_t n = 0;
    for (char *line = text; line && n < MAX_PAIRS;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        assignments[n] = strdup(line);
        REQUIRE(assignments[n]);
        char *eq = strchr(line, '=');
        if (eq)
            *eq = '\0';
        kvs[n] = (param_kv){ line, eq ? eq + 1 : "", FILE_LABEL, (int)n + 1 };
        n++;
        line = next;
    }
    assignments[n] = NULL;

    param_config cfg;
    if (params_build(&component, SECTION, kvs, n, &cfg) == TP_OK) {
        REQUIRE(cfg.data && cfg.component == &component);
        check_accepted(kvs, n, cfg.data, 1);
        params_release(&cfg);
    } else {
        REQUIRE(!cfg.data && !cfg.arena);
        check_refusal(kvs, n, FILE_LABEL, SECTION);
    }
    REQUIRE(!cfg.data && !cfg.arena);

    /* The same pairs as the "key=value" arguments of tests and tools. */
    instance inst;
    if (instance_create(&component, (const char *const *)assignments, &inst) == TP_OK) {
        REQUIRE(inst.self);
        for (size_t i = 0; i < n; i++)
            kvs[i].line = 0; /* arguments have no line */
        check_accepted(kvs, n, inst.self, 0);
        instance_destroy(&inst);
    } else {
        REQUIRE(!inst.self && !inst.config.data);
        REQUIRE(!strchr(services_last_error(), '\n'));
        int all_pairs = 1;
        for (size_t i = 0; i < n; i++)
            all_pairs &= strchr(assignments[i], '=') != NULL;
        if (all_pairs) {
            for (size_t i = 0; i < n; i++)
                kvs[i].line = 0;
            check_refusal(kvs, n, "<arguments>", "fuzz");
        } else { /* the first argument without '=' is named whole */
            size_t i = 0;
            while (strchr(assignments[i], '='))
                i++;
            const char *prefix = "<arguments>: [fuzz] '";
            const char *err = services_last_error();
            REQUIRE(!strncmp(err, prefix, strlen(prefix)));
            REQUIRE(has_folded_at(err, strlen(prefix), assignments[i]));
        }
    }

    /* Descriptions stay one line, and "did you mean" only ever offers a real name. */
    const char *names[N_DEFS + 1];
    for (size_t d = 0; d < N_DEFS; d++) {
        char described[512];
        params_describe(&defs[d], described, sizeof described);
        REQUIRE(!strchr(described, '\n'));
        names[d] = defs[d].name;
    }
    names[N_DEFS] = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *near = params_closest(kvs[i].key, names);
        REQUIRE(!near || find_def(near) != NULL);
    }

    for (size_t i = 0; i < n; i++)
        free(assignments[i]);
    free(text);
    return 0;
}
