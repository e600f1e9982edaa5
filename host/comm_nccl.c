/* NCCL for gradients in CUDA device memory (built only when configure finds NCCL).
 *
 * libnccl and libcudart are opened at run time (dlopen), like backend-cuda itself, so the
 * trainpipe binary runs on machines without CUDA; the soname of cudart is the one the
 * headers belong to, which is the library backend-cuda already loaded.
 *
 * The reductions run on a stream of our own. comm_nccl_allreduce() (after backward) follows
 * a backend sync; comm_nccl_enqueue() (during backward, comm_reducer.c) instead makes our
 * stream wait for an event recorded on the backend's compute stream, which the backend
 * shows through the API 1.3 native_stream operation. Either way one grouped ncclAllReduce
 * per call (NCCL fuses the group), and the host waits for our stream with a deadline. */
#include "config.h"

#include "comm_transport.h"
#include "services.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
/* nccl.h declares a few functions as f() rather than f(void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TP_CUDA_LIBDIR
#define TP_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

struct comm_nccl {
    void *nccl_lib, *cudart_lib;
    __typeof__(&ncclGetUniqueId) get_unique_id;
    __typeof__(&ncclCommInitRank) comm_init_rank;
    __typeof__(&ncclAllReduce) all_reduce;
    __typeof__(&ncclGroupStart) group_start;
    __typeof__(&ncclGroupEnd) group_end;
    __typeof__(&ncclCommDestroy) comm_destroy;
    __typeof__(&ncclCommAbort) comm_abort;
    __typeof__(&ncclCommGetAsyncError) comm_get_async_error;
    __typeof__(&ncclGetErrorString) nccl_error_string;
    __typeof__(&ncclGetVersion) get_version; /* optional */
    __typeof__(&cudaGetDevice) get_device;
    __typeof__(&cudaSetDevice) set_device;
    __typeof__(&cudaStreamCreateWithFlags) stream_create;
    __typeof__(&cudaStreamQuery) stream_query;
    __typeof__(&cudaStreamDestroy) stream_destroy;
    __typeof__(&cudaGetErrorString) cuda_error_string;
    __typeof__(&cudaEventCreateWithFlags) event_create;
    __typeof__(&cudaEventRecord) event_record;
    __typeof__(&cudaStreamWaitEvent) stream_wait_event;
    __typeof__(&cudaEventDestroy) event_destroy;
    ncclComm_t comm;
    /* comm_nccl_enqueue(): one event per bucket of the round, reused across rounds. */
    cudaEvent_t *events;
    size_t n_events, used_events;
    cudaStream_t stream;
    int device;
    int ready;
};

static void *open_library(const char *soname)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", TP_CUDA_LIBDIR, soname);
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    return h;
}

#define LOAD(lib, field, symbol)                                                        \
    do {                                                                                \
        if (!(n->field = (__typeof__(n->field))dlsym(lib, symbol)))                     \
            goto missing;                                                               \
    } while (0)

tp_status comm_nccl_load(comm_nccl **out)
{
    char cudart[64];
    *out = NULL;
    comm_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return TP_ERR_NOMEM;
    snprintf(cudart, sizeof cudart, "libcudart.so.%d", CUDART_VERSION / 1000);
    if (!(n->nccl_lib = open_library("libnccl.so.2")) ||
        !(n->cudart_lib = open_library(cudart)))
        goto missing;
    LOAD(n->nccl_lib, get_unique_id, "ncclGetUniqueId");
    LOAD(n->nccl_lib, comm_init_rank, "ncclCommInitRank");
    LOAD(n->nccl_lib, all_reduce, "ncclAllReduce");
    LOAD(n->nccl_lib, group_start, "ncclGroupStart");
    LOAD(n->nccl_lib, group_end, "ncclGroupEnd");
    LOAD(n->nccl_lib, comm_destroy, "ncclCommDestroy");
    LOAD(n->nccl_lib, comm_abort, "ncclCommAbort");
    LOAD(n->nccl_lib, comm_get_async_error, "ncclCommGetAsyncError");
    LOAD(n->nccl_lib, nccl_error_string, "ncclGetErrorString");
    n->get_version = (__typeof__(n->get_version))dlsym(n->nccl_lib, "ncclGetVersion");
    LOAD(n->cudart_lib, get_device, "cudaGetDevice");
    LOAD(n->cudart_lib, set_device, "cudaSetDevice");
    LOAD(n->cudart_lib, stream_create, "cudaStreamCreateWithFlags");
    LOAD(n->cudart_lib, stream_query, "cudaStreamQuery");
    LOAD(n->cudart_lib, stream_destroy, "cudaStreamDestroy");
    LOAD(n->cudart_lib, cuda_error_string, "cudaGetErrorString");
    LOAD(n->cudart_lib, event_create, "cudaEventCreateWithFlags");
    LOAD(n->cudart_lib, event_record, "cudaEventRecord");
    LOAD(n->cudart_lib, stream_wait_event, "cudaStreamWaitEvent");
    LOAD(n->cudart_lib, event_destroy, "cudaEventDestroy");
    *out = n;
    return TP_OK;
missing:
    comm_nccl_free(n);
    return TP_ERR_UNSUPPORTED;
}

static tp_status nccl_fail(comm_nccl *n, ncclResult_t r, const char *call)
{
    return services_fail(TP_ERR_LIBRARY, "%s failed: %s", call, n->nccl_error_string(r));
}

static tp_status cuda_fail(comm_nccl *n, cudaError_t e, const char *call)
{
    return services_fail(TP_ERR_LIBRARY, "%s failed: %s", call, n->cuda_error_string(e));
}

tp_status comm_nccl_init(comm_nccl *n, const comm_transport *t)
{
    ncclUniqueId id;
    ncclResult_t r;
    cudaError_t e;
    tp_status st;
    /* backend-cuda sets its device on the calling thread before each operation, so the
     * thread that reduces gradients is already on the backend's device. */
    if ((e = n->get_device(&n->device)) != cudaSuccess)
        return cuda_fail(n, e, "cudaGetDevice");
    memset(&id, 0, sizeof id);
    if (t->rank == 0 && (r = n->get_unique_id(&id)) != ncclSuccess)
        return nccl_fail(n, r, "ncclGetUniqueId");
    if (t->ops && t->size > 1 && (st = t->ops->broadcast(t->self, &id, sizeof id, 0)))
        return st;
    if ((r = n->comm_init_rank(&n->comm, t->size, id, t->rank)) != ncclSuccess)
        return nccl_fail(n, r, "ncclCommInitRank");
    if ((e = n->stream_create(&n->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return cuda_fail(n, e, "cudaStreamCreateWithFlags");
    n->ready = 1;
    int version = 0;
    if (n->get_version)
        n->get_version(&version);
    services_host()->log(services_host(), TP_LOG_INFO, "comm",
                         "rank %d: NCCL %d on CUDA device %d reduces the device gradients",
                         t->rank, version, n->device);
    return TP_OK;
}

/* Waits for our stream within the timeout; a stuck reduction (a lost peer) ends the job. */
static tp_status wait_stream(comm_nccl *n, const comm_transport *t, double start)
{
    long sleep_ns = 0;
    for (;;) {
        cudaError_t e = n->stream_query(n->stream);
        if (e == cudaSuccess)
            return TP_OK;
        if (e != cudaErrorNotReady)
            return cuda_fail(n, e, "cudaStreamQuery after ncclAllReduce");
        ncclResult_t async = ncclSuccess;
        if (n->comm_get_async_error(n->comm, &async) == ncclSuccess && async != ncclSuccess &&
            async != ncclInProgress)
            return nccl_fail(n, async, "ncclAllReduce (asynchronous error)");
        if (comm_now() - start > t->timeout) {
            n->comm_abort(n->comm);
            n->comm = NULL;
            comm_transport_fatal(t, 1,
                                 "collective allreduce (NCCL) timed out after %g s (a peer "
                                 "rank probably failed)", t->timeout);
        }
        sleep_ns = sleep_ns ? (sleep_ns < 1000000 ? sleep_ns * 2 : 1000000) : 1000;
        struct timespec ts = { 0, sleep_ns };
        nanosleep(&ts, NULL);
    }
}

/* One grouped ncclAllReduce of the tensors on our stream. */
static tp_status enqueue_group(comm_nccl *n, tp_tensor *const *tensors, size_t count)
{
    ncclResult_t r;
    if ((r = n->group_start()) != ncclSuccess)
        return nccl_fail(n, r, "ncclGroupStart");
    for (size_t i = 0; i < count; i++) {
        size_t elems = (size_t)tp_tensor_count(tensors[i]);
        if (!elems)
            continue;
        r = n->all_reduce(tensors[i]->data, tensors[i]->data, elems, ncclFloat32, ncclSum,
                          n->comm, n->stream);
        if (r != ncclSuccess) {
            (void)n->group_end();
            return nccl_fail(n, r, "ncclAllReduce");
        }
    }
    if ((r = n->group_end()) != ncclSuccess)
        return nccl_fail(n, r, "ncclGroupEnd");
    return TP_OK;
}

tp_status comm_nccl_allreduce(comm_nccl *n, const comm_transport *t, tp_tensor *const *tensors,
                              size_t count)
{
    cudaError_t e;
    tp_status st;
    if (!n->ready)
        return services_fail(TP_ERR_INVALID, "comm: NCCL is not initialised");
    double start = comm_now();
    if ((e = n->set_device(n->device)) != cudaSuccess)
        return cuda_fail(n, e, "cudaSetDevice");
    if ((st = enqueue_group(n, tensors, count)))
        return st;
    return wait_stream(n, t, start);
}

tp_status comm_nccl_enqueue(comm_nccl *n, void *compute_stream, tp_tensor *const *tensors,
                            size_t count)
{
    cudaError_t e;
    if (!n->ready)
        return services_fail(TP_ERR_INVALID, "comm: NCCL is not initialised");
    if ((e = n->set_device(n->device)) != cudaSuccess)
        return cuda_fail(n, e, "cudaSetDevice");
    if (n->used_events == n->n_events) {
        cudaEvent_t *grown = realloc(n->events, (n->n_events + 1) * sizeof *grown);
        if (!grown)
            return services_fail(TP_ERR_NOMEM, "comm: out of memory");
        n->events = grown;
        if ((e = n->event_create(&n->events[n->n_events], cudaEventDisableTiming)) !=
            cudaSuccess)
            return cuda_fail(n, e, "cudaEventCreateWithFlags");
        n->n_events++;
    }
    cudaEvent_t ev = n->events[n->used_events++];
    /* The gradients are written by kernels queued on the compute stream so far. */
    if ((e = n->event_record(ev, (cudaStream_t)compute_stream)) != cudaSuccess)
        return cuda_fail(n, e, "cudaEventRecord on the backend's compute stream");
    if ((e = n->stream_wait_event(n->stream, ev, 0)) != cudaSuccess)
        return cuda_fail(n, e, "cudaStreamWaitEvent");
    return enqueue_group(n, tensors, count);
}

tp_status comm_nccl_wait(comm_nccl *n, const comm_transport *t)
{
    if (!n->ready)
        return services_fail(TP_ERR_INVALID, "comm: NCCL is not initialised");
    n->used_events = 0; /* an event may be re-recorded once our stream waited past it */
    return wait_stream(n, t, comm_now());
}

void comm_nccl_free(comm_nccl *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_events; i++)
        n->event_destroy(n->events[i]);
    free(n->events);
    if (n->stream && n->stream_destroy)
        n->stream_destroy(n->stream);
    if (n->comm && n->comm_destroy)
        n->comm_destroy(n->comm);
    /* The libraries stay loaded: backend-cuda shares cudart, and NCCL keeps threads. */
    free(n);
}
