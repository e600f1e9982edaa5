/* Plugin discovery and loading. */
#include "config.h"

#include "registry.h"
#include "services.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct registry {
    void **handles;
    char **paths;
    size_t n_handles;
    registry_entry *entries;
    size_t n_entries;
    char **seen_names; /* basenames already loaded, for PATH-like shadowing */
    size_t n_seen;
};

static const char *const kind_names[] = {
    [TP_KIND_BACKEND] = "backend",   [TP_KIND_SOURCE] = "source",
    [TP_KIND_AUGMENT] = "augment",   [TP_KIND_MODEL] = "model",
    [TP_KIND_OPTIMIZER] = "optimizer", [TP_KIND_SCHEDULE] = "schedule",
    [TP_KIND_LOGGER] = "logger",
};

const char *registry_kind_name(tp_kind kind)
{
    if ((int)kind >= TP_KIND_BACKEND && (int)kind <= TP_KIND_LOGGER)
        return kind_names[kind];
    return "unknown";
}

tp_kind registry_kind_from_name(const char *name)
{
    for (int k = TP_KIND_BACKEND; k <= TP_KIND_LOGGER; k++)
        if (strcmp(kind_names[k], name) == 0)
            return (tp_kind)k;
    return (tp_kind)0;
}

registry *registry_new(void) { return calloc(1, sizeof(registry)); }

void registry_free(registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_handles; i++) {
        dlclose(r->handles[i]);
        free(r->paths[i]);
    }
    for (size_t i = 0; i < r->n_seen; i++)
        free(r->seen_names[i]);
    free(r->handles);
    free(r->paths);
    free(r->entries);
    free(r->seen_names);
    free(r);
}

size_t registry_count(const registry *r) { return r->n_entries; }
const registry_entry *registry_at(const registry *r, size_t i) { return &r->entries[i]; }

const registry_entry *registry_find(const registry *r, tp_kind kind, const char *name)
{
    for (size_t i = 0; i < r->n_entries; i++)
        if (r->entries[i].component->kind == kind &&
            strcmp(r->entries[i].component->name, name) == 0)
            return &r->entries[i];
    return NULL;
}

const registry_entry *registry_find_any(const registry *r, const char *name)
{
    for (int k = TP_KIND_BACKEND; k <= TP_KIND_LOGGER; k++) {
        const registry_entry *e = registry_find(r, (tp_kind)k, name);
        if (e)
            return e;
    }
    return NULL;
}

/* Checks the parts of a descriptor the host relies on, so a broken plugin is reported
 * rather than dereferenced. */
static tp_status check_info(const char *path, const tp_plugin_info *info)
{
    if (info->size < offsetof(tp_plugin_info, reserved))
        return services_fail(TP_ERR_INVALID, "%s: plugin descriptor is truncated (size %zu)",
                             path, info->size);
    if (!info->name || !*info->name || !info->version)
        return services_fail(TP_ERR_INVALID, "%s: plugin descriptor has no name or version",
                             path);
    if (info->n_components && !info->components)
        return services_fail(TP_ERR_INVALID, "%s: plugin declares %zu components but lists none",
                             path, info->n_components);
    for (size_t i = 0; i < info->n_components; i++) {
        const tp_component *c = info->components[i];
        if (!c || c->size < offsetof(tp_component, ops) + sizeof(void *) || !c->name ||
            !*c->name)
            return services_fail(TP_ERR_INVALID, "%s: component %zu is malformed", path, i);
        if ((int)c->kind < TP_KIND_BACKEND || (int)c->kind > TP_KIND_LOGGER)
            return services_fail(TP_ERR_INVALID, "%s: component '%s' has unknown kind %d",
                                 path, c->name, (int)c->kind);
        if (!c->create || !c->destroy || !c->ops)
            return services_fail(TP_ERR_INVALID,
                                 "%s: component '%s' lacks create, destroy or its operations",
                                 path, c->name);
        if (c->n_params && !c->params)
            return services_fail(TP_ERR_INVALID, "%s: component '%s' declares %zu parameters but lists none",
                                 path, c->name, c->n_params);
        for (size_t p = 0; p < c->n_params; p++) {
            const tp_param_def *d = &c->params[p];
            if (!d->name || !*d->name)
                return services_fail(TP_ERR_INVALID, "%s: component '%s' parameter %zu has no name",
                                     path, c->name, p);
            if (d->type == TP_PARAM_ENUM && !d->choices)
                return services_fail(TP_ERR_INVALID, "%s: parameter %s.%s is an enum without choices",
                                     path, c->name, d->name);
        }
    }
    return TP_OK;
}

static int push(void *arrayp, size_t *count, size_t elem)
{
    void **array = arrayp;
    void *grown = realloc(*array, (*count + 1) * elem);
    if (!grown)
        return -1;
    *array = grown;
    return 0;
}

tp_status registry_load_file(registry *r, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return services_fail(TP_ERR_NOT_FOUND, "%s: plugin not found: %s", path, strerror(errno));
    dlerror();
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        return services_fail(TP_ERR_INVALID, "%s: cannot load plugin: %s", path,
                             why ? why : "unknown dlopen failure");
    }
    typedef const tp_plugin_info *(*entry_fn)(void);
    entry_fn entry;
    *(void **)(&entry) = dlsym(handle, TP_PLUGIN_ENTRY_SYMBOL);
    tp_status st_code = TP_OK;
    if (!entry) {
        st_code = services_fail(TP_ERR_INVALID,
                                "%s: not a trainpipe plugin (no symbol %s)", path,
                                TP_PLUGIN_ENTRY_SYMBOL);
        goto fail;
    }
    const tp_plugin_info *info = entry();
    if (!info) {
        st_code = services_fail(TP_ERR_INVALID, "%s: plugin entry returned no descriptor", path);
        goto fail;
    }
    if (info->abi_major != TP_ABI_MAJOR) {
        st_code = services_fail(TP_ERR_INVALID,
                                "%s: plugin built for trainpipe ABI %u, this trainpipe has ABI %d:"
                                " rebuild it against this trainpipe",
                                path, info->abi_major, TP_ABI_MAJOR);
        goto fail;
    }
    if (info->api_minor > TP_API_MINOR) {
        st_code = services_fail(TP_ERR_INVALID,
                                "%s: plugin needs trainpipe >= API %d.%u, this trainpipe provides "
                                "API %d.%d: upgrade trainpipe",
                                path, TP_ABI_MAJOR, info->api_minor, TP_ABI_MAJOR, TP_API_MINOR);
        goto fail;
    }
    st_code = check_info(path, info);
    if (st_code)
        goto fail;
    for (size_t i = 0; i < info->n_components; i++) {
        const tp_component *c = info->components[i];
        const registry_entry *dup = registry_find(r, c->kind, c->name);
        if (dup) {
            st_code = services_fail(TP_ERR_INVALID,
                                    "%s: %s component '%s' is already provided by %s",
                                    path, registry_kind_name(c->kind), c->name, dup->path);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (info->components[j]->kind == c->kind && strcmp(info->components[j]->name, c->name) == 0) {
                st_code = services_fail(TP_ERR_INVALID,
                                        "%s: plugin provides %s component '%s' twice", path,
                                        registry_kind_name(c->kind), c->name);
                goto fail;
            }
    }
    char *owned_path = strdup(path);
    if (!owned_path || push(&r->handles, &r->n_handles, sizeof(void *)) ||
        push(&r->paths, &r->n_handles, sizeof(char *))) {
        free(owned_path);
        st_code = services_fail(TP_ERR_NOMEM, "%s: out of memory while loading", path);
        goto fail;
    }
    r->handles[r->n_handles] = handle;
    r->paths[r->n_handles] = owned_path;
    r->n_handles++;
    for (size_t i = 0; i < info->n_components; i++) {
        if (push(&r->entries, &r->n_entries, sizeof(registry_entry)))
            return services_fail(TP_ERR_NOMEM, "%s: out of memory while loading", path);
        r->entries[r->n_entries++] =
            (registry_entry){ .component = info->components[i], .plugin = info, .path = owned_path };
    }
    return TP_OK;
fail:
    dlclose(handle);
    return st_code;
}

static int is_plugin_file(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0 && name[0] != '.';
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static tp_status load_dir(registry *r, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return TP_OK; /* a missing directory on the search path is not an error */
    char **names = NULL;
    size_t n = 0;
    tp_status st = TP_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_plugin_file(de->d_name))
            continue;
        if (push(&names, &n, sizeof(char *)) || !(names[n] = strdup(de->d_name))) {
            st = services_fail(TP_ERR_NOMEM, "%s: out of memory listing plugins", dir);
            break;
        }
        n++;
    }
    closedir(d);
    /* Sorted so that load order, and so error messages, do not depend on the filesystem. */
    if (n)
        qsort(names, n, sizeof(char *), compare_names);
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        int shadowed = 0;
        for (size_t j = 0; j < r->n_seen; j++)
            if (strcmp(r->seen_names[j], names[i]) == 0)
                shadowed = 1;
        if (shadowed)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) {
            st = services_fail(TP_ERR_INVALID, "%s/%s: path too long", dir, names[i]);
            break;
        }
        st = registry_load_file(r, path);
        if (st == TP_OK) {
            if (push(&r->seen_names, &r->n_seen, sizeof(char *)) ||
                !(r->seen_names[r->n_seen] = strdup(names[i])))
                st = services_fail(TP_ERR_NOMEM, "out of memory");
            else
                r->n_seen++;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return st;
}

tp_status registry_load_path(registry *r, const char *search_path)
{
    char *copy = strdup(search_path ? search_path : "");
    if (!copy)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    tp_status st = TP_OK;
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir && st == TP_OK;
         dir = strtok_r(NULL, ":", &save))
        if (*dir)
            st = load_dir(r, dir);
    free(copy);
    return st;
}

/* Whether this executable lives in the build tree (so it should find the build tree's
 * plugins without being installed). */
static int running_from_build_tree(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    char build[PATH_MAX];
    if (!realpath(TP_ABS_BUILDDIR, build))
        return 0;
    size_t len = strlen(build);
    return strncmp(exe, build, len) == 0 && exe[len] == '/';
}

static int append(char **acc, const char *dir)
{
    if (!dir || !*dir)
        return 0;
    size_t old = *acc ? strlen(*acc) : 0;
    char *grown = realloc(*acc, old + strlen(dir) + 2);
    if (!grown)
        return -1;
    if (old)
        grown[old++] = ':';
    strcpy(grown + old, dir);
    *acc = grown;
    return 0;
}

char *registry_default_search_path(const char *ini_path)
{
    char *acc = NULL;
    int bad = append(&acc, ini_path);
    bad |= append(&acc, getenv("TRAINPIPE_PLUGIN_PATH"));
    if (running_from_build_tree()) /* every in-tree module lands in plugins/.libs */
        bad |= append(&acc, TP_ABS_BUILDDIR "/plugins/.libs");
    else
        bad |= append(&acc, TP_PLUGINDIR);
    if (bad || !acc) {
        free(acc);
        return strdup("");
    }
    return acc;
}
