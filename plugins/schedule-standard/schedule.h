/* schedule-standard: what the schedules share.
 *
 * Every schedule returns factor(pos) = warmup(pos) x main(pos): an optional linear warm-up
 * multiplies the main schedule, whose clock is not shifted by it (as PyTorch's
 * ChainedScheduler combines LinearLR with another scheduler). Warm-up goes from
 * warmup_start_factor at step 0 linearly towards 1, reached at step W (W = warmup_steps, or
 * warmup_epochs x steps_per_epoch); factor(step) = start + (1 - start) * step / W for
 * step < W. */
#ifndef SCHEDULE_STANDARD_SCHEDULE_H
#define SCHEDULE_STANDARD_SCHEDULE_H

#include <stddef.h>

#include <trainpipe/trainpipe.h>

typedef struct sched_warmup {
    int64_t steps;
    int64_t epochs;
    double start_factor;
} sched_warmup;

/* The warm-up's three parameters, for a config struct STRUCT with a `warmup` member. */
#define SCHED_WARMUP_PARAMS(STRUCT)                                                            \
    TP_PARAM_DEF_INT(STRUCT, warmup.steps, "warmup_steps", "0", 0, 9e15,                       \
                     "linear warm-up over this many steps (0: none)"),                         \
    TP_PARAM_DEF_INT(STRUCT, warmup.epochs, "warmup_epochs", "0", 0, 1e9,                      \
                     "linear warm-up over this many epochs (0: none; not with warmup_steps)"), \
    TP_PARAM_DEF_FLOAT(STRUCT, warmup.start_factor, "warmup_start_factor", "0.1", 0, 1,        \
                       "warm-up multiplier at step 0, rising linearly to 1")

/* Checks a warm-up configuration; `who` names the schedule in the message. */
tp_status sched_warmup_check(const tp_host *host, const char *who, const sched_warmup *w);

/* The warm-up multiplier at pos (1 after the warm-up). */
double sched_warmup_factor(const sched_warmup *w, const tp_schedule_pos *pos);

/* Units of a schedule's clock. */
enum { SCHED_UNIT_STEPS = 0, SCHED_UNIT_EPOCHS = 1 };
extern const char *const sched_unit_choices[];

/* The position in `unit`: the step, or the completed epochs (step / steps_per_epoch, with a
 * steps_per_epoch below 1 read as 1). */
int64_t sched_time(int unit, const tp_schedule_pos *pos);

/* Allocation shared by the components: a copy of the config behind a host pointer. */
typedef struct sched_instance {
    const tp_host *host;
    /* the component's config follows (max-aligned) */
} sched_instance;
tp_status sched_create_copy(const tp_host *host, const void *config, size_t size, void **self);
void sched_destroy_copy(void *self);
/* The config stored by sched_create_copy. */
const void *sched_config(const void *self);

extern const tp_component sched_constant_component;
extern const tp_component sched_piecewise_component;
extern const tp_component sched_step_component;
extern const tp_component sched_cosine_component;
extern const tp_component sched_onecycle_component;

#endif
