/* A test double for the plugin API 1.4 recordings (capture_begin ... capture_end, replay):
 * it wraps another backend (the naive one in the tests) and, while recording, stores each
 * call with copies of its tensor descriptors, descriptors and scalars instead of running
 * it; replay runs the stored calls again. That is what a CUDA graph does with data pointers
 * and kernel arguments, so host code built on recordings (host/step_capture.c) can be
 * checked on a machine without a GPU: a recording made with the wrong buffers, or kept
 * after they moved, gives different numbers (or use after free) here as it would there.
 *
 * As the API says, allocating, freeing, synchronising and copying through host memory
 * fail while recording and spoil the recording (every tensor of the naive backend lives in
 * host memory but is labelled device, so device-to-device copies record). */
#ifndef TRAINPIPE_TEST_RECORDING_BACKEND_H
#define TRAINPIPE_TEST_RECORDING_BACKEND_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

/* The wrapped backend (one per process; calling it again rewraps). */
tp_backend recording_backend(tp_backend inner);

/* Calls stored by the last successful recording, and replays so far. */
size_t recording_backend_calls(void);
long recording_backend_replays(void);
/* Recordings begun and not ended, and recordings alive (not freed): leak checks. */
int recording_backend_open(void);
long recording_backend_live(void);

/* Makes the next recording fail at its n-th stored call (1-based; 0: never), as an
 * operation a real backend could not record would. */
void recording_backend_fail_at(size_t n);

#endif
