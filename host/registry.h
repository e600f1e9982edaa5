/* The plugin registry: finds plugin .so files on a search path, dlopens them, checks their
 * ABI, and indexes their components by (kind, name). */
#ifndef TRAINPIPE_HOST_REGISTRY_H
#define TRAINPIPE_HOST_REGISTRY_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

typedef struct registry_entry {
    const tp_component *component;
    const tp_plugin_info *plugin;
    const char *path; /* the .so it came from */
} registry_entry;

typedef struct registry registry;

registry *registry_new(void);
void registry_free(registry *r);

/* Loads one plugin file. Errors (through services_fail): not found, not loadable (with
 * dlerror's text), not a trainpipe plugin, another ABI, a newer API, a malformed
 * descriptor, a component name already taken. */
tp_status registry_load_file(registry *r, const char *path);

/* Loads every *.so in each directory of a ':'-separated list, in order. A file name seen in
 * an earlier directory shadows later ones (as PATH does). Missing directories are skipped. */
tp_status registry_load_path(registry *r, const char *search_path);

size_t registry_count(const registry *r);
const registry_entry *registry_at(const registry *r, size_t i);
const registry_entry *registry_find(const registry *r, tp_kind kind, const char *name);
/* The component named `name` of any kind, or NULL (first match in kind order). */
const registry_entry *registry_find_any(const registry *r, const char *name);

/* "backend", "source", ... and back; 0 for an unknown name. */
const char *registry_kind_name(tp_kind kind);
tp_kind registry_kind_from_name(const char *name);

/* The directories searched by default, in order: `ini_path` (may be NULL), then
 * $TRAINPIPE_PLUGIN_PATH, then the build tree's plugins/.libs (where every in-tree plugin
 * module lands) when this binary runs from the build tree, else the installed plugin
 * directory. Returns a malloc'ed ':'-joined string. */
char *registry_default_search_path(const char *ini_path);

#endif
