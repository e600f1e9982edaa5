/* trainpipe SDK: data sources (TP_KIND_SOURCE).
 *
 * A source is a random-access collection of labelled images: the host asks for sample
 * `index` in [0, count) from several worker threads at once, in an order it derives from
 * the seed and epoch (and shards across ranks). Sources decode to uint8 HWC images; their
 * size may differ from sample to sample (JPEG), in which case a host-side augmenter must
 * bring every sample to one size before batching.
 *
 * Which split a source serves (train, test, a hold-out) is one of its own parameters: the
 * INI's [source.train] and [source.val] sections each configure an instance. */
#ifndef TRAINPIPE_SOURCE_H
#define TRAINPIPE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A decoded image, uint8, height x width x channels, row-major, channels interleaved.
 * The buffer belongs to whoever created the tp_image (the host's worker); sources grow it
 * with tp_image_reserve(). */
typedef struct tp_image {
    uint8_t *data;
    int height, width, channels;
    size_t capacity; /* bytes allocated at data */
} tp_image;

/* Makes room for h*w*c bytes (through the host's allocator) and sets the shape. */
static inline tp_status tp_image_reserve(const tp_host *host, tp_image *img, int height,
                                         int width, int channels)
{
    size_t need = (size_t)height * (size_t)width * (size_t)channels;
    if (height <= 0 || width <= 0 || channels <= 0)
        return host->fail(host, TP_ERR_INVALID, "image size %dx%dx%d is not positive", height,
                          width, channels);
    if (need > img->capacity) {
        uint8_t *p = (uint8_t *)host->realloc(img->data, need);
        if (!p)
            return host->fail(host, TP_ERR_NOMEM, "cannot allocate a %dx%dx%d image", height,
                              width, channels);
        img->data = p;
        img->capacity = need;
    }
    img->height = height;
    img->width = width;
    img->channels = channels;
    return TP_OK;
}

/* What the host tells a source when opening it. */
typedef struct tp_source_open_args {
    size_t size;
    int rank, world_size;  /* this process's place in a data-parallel job (0, 1 alone) */
    int target_height;     /* the size the pipeline will resize to, or 0: a hint that lets */
    int target_width;      /* a JPEG source use scaled decoding */
} tp_source_open_args;

/* What a source reports after opening. */
typedef struct tp_source_info {
    size_t size;
    int64_t count;             /* number of samples */
    int height, width;         /* fixed image size, or 0 when it varies per sample */
    int channels;              /* 1 or 3 */
    int num_classes;           /* labels are in [0, num_classes) */
    const char *const *class_names; /* num_classes names, or NULL */
} tp_source_info;

typedef struct tp_source_ops {
    size_t size; /* sizeof(tp_source_ops) */

    /* Opens the data (reads indexes, headers, whole files if small) and reports its shape. */
    tp_status (*open)(void *self, const tp_source_open_args *args, tp_source_info *info);

    /* Optional per-thread state (a JPEG decompressor, a read buffer). worker_init's result
     * is passed to read() from that thread; NULL ops mean read() gets NULL. */
    tp_status (*worker_init)(void *self, void **worker);
    void (*worker_fini)(void *self, void *worker);

    /* Reads and decodes sample `index` into `out`, its label into `*label`. Called
     * concurrently from several threads; must not depend on call order. A sample that cannot
     * be decoded returns TP_ERR_FORMAT (after host->fail naming file and offset): the host
     * counts it and moves on, within its max_bad_records budget. */
    tp_status (*read)(void *self, void *worker, int64_t index, tp_image *out, int32_t *label);

    void *reserved[8];
} tp_source_ops;

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_SOURCE_H */
