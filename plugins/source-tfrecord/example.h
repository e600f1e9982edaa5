/* A bounds-checked decoder for the few protobuf messages of tf.train.Example
 * (Example, Features, the feature map's entries, Feature, BytesList, FloatList, Int64List).
 *
 * Nothing is copied: results point into the caller's buffer. Every function accepts any
 * byte string (it is a fuzz target) and reports malformed input as an error, never reads
 * outside [buf, buf + len). Wire-format facts: fields may come in any order and unknown
 * fields are skipped; lists may be packed or unpacked (both accepted, even mixed); a map
 * key seen twice keeps its last value and a Feature with several oneof fields keeps the
 * last one, as protobuf's parsers do. */
#ifndef TRAINPIPE_TFRECORD_EXAMPLE_H
#define TRAINPIPE_TFRECORD_EXAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef enum example_kind {
    EXAMPLE_NONE = 0,  /* key absent, or a Feature with no list set */
    EXAMPLE_BYTES = 1, /* BytesList */
    EXAMPLE_FLOAT = 2, /* FloatList */
    EXAMPLE_INT64 = 3  /* Int64List */
} example_kind;

/* One feature: its kind and the serialized list message (BytesList, FloatList or Int64List)
 * it holds. */
typedef struct example_feature {
    example_kind kind;
    const uint8_t *list;
    size_t list_len;
} example_feature;

typedef enum example_status {
    EXAMPLE_OK = 0,
    EXAMPLE_MALFORMED = 1, /* bad varint, length past the end, wire type 3/4/6/7, ... */
    EXAMPLE_RANGE = 2      /* index past the end of the list */
} example_status;

/* Finds the features named keys[0..n_keys) in a serialized Example. out[i] gets the
 * feature for keys[i] (kind EXAMPLE_NONE when absent). On EXAMPLE_MALFORMED, *err_offset
 * (may be NULL) is the byte offset in buf where decoding failed. */
example_status example_find(const uint8_t *buf, size_t len, const char *const *keys,
                            size_t n_keys, example_feature *out, size_t *err_offset);

/* Number of values in a feature's list (packed and unpacked encodings counted). */
example_status example_count(const example_feature *f, size_t *count);

/* Value number `index` of a BytesList / Int64List / FloatList feature. A feature of the
 * wrong kind is EXAMPLE_MALFORMED. */
example_status example_bytes_at(const example_feature *f, size_t index, const uint8_t **data,
                                size_t *len);
example_status example_int64_at(const example_feature *f, size_t index, int64_t *value);
example_status example_float_at(const example_feature *f, size_t index, float *value);

/* The wire-format primitive, exposed for tests. */
/* Reads a base-128 varint (at most 10 bytes) at *pos; advances *pos. Returns 0 or -1. */
int example_read_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *value);

#endif
