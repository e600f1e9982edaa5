/* Step capture (step_capture.h): one recording of the training step, replayed while the
 * batch size and the variant stay the same. */
#include "config.h"

#include "step_capture.h"
#include "services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct step_capture {
    tp_backend backend;
    tp_tensor images, labels; /* the input buffers the recording reads; data NULL: none */
    tp_recording *recording;
    double recorded_variant;
    int warm;                 /* an unrecorded run at the input buffers' size happened */
    step_capture_stats stats;
};

int step_capture_supported(const tp_backend *backend)
{
    const tp_backend_ops *o = backend->ops;
    return o->size >= offsetof(tp_backend_ops, recording_free) + sizeof o->recording_free &&
           o->capture_begin && o->capture_end && o->replay && o->recording_free;
}

tp_status step_capture_create(const tp_backend *backend, step_capture **out)
{
    *out = NULL;
    if (!step_capture_supported(backend))
        return services_fail(TP_ERR_UNSUPPORTED,
                             "step capture: the backend cannot record its work (plugin API "
                             "1.4 capture_begin/capture_end/replay/recording_free)");
    step_capture *sc = calloc(1, sizeof *sc);
    if (!sc)
        return services_fail(TP_ERR_NOMEM, "step capture: out of memory");
    sc->backend = *backend;
    *out = sc;
    return TP_OK;
}

static void drop_recording(step_capture *sc)
{
    sc->backend.ops->recording_free(sc->backend.self, sc->recording);
    sc->recording = NULL;
}

void step_capture_invalidate(step_capture *sc)
{
    if (!sc)
        return;
    drop_recording(sc);
    sc->warm = 0;
}

static int same_form(const tp_tensor *a, const tp_tensor *b)
{
    return a->data && a->dtype == b->dtype && a->layout == b->layout &&
           a->device == b->device && a->ndim == b->ndim &&
           !memcmp(a->shape, b->shape, sizeof a->shape);
}

/* Makes one input buffer match the batch's tensor (reallocating it, which voids the
 * recording) and copies the batch in, on the compute stream. */
static tp_status load_input(step_capture *sc, tp_tensor *buf, const tp_tensor *src,
                            const char *what)
{
    const tp_backend_ops *o = sc->backend.ops;
    if (!same_form(buf, src)) {
        step_capture_invalidate(sc);
        o->free(sc->backend.self, buf);
        *buf = *src;
        buf->data = NULL;
        tp_status st = o->alloc(sc->backend.self, buf, what);
        if (st) {
            buf->data = NULL;
            return st;
        }
    }
    return o->copy(sc->backend.self, buf, src, TP_STREAM_COMPUTE);
}

/* Records fn on the input buffers. On failure *rec stays NULL and `why` says what went
 * wrong; nothing recorded has run. */
static void record(step_capture *sc, step_capture_fn fn, void *ctx, tp_recording **rec,
                   char *why, size_t why_size)
{
    const tp_backend_ops *o = sc->backend.ops;
    *rec = NULL;
    tp_status st = o->capture_begin(sc->backend.self);
    if (st) {
        snprintf(why, why_size, "%s", services_last_error());
        return;
    }
    st = fn(ctx, &sc->images, &sc->labels);
    if (st) /* the first error says why; capture_end's would only say it was discarded */
        snprintf(why, why_size, "%s", services_last_error());
    tp_status end = o->capture_end(sc->backend.self, rec);
    if (!st && end) {
        st = end;
        snprintf(why, why_size, "%s", services_last_error());
    }
    if (st) {
        o->recording_free(sc->backend.self, *rec);
        *rec = NULL;
    }
}

tp_status step_capture_run(step_capture *sc, const tp_tensor *images, const tp_tensor *labels,
                           double variant, step_capture_fn fn, void *ctx)
{
    if (sc->stats.disabled) {
        sc->stats.unrecorded++;
        return fn(ctx, images, labels);
    }
    tp_status st;
    if ((st = load_input(sc, &sc->images, images, "recorded step input images")) ||
        (st = load_input(sc, &sc->labels, labels, "recorded step input labels")))
        return st;
    if (sc->recording && sc->recorded_variant != variant)
        drop_recording(sc);
    if (!sc->recording && !sc->warm) {
        st = fn(ctx, &sc->images, &sc->labels);
        sc->warm = !st;
        sc->stats.unrecorded++;
        return st;
    }
    if (!sc->recording) {
        char why[1024] = "";
        record(sc, fn, ctx, &sc->recording, why, sizeof why);
        if (!sc->recording) {
            sc->stats.disabled = 1;
            services_host()->log(services_host(), TP_LOG_WARN, "train",
                                 "step capture: recording the training step failed, so every "
                                 "step runs op by op from now on (same results, more launch "
                                 "overhead): %s", why);
            services_clear_error();
            sc->stats.unrecorded++;
            return fn(ctx, images, labels);
        }
        sc->recorded_variant = variant;
        sc->stats.recordings++;
    }
    st = sc->backend.ops->replay(sc->backend.self, sc->recording);
    if (!st)
        sc->stats.replays++;
    return st;
}

void step_capture_get_stats(const step_capture *sc, step_capture_stats *out)
{
    memset(out, 0, sizeof *out);
    if (sc)
        *out = sc->stats;
}

void step_capture_free(step_capture *sc)
{
    if (!sc)
        return;
    drop_recording(sc);
    sc->backend.ops->free(sc->backend.self, &sc->images);
    sc->backend.ops->free(sc->backend.self, &sc->labels);
    free(sc);
}
