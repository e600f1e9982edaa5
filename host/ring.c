/* The prefetch ring buffer (see ring.h for the slot life cycle and the event protocol). */
#include "config.h"

#include "ring.h"
#include "services.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING_MESSAGE_MAX 1024

struct ring {
    const tp_backend *be;
    int depth, capacity;
    tp_layout layout;
    int has_device_memory;
    int has_events;
    ring_slot *slots;

    pthread_mutex_t lock;
    pthread_cond_t cv_free;   /* a slot became FREE */
    pthread_cond_t cv_filled; /* a slot became FILLED */
    pthread_cond_t cv_ready;  /* a slot became READY */
    int64_t next_sequence;
    int next_hint; /* where the search for a FREE slot starts, to cycle through slots */
    int stopped;
    int finished;
    int64_t end_sequence;
    tp_status end_status;
    char end_message[RING_MESSAGE_MAX];
};

static const char *slot_buffer_name(char *buf, size_t size, int index, const char *what)
{
    snprintf(buf, size, "ring slot %d %s", index, what);
    return buf;
}

static void slot_free_buffers(ring *r, ring_slot *s)
{
    const tp_backend *be = r->be;
    tp_tensor *owned[] = { &s->host_images, &s->host_labels, &s->dev_u8, &s->dev_images,
                           r->has_device_memory ? &s->dev_labels : NULL };
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (owned[i] && owned[i]->data)
            be->ops->free(be->self, owned[i]);
    memset(&s->host_images, 0, sizeof s->host_images);
    memset(&s->host_labels, 0, sizeof s->host_labels);
    memset(&s->dev_u8, 0, sizeof s->dev_u8);
    memset(&s->dev_images, 0, sizeof s->dev_images);
    memset(&s->dev_labels, 0, sizeof s->dev_labels);
    s->height = s->width = s->channels = 0;
}

static tp_status alloc_tensor(ring *r, ring_slot *s, tp_tensor *t, tp_tensor desc,
                              tp_device device, const char *what)
{
    char name[96];
    desc.device = device;
    *t = desc;
    tp_status st =
        r->be->ops->alloc(r->be->self, t, slot_buffer_name(name, sizeof name, s->index, what));
    if (st)
        t->data = NULL;
    return st;
}

static tp_status slot_alloc_buffers(ring *r, ring_slot *s, int h, int w, int c)
{
    const int64_t n = r->capacity;
    tp_status st;
    if ((st = alloc_tensor(r, s, &s->host_images,
                           tp_tensor_4d(TP_DTYPE_U8, TP_LAYOUT_NHWC, n, c, h, w), TP_DEVICE_PINNED,
                           "host images")) ||
        (st = alloc_tensor(r, s, &s->host_labels, tp_tensor_2d(TP_DTYPE_I32, n, 0),
                           TP_DEVICE_PINNED, "host labels")) ||
        (st = alloc_tensor(r, s, &s->dev_images,
                           tp_tensor_4d(TP_DTYPE_F32, r->layout, n, c, h, w), TP_DEVICE_DEVICE,
                           "device images")))
        goto fail;
    if (r->has_device_memory) {
        if ((st = alloc_tensor(r, s, &s->dev_u8,
                               tp_tensor_4d(TP_DTYPE_U8, TP_LAYOUT_NHWC, n, c, h, w),
                               TP_DEVICE_DEVICE, "device u8 images")) ||
            (st = alloc_tensor(r, s, &s->dev_labels, tp_tensor_2d(TP_DTYPE_I32, n, 0),
                               TP_DEVICE_DEVICE, "device labels")))
            goto fail;
    } else {
        /* "Device" memory is host memory: the labels need no second copy. */
        s->dev_labels = s->host_labels;
        s->dev_labels.device = TP_DEVICE_DEVICE;
    }
    s->height = h;
    s->width = w;
    s->channels = c;
    return TP_OK;
fail:
    slot_free_buffers(r, s);
    return st;
}

/* Waits on the host for every event of the slot that was recorded. */
static tp_status slot_quiesce(ring *r, ring_slot *s)
{
    tp_status st = TP_OK, st2;
    if (!r->has_events)
        return TP_OK;
    tp_event *evs[] = { s->copied, s->ready, s->consumed };
    int rec[] = { s->copied_recorded, s->ready_recorded, s->consumed_recorded };
    for (int i = 0; i < 3; i++)
        if (rec[i] && (st2 = r->be->ops->event_sync(r->be->self, evs[i])) && !st)
            st = st2;
    return st;
}

tp_status ring_create(const tp_backend *backend, int depth, int capacity, tp_layout layout,
                      int height, int width, int channels, ring **out)
{
    *out = NULL;
    if (!backend || !backend->ops)
        return services_fail(TP_ERR_INVALID, "ring_create: no backend");
    const tp_backend_ops *ops = backend->ops;
    if (depth < 1 || depth > 1024 || capacity < 1)
        return services_fail(TP_ERR_INVALID,
                             "ring_create: prefetch depth %d (1..1024) or batch size %d (>= 1) "
                             "out of range",
                             depth, capacity);
    if (!ops->alloc || !ops->free || !ops->info)
        return services_fail(TP_ERR_UNSUPPORTED, "ring_create: the backend lacks info/alloc/free");
    tp_backend_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    tp_status st = ops->info(backend->self, &info);
    if (st)
        return st;
    const int has_events = ops->event_create && ops->event_destroy && ops->event_record &&
                           ops->stream_wait && ops->event_sync;
    if (info.has_device_memory && (!has_events || !ops->copy))
        return services_fail(TP_ERR_UNSUPPORTED,
                             "ring_create: backend '%s' has device memory but lacks copy or the "
                             "event operations the ring orders its streams with",
                             info.name ? info.name : "?");

    ring *r = calloc(1, sizeof *r);
    if (!r)
        return services_fail(TP_ERR_NOMEM, "ring_create: out of memory");
    r->be = backend;
    r->depth = depth;
    r->capacity = capacity;
    r->layout = layout;
    r->has_device_memory = info.has_device_memory != 0;
    r->has_events = has_events;
    r->end_sequence = INT64_MAX;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cv_free, NULL);
    pthread_cond_init(&r->cv_filled, NULL);
    pthread_cond_init(&r->cv_ready, NULL);
    r->slots = calloc((size_t)depth, sizeof *r->slots);
    if (!r->slots) {
        st = services_fail(TP_ERR_NOMEM, "ring_create: out of memory");
        goto fail;
    }
    for (int i = 0; i < depth; i++) {
        ring_slot *s = &r->slots[i];
        s->index = i;
        s->sequence = -1;
        s->keys = calloc((size_t)capacity, sizeof *s->keys);
        if (!s->keys) {
            st = services_fail(TP_ERR_NOMEM, "ring_create: cannot allocate %d sample keys",
                               capacity);
            goto fail;
        }
        if (has_events &&
            ((st = ops->event_create(backend->self, &s->copied)) ||
             (st = ops->event_create(backend->self, &s->ready)) ||
             (st = ops->event_create(backend->self, &s->consumed))))
            goto fail;
        if (height > 0 && width > 0 && channels > 0 &&
            (st = slot_alloc_buffers(r, s, height, width, channels)))
            goto fail;
    }
    *out = r;
    return TP_OK;
fail:
    ring_destroy(r);
    return st;
}

void ring_destroy(ring *r)
{
    if (!r)
        return;
    for (int i = 0; r->slots && i < r->depth; i++) {
        ring_slot *s = &r->slots[i];
        slot_quiesce(r, s); /* best effort: the buffers go away either way */
        slot_free_buffers(r, s);
        tp_event *evs[] = { s->copied, s->ready, s->consumed };
        for (int k = 0; k < 3; k++)
            if (evs[k])
                r->be->ops->event_destroy(r->be->self, evs[k]);
        free(s->keys);
    }
    free(r->slots);
    pthread_cond_destroy(&r->cv_free);
    pthread_cond_destroy(&r->cv_filled);
    pthread_cond_destroy(&r->cv_ready);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int ring_has_device_memory(const ring *r) { return r->has_device_memory; }
int ring_depth(const ring *r) { return r->depth; }
int ring_capacity(const ring *r) { return r->capacity; }

/* Under the lock: the status a waiter at `seq` gets instead of a slot, or TP_OK. */
static tp_status end_for(const ring *r, int64_t seq)
{
    if (r->stopped)
        return TP_ERR_INTERRUPTED;
    if (r->finished && seq >= r->end_sequence)
        return r->end_status;
    return TP_OK;
}

tp_status ring_acquire(ring *r, ring_slot **slot)
{
    *slot = NULL;
    ring_slot *s = NULL;
    tp_status st;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        /* A producer gets nothing new after any end. */
        if ((st = end_for(r, INT64_MAX)))
            break;
        for (int k = 0; k < r->depth && !s; k++) {
            ring_slot *c = &r->slots[(r->next_hint + k) % r->depth];
            if (c->state == RING_FREE)
                s = c;
        }
        if (s) {
            s->state = RING_FILLING;
            r->next_hint = (s->index + 1) % r->depth;
            break;
        }
        pthread_cond_wait(&r->cv_free, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    if (st)
        return st;
    /* The host buffers may still be read by an earlier copy (or, without device memory, by
     * the conversion and the trainer): wait for exactly that, on the host. */
    if (r->has_events) {
        int rec = r->has_device_memory ? s->copied_recorded : s->consumed_recorded;
        tp_event *ev = r->has_device_memory ? s->copied : s->consumed;
        if (rec && (st = r->be->ops->event_sync(r->be->self, ev))) {
            ring_discard(r, s);
            return st;
        }
    }
    s->count = 0;
    *slot = s;
    return TP_OK;
}

tp_status ring_reserve(ring *r, ring_slot *slot, int height, int width, int channels)
{
    if (height <= 0 || width <= 0 || channels <= 0)
        return services_fail(TP_ERR_INVALID, "ring_reserve: image size %dx%dx%d is not positive",
                             height, width, channels);
    if (slot->height == height && slot->width == width && slot->channels == channels &&
        slot->host_images.data)
        return TP_OK;
    tp_status st = slot_quiesce(r, slot);
    if (st)
        return st;
    slot_free_buffers(r, slot);
    return slot_alloc_buffers(r, slot, height, width, channels);
}

int64_t ring_mark_filled(ring *r, ring_slot *slot)
{
    pthread_mutex_lock(&r->lock);
    int64_t seq = r->next_sequence++;
    slot->sequence = seq;
    slot->filled_at = services_monotonic_seconds();
    slot->state = RING_FILLED;
    pthread_cond_broadcast(&r->cv_filled);
    pthread_mutex_unlock(&r->lock);
    return seq;
}

void ring_discard(ring *r, ring_slot *slot)
{
    pthread_mutex_lock(&r->lock);
    slot->state = RING_FREE;
    slot->count = 0;
    pthread_cond_broadcast(&r->cv_free);
    pthread_mutex_unlock(&r->lock);
}

int64_t ring_next_sequence(ring *r)
{
    pthread_mutex_lock(&r->lock);
    int64_t seq = r->next_sequence;
    pthread_mutex_unlock(&r->lock);
    return seq;
}

/* Under the lock: the slot in `state` with sequence `seq`, or NULL. */
static ring_slot *find_slot(ring *r, ring_state state, int64_t seq)
{
    for (int i = 0; i < r->depth; i++)
        if (r->slots[i].state == state && r->slots[i].sequence == seq)
            return &r->slots[i];
    return NULL;
}

tp_status ring_wait_filled(ring *r, int64_t seq, ring_slot **slot)
{
    tp_status st;
    *slot = NULL;
    pthread_mutex_lock(&r->lock);
    while (!(st = end_for(r, seq)) && !(*slot = find_slot(r, RING_FILLED, seq)))
        pthread_cond_wait(&r->cv_filled, &r->lock);
    pthread_mutex_unlock(&r->lock);
    return st;
}

tp_status ring_upload(ring *r, ring_slot *s)
{
    if (!r->has_device_memory)
        return TP_OK;
    const tp_backend_ops *ops = r->be->ops;
    void *be = r->be->self;
    tp_tensor src = s->host_images, dst = s->dev_u8;
    tp_tensor lsrc = s->host_labels, ldst = s->dev_labels;
    src.shape[0] = dst.shape[0] = lsrc.shape[0] = ldst.shape[0] = s->count;
    tp_status st;
    /* The previous batch in these device buffers must be finished with before overwriting. */
    if (s->consumed_recorded && (st = ops->stream_wait(be, TP_STREAM_COPY, s->consumed)))
        return st;
    if ((st = ops->copy(be, &dst, &src, TP_STREAM_COPY)) ||
        (st = ops->copy(be, &ldst, &lsrc, TP_STREAM_COPY)) ||
        (st = ops->event_record(be, s->copied, TP_STREAM_COPY)))
        return st;
    s->copied_recorded = 1;
    return ops->stream_wait(be, TP_STREAM_COMPUTE, s->copied);
}

const tp_tensor *ring_u8_source(const ring *r, const ring_slot *slot)
{
    return r->has_device_memory ? &slot->dev_u8 : &slot->host_images;
}

tp_status ring_mark_ready(ring *r, ring_slot *slot)
{
    if (r->has_events) {
        tp_status st = r->be->ops->event_record(r->be->self, slot->ready, TP_STREAM_COMPUTE);
        if (st)
            return st;
        slot->ready_recorded = 1;
    }
    pthread_mutex_lock(&r->lock);
    slot->state = RING_READY;
    pthread_cond_broadcast(&r->cv_ready);
    pthread_mutex_unlock(&r->lock);
    return TP_OK;
}

tp_status ring_wait_ready(ring *r, int64_t seq, ring_slot **slot)
{
    tp_status st;
    *slot = NULL;
    pthread_mutex_lock(&r->lock);
    while (!(st = end_for(r, seq)) && !(*slot = find_slot(r, RING_READY, seq)))
        pthread_cond_wait(&r->cv_ready, &r->lock);
    if (*slot)
        (*slot)->state = RING_IN_USE;
    pthread_mutex_unlock(&r->lock);
    return st;
}

tp_status ring_release(ring *r, ring_slot *slot)
{
    tp_status st = TP_OK;
    if (r->has_events) {
        st = r->be->ops->event_record(r->be->self, slot->consumed, TP_STREAM_COMPUTE);
        if (!st)
            slot->consumed_recorded = 1;
    }
    pthread_mutex_lock(&r->lock);
    slot->state = RING_FREE;
    pthread_cond_broadcast(&r->cv_free);
    pthread_mutex_unlock(&r->lock);
    return st;
}

void ring_finish(ring *r, int64_t seq, tp_status status, const char *message)
{
    pthread_mutex_lock(&r->lock);
    int replace = !r->finished || seq < r->end_sequence ||
                  (seq == r->end_sequence && r->end_status == TP_ERR_END && status != TP_ERR_END);
    if (replace) {
        r->finished = 1;
        r->end_sequence = seq;
        r->end_status = status;
        snprintf(r->end_message, sizeof r->end_message, "%s", message ? message : "");
    }
    pthread_cond_broadcast(&r->cv_free);
    pthread_cond_broadcast(&r->cv_filled);
    pthread_cond_broadcast(&r->cv_ready);
    pthread_mutex_unlock(&r->lock);
}

tp_status ring_end_status(ring *r, char *buf, size_t size)
{
    pthread_mutex_lock(&r->lock);
    tp_status st = r->finished ? r->end_status : TP_OK;
    if (buf && size)
        snprintf(buf, size, "%s", r->finished ? r->end_message : "");
    pthread_mutex_unlock(&r->lock);
    return st;
}

void ring_stop(ring *r)
{
    pthread_mutex_lock(&r->lock);
    r->stopped = 1;
    pthread_cond_broadcast(&r->cv_free);
    pthread_cond_broadcast(&r->cv_filled);
    pthread_cond_broadcast(&r->cv_ready);
    pthread_mutex_unlock(&r->lock);
}

ring_state ring_slot_state(ring *r, const ring_slot *slot)
{
    pthread_mutex_lock(&r->lock);
    ring_state s = slot->state;
    pthread_mutex_unlock(&r->lock);
    return s;
}
