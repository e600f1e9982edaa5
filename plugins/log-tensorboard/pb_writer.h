/* A minimal protocol-buffers writer: just the wire types TensorBoard's Event messages use
 * (varint, fixed64 double, fixed32 float, length-delimited). Messages nest by encoding the
 * inner message into its own pb_buf and appending it as a length-delimited field. */
#ifndef TP_LOG_TENSORBOARD_PB_WRITER_H
#define TP_LOG_TENSORBOARD_PB_WRITER_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. An allocation failure sets `oom` and makes every later append a
 * no-op, so a whole message can be built and checked once at the end. */
typedef struct pb_buf {
    uint8_t *data;
    size_t len, cap;
    int oom;
} pb_buf;

void pb_init(pb_buf *b);
void pb_free(pb_buf *b);
/* Empties the buffer (keeps its memory) and clears `oom`. */
void pb_reset(pb_buf *b);
/* Makes room for `extra` more bytes; 0 on success, -1 (and oom set) on failure. */
int pb_reserve(pb_buf *b, size_t extra);

void pb_raw(pb_buf *b, const void *data, size_t len);
/* A bare base-128 varint (no tag). */
void pb_varint(pb_buf *b, uint64_t v);

/* Fields: wire type 0 (int32, int64, enum: negative values take 10 bytes, as protobuf
 * requires), 1 (double), 5 (float), 2 (bytes, string, nested message). */
void pb_field_varint(pb_buf *b, uint32_t field, uint64_t v);
void pb_field_double(pb_buf *b, uint32_t field, double v);
void pb_field_float(pb_buf *b, uint32_t field, float v);
void pb_field_bytes(pb_buf *b, uint32_t field, const void *data, size_t len);
void pb_field_string(pb_buf *b, uint32_t field, const char *s);
void pb_field_message(pb_buf *b, uint32_t field, const pb_buf *inner);
/* A packed repeated double field (proto3's default encoding for repeated scalars). */
void pb_field_packed_doubles(pb_buf *b, uint32_t field, const double *v, size_t n);

#endif
