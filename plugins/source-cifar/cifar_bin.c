/* Component "cifar_bin": CIFAR-10 / CIFAR-100 binary versions.
 *
 * cifar-10-batches-bin: data_batch_1..5.bin, test_batch.bin, records of 1 label byte and
 * 3072 pixel bytes; batches.meta.txt names the classes, one per line.
 * cifar-100-binary: train.bin, test.bin, records of coarse label, fine label, 3072 pixels;
 * coarse_label_names.txt and fine_label_names.txt.
 * A single .bin file may be given: its size (a multiple of 3073 or 3074) tells which, and
 * train.bin / test.bin are taken as CIFAR-100 when both fit. */
#include <stdio.h>
#include <string.h>

#include "cifar_data.h"

static tp_status cifar_bin_create(const tp_host *host, const void *config, void **self)
{
    return cifar_data_create(host, config, "cifar_bin", self);
}

/* Appends the records of one file. cifar100 selects the record layout. */
static tp_status cifar_bin_load(cifar_data *d, const char *path, int cifar100)
{
    const tp_host *h = d->host;
    uint8_t *buf = NULL;
    size_t len = 0;
    const size_t rec = CIFAR_PIXELS + (cifar100 ? 2 : 1);
    tp_status st = cifar_read_file(h, path, &buf, &len);
    if (st)
        return st;
    if (len % rec) {
        st = h->fail(h, TP_ERR_FORMAT, "%s: byte %zu: truncated record (the file size %zu is "
                     "not a multiple of the %zu-byte CIFAR-%d record)", path, len / rec * rec,
                     len, rec, cifar100 ? 100 : 10);
        goto done;
    }
    int64_t n = (int64_t)(len / rec);
    uint8_t *px;
    int32_t *lab;
    if ((st = cifar_data_grow(d, n, &px, &lab)))
        goto done;
    /* CIFAR-100 records: coarse first, then fine. */
    size_t label_at = cifar100 && d->cfg.labels == CIFAR_LABELS_FINE ? 1 : 0;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *r = buf + (size_t)i * rec;
        int v = r[label_at];
        if (v >= d->num_classes) {
            st = h->fail(h, TP_ERR_FORMAT, "%s: byte %zu: label %d is out of range 0..%d",
                         path, (size_t)i * rec + label_at, v, d->num_classes - 1);
            goto done;
        }
        lab[i] = v;
        memcpy(px + (size_t)i * CIFAR_PIXELS, r + rec - CIFAR_PIXELS, CIFAR_PIXELS);
    }
    d->count += n;
done:
    h->free(buf);
    return st;
}

/* Class names: one per line; blank lines (the CIFAR-10 file ends with some) are skipped. */
static tp_status cifar_bin_load_names(cifar_data *d, const char *path)
{
    const tp_host *h = d->host;
    uint8_t *buf = NULL;
    size_t len = 0, n = 0;
    const char **names = NULL;
    size_t *lengths = NULL;
    tp_status st = cifar_read_file(h, path, &buf, &len);
    if (st)
        return st;
    names = h->calloc((size_t)d->num_classes + 1, sizeof(*names));
    lengths = h->calloc((size_t)d->num_classes + 1, sizeof(*lengths));
    if (!names || !lengths) {
        st = h->fail(h, TP_ERR_NOMEM, "%s: cannot allocate class names", path);
        goto done;
    }
    for (size_t pos = 0; pos < len;) {
        const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len, l = end - pos;
        if (l && buf[end - 1] == '\r')
            l--;
        if (l) {
            if (memchr(buf + pos, 0, l) || n == (size_t)d->num_classes + 1) {
                st = h->fail(h, TP_ERR_FORMAT, "%s: byte %zu: more than %d class names or a "
                             "binary line", path, pos, d->num_classes);
                goto done;
            }
            names[n] = (const char *)buf + pos;
            lengths[n++] = l;
        }
        pos = end + 1;
    }
    st = cifar_data_set_names(d, path, n, names, lengths);
done:
    h->free(names);
    h->free(lengths);
    h->free(buf);
    return st;
}

static tp_status cifar_bin_open(void *self, const tp_source_open_args *args,
                                tp_source_info *info)
{
    cifar_data *d = self;
    const tp_host *h = d->host;
    const char *root = d->cfg.path;
    char file[4200], folder[4096];
    int is_dir, cifar100;
    size_t len;
    tp_status st;
    (void)args;
    if (d->count)
        return h->fail(h, TP_ERR_INVALID, "cifar_bin: %s is already open", root);
    if ((st = cifar_stat(h, root, &is_dir, &len)))
        return st;
    if (is_dir) {
        snprintf(folder, sizeof(folder), "%s", root);
        if ((st = cifar_join(h, root, "data_batch_1.bin", file, sizeof(file))))
            return st;
        if (cifar_exists(file)) {
            cifar100 = 0;
        } else {
            if ((st = cifar_join(h, root, "train.bin", file, sizeof(file))))
                return st;
            if (!cifar_exists(file))
                return h->fail(h, TP_ERR_NOT_FOUND, "%s: neither data_batch_1.bin (CIFAR-10) "
                               "nor train.bin (CIFAR-100) is there", root);
            cifar100 = 1;
        }
    } else {
        const char *slash = strrchr(root, '/');
        const char *base = slash ? slash + 1 : root;
        if (slash)
            snprintf(folder, sizeof(folder), "%.*s", (int)(slash - root), root);
        else
            snprintf(folder, sizeof(folder), ".");
        /* The size decides; train.bin / test.bin break a tie (multiples of both). */
        int fits10 = len % (CIFAR_PIXELS + 1) == 0, fits100 = len % (CIFAR_PIXELS + 2) == 0;
        int named100 = strcmp(base, "train.bin") == 0 || strcmp(base, "test.bin") == 0;
        cifar100 = fits100 && (!fits10 || named100);
        if (!fits10 && !fits100)
            cifar100 = named100;
    }
    if (!cifar100 && d->cfg.labels == CIFAR_LABELS_COARSE)
        return h->fail(h, TP_ERR_INVALID, "cifar_bin: %s: labels=coarse needs CIFAR-100", root);
    d->num_classes = !cifar100 ? 10 : d->cfg.labels == CIFAR_LABELS_COARSE ? 20 : 100;

    if (!is_dir) {
        if ((st = cifar_bin_load(d, root, cifar100)))
            return st;
    } else if (!cifar100 && d->cfg.split == CIFAR_SPLIT_TRAIN) {
        for (int b = 1; b <= 5; b++) {
            char name[32];
            snprintf(name, sizeof(name), "data_batch_%d.bin", b);
            if ((st = cifar_join(h, root, name, file, sizeof(file))) ||
                (st = cifar_bin_load(d, file, 0)))
                return st;
        }
    } else {
        const char *name = !cifar100 ? "test_batch.bin"
                           : d->cfg.split == CIFAR_SPLIT_TRAIN ? "train.bin" : "test.bin";
        if ((st = cifar_join(h, root, name, file, sizeof(file))) ||
            (st = cifar_bin_load(d, file, cifar100)))
            return st;
    }

    const char *names = !cifar100 ? "batches.meta.txt"
                        : d->cfg.labels == CIFAR_LABELS_COARSE ? "coarse_label_names.txt"
                                                               : "fine_label_names.txt";
    if ((st = cifar_join(h, folder, names, file, sizeof(file))))
        return st;
    if (cifar_exists(file)) {
        if ((st = cifar_bin_load_names(d, file)))
            return st;
    } else if (is_dir) {
        h->log(h, TP_LOG_WARN, "cifar_bin", "%s: missing; classes have no names", file);
    }
    return cifar_data_finish(d, info);
}

static const tp_source_ops cifar_bin_ops = {
    .size = sizeof(tp_source_ops),
    .open = cifar_bin_open,
    .read = cifar_data_read,
};

const tp_component cifar_bin_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SOURCE,
    .name = "cifar_bin",
    .summary = "CIFAR-10 / CIFAR-100 binary versions (label bytes + 3072 planar pixels)",
    .params = cifar_params,
    .n_params = CIFAR_N_PARAMS,
    .config_size = sizeof(cifar_config),
    .create = cifar_bin_create,
    .destroy = cifar_data_destroy,
    .ops = &cifar_bin_ops,
};
