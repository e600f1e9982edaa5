/* The prefetch ring: N slots (the prefetch depth) that carry batches from the data workers
 * to the trainer.
 *
 * Each slot holds a pinned host batch (u8 NHWC images, i32 labels, sample keys) and a device
 * batch (f32 images in the backend's layout, i32 labels), all allocated through the backend.
 * A slot cycles
 *
 *     FREE -> FILLING -> FILLED -> READY -> IN_USE -> FREE
 *
 * FILLING: the workers collate samples into the host buffers. FILLED: the host side is done
 * and the slot has its sequence number; the device stage (upload, u8 -> f32, batch
 * augmenters) is under way. READY: the device work is enqueued and `ready` recorded.
 * IN_USE: the consumer holds it. The producer blocks while no slot is FREE, the consumer
 * while its next sequence number is not READY; a stop or an end wakes everybody.
 *
 * Device ordering uses events only (never a device-wide sync):
 *   - upload: the copy stream waits for `consumed` (the previous user of the device buffers
 *     is done), copies, records `copied`; the compute stream waits for `copied`;
 *   - mark_ready records `ready` on the compute stream (after the batch augmenters);
 *   - release records `consumed` on the compute stream (after the trainer's work);
 *   - acquire waits on the host for the event after which the host buffers are no longer
 *     read (`copied`, or `consumed` when the backend has no device memory).
 * With has_device_memory == 0 (backend-cpu) there is no upload: the conversion reads the
 * pinned host batch and the device labels alias the host labels.
 *
 * Thread safety: every function may be called from any thread; one mutex guards the states.
 * Buffers of a slot belong to whichever thread moved it into its current state. */
#ifndef TRAINPIPE_HOST_RING_H
#define TRAINPIPE_HOST_RING_H

#include <stdint.h>

#include <trainpipe/trainpipe.h>

typedef enum ring_state {
    RING_FREE = 0,
    RING_FILLING = 1,
    RING_FILLED = 2,
    RING_READY = 3,
    RING_IN_USE = 4
} ring_state;

typedef struct ring_slot {
    int index;          /* position in the ring */
    ring_state state;   /* read it only under the ring's lock (ring_slot_state) */
    int64_t sequence;   /* batch number, assigned by ring_mark_filled */
    double filled_at;   /* services_monotonic_seconds() at ring_mark_filled */

    /* The image size the buffers are allocated for (0 until ring_reserve). */
    int height, width, channels;

    /* Host side (pinned): capacity rows; the producer fills `count` of them. */
    tp_tensor host_images; /* u8, NHWC, (capacity, C, H, W) */
    tp_tensor host_labels; /* i32, (capacity) */
    tp_sample_key *keys;   /* capacity keys, ordinary host memory */

    /* Device side. dev_u8 exists only with device memory; dev_labels aliases host_labels
     * without it. */
    tp_tensor dev_u8;     /* u8, NHWC, (capacity, C, H, W) */
    tp_tensor dev_images; /* f32, (capacity, C, H, W) in the ring's layout */
    tp_tensor dev_labels; /* i32, (capacity) */

    /* Filled in by the producer before ring_mark_filled. */
    int count;     /* samples in this batch, 1..capacity */
    int64_t epoch; /* the epoch the samples belong to */
    int64_t position_end; /* epoch position after the batch's last sample */

    /* Events (NULL on a backend without events: it then runs synchronously). */
    tp_event *copied, *ready, *consumed;
    int copied_recorded, ready_recorded, consumed_recorded;
} ring_slot;

typedef struct ring ring;

/* Creates `depth` slots for batches of up to `capacity` images whose f32 device copy uses
 * `layout`. Buffers are allocated now when height/width/channels are all known (> 0), else
 * on first use by ring_reserve. Fails (with a message) on bad arguments, a backend lacking
 * alloc/free/copy, or a backend with device memory but no events. */
tp_status ring_create(const tp_backend *backend, int depth, int capacity, tp_layout layout,
                      int height, int width, int channels, ring **out);

/* Waits for outstanding device work on the slots' events, then frees everything. No other
 * thread may use the ring any more (call ring_stop and join them first). */
void ring_destroy(ring *r);

/* 1 when the backend has separate device memory (an upload is needed). */
int ring_has_device_memory(const ring *r);
int ring_depth(const ring *r);
int ring_capacity(const ring *r);

/* ---- producer */

/* Takes a FREE slot (blocking while none is), moves it to FILLING and waits until its host
 * buffers may be rewritten. Returns the end status instead once ring_finish or ring_stop
 * happened (TP_ERR_INTERRUPTED after ring_stop). */
tp_status ring_acquire(ring *r, ring_slot **slot);

/* Makes a FILLING slot's buffers fit images of height x width x channels, reallocating them
 * (after its earlier device work has finished) when the size differs. */
tp_status ring_reserve(ring *r, ring_slot *slot, int height, int width, int channels);

/* FILLING -> FILLED: assigns the next sequence number (returned) and wakes the device stage.
 * slot->count and slot->epoch must be set. */
int64_t ring_mark_filled(ring *r, ring_slot *slot);

/* FILLING -> FREE without a batch (a dropped partial batch, or an error). */
void ring_discard(ring *r, ring_slot *slot);

/* The sequence number the next ring_mark_filled will assign. */
int64_t ring_next_sequence(ring *r);

/* ---- device stage */

/* Waits for the FILLED slot with sequence `seq`; returns the end status when seq is at or
 * past the end, TP_ERR_INTERRUPTED after ring_stop. */
tp_status ring_wait_filled(ring *r, int64_t seq, ring_slot **slot);

/* Copies the slot's first `count` images and labels to the device on the copy stream, after
 * the previous user of those buffers, and makes the compute stream wait for the copy.
 * Nothing to do without device memory. */
tp_status ring_upload(ring *r, ring_slot *slot);

/* The u8 batch the conversion reads: dev_u8, or host_images without device memory. */
const tp_tensor *ring_u8_source(const ring *r, const ring_slot *slot);

/* Records `ready` on the compute stream; FILLED -> READY; wakes the consumer. */
tp_status ring_mark_ready(ring *r, ring_slot *slot);

/* ---- consumer */

/* Waits for the slot with sequence `seq` to be READY and moves it to IN_USE. Returns the end
 * status (TP_ERR_END or the error recorded by ring_finish) once seq is at or past the end,
 * TP_ERR_INTERRUPTED after ring_stop. */
tp_status ring_wait_ready(ring *r, int64_t seq, ring_slot **slot);

/* Records `consumed` on the compute stream (the device buffers are free once the work the
 * consumer enqueued is done); IN_USE -> FREE; wakes the producer. */
tp_status ring_release(ring *r, ring_slot *slot);

/* ---- ending */

/* Declares that no batch with sequence >= seq will be delivered; waits at or past it return
 * `status` (TP_ERR_END for a normal end). The earliest end wins; on a tie an error wins over
 * TP_ERR_END. `message` (may be NULL) is kept for ring_end_status. */
void ring_finish(ring *r, int64_t seq, tp_status status, const char *message);

/* The end status and its message (copied into buf), or TP_OK while not finished. */
tp_status ring_end_status(ring *r, char *buf, size_t size);

/* Wakes every waiter; from now on all waits return TP_ERR_INTERRUPTED. */
void ring_stop(ring *r);

/* The slot's state, read under the lock. */
ring_state ring_slot_state(ring *r, const ring_slot *slot);

#endif
