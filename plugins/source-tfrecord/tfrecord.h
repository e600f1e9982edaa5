/* TFRecord framing: scanning a file into an index of record offsets, DALI-style text index
 * files, checking one framed record, and inflating GZIP/ZLIB shards.
 *
 * A record is: u64 length (LE), u32 masked CRC32C of those 8 bytes, `length` data bytes,
 * u32 masked CRC32C of the data. The functions here know nothing of the host (they report
 * problems through return values) so the fuzz target can drive them over memory. */
#ifndef TRAINPIPE_TFRECORD_H
#define TRAINPIPE_TFRECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TFRECORD_FRAMING 16u /* 12 header bytes + 4 data CRC bytes */

/* One record: where its framing starts and its size including the 16 framing bytes (what a
 * DALI index line holds). */
typedef struct tfrecord_entry {
    uint64_t offset;
    uint64_t size;
} tfrecord_entry;

typedef struct tfrecord_index {
    tfrecord_entry *entries;
    size_t count, capacity;
} tfrecord_index;

void tfrecord_index_free(tfrecord_index *idx);
/* Appends one entry; returns 0 or -1 when out of memory. */
int tfrecord_index_push(tfrecord_index *idx, uint64_t offset, uint64_t size);

/* How a scan ended. */
typedef enum tfrecord_end {
    TFRECORD_END_CLEAN = 0,      /* the last record ends exactly at the end of the file */
    TFRECORD_END_BAD_LENGTH = 1, /* a length CRC mismatch: the rest of the file is dropped */
    TFRECORD_END_TRUNCATED = 2   /* the file ends inside a record: that record is dropped */
} tfrecord_end;

/* Reads n bytes at offset into buf; returns the number read (short only at end of data) or
 * -1 on an I/O error. */
typedef long (*tfrecord_read_fn)(void *ctx, uint64_t offset, void *buf, size_t n);

/* Walks the framing of a file of file_size bytes, appending every whole record to idx.
 * verify_crc = 0 skips the length CRC check (lengths are still bounds-checked).
 * Returns 0 with *end (and *end_offset: where the dropped part starts) set, or -1 on a read
 * error or when out of memory. */
int tfrecord_scan(tfrecord_read_fn read, void *ctx, uint64_t file_size, int verify_crc,
                  tfrecord_index *idx, tfrecord_end *end, uint64_t *end_offset);

/* A tfrecord_read_fn over memory: ctx points to a tfrecord_memory. */
typedef struct tfrecord_memory {
    const uint8_t *data;
    size_t len;
} tfrecord_memory;
long tfrecord_read_memory(void *ctx, uint64_t offset, void *buf, size_t n);

/* Parses a DALI-style text index ("<offset> <size incl. 16 framing bytes>" per line) for a
 * file of file_size bytes into idx. Records must be in file order, not overlap, be at least
 * 16 bytes, and end inside the file. Returns 0, or -1 with *bad_line (1-based) set when
 * malformed (or 0 with no line at fault: out of memory). */
int tfrecord_index_parse(const char *text, size_t len, uint64_t file_size, tfrecord_index *idx,
                         size_t *bad_line);

/* Writes idx in the same text format. Returns 0 or -1 (errno set). */
int tfrecord_index_write(FILE *f, const tfrecord_index *idx);

/* Checks one framed record of `size` bytes (as read at an index entry): the length field must
 * equal size - 16 and, when verify_crc, both CRCs must match. Returns 0 with data/len set to
 * the payload, or -1 with *why set to a static description. */
int tfrecord_check_record(const uint8_t *rec, uint64_t size, int verify_crc,
                          const uint8_t **data, size_t *len, const char **why);

/* Guesses a shard's compression from its first bytes: a valid uncompressed record header
 * wins; then the gzip magic 1f 8b; then a zlib header (CMF/FLG with the check bits);
 * otherwise "none". */
typedef enum tfrecord_compression {
    TFRECORD_NONE = 0,
    TFRECORD_GZIP = 1,
    TFRECORD_ZLIB = 2
} tfrecord_compression;
tfrecord_compression tfrecord_detect(const uint8_t *head, size_t n);

/* Inflates a whole GZIP or ZLIB stream (zlib's windowBits 15+32 reads both; concatenated
 * gzip members are followed) from in_fd into out_fd. Returns 0, or -1 with a message in err
 * naming the compressed byte offset where it failed. */
int tfrecord_inflate(int in_fd, int out_fd, char *err, size_t errlen);

#endif
