/* What the two CIFAR components (python pickles, binary records) share: the parameters,
 * the loaded images and labels, the train/hold-out split and the planar-to-HWC read. */
#ifndef TRAINPIPE_SOURCE_CIFAR_DATA_H
#define TRAINPIPE_SOURCE_CIFAR_DATA_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

#define CIFAR_SIDE 32
#define CIFAR_PLANE (CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_PIXELS (3 * CIFAR_PLANE) /* one image: R plane, G plane, B plane */

enum { CIFAR_SPLIT_TRAIN, CIFAR_SPLIT_TEST };
enum { CIFAR_LABELS_FINE, CIFAR_LABELS_COARSE };
enum { CIFAR_SUBSET_TRAIN, CIFAR_SUBSET_HOLDOUT };

/* The configuration both components take (one parameter table, cifar_params). */
typedef struct cifar_config {
    const char *path; /* a dataset folder, or one batch file */
    int split;        /* CIFAR_SPLIT_* */
    int labels;       /* CIFAR_LABELS_* (CIFAR-100 only) */
    int64_t holdout;  /* training images kept back for validation (the last ones) */
    int subset;       /* CIFAR_SUBSET_*: which part of the training images to serve */
} cifar_config;

#define CIFAR_N_PARAMS 5
extern const tp_param_def cifar_params[CIFAR_N_PARAMS];

/* A loaded dataset. Images are stored as in the files (planar) and turned into HWC on
 * read(), which only reads shared state and so may run on many threads. */
typedef struct cifar_data {
    const tp_host *host;
    cifar_config cfg;
    uint8_t *pixels;        /* count x CIFAR_PIXELS */
    int32_t *labels;        /* count */
    int64_t count, capacity;
    int num_classes;
    char **class_names;     /* num_classes strings, or NULL */
    int64_t first, served;  /* the samples served: [first, first + served) */
    char what[64];          /* "cifar" or "cifar_bin", for messages */
} cifar_data;

/* Allocates a cifar_data for create(). */
tp_status cifar_data_create(const tp_host *host, const void *config, const char *what,
                            void **self);
void cifar_data_destroy(void *self);

/* Room for `more` images beyond count: returns where to write their pixels and labels. */
tp_status cifar_data_grow(cifar_data *d, int64_t more, uint8_t **pixels, int32_t **labels);

/* Takes class names (n strings of given lengths; copies them). n must equal num_classes. */
tp_status cifar_data_set_names(cifar_data *d, const char *file, size_t n,
                               const char *const *names, const size_t *lengths);

/* After loading: applies split/holdout/subset and fills info. */
tp_status cifar_data_finish(cifar_data *d, tp_source_info *info);

/* The tp_source_ops.read of both components. */
tp_status cifar_data_read(void *self, void *worker, int64_t index, tp_image *out,
                          int32_t *label);

/* Reads a whole file into host memory. */
tp_status cifar_read_file(const tp_host *host, const char *path, uint8_t **data, size_t *len);

/* Joins folder and name into out; fails on overflow. */
tp_status cifar_join(const tp_host *host, const char *folder, const char *name, char *out,
                     size_t size);

/* *is_dir: 1 for a directory, 0 for a regular file (then *size is its size); fails when
 * missing or something else. */
tp_status cifar_stat(const tp_host *host, const char *path, int *is_dir, size_t *size);

/* Non-zero when the file exists. */
int cifar_exists(const char *path);

/* The two components (cifar_py.c, cifar_bin.c), listed by cifar_plugin.c. */
extern const tp_component cifar_py_component;
extern const tp_component cifar_bin_component;

#endif
