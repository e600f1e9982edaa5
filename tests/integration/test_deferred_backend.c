/* The test backend "deferred" (deferred_backend_plugin.c) itself: that lazy mode really runs
 * nothing until something waits for it, that the copy stream runs only when a wait needs
 * it, copy_ahead, random and eager run what they promise, recordings replay, and a queued
 * call's failure reaches the next wait. Without these, test-deferred.tap's agreement with
 * backend-cpu would prove nothing. Loads $TP_BUILDDIR's deferred-backend.so and
 * backend-cpu.so. */
#include "config.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "params.h"
#include "services.h"

static int failures;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, services_last_error());                                             \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static const tp_component *deferred_component(const char *builddir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/integration/.libs/deferred-backend.so", builddir);
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "%s\n", dlerror());
        return NULL;
    }
    const tp_plugin_info *(*entry)(void) =
        (const tp_plugin_info *(*)(void))(uintptr_t)dlsym(dl, TP_PLUGIN_ENTRY_SYMBOL);
    return entry && entry()->n_components == 1 ? entry()->components[0] : NULL;
}

typedef struct bench {
    instance inst;
    void *self;
    const tp_backend_ops *o;
    tp_tensor dev, pinned_in, pinned_out;
    tp_event *ev;
} bench;

static int open_bench(bench *b, const tp_component *c, const char *cpu_plugin, const char *mode)
{
    memset(b, 0, sizeof *b);
    char plugin_kv[4200], mode_kv[64];
    snprintf(plugin_kv, sizeof plugin_kv, "cpu_plugin=%s", cpu_plugin);
    snprintf(mode_kv, sizeof mode_kv, "mode=%s", mode);
    const char *const settings[] = { plugin_kv, mode_kv, "threads=1", NULL };
    if (instance_create(c, settings, &b->inst)) {
        fprintf(stderr, "create (%s): %s\n", mode, services_last_error());
        return 0;
    }
    b->self = b->inst.self;
    b->o = c->ops;
    tp_tensor t = { .dtype = TP_DTYPE_F32, .ndim = 1, .shape = { 4, 1, 1, 1 } };
    b->dev = b->pinned_in = b->pinned_out = t;
    b->dev.device = TP_DEVICE_DEVICE;
    b->pinned_in.device = b->pinned_out.device = TP_DEVICE_PINNED;
    CHECK(!b->o->alloc(b->self, &b->dev, "dev") && !b->o->alloc(b->self, &b->pinned_in, "in") &&
          !b->o->alloc(b->self, &b->pinned_out, "out") && !b->o->event_create(b->self, &b->ev));
    return 1;
}

static void close_bench(bench *b)
{
    b->o->event_destroy(b->self, b->ev);
    b->o->free(b->self, &b->dev);
    b->o->free(b->self, &b->pinned_in);
    b->o->free(b->self, &b->pinned_out);
    instance_destroy(&b->inst);
}

static void set_all(tp_tensor *t, float v)
{
    for (int i = 0; i < 4; i++)
        ((float *)t->data)[i] = v;
}

static float first(const tp_tensor *t) { return ((const float *)t->data)[0]; }

/* pinned_in -> dev on the copy stream, then dev -> pinned_out on the compute stream. */
static void queue_round_trip(bench *b, int with_wait)
{
    tp_event *copied = NULL;
    CHECK(!b->o->event_create(b->self, &copied));
    CHECK(!b->o->copy(b->self, &b->dev, &b->pinned_in, TP_STREAM_COPY));
    CHECK(!b->o->event_record(b->self, copied, TP_STREAM_COPY));
    if (with_wait)
        CHECK(!b->o->stream_wait(b->self, TP_STREAM_COMPUTE, copied));
    CHECK(!b->o->copy(b->self, &b->pinned_out, &b->dev, TP_STREAM_COMPUTE));
    CHECK(!b->o->event_record(b->self, b->ev, TP_STREAM_COMPUTE));
    /* destroying `copied` runs what is queued; keep it until the test has looked */
    CHECK(!b->o->event_sync(b->self, b->ev));
    b->o->event_destroy(b->self, copied);
}

/* Non-zero when reading `at` from a child process kills it (a fault, or a sanitizer's
 * report of one): the child exits 0 only if the read returned. */
static int read_faults(const void *at)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        volatile float v = *(const volatile float *)at;
        (void)v;
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 0;
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_lazy(const tp_component *c, const char *cpu)
{
    bench b;
    if (!open_bench(&b, c, cpu, "lazy")) {
        failures++;
        return;
    }
    /* Device memory is fenced off from the host; pinned memory is not. */
    CHECK(read_faults(b.dev.data));
    CHECK(!read_faults(b.pinned_out.data));

    /* Nothing runs before the host waits. */
    CHECK(!b.o->fill(b.self, &b.dev, 1.0));
    set_all(&b.pinned_out, -1.0f);
    CHECK(!b.o->copy(b.self, &b.pinned_out, &b.dev, TP_STREAM_COMPUTE));
    CHECK(!b.o->event_record(b.self, b.ev, TP_STREAM_COMPUTE));
    CHECK(first(&b.pinned_out) == -1.0f);
    CHECK(!b.o->event_sync(b.self, b.ev));
    CHECK(first(&b.pinned_out) == 1.0f);

    /* A copy reads pinned memory when it runs, not when it is queued. */
    set_all(&b.pinned_in, 2.0f);
    CHECK(!b.o->copy(b.self, &b.dev, &b.pinned_in, TP_STREAM_COMPUTE));
    set_all(&b.pinned_in, 3.0f);
    CHECK(!b.o->copy(b.self, &b.pinned_out, &b.dev, TP_STREAM_COMPUTE));
    CHECK(!b.o->sync(b.self));
    CHECK(first(&b.pinned_out) == 3.0f);

    /* The compute stream sees the copy stream's work only through stream_wait. */
    set_all(&b.pinned_in, 4.0f);
    queue_round_trip(&b, 1);
    CHECK(first(&b.pinned_out) == 4.0f);
    set_all(&b.pinned_in, 5.0f);
    queue_round_trip(&b, 0);
    CHECK(first(&b.pinned_out) == 4.0f); /* the copy stream had not run */
    CHECK(!b.o->sync(b.self));

    /* A recording runs nothing until it is replayed, and then each time. */
    tp_recording *rec = NULL;
    CHECK(!b.o->capture_begin(b.self));
    CHECK(!b.o->fill(b.self, &b.dev, 6.0));
    CHECK(!b.o->copy(b.self, &b.pinned_out, &b.dev, TP_STREAM_COMPUTE));
    CHECK(!b.o->capture_end(b.self, &rec) && rec);
    CHECK(!b.o->sync(b.self));
    CHECK(first(&b.pinned_out) == 4.0f); /* still the unwaited round trip's */
    for (int i = 0; i < 2; i++) {
        set_all(&b.pinned_out, 0.0f);
        CHECK(!b.o->replay(b.self, rec));
        CHECK(first(&b.pinned_out) == 0.0f);
        CHECK(!b.o->sync(b.self));
        CHECK(first(&b.pinned_out) == 6.0f);
    }
    b.o->recording_free(b.self, rec);

    /* Waiting inside a recording spoils it (so do allocating and pageable copies). */
    CHECK(!b.o->capture_begin(b.self));
    CHECK(b.o->sync(b.self) != TP_OK);
    rec = NULL;
    CHECK(b.o->capture_end(b.self, &rec) != TP_OK && !rec);
    CHECK(strstr(services_last_error(), "discarded") != NULL);

    /* A queued call's failure reaches the next wait, naming the call. */
    tp_tensor wrong = b.dev;
    wrong.shape[0] = 3;
    CHECK(!b.o->axpby(b.self, 1.0, &wrong, 1.0, &b.dev));
    CHECK(b.o->sync(b.self) != TP_OK);
    CHECK(strstr(services_last_error(), "a queued axpby failed") != NULL);
    close_bench(&b);
}

static void test_other_modes(const tp_component *c, const char *cpu)
{
    bench b;
    if (!open_bench(&b, c, cpu, "copy_ahead")) {
        failures++;
        return;
    }
    set_all(&b.pinned_in, 7.0f);
    set_all(&b.pinned_out, 0.0f);
    CHECK(!b.o->copy(b.self, &b.dev, &b.pinned_in, TP_STREAM_COPY));
    CHECK(!b.o->copy(b.self, &b.pinned_out, &b.dev, TP_STREAM_COPY));
    CHECK(first(&b.pinned_out) == 7.0f); /* the copy stream ran as it was queued */
    CHECK(!b.o->copy(b.self, &b.pinned_out, &b.pinned_in, TP_STREAM_COMPUTE));
    CHECK(!b.o->fill(b.self, &b.pinned_out, 8.0));
    CHECK(first(&b.pinned_out) == 7.0f); /* the compute stream did not */
    CHECK(!b.o->sync(b.self));
    CHECK(first(&b.pinned_out) == 8.0f);
    close_bench(&b);

    /* random: after each call a few queued ones run, so the host sees the stream behind
     * but moving. */
    if (!open_bench(&b, c, cpu, "random")) {
        failures++;
        return;
    }
    set_all(&b.pinned_out, 0.0f);
    int behind = 0, moved = 0;
    for (int i = 1; i <= 50; i++) {
        CHECK(!b.o->fill(b.self, &b.pinned_out, (double)i));
        float seen = first(&b.pinned_out);
        behind += seen < (float)i;
        moved += seen > 0.0f;
    }
    CHECK(behind > 0 && moved > 0);
    CHECK(!b.o->sync(b.self));
    CHECK(first(&b.pinned_out) == 50.0f);
    close_bench(&b);

    if (!open_bench(&b, c, cpu, "eager")) {
        failures++;
        return;
    }
    CHECK(!b.o->fill(b.self, &b.pinned_out, 9.0));
    CHECK(first(&b.pinned_out) == 9.0f);
    close_bench(&b);
}

int main(void)
{
    const char *builddir = getenv("TP_BUILDDIR");
    if (!builddir) {
        fprintf(stderr, "TP_BUILDDIR is not set (run through make check)\n");
        return 1;
    }
    const tp_component *c = deferred_component(builddir);
    if (!c) {
        fprintf(stderr, "deferred-backend.so: no component\n");
        return 1;
    }
    char cpu[4096];
    snprintf(cpu, sizeof cpu, "%s/plugins/.libs/backend-cpu.so", builddir);
    test_lazy(c, cpu);
    test_other_modes(c, cpu);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
