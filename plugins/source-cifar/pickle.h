/* A small, safe reader of the Python pickles CIFAR is distributed in.
 *
 * It is a pickle machine that knows only the opcodes those files use (protocols 2 to 5 as
 * written by Python 2 and by Python 3 with numpy 1.x and 2.x) and only these globals:
 *     numpy.core.multiarray._reconstruct   numpy._core.multiarray._reconstruct
 *     numpy.core.numeric._frombuffer       numpy._core.numeric._frombuffer
 *     numpy.ndarray   numpy.dtype   _codecs.encode
 * It never runs anything: those globals are recognised by name and interpreted here; any other
 * global, and any opcode not listed in pickle.c, is refused with a message naming the file,
 * the byte offset and the global or opcode. Every read is bounds-checked; the stack, the
 * memo and the memory the result may take are limited; nothing recurses.
 *
 * Independent of the plugin ABI, so fuzz targets link it alone. */
#ifndef TRAINPIPE_SOURCE_CIFAR_PICKLE_H
#define TRAINPIPE_SOURCE_CIFAR_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#define PK_MAX_DIMS 8

typedef enum pk_kind {
    PK_NONE = 1,
    PK_BOOL,   /* u.i is 0 or 1 */
    PK_INT,    /* u.i */
    PK_FLOAT,  /* u.f */
    PK_BYTES,  /* u.bytes: Python 2 str, bytes, bytearray */
    PK_STR,    /* u.bytes: Python 3 str, UTF-8 as in the file */
    PK_LIST,   /* u.seq */
    PK_TUPLE,  /* u.seq */
    PK_DICT,   /* u.seq: keys and values interleaved; a later duplicate key wins */
    PK_GLOBAL, /* u.global: one of pk_global_id */
    PK_DTYPE,  /* u.dtype */
    PK_ARRAY   /* u.array */
} pk_kind;

typedef enum pk_global_id {
    PK_GLOBAL_RECONSTRUCT = 1, /* numpy.(_)core.multiarray._reconstruct */
    PK_GLOBAL_NDARRAY,         /* numpy.ndarray */
    PK_GLOBAL_DTYPE,           /* numpy.dtype */
    PK_GLOBAL_FROMBUFFER,      /* numpy.(_)core.numeric._frombuffer */
    PK_GLOBAL_CODECS_ENCODE    /* _codecs.encode */
} pk_global_id;

typedef struct pk_value pk_value;

struct pk_value {
    pk_kind kind;
    union {
        int64_t i;
        double f;
        struct {
            const uint8_t *data;
            size_t len;
        } bytes;
        struct {
            pk_value **items;
            size_t count, cap;
        } seq;
        pk_global_id global;
        struct {
            char type;      /* 'b' bool, 'i' signed, 'u' unsigned, 'f' float */
            char byteorder; /* '<', '>', '|' (not applicable) or '=' (native) */
            int itemsize;   /* bytes per element */
        } dtype;
        struct {
            int built;      /* 0 between _reconstruct and BUILD */
            int ndim;
            int64_t shape[PK_MAX_DIMS];
            int fortran;    /* column-major data */
            const pk_value *dtype;
            const uint8_t *data;
            size_t len;     /* bytes: product(shape) * itemsize */
        } array;
    } u;
    pk_value *next_alloc; /* internal: every value of a document, for freeing */
};

typedef struct pk_doc pk_doc;

/* Limits; zero fields take the defaults shown. */
typedef struct pk_options {
    size_t max_stack;  /* stack entries and marks (default 1 << 20) */
    size_t max_memo;   /* memo indexes must be below this (default 1 << 22) */
    size_t max_bytes;  /* memory for values built (default 64 MiB + 4 x input length) */
} pk_options;

/* Runs the pickle in buf[0..len) up to its STOP. `name` (the file) starts every error
 * message. On success returns 0 and *out (free with pickle_free); the result may point into
 * buf, which must outlive it. On failure returns -1 with one line in err:
 * "NAME: byte OFFSET: what is wrong". */
int pickle_load(const uint8_t *buf, size_t len, const char *name, const pk_options *options,
                pk_doc **out, char *err, size_t err_size);

/* The object the pickle returned. */
const pk_value *pickle_root(const pk_doc *doc);

void pickle_free(pk_doc *doc);

/* The value stored under `key` in a dict (a str or bytes key equal to `key`), or NULL. */
const pk_value *pickle_dict_get(const pk_value *dict, const char *key);

/* Non-zero for str and bytes values. */
int pickle_is_text(const pk_value *v);

/* Element i of an integer or bool array (any byte order, 1 to 8 bytes) or of a list/tuple
 * of ints, into *out. Returns 0, or -1 when v is not such a thing or i is out of range. */
int pickle_int_at(const pk_value *v, size_t i, int64_t *out);

/* The number of elements of a list/tuple or array, or 0 for anything else. */
size_t pickle_length(const pk_value *v);

/* A printable name of a kind ("dict", "ndarray", ...). */
const char *pickle_kind_name(pk_kind kind);

#endif
