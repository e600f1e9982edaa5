/* IDX files (MNIST, Fashion-MNIST): header parsing over a memory buffer, gzip inflation and
 * whole-file loading. Independent of the plugin ABI so the fuzz target links it alone.
 *
 * An IDX file is: 00 00 <type> <ndims>, then ndims big-endian u32 sizes, then the data
 * (row-major, big-endian elements). Functions report errors as one line in `err`
 * ("byte OFFSET: what is wrong"); callers prefix the file name. */
#ifndef TRAINPIPE_SOURCE_IDX_IDX_H
#define TRAINPIPE_SOURCE_IDX_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_MAX_DIMS 8

/* Element type codes of the IDX format. */
enum {
    IDX_U8 = 0x08,
    IDX_I8 = 0x09,
    IDX_I16 = 0x0B,
    IDX_I32 = 0x0C,
    IDX_F32 = 0x0D,
    IDX_F64 = 0x0E
};

typedef struct idx_array {
    uint32_t magic;                /* the first four bytes, big-endian (2051, 2049, ...) */
    int type;                      /* IDX_U8 ... */
    int ndims;
    uint32_t dims[IDX_MAX_DIMS];
    size_t elem_size;              /* bytes per element */
    size_t count;                  /* product of dims */
    size_t header_bytes;           /* 4 + 4 * ndims */
    const uint8_t *data;           /* points into the parsed buffer */
} idx_array;

/* Parses buf[0..len) as one IDX file: checks the magic's zero bytes, the type code, ndims
 * (1..IDX_MAX_DIMS) and that the data exactly fills the rest of the buffer. Returns 0, or
 * -1 with a message in err (truncation names the byte where the data ends short). */
int idx_parse(const uint8_t *buf, size_t len, idx_array *out, char *err, size_t err_size);

/* Non-zero when buf starts with the gzip magic 1f 8b. */
int idx_is_gzip(const uint8_t *buf, size_t len);

/* Inflates a gzip stream (members may be concatenated) into a malloc'ed buffer of at most
 * max_out bytes. Returns 0 and sets *out, *out_len; or -1 with a message in err naming the
 * byte offset in the compressed input (truncated, corrupt, too large). */
int idx_gunzip(const uint8_t *buf, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
               char *err, size_t err_size);

/* Reads a whole file and inflates it when it is gzipped. *gzipped tells which. Errors are
 * complete lines naming the file ("PATH: cannot open: ...", "PATH: byte N: ..."). */
int idx_load_file(const char *path, size_t max_out, uint8_t **out, size_t *out_len,
                  int *gzipped, char *err, size_t err_size);

#endif
