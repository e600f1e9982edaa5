/* trainpipe SDK: the plugin ABI.
 *
 * A plugin is a shared object exporting exactly one symbol, trainpipe_plugin_entry(), that
 * returns a static tp_plugin_info. The info lists the components the plugin provides; each
 * component has a kind, a name, a parameter table, create/destroy, and a const table of
 * kind-specific operations (declared in backend.h, source.h, augment.h, model.h,
 * optimizer.h and logger.h).
 *
 * Versioning:
 *   - TP_ABI_MAJOR must match exactly. It changes only when an existing struct or function
 *     changes incompatibly; the host then refuses the plugin ("rebuild it").
 *   - TP_API_MINOR only grows. New operations and fields are appended at the end of structs;
 *     a plugin records the minor it was compiled against, and the host refuses a plugin that
 *     needs a newer minor than it implements ("needs trainpipe >= ...").
 *   - Every public struct that may grow starts with (or carries) a `size` field set by its
 *     creator, so the reader can tell which trailing fields exist.
 *
 * Plugins never link against the host: everything they need from it (logging, errors,
 * memory, the active backend) arrives through the tp_host services table passed to create(). */
#ifndef TRAINPIPE_PLUGIN_H
#define TRAINPIPE_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <trainpipe/params.h>
#include <trainpipe/status.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TP_ABI_MAJOR 1
#define TP_API_MINOR 8

/* The name of the one exported symbol, for dlsym(). */
#define TP_PLUGIN_ENTRY_SYMBOL "trainpipe_plugin_entry"

#if defined(__GNUC__) || defined(__clang__)
#define TP_EXPORT __attribute__((visibility("default")))
#define TP_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define TP_EXPORT
#define TP_PRINTF(fmt_index, first_arg)
#endif

typedef enum tp_kind {
    TP_KIND_BACKEND = 1,
    TP_KIND_SOURCE = 2,
    TP_KIND_AUGMENT = 3,
    TP_KIND_MODEL = 4,
    TP_KIND_OPTIMIZER = 5,
    TP_KIND_SCHEDULE = 6,
    TP_KIND_LOGGER = 7
} tp_kind;

typedef enum tp_log_level {
    TP_LOG_ERROR = 0,
    TP_LOG_WARN = 1,
    TP_LOG_INFO = 2,
    TP_LOG_DEBUG = 3
} tp_log_level;

struct tp_backend;

/* Services the host offers to plugins. Passed to every create(); valid until the host
 * unloads the plugin. All functions are thread-safe. */
typedef struct tp_host {
    size_t size;        /* sizeof(tp_host) as the host built it */
    uint32_t api_minor; /* TP_API_MINOR of the running host */

    /* A diagnostic line (no trailing newline) attributed to component `who`. */
    void (*log)(const struct tp_host *host, tp_log_level level, const char *who,
                const char *fmt, ...) TP_PRINTF(4, 5);

    /* Records the calling thread's error message (one line, no trailing newline, naming the
     * file, offset or call that failed) and returns `status`, so plugins write
     *     return host->fail(host, TP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
     * The host prints it when the status reaches the top. */
    tp_status (*fail)(const struct tp_host *host, tp_status status, const char *fmt, ...)
        TP_PRINTF(3, 4);

    /* Host memory. Never abort; NULL on failure. */
    void *(*alloc)(size_t bytes);
    void *(*calloc)(size_t count, size_t bytes);
    void *(*realloc)(void *ptr, size_t bytes);
    void (*free)(void *ptr);

    /* The active compute backend, or NULL before it exists. Augmenters, optimizers and
     * loggers use it to run operations and to copy tensors. */
    const struct tp_backend *(*backend)(const struct tp_host *host);

    /* Non-zero once SIGINT or SIGTERM has arrived: long loops should stop early. */
    int (*interrupted)(const struct tp_host *host);

    void *reserved[8];
} tp_host;

/* One component (a backend, a source, a logger, ...) provided by a plugin. */
typedef struct tp_component {
    size_t size;         /* sizeof(tp_component) */
    tp_kind kind;
    const char *name;    /* unique within its kind: what `plugin = NAME` selects */
    const char *summary; /* one line for `trainpipe plugins` */

    const tp_param_def *params; /* parameter table; may be NULL when n_params is 0 */
    size_t n_params;
    size_t config_size;         /* size of the config struct the table writes into */

    /* Creates an instance from a validated config (a struct of config_size bytes, owned by
     * the host and valid until destroy). On failure returns non-zero after host->fail(). */
    tp_status (*create)(const tp_host *host, const void *config, void **self);
    void (*destroy)(void *self);

    /* The kind's operation table: const tp_backend_ops*, const tp_source_ops*, ... */
    const void *ops;
} tp_component;

/* What trainpipe_plugin_entry() returns. The first two fields never move, so the host can
 * always read them to reject a plugin built for another ABI. */
typedef struct tp_plugin_info {
    uint32_t abi_major; /* TP_ABI_MAJOR when the plugin was compiled */
    uint32_t api_minor; /* the API minor the plugin needs (TP_API_MINOR when compiled) */
    size_t size;        /* sizeof(tp_plugin_info) */
    const char *name;    /* e.g. "log-csv" */
    const char *version; /* e.g. "1.0.0" */
    const char *license; /* SPDX identifier, e.g. "MIT" */
    const char *summary;
    const tp_component *const *components;
    size_t n_components;
    void *reserved[4];
} tp_plugin_info;

/* Fills the fixed header of a tp_plugin_info. */
#define TP_PLUGIN_INFO_HEADER TP_ABI_MAJOR, TP_API_MINOR, sizeof(tp_plugin_info)

/* Every plugin defines this function, and nothing else is exported from its .so. */
TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void);

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_PLUGIN_H */
