/* trainpipe SDK: typed parameter tables.
 *
 * Every component declares its parameters as a table of tp_param_def. The host reads the
 * component's INI section, converts each value to the declared type, checks it against the
 * declared range or choices, fills in defaults, and writes the result into a configuration
 * struct of the component's own type at the declared offset (nginx-style directive tables).
 * The component's create() then receives that struct already validated: plugins never parse
 * strings or range-check values themselves.
 *
 * The same table drives `trainpipe plugins NAME` (help) and `trainpipe check` (resolved
 * configuration), so documentation and validation cannot drift apart.
 *
 * C types written into the configuration struct, by parameter type:
 *   TP_PARAM_BOOL        int         (0 or 1; accepts true/false/yes/no/on/off/1/0)
 *   TP_PARAM_INT         int64_t
 *   TP_PARAM_FLOAT       double
 *   TP_PARAM_STRING      const char* (owned by the host, valid for the component's life)
 *   TP_PARAM_PATH        const char* (as STRING; relative paths resolve against the INI's folder)
 *   TP_PARAM_ENUM        int         (index into `choices`)
 *   TP_PARAM_INT_LIST    tp_int_list   (comma-separated)
 *   TP_PARAM_FLOAT_LIST  tp_float_list (comma-separated)
 * An optional parameter with no default (default_value == NULL) is written as 0, NULL or an
 * empty list; TP_PARAM_FLAG_REQUIRED makes its absence an error instead. */
#ifndef TRAINPIPE_PARAMS_H
#define TRAINPIPE_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_param_type {
    TP_PARAM_BOOL = 1,
    TP_PARAM_INT = 2,
    TP_PARAM_FLOAT = 3,
    TP_PARAM_STRING = 4,
    TP_PARAM_PATH = 5,
    TP_PARAM_ENUM = 6,
    TP_PARAM_INT_LIST = 7,
    TP_PARAM_FLOAT_LIST = 8
} tp_param_type;

enum {
    TP_PARAM_FLAG_REQUIRED = 1u << 0, /* the key must be present (no default) */
    TP_PARAM_FLAG_HAS_MIN = 1u << 1,  /* `min` is checked (ints, floats and list elements) */
    TP_PARAM_FLAG_HAS_MAX = 1u << 2   /* `max` is checked */
};

typedef struct tp_int_list {
    size_t count;
    const int64_t *values; /* owned by the host */
} tp_int_list;

typedef struct tp_float_list {
    size_t count;
    const double *values; /* owned by the host */
} tp_float_list;

typedef struct tp_param_def {
    const char *name;                 /* INI key: lower case, digits and '_' */
    tp_param_type type;
    const char *default_value;        /* as it would be written in the INI; NULL: none */
    unsigned flags;                   /* TP_PARAM_FLAG_* */
    double min, max;                  /* inclusive bounds, checked per the flags */
    const char *const *choices;       /* TP_PARAM_ENUM: NULL-terminated list of names */
    size_t offset;                    /* offsetof(config struct, field) */
    const char *help;                 /* one sentence, shown by `trainpipe plugins NAME` */
} tp_param_def;

/* Convenience initialisers for the common cases. STRUCT is the component's config type. */
#define TP_PARAM_DEF_BOOL(STRUCT, FIELD, NAME, DEF, HELP) \
    { NAME, TP_PARAM_BOOL, DEF, 0, 0, 0, NULL, offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_INT(STRUCT, FIELD, NAME, DEF, LO, HI, HELP)                                \
    { NAME, TP_PARAM_INT, DEF, TP_PARAM_FLAG_HAS_MIN | TP_PARAM_FLAG_HAS_MAX, LO, HI, NULL,     \
      offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_FLOAT(STRUCT, FIELD, NAME, DEF, LO, HI, HELP)                              \
    { NAME, TP_PARAM_FLOAT, DEF, TP_PARAM_FLAG_HAS_MIN | TP_PARAM_FLAG_HAS_MAX, LO, HI, NULL,   \
      offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_STRING(STRUCT, FIELD, NAME, DEF, HELP) \
    { NAME, TP_PARAM_STRING, DEF, 0, 0, 0, NULL, offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_PATH(STRUCT, FIELD, NAME, DEF, HELP) \
    { NAME, TP_PARAM_PATH, DEF, 0, 0, 0, NULL, offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_REQUIRED_PATH(STRUCT, FIELD, NAME, HELP) \
    { NAME, TP_PARAM_PATH, NULL, TP_PARAM_FLAG_REQUIRED, 0, 0, NULL, offsetof(STRUCT, FIELD), HELP }
#define TP_PARAM_DEF_ENUM(STRUCT, FIELD, NAME, DEF, CHOICES, HELP) \
    { NAME, TP_PARAM_ENUM, DEF, 0, 0, 0, CHOICES, offsetof(STRUCT, FIELD), HELP }

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_PARAMS_H */
