/* Checkpoint files: a safetensors image (the model's tensors, the optimizer's state and the
 * trainer's position) compressed in one LZ4 frame behind a small fixed header.
 *
 * Layout (version 1; integers little-endian):
 *   offset  size
 *        0     8  magic "TPCKPT\r\n" (the CR LF catches text-mode transfers)
 *        8     4  format version, 1
 *       12     4  flags, 0 (a reader refuses bits it does not know)
 *       16     8  payload size in bytes, uncompressed
 *       24     4  CRC-32 (the zlib / IEEE polynomial) of the uncompressed payload
 *       28     4  CRC-32 of bytes 0..27
 *       32     .  one LZ4 frame with content size and content checksum, holding the payload;
 *                 nothing may follow it.
 * Payload: a safetensors image. Model tensors keep their graph names (conv1.weight, ...),
 * optimizer state is stored as "optimizer/" + its name, and __metadata__ holds the trainer's
 * state as decimal strings (see trainer.c).
 *
 * Files are written atomically (atomic_file.h), so a crash leaves either the complete new
 * checkpoint or none, and never touches the older ones. */
#ifndef TRAINPIPE_HOST_CHECKPOINT_H
#define TRAINPIPE_HOST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

#include "safetensors.h"

#define CHECKPOINT_MAGIC "TPCKPT\r\n"
#define CHECKPOINT_VERSION 1u
#define CHECKPOINT_HEADER_SIZE 32u
/* Prefix of the optimizer's tensors in the payload. */
#define CHECKPOINT_OPTIMIZER_PREFIX "optimizer/"

/* Compresses `payload` and writes the checkpoint to path atomically. */
tp_status checkpoint_write(const char *path, const uint8_t *payload, size_t size);

/* Reads and checks a checkpoint (header, LZ4 frame, both checksums, the safetensors image).
 * A truncated or corrupted file is refused with a message naming the file, the byte offset
 * where relevant, and what is wrong. */
tp_status checkpoint_read(const char *path, safetensors_file **out);

/* Decodes a checkpoint image already in memory (`label` names it in messages). */
tp_status checkpoint_decode(const uint8_t *bytes, size_t size, const char *label,
                            safetensors_file **out);

#endif
