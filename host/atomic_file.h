/* Writing a file so that readers see either the old contents or the new ones, never a mix:
 * a temporary file in the same directory, fsync, rename over the target, fsync the
 * directory. Used for checkpoints and safetensors exports. */
#ifndef TRAINPIPE_HOST_ATOMIC_FILE_H
#define TRAINPIPE_HOST_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

/* The pieces of the file, written one after another. */
typedef struct atomic_piece {
    const void *data;
    size_t size;
} atomic_piece;

/* Writes the pieces to `path` atomically. On failure (disk full, no permission) the
 * temporary file is removed, whatever was at `path` before is untouched, and the message
 * names the file and the system error. */
tp_status atomic_write_file(const char *path, const atomic_piece *pieces, size_t n);

/* Reads a whole file into a malloc'd buffer (*size bytes; one extra NUL after them). */
tp_status read_whole_file(const char *path, uint8_t **data, size_t *size);

#endif
