/* Shared state and helpers of the CIFAR components (see cifar_data.h). */
#include "cifar_data.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const cifar_split_names[] = {"train", "test", NULL};
static const char *const cifar_label_names[] = {"fine", "coarse", NULL};
static const char *const cifar_subset_names[] = {"train", "holdout", NULL};

const tp_param_def cifar_params[CIFAR_N_PARAMS] = {
    TP_PARAM_DEF_REQUIRED_PATH(cifar_config, path, "path",
                               "the dataset folder (CIFAR-10 or CIFAR-100, detected), or one "
                               "batch file"),
    TP_PARAM_DEF_ENUM(cifar_config, split, "split", "train", cifar_split_names,
                      "train (the training batches) or test (the test batch)"),
    TP_PARAM_DEF_ENUM(cifar_config, labels, "labels", "fine", cifar_label_names,
                      "CIFAR-100 labels: fine (100 classes) or coarse (20 superclasses)"),
    TP_PARAM_DEF_INT(cifar_config, holdout, "holdout", "0", 0, 1e9,
                     "number of training images (the last ones) held out for validation"),
    TP_PARAM_DEF_ENUM(cifar_config, subset, "subset", "train", cifar_subset_names,
                      "with holdout > 0: serve the remaining training images (train) or the "
                      "held-out ones (holdout)"),
};

tp_status cifar_data_create(const tp_host *host, const void *config, const char *what,
                            void **self)
{
    cifar_data *d = host->calloc(1, sizeof(*d));
    if (!d)
        return host->fail(host, TP_ERR_NOMEM, "%s: cannot allocate the source", what);
    d->host = host;
    memcpy(&d->cfg, config, sizeof(d->cfg));
    snprintf(d->what, sizeof(d->what), "%s", what);
    *self = d;
    return TP_OK;
}

void cifar_data_destroy(void *self)
{
    cifar_data *d = self;
    if (!d)
        return;
    const tp_host *h = d->host;
    if (d->class_names)
        for (int i = 0; i < d->num_classes; i++)
            h->free(d->class_names[i]);
    h->free(d->class_names);
    h->free(d->pixels);
    h->free(d->labels);
    h->free(d);
}

tp_status cifar_data_grow(cifar_data *d, int64_t more, uint8_t **pixels, int32_t **labels)
{
    const tp_host *h = d->host;
    if (more < 0 || more > ((int64_t)1 << 40) / CIFAR_PIXELS - d->count)
        return h->fail(h, TP_ERR_FORMAT, "%s: %lld more images is implausible", d->what,
                       (long long)more);
    int64_t need = d->count + more;
    if (need > d->capacity) {
        int64_t cap = d->capacity ? d->capacity : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *p = h->realloc(d->pixels, (size_t)cap * CIFAR_PIXELS);
        if (!p)
            return h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate %lld images", d->what,
                           (long long)cap);
        d->pixels = p;
        int32_t *l = h->realloc(d->labels, (size_t)cap * sizeof(int32_t));
        if (!l)
            return h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate %lld labels", d->what,
                           (long long)cap);
        d->labels = l;
        d->capacity = cap;
    }
    *pixels = d->pixels + (size_t)d->count * CIFAR_PIXELS;
    *labels = d->labels + d->count;
    return TP_OK;
}

tp_status cifar_data_set_names(cifar_data *d, const char *file, size_t n,
                               const char *const *names, const size_t *lengths)
{
    const tp_host *h = d->host;
    if (n != (size_t)d->num_classes)
        return h->fail(h, TP_ERR_FORMAT, "%s: %zu class names for %d classes", file, n,
                       d->num_classes);
    d->class_names = h->calloc(n, sizeof(char *));
    if (!d->class_names)
        return h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate class names", file);
    for (size_t i = 0; i < n; i++) {
        d->class_names[i] = h->alloc(lengths[i] + 1);
        if (!d->class_names[i])
            return h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate class names", file);
        memcpy(d->class_names[i], names[i], lengths[i]);
        d->class_names[i][lengths[i]] = 0;
    }
    return TP_OK;
}

tp_status cifar_data_finish(cifar_data *d, tp_source_info *info)
{
    const tp_host *h = d->host;
    int64_t holdout = d->cfg.holdout;
    if (d->count == 0)
        return h->fail(h, TP_ERR_FORMAT, "%s: %s holds no images", d->what, d->cfg.path);
    if (holdout > 0 && d->cfg.split != CIFAR_SPLIT_TRAIN)
        return h->fail(h, TP_ERR_INVALID, "%s: holdout applies to split=train only",
                       d->what);
    if (d->cfg.subset == CIFAR_SUBSET_HOLDOUT && holdout == 0)
        return h->fail(h, TP_ERR_INVALID, "%s: subset=holdout needs holdout > 0", d->what);
    if (holdout >= d->count)
        return h->fail(h, TP_ERR_INVALID, "%s: holdout=%lld leaves no training images of %lld",
                       d->what, (long long)holdout, (long long)d->count);
    if (d->cfg.subset == CIFAR_SUBSET_HOLDOUT) {
        d->first = d->count - holdout;
        d->served = holdout;
    } else {
        d->first = 0;
        d->served = d->count - holdout;
    }
    info->count = d->served;
    info->height = CIFAR_SIDE;
    info->width = CIFAR_SIDE;
    info->channels = 3;
    info->num_classes = d->num_classes;
    info->class_names = (const char *const *)d->class_names;
    h->log(h, TP_LOG_DEBUG, d->what, "%s: serving %lld of %lld images, %d classes",
           d->cfg.path, (long long)d->served, (long long)d->count, d->num_classes);
    return TP_OK;
}

tp_status cifar_data_read(void *self, void *worker, int64_t index, tp_image *out,
                          int32_t *label)
{
    cifar_data *d = self;
    (void)worker;
    if (index < 0 || index >= d->served)
        return d->host->fail(d->host, TP_ERR_INVALID, "%s: sample %lld is outside [0, %lld)",
                             d->what, (long long)index, (long long)d->served);
    tp_status st = tp_image_reserve(d->host, out, CIFAR_SIDE, CIFAR_SIDE, 3);
    if (st)
        return st;
    const uint8_t *src = d->pixels + (size_t)(d->first + index) * CIFAR_PIXELS;
    uint8_t *dst = out->data;
    /* Planar R, G, B (each row by row) to interleaved RGB. */
    for (int p = 0; p < CIFAR_PLANE; p++) {
        dst[3 * p + 0] = src[p];
        dst[3 * p + 1] = src[CIFAR_PLANE + p];
        dst[3 * p + 2] = src[2 * CIFAR_PLANE + p];
    }
    *label = d->labels[d->first + index];
    return TP_OK;
}

tp_status cifar_read_file(const tp_host *host, const char *path, uint8_t **data, size_t *len)
{
    tp_status st = TP_OK;
    uint8_t *buf = NULL;
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return host->fail(host, errno == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = host->fail(host, TP_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    size_t size = (size_t)sb.st_size;
    buf = host->alloc(size ? size : 1);
    if (!buf) {
        st = host->fail(host, TP_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, size);
        goto done;
    }
    if (fread(buf, 1, size, f) != size) {
        st = host->fail(host, TP_ERR_IO, "%s: read failed: %s", path,
                        ferror(f) ? strerror(errno) : "the file shrank");
        goto done;
    }
    *data = buf;
    *len = size;
    buf = NULL;
done:
    host->free(buf);
    fclose(f);
    return st;
}

tp_status cifar_join(const tp_host *host, const char *folder, const char *name, char *out,
                     size_t size)
{
    int n = snprintf(out, size, "%s/%s", folder, name);
    if (n < 0 || (size_t)n >= size)
        return host->fail(host, TP_ERR_INVALID, "path too long: %s/%s", folder, name);
    return TP_OK;
}

tp_status cifar_stat(const tp_host *host, const char *path, int *is_dir, size_t *size)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return host->fail(host, errno == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO,
                          "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode))
        return host->fail(host, TP_ERR_INVALID, "%s: neither a folder nor a file", path);
    *is_dir = S_ISDIR(sb.st_mode);
    *size = (size_t)sb.st_size;
    return TP_OK;
}

int cifar_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}
