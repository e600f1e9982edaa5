/* safetensors files (Hugging Face's format): write and read, and saving / loading a graph's
 * named tensors.
 *
 * Layout: an 8-byte little-endian header length n, n bytes of UTF-8 JSON
 *     {"__metadata__": {"key": "value", ...},
 *      "conv1.weight": {"dtype": "F32", "shape": [16, 3, 3, 3], "data_offsets": [0, 1728]}, ...}
 * (padded with spaces so the data starts 8-byte aligned), then the data: each tensor's bytes,
 * row-major, little-endian, at data_offsets relative to the start of the data. The reader
 * checks everything (lengths, offsets that tile the data exactly, shapes against sizes,
 * duplicate names, JSON syntax) and names the file and byte offset of the first problem.
 *
 * Tensors are stored in the graph's own layout (convolution weights OIHW, linear weights
 * [out, in], vectors for biases and batch norm), which is PyTorch's, so torchvision
 * state_dict exports load without transposes. */
#ifndef TRAINPIPE_HOST_SAFETENSORS_H
#define TRAINPIPE_HOST_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

#include "graph.h"

#define SAFETENSORS_MAX_DIMS 8
/* The reference implementation's limit on the JSON header. */
#define SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

/* One tensor to write: f32, or i64 when is_i64 (PyTorch's num_batches_tracked). */
typedef struct safetensors_input {
    const char *name;
    int ndim;              /* 0 for a scalar */
    const int64_t *shape;
    const void *data;      /* float or int64_t values, row-major */
    int is_i64;
} safetensors_input;

/* Builds a file image in memory (*out, malloc'd; `label` names it in messages). */
tp_status safetensors_serialize(const safetensors_input *tensors, size_t n,
                                const char *const *metadata, const char *label, uint8_t **out,
                                size_t *out_size);

/* Writes `n` tensors and optional metadata (NULL, or "key", "value", ..., NULL) to path,
 * atomically (a temporary file renamed into place). */
tp_status safetensors_write(const char *path, const safetensors_input *tensors, size_t n,
                            const char *const *metadata);

/* One tensor of a file that was read. `data` points into the file's buffer (not aligned for
 * anything beyond bytes: use memcpy). */
typedef struct safetensors_entry {
    char *name;
    char dtype[8];     /* "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL" */
    size_t elem_size;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    int64_t count;     /* elements */
    const uint8_t *data;
    size_t nbytes;
} safetensors_entry;

typedef struct safetensors_file safetensors_file;

/* Reads and validates a whole file. */
tp_status safetensors_read(const char *path, safetensors_file **out);
/* Validates an in-memory image (copied); `label` names it in messages. */
tp_status safetensors_parse(const uint8_t *bytes, size_t size, const char *label,
                            safetensors_file **out);
void safetensors_free(safetensors_file *f);

size_t safetensors_count(const safetensors_file *f);
const safetensors_entry *safetensors_at(const safetensors_file *f, size_t i);
const safetensors_entry *safetensors_find(const safetensors_file *f, const char *name);
/* The value of a __metadata__ key, or NULL. */
const char *safetensors_metadata(const safetensors_file *f, const char *key);

/* Reads a tensor as f32 (converting F64, F16 and BF16) into out (entry->count floats).
 * `path` names the file in the error about any other dtype. */
tp_status safetensors_to_f32(const safetensors_entry *e, const char *path, float *out);

/* Saves every named tensor of a bound graph (parameters and running statistics). */
tp_status graph_save_safetensors(graph *g, const char *path, const char *const *metadata);

/* Loads a bound graph's tensors from a file. Every graph tensor must be present with its
 * exact shape; a file tensor the graph does not have is an error, except PyTorch's
 * "*.num_batches_tracked" counters, which are skipped. */
tp_status graph_load_safetensors(graph *g, const char *path);

/* The same from a file already read (`path` for messages); tensors whose names start with
 * skip_prefix (NULL: none) are ignored, e.g. a checkpoint's "optimizer/" state. */
tp_status graph_load_tensors(graph *g, const safetensors_file *f, const char *path,
                             const char *skip_prefix);

#endif
