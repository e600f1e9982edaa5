/* source-idx: MNIST-style IDX image and label files (raw or gzipped) as a trainpipe source.
 *
 * Both files are read whole at open (Fashion-MNIST train is 47 MB of pixels); read() then
 * copies one rows x cols image out, so it is safe from any number of threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

#include "idx.h"

#define IDX_IMAGES_MAGIC 2051u /* 00 00 08 03 */
#define IDX_LABELS_MAGIC 2049u /* 00 00 08 01 */
#define IDX_MAX_FILE_BYTES ((size_t)4 << 30)

enum { IDX_SPLIT_TRAIN, IDX_SPLIT_TEST };
enum { IDX_CLASSES_AUTO, IDX_CLASSES_FASHION, IDX_CLASSES_DIGITS, IDX_CLASSES_NONE };

typedef struct idx_config {
    const char *images;
    const char *labels;
    const char *path;
    int split;
    int classes;
} idx_config;

typedef struct idx_source {
    const tp_host *host;
    idx_config cfg;
    char images_path[4096], labels_path[4096];
    uint8_t *images_buf, *labels_buf; /* whole decompressed files */
    const uint8_t *pixels, *labels;   /* into the buffers, after the headers */
    int64_t count;
    int rows, cols;
} idx_source;

static const char *const idx_split_names[] = {"train", "test", NULL};
static const char *const idx_class_choices[] = {"auto", "fashion", "digits", "none", NULL};

static const char *const fashion_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};
static const char *const digit_names[10] = {"0", "1", "2", "3", "4",
                                            "5", "6", "7", "8", "9"};

static const tp_param_def idx_params[] = {
    TP_PARAM_DEF_PATH(idx_config, images, "images", NULL,
                      "IDX image file (magic 2051, raw or .gz); overrides path/split"),
    TP_PARAM_DEF_PATH(idx_config, labels, "labels", NULL,
                      "IDX label file (magic 2049, raw or .gz); given together with images"),
    TP_PARAM_DEF_PATH(idx_config, path, "path", "/usr/share/datasets/fashion-mnist",
                      "folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    TP_PARAM_DEF_ENUM(idx_config, split, "split", "train", idx_split_names,
                      "which files of the folder to read: train or test (t10k)"),
    TP_PARAM_DEF_ENUM(idx_config, classes, "class_names", "auto", idx_class_choices,
                      "class names: auto (Fashion-MNIST when the folder name contains "
                      "'fashion', else digits), fashion, digits or none"),
};

static tp_status idx_create(const tp_host *host, const void *config, void **self)
{
    idx_source *s = host->calloc(1, sizeof(*s));
    if (!s)
        return host->fail(host, TP_ERR_NOMEM, "idx: cannot allocate the source");
    s->host = host;
    memcpy(&s->cfg, config, sizeof(s->cfg));
    *self = s;
    return TP_OK;
}

static void idx_destroy(void *self)
{
    idx_source *s = self;
    if (!s)
        return;
    s->host->free(s->images_buf);
    s->host->free(s->labels_buf);
    s->host->free(s);
}

/* folder/stem or, when that does not exist, folder/stem.gz. */
static tp_status idx_pick_file(idx_source *s, const char *folder, const char *stem, char *out,
                               size_t size)
{
    int n = snprintf(out, size, "%s/%s", folder, stem);
    if (n < 0 || (size_t)n >= size)
        return s->host->fail(s->host, TP_ERR_INVALID, "idx: path too long: %s/%s", folder,
                             stem);
    if (access(out, R_OK) == 0)
        return TP_OK;
    n = snprintf(out, size, "%s/%s.gz", folder, stem);
    if (n < 0 || (size_t)n >= size)
        return s->host->fail(s->host, TP_ERR_INVALID, "idx: path too long: %s/%s.gz", folder,
                             stem);
    if (access(out, R_OK) == 0)
        return TP_OK;
    return s->host->fail(s->host, TP_ERR_NOT_FOUND, "%s/%s: neither it nor %s.gz exists",
                         folder, stem, stem);
}

/* Loads a whole IDX file (the buffer comes from the host's allocator), checks its magic
 * (`what` names the expected kind in the message) and parses it. */
static tp_status idx_load(idx_source *s, const char *path, uint32_t magic, const char *what,
                          uint8_t **buf, idx_array *arr)
{
    char err[512];
    uint8_t *data = NULL;
    size_t len = 0;
    int gz = 0;
    if (idx_load_file(path, IDX_MAX_FILE_BYTES, &data, &len, &gz, err, sizeof(err)))
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s", err);
    /* The magic first: a label file given as images should say so, not "wrong size". */
    if (len >= 4 && ((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                     (uint32_t)data[2] << 8 | data[3]) != magic) {
        uint32_t got = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                       (uint32_t)data[2] << 8 | data[3];
        free(data);
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: %sbyte 0: magic %u (0x%08x) is not "
                             "an IDX %s file's %u", path, gz ? "(after gunzip) " : "",
                             (unsigned)got, (unsigned)got, what, (unsigned)magic);
    }
    if (idx_parse(data, len, arr, err, sizeof(err))) {
        free(data);
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: %s%s", path,
                             gz ? "(after gunzip) " : "", err);
    }
    /* Move into host memory so ownership follows the SDK's rules. */
    uint8_t *copy = s->host->alloc(len ? len : 1);
    if (!copy) {
        free(data);
        return s->host->fail(s->host, TP_ERR_NOMEM, "%s: cannot allocate %zu bytes", path,
                             len);
    }
    memcpy(copy, data, len);
    free(data);
    arr->data = copy + arr->header_bytes;
    *buf = copy;
    return TP_OK;
}

/* The last folder name of a file's path contains "fashion" (any case)? */
static int idx_folder_is_fashion(const char *file)
{
    const char *end = strrchr(file, '/');
    if (!end)
        return 0;
    const char *start = end;
    while (start > file && start[-1] != '/')
        start--;
    for (const char *p = start; p + 7 <= end; p++)
        if (strncasecmp(p, "fashion", 7) == 0)
            return 1;
    return 0;
}

static tp_status idx_open(void *self, const tp_source_open_args *args, tp_source_info *info)
{
    idx_source *s = self;
    const tp_host *h = s->host;
    tp_status st;
    (void)args;
    if (!s->cfg.images != !s->cfg.labels)
        return h->fail(h, TP_ERR_INVALID, "idx: give both images and labels, or neither "
                       "(then path and split pick the files)");
    if (s->cfg.images) {
        snprintf(s->images_path, sizeof(s->images_path), "%s", s->cfg.images);
        snprintf(s->labels_path, sizeof(s->labels_path), "%s", s->cfg.labels);
    } else {
        const char *prefix = s->cfg.split == IDX_SPLIT_TEST ? "t10k" : "train";
        char stem[64];
        snprintf(stem, sizeof(stem), "%s-images-idx3-ubyte", prefix);
        if ((st = idx_pick_file(s, s->cfg.path, stem, s->images_path, sizeof(s->images_path))))
            return st;
        snprintf(stem, sizeof(stem), "%s-labels-idx1-ubyte", prefix);
        if ((st = idx_pick_file(s, s->cfg.path, stem, s->labels_path, sizeof(s->labels_path))))
            return st;
    }

    idx_array img, lab;
    if ((st = idx_load(s, s->images_path, IDX_IMAGES_MAGIC, "image (u8, 3 dimensions)",
                       &s->images_buf, &img)))
        return st;
    if ((st = idx_load(s, s->labels_path, IDX_LABELS_MAGIC, "label (u8, 1 dimension)",
                       &s->labels_buf, &lab)))
        return st;
    if (img.dims[0] != lab.dims[0])
        return h->fail(h, TP_ERR_FORMAT, "%s: byte 4: %u images but %s has %u labels",
                       s->images_path, img.dims[0], s->labels_path, lab.dims[0]);
    if (img.dims[0] == 0 || img.dims[1] == 0 || img.dims[2] == 0)
        return h->fail(h, TP_ERR_FORMAT, "%s: byte 4: empty image file (%u x %u x %u)",
                       s->images_path, img.dims[0], img.dims[1], img.dims[2]);
    if (img.dims[1] > 65536 || img.dims[2] > 65536)
        return h->fail(h, TP_ERR_FORMAT, "%s: byte 8: image size %u x %u is implausible",
                       s->images_path, img.dims[1], img.dims[2]);
    s->count = img.dims[0];
    s->rows = (int)img.dims[1];
    s->cols = (int)img.dims[2];
    s->pixels = img.data;
    s->labels = lab.data;

    int max_label = 0;
    for (int64_t i = 0; i < s->count; i++)
        max_label = s->labels[i] > max_label ? s->labels[i] : max_label;
    int classes = s->cfg.classes;
    if (classes == IDX_CLASSES_AUTO)
        classes = idx_folder_is_fashion(s->images_path) ? IDX_CLASSES_FASHION
                                                        : IDX_CLASSES_DIGITS;
    info->count = s->count;
    info->height = s->rows;
    info->width = s->cols;
    info->channels = 1;
    info->num_classes = max_label + 1 > 10 ? max_label + 1 : 10;
    info->class_names = NULL;
    if (info->num_classes == 10 && classes == IDX_CLASSES_FASHION)
        info->class_names = fashion_names;
    else if (info->num_classes == 10 && classes == IDX_CLASSES_DIGITS)
        info->class_names = digit_names;
    h->log(h, TP_LOG_DEBUG, "idx", "%s: %lld images of %dx%d", s->images_path,
           (long long)s->count, s->rows, s->cols);
    return TP_OK;
}

static tp_status idx_read(void *self, void *worker, int64_t index, tp_image *out,
                          int32_t *label)
{
    idx_source *s = self;
    (void)worker;
    if (!s->pixels)
        return s->host->fail(s->host, TP_ERR_INVALID, "idx: read before open");
    if (index < 0 || index >= s->count)
        return s->host->fail(s->host, TP_ERR_INVALID, "%s: sample %lld is outside [0, %lld)",
                             s->images_path, (long long)index, (long long)s->count);
    tp_status st = tp_image_reserve(s->host, out, s->rows, s->cols, 1);
    if (st)
        return st;
    size_t n = (size_t)s->rows * (size_t)s->cols;
    memcpy(out->data, s->pixels + (size_t)index * n, n);
    *label = s->labels[index];
    return TP_OK;
}

static const tp_source_ops idx_ops = {
    .size = sizeof(tp_source_ops),
    .open = idx_open,
    .read = idx_read,
};

static const tp_component idx_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SOURCE,
    .name = "idx",
    .summary = "MNIST / Fashion-MNIST IDX files (raw or gzipped)",
    .params = idx_params,
    .n_params = sizeof(idx_params) / sizeof(idx_params[0]),
    .config_size = sizeof(idx_config),
    .create = idx_create,
    .destroy = idx_destroy,
    .ops = &idx_ops,
};

static const tp_component *const idx_components[] = {&idx_component};

static const tp_plugin_info idx_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "source-idx",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "IDX (MNIST, Fashion-MNIST) data source",
    .components = idx_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &idx_info; }
