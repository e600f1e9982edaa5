/* Component "cifar": CIFAR-10 / CIFAR-100 python versions (pickled batches), read with the
 * safe pickle machine of pickle.c, so loading a dataset never runs code.
 *
 * Folders: cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta) or
 * cifar-100-python (train, test, meta), told apart by which files exist. A single batch file
 * may be given instead; its folder's meta file then supplies the class names if present. */
#include <stdio.h>
#include <string.h>

#include "cifar_data.h"
#include "pickle.h"

/* Which dataset a file or folder holds. */
typedef enum cifar_kind { CIFAR_UNKNOWN, CIFAR_10, CIFAR_100 } cifar_kind;

static tp_status cifar_py_create(const tp_host *host, const void *config, void **self)
{
    return cifar_data_create(host, config, "cifar", self);
}

/* The label list of a batch for this configuration. */
static const char *cifar_py_label_key(const cifar_data *d, cifar_kind kind)
{
    if (kind == CIFAR_10)
        return "labels";
    return d->cfg.labels == CIFAR_LABELS_COARSE ? "coarse_labels" : "fine_labels";
}

/* Loads one pickled batch and appends its images and labels. *kind is the dataset the
 * folder promised, or CIFAR_UNKNOWN for a single file (the keys decide and set it). */
static tp_status cifar_py_load_batch(cifar_data *d, const char *path, cifar_kind *kind)
{
    const tp_host *h = d->host;
    uint8_t *buf = NULL;
    size_t len = 0;
    pk_doc *doc = NULL;
    char err[512];
    tp_status st = cifar_read_file(h, path, &buf, &len);
    if (st)
        return st;
    if (pickle_load(buf, len, path, NULL, &doc, err, sizeof(err))) {
        st = h->fail(h, TP_ERR_FORMAT, "%s", err);
        goto done;
    }
    const pk_value *root = pickle_root(doc);
    if (root->kind != PK_DICT) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: the pickle holds a %s, not a CIFAR batch dict",
                     path, pickle_kind_name(root->kind));
        goto done;
    }
    cifar_kind file_kind = pickle_dict_get(root, "fine_labels") ? CIFAR_100 : CIFAR_10;
    if (*kind != CIFAR_UNKNOWN && *kind != file_kind) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: a CIFAR-%d batch in a CIFAR-%d folder", path,
                     file_kind == CIFAR_100 ? 100 : 10, *kind == CIFAR_100 ? 100 : 10);
        goto done;
    }
    *kind = file_kind;
    if (file_kind == CIFAR_10 && d->cfg.labels == CIFAR_LABELS_COARSE) {
        st = h->fail(h, TP_ERR_INVALID, "%s: labels=coarse needs CIFAR-100", path);
        goto done;
    }
    d->num_classes = file_kind == CIFAR_10 ? 10
                     : d->cfg.labels == CIFAR_LABELS_COARSE ? 20 : 100;

    const pk_value *data = pickle_dict_get(root, "data");
    if (!data || data->kind != PK_ARRAY || !data->u.array.built) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: no 'data' array in the batch", path);
        goto done;
    }
    const pk_value *dt = data->u.array.dtype;
    const int64_t *shape = data->u.array.shape;
    int nd = data->u.array.ndim;
    if (dt->u.dtype.type != 'u' || dt->u.dtype.itemsize != 1) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: 'data' is not uint8 ('%c%d')", path,
                     dt->u.dtype.type, dt->u.dtype.itemsize);
        goto done;
    }
    /* (N, 3072) in either order, or (N, 3, 32, 32) in C order: the same bytes. */
    int flat = nd == 2 && shape[1] == CIFAR_PIXELS;
    int cube = nd == 4 && shape[1] == 3 && shape[2] == CIFAR_SIDE && shape[3] == CIFAR_SIDE &&
               !data->u.array.fortran;
    if (!flat && !cube) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: 'data' has shape (%lld%s...) and %d dimensions, "
                     "not (N, 3072)", path, nd > 0 ? (long long)shape[0] : 0LL,
                     nd > 1 ? ", " : "", nd);
        goto done;
    }
    int64_t n = shape[0];
    const char *key = cifar_py_label_key(d, file_kind);
    const pk_value *labels = pickle_dict_get(root, key);
    if (!labels) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: no '%s' in the batch", path, key);
        goto done;
    }
    if ((int64_t)pickle_length(labels) != n) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: %zu '%s' for %lld images", path,
                     pickle_length(labels), key, (long long)n);
        goto done;
    }
    uint8_t *px;
    int32_t *lab;
    if ((st = cifar_data_grow(d, n, &px, &lab)))
        goto done;
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        if (pickle_int_at(labels, (size_t)i, &v) || v < 0 || v >= d->num_classes) {
            st = h->fail(h, TP_ERR_FORMAT, "%s: '%s'[%lld] is not a label in 0..%d", path, key,
                         (long long)i, d->num_classes - 1);
            goto done;
        }
        lab[i] = (int32_t)v;
    }
    const uint8_t *src = data->u.array.data;
    if (flat && data->u.array.fortran) {
        /* Column-major: element (i, j) is at j * n + i. */
        for (int64_t i = 0; i < n; i++)
            for (size_t j = 0; j < CIFAR_PIXELS; j++)
                px[(size_t)i * CIFAR_PIXELS + j] = src[j * (size_t)n + (size_t)i];
    } else {
        memcpy(px, src, (size_t)n * CIFAR_PIXELS);
    }
    d->count += n;
done:
    pickle_free(doc);
    h->free(buf);
    return st;
}

/* Class names from batches.meta (CIFAR-10: label_names) or meta (CIFAR-100:
 * fine_label_names / coarse_label_names). */
static tp_status cifar_py_load_meta(cifar_data *d, const char *path, cifar_kind kind)
{
    const tp_host *h = d->host;
    uint8_t *buf = NULL;
    size_t len = 0;
    pk_doc *doc = NULL;
    const char **names = NULL;
    size_t *lengths = NULL;
    char err[512];
    tp_status st = cifar_read_file(h, path, &buf, &len);
    if (st)
        return st;
    if (pickle_load(buf, len, path, NULL, &doc, err, sizeof(err))) {
        st = h->fail(h, TP_ERR_FORMAT, "%s", err);
        goto done;
    }
    const char *key = kind == CIFAR_10 ? "label_names"
                      : d->cfg.labels == CIFAR_LABELS_COARSE ? "coarse_label_names"
                                                             : "fine_label_names";
    const pk_value *list = pickle_dict_get(pickle_root(doc), key);
    if (!list || list->kind != PK_LIST) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: no '%s' list", path, key);
        goto done;
    }
    size_t n = list->u.seq.count;
    names = h->calloc(n ? n : 1, sizeof(*names));
    lengths = h->calloc(n ? n : 1, sizeof(*lengths));
    if (!names || !lengths) {
        st = h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate class names", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const pk_value *s = list->u.seq.items[i];
        if (!pickle_is_text(s) || memchr(s->u.bytes.data, 0, s->u.bytes.len)) {
            st = h->fail(h, TP_ERR_FORMAT, "%s: '%s'[%zu] is not a name", path, key, i);
            goto done;
        }
        names[i] = (const char *)s->u.bytes.data;
        lengths[i] = s->u.bytes.len;
    }
    st = cifar_data_set_names(d, path, n, names, lengths);
done:
    h->free(names);
    h->free(lengths);
    pickle_free(doc);
    h->free(buf);
    return st;
}

static tp_status cifar_py_open(void *self, const tp_source_open_args *args,
                               tp_source_info *info)
{
    cifar_data *d = self;
    const tp_host *h = d->host;
    const char *root = d->cfg.path;
    char file[4200], folder[4096];
    cifar_kind kind = CIFAR_UNKNOWN;
    int is_dir;
    size_t size;
    tp_status st;
    (void)args;
    if (d->count)
        return h->fail(h, TP_ERR_INVALID, "cifar: %s is already open", root);
    if ((st = cifar_stat(h, root, &is_dir, &size)))
        return st;
    if (is_dir) {
        snprintf(folder, sizeof(folder), "%s", root);
        char probe[4200];
        if ((st = cifar_join(h, root, "data_batch_1", probe, sizeof(probe))))
            return st;
        if (cifar_exists(probe)) {
            kind = CIFAR_10;
        } else {
            if ((st = cifar_join(h, root, "train", probe, sizeof(probe))))
                return st;
            if (!cifar_exists(probe))
                return h->fail(h, TP_ERR_NOT_FOUND, "%s: neither data_batch_1 (CIFAR-10) nor "
                               "train (CIFAR-100) is there", root);
            kind = CIFAR_100;
        }
        if (kind == CIFAR_10 && d->cfg.split == CIFAR_SPLIT_TRAIN) {
            for (int b = 1; b <= 5; b++) {
                char name[32];
                snprintf(name, sizeof(name), "data_batch_%d", b);
                if ((st = cifar_join(h, root, name, file, sizeof(file))) ||
                    (st = cifar_py_load_batch(d, file, &kind)))
                    return st;
            }
        } else {
            const char *name = kind == CIFAR_10 ? "test_batch"
                               : d->cfg.split == CIFAR_SPLIT_TRAIN ? "train" : "test";
            if ((st = cifar_join(h, root, name, file, sizeof(file))) ||
                (st = cifar_py_load_batch(d, file, &kind)))
                return st;
        }
    } else {
        /* One batch file: its folder may hold the meta file. */
        if ((st = cifar_py_load_batch(d, root, &kind)))
            return st;
        const char *slash = strrchr(root, '/');
        if (slash)
            snprintf(folder, sizeof(folder), "%.*s", (int)(slash - root), root);
        else
            snprintf(folder, sizeof(folder), ".");
    }

    const char *meta_name = kind == CIFAR_10 ? "batches.meta" : "meta";
    if ((st = cifar_join(h, folder, meta_name, file, sizeof(file))))
        return st;
    if (cifar_exists(file)) {
        if ((st = cifar_py_load_meta(d, file, kind)))
            return st;
    } else if (is_dir) {
        h->log(h, TP_LOG_WARN, "cifar", "%s: missing; classes have no names", file);
    }
    return cifar_data_finish(d, info);
}

static const tp_source_ops cifar_py_ops = {
    .size = sizeof(tp_source_ops),
    .open = cifar_py_open,
    .read = cifar_data_read,
};

const tp_component cifar_py_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SOURCE,
    .name = "cifar",
    .summary = "CIFAR-10 / CIFAR-100 python pickles (read safely, nothing executed)",
    .params = cifar_params,
    .n_params = CIFAR_N_PARAMS,
    .config_size = sizeof(cifar_config),
    .create = cifar_py_create,
    .destroy = cifar_data_destroy,
    .ops = &cifar_py_ops,
};
