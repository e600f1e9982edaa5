/* One TensorBoard event file: a TFRecord stream of serialized Event messages.
 *
 * Records are framed in memory (length, masked CRC32C of the length, data, masked CRC32C of
 * the data) and queued whole in a pending buffer; event_file_write() hands the queue to the
 * kernel (looping over short writes), so a reader never sees a record that was assembled in
 * pieces. Every failure is reported through host->fail() with the file's path. */
#ifndef TP_LOG_TENSORBOARD_EVENT_FILE_H
#define TP_LOG_TENSORBOARD_EVENT_FILE_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

#include "pb_writer.h"

typedef struct event_file {
    int fd;          /* -1 when closed */
    char *path;
    pb_buf pending;  /* framed records not yet written */
} event_file;

void event_file_init(event_file *f);

/* Creates every missing directory of `dir` (like mkdir -p). */
tp_status event_file_mkdirs(const tp_host *host, const char *dir);

/* Creates a new event file in dir (which must exist), named
 *     events.out.tfevents.<10-digit unix seconds>.<hostname>.<pid>.<counter>
 * with O_EXCL. TensorBoard reads the files of a directory in name order, so when an older
 * event file's name would sort after ours (clock skew, or two files in one second) the
 * seconds field is advanced until the new name sorts last. */
tp_status event_file_open(event_file *f, const tp_host *host, const char *dir, double now);

/* Frames one serialized Event and queues it. */
tp_status event_file_append(event_file *f, const tp_host *host, const uint8_t *event,
                            size_t len);

/* Writes everything queued. */
tp_status event_file_write(event_file *f, const tp_host *host);

/* Writes everything queued, fdatasync()s, and checks the file is still reachable under its
 * name (a deleted file or directory would otherwise swallow every later record silently). */
tp_status event_file_sync(event_file *f, const tp_host *host);

/* Closes without writing what is queued (after a failure, or from destroy). */
void event_file_close(event_file *f);

/* Bytes queued and not yet written. */
static inline size_t event_file_pending(const event_file *f) { return f->pending.len; }

#endif
