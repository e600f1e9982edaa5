/* Converting INI values into a component's typed configuration struct.
 *
 * The component's tp_param_def table drives everything: each key is looked up, converted
 * to the declared type, range- or choice-checked, and written at the declared offset of a
 * freshly allocated config struct; keys not given take their defaults. Every error is one
 * line "FILE:LINE: [SECTION] KEY = VALUE: what is wrong (what is allowed)". */
#ifndef TRAINPIPE_HOST_PARAMS_H
#define TRAINPIPE_HOST_PARAMS_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

/* One key = value as written in a file (or on the command line: file "--set", line 0). */
typedef struct param_kv {
    const char *key;
    const char *value;
    const char *file;
    int line;
} param_kv;

/* A built configuration: the struct the component receives plus the storage its strings
 * and lists point into. */
typedef struct param_config {
    const tp_component *component;
    void *data;      /* component->config_size bytes */
    void *arena;     /* owned strings and list arrays (internal) */
} param_config;

/* Builds cfg for component c from kvs. `section` names the INI section in messages.
 * Keys the table does not know are errors (with a "did you mean" when one is close).
 * On failure returns TP_ERR_INVALID and leaves cfg empty. */
tp_status params_build(const tp_component *c, const char *section, const param_kv *kvs,
                       size_t n_kvs, param_config *cfg);

/* As params_build, with the section's own location for messages about missing keys
 * (`where` may be NULL: then messages name the section only). */
tp_status params_build_at(const tp_component *c, const char *section, const param_kv *where,
                          const param_kv *kvs, size_t n_kvs, param_config *cfg);

/* Converts one value for `def` into `slot` (which points into a config struct), copying
 * strings and lists into cfg's storage. Used for the host's own settings tables too. */
tp_status params_set(param_config *cfg, const char *section, const tp_param_def *def,
                     const param_kv *kv, void *slot);

/* A human description of what `def` allows ("integer in [1, 1024]", "one of: a, b"). */
void params_describe(const tp_param_def *def, char *buf, size_t size);

/* The name of a parameter type ("int", "float", ...). */
const char *params_type_name(tp_param_type type);
void params_release(param_config *cfg);

/* The value of parameter `def` in cfg, formatted as it would be written in an INI file,
 * into buf (for `trainpipe check`). */
void params_format(const tp_param_def *def, const void *config_data, char *buf, size_t size);

/* The closest of `candidates` (NULL-terminated) to `word` within edit distance 2 (or a
 * third of its length), or NULL. For "did you mean" hints. */
const char *params_closest(const char *word, const char *const *candidates);

/* Convenience for tests and tools: builds the config from "key=value" strings
 * (NULL-terminated list; NULL for all defaults) and creates the component.
 * On success *self is the instance; destroy with instance_destroy(). */
typedef struct instance {
    const tp_component *component;
    param_config config;
    void *self;
} instance;

tp_status instance_create(const tp_component *c, const char *const *key_values,
                          instance *out);
void instance_destroy(instance *inst);

#endif
