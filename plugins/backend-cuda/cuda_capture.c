/* backend-cuda: recordings of the compute stream as CUDA graphs (plugin API 1.4).
 *
 * capture_begin puts the compute stream into stream capture in thread-local mode, so only
 * the recording thread is restricted. Every other thread that enters the instance waits
 * (cuda_capture_gate) until the recording ends: the data loader's device stage enqueues
 * batch conversions and augmenters on the same compute stream, and its kernels must not
 * slip into a training step's graph. Threads waiting on the host without the lock
 * (event_sync, sync) are counted, and a recording starts only when none is inside a wait,
 * because synchronising a stream that is being captured would spoil the capture.
 *
 * Anything that fails while recording, or a call that cannot be recorded (allocation, a
 * copy to or from ordinary host memory, a host wait), marks the recording spoiled;
 * capture_end then discards the graph and reports it. An instantiated graph keeps the data
 * pointers and kernel arguments of the recording, which is what API 1.4 promises. */
#include "config.h"

#include "backend_cuda.h"

struct tp_recording {
    cudaGraphExec_t exec;
};

int cuda_recording_here(const cuda_backend *b)
{
    return b->capturing && pthread_equal(b->capture_owner, pthread_self());
}

void cuda_capture_gate(cuda_backend *b)
{
    while (b->capturing && !pthread_equal(b->capture_owner, pthread_self()))
        pthread_cond_wait(&b->capture_cond, &b->lock);
}

void cuda_capture_note(cuda_backend *b, tp_status st)
{
    if (st && cuda_recording_here(b))
        b->capture_spoiled = 1;
}

tp_status cuda_capture_forbid(cuda_backend *b, const char *op)
{
    if (!cuda_recording_here(b))
        return TP_OK;
    b->capture_spoiled = 1;
    return b->host->fail(b->host, TP_ERR_INVALID,
                         "%s: not allowed while recording the compute stream (capture_begin "
                         "... capture_end): allocate, free, wait and copy through host memory "
                         "before or after the recording", op);
}

tp_status cuda_capture_begin(cuda_backend *b)
{
    for (;;) {
        cuda_capture_gate(b); /* another thread's recording ends first */
        if (b->capturing)
            return b->host->fail(b->host, TP_ERR_INVALID,
                                 "capture_begin: this thread is already recording");
        if (b->host_waits == 0)
            break;
        pthread_cond_wait(&b->capture_cond, &b->lock);
    }
    tp_status st = CUDA_RT(cudaStreamBeginCapture(b->compute, cudaStreamCaptureModeThreadLocal));
    if (st)
        return st;
    b->capturing = 1;
    b->capture_spoiled = 0;
    b->capture_owner = pthread_self();
    return TP_OK;
}

tp_status cuda_capture_end(cuda_backend *b, tp_recording **out)
{
    *out = NULL;
    if (!cuda_recording_here(b))
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "capture_end: this thread is not recording (call capture_begin "
                             "first)");
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(b->compute, &graph);
    int spoiled = b->capture_spoiled;
    b->capturing = 0;
    b->capture_spoiled = 0;
    pthread_cond_broadcast(&b->capture_cond);
    if (e != cudaSuccess || !graph || spoiled) {
        (void)cudaGetLastError();
        if (graph)
            (void)cudaGraphDestroy(graph);
        if (spoiled)
            return b->host->fail(b->host, TP_ERR_INVALID,
                                 "capture_end: an operation failed while recording, so the "
                                 "recording was discarded (nothing of it ran)");
        return b->host->fail(b->host, TP_ERR_LIBRARY,
                             "cudaStreamEndCapture(compute stream) failed: %s (%s); the "
                             "recording was discarded (nothing of it ran)",
                             cudaGetErrorString(e), cudaGetErrorName(e));
    }
    tp_recording *r = b->host->calloc(1, sizeof *r);
    tp_status st = r ? TP_OK : b->host->fail(b->host, TP_ERR_NOMEM, "capture_end: out of memory");
    size_t nodes = 0;
    if (!st)
        st = CUDA_RT(cudaGraphGetNodes(graph, NULL, &nodes));
    if (!st) {
        st = CUDA_RT(cudaGraphInstantiate(&r->exec, graph, 0));
        if (!st)
            b->live_recordings++; /* arena buffers it points into now outlive regrowth */
        else
            r->exec = NULL;
    }
    /* Uploading now keeps the first replay from paying for it inside a step. */
    if (!st)
        st = CUDA_RT(cudaGraphUpload(r->exec, b->compute));
    (void)cudaGraphDestroy(graph);
    if (st) {
        cuda_recording_free(b, r);
        return st;
    }
    b->host->log(b->host, TP_LOG_DEBUG, "cuda", "recorded a CUDA graph of %zu nodes", nodes);
    *out = r;
    return TP_OK;
}

tp_status cuda_replay(cuda_backend *b, tp_recording *r)
{
    if (!r || !r->exec)
        return b->host->fail(b->host, TP_ERR_INVALID, "replay: NULL recording");
    if (b->capturing)
        return b->host->fail(b->host, TP_ERR_INVALID,
                             "replay: not allowed while recording (a graph cannot launch "
                             "itself into another capture here)");
    return CUDA_RT(cudaGraphLaunch(r->exec, b->compute));
}

void cuda_recording_free(cuda_backend *b, tp_recording *r)
{
    if (!r)
        return;
    if (r->exec) {
        if (cudaGraphExecDestroy(r->exec) != cudaSuccess)
            (void)cudaGetLastError();
        if (b->live_recordings > 0 && --b->live_recordings == 0)
            cuda_retired_release(b);
    }
    b->host->free(r);
}
