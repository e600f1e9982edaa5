/* schedule "step": factor = gamma ^ floor(t / step_size), t in steps or epochs (PyTorch's
 * StepLR). */
#include <math.h>
#include <stddef.h>

#include "schedule.h"

typedef struct step_config {
    sched_warmup warmup;
    int64_t step_size;
    double gamma;
    int unit;
} step_config;

static const tp_param_def step_params[] = {
    TP_PARAM_DEF_INT(step_config, step_size, "step_size", "30", 1, 9e15,
                     "decay every this many steps or epochs"),
    TP_PARAM_DEF_FLOAT(step_config, gamma, "gamma", "0.1", 0, 1e6, "multiplier at each decay"),
    TP_PARAM_DEF_ENUM(step_config, unit, "unit", "epochs", sched_unit_choices,
                      "whether step_size counts steps or epochs"),
    SCHED_WARMUP_PARAMS(step_config),
};

static tp_status step_create(const tp_host *host, const void *config, void **self)
{
    const step_config *c = config;
    tp_status st = sched_warmup_check(host, "step", &c->warmup);
    return st ? st : sched_create_copy(host, config, sizeof *c, self);
}

static double step_factor(void *self, const tp_schedule_pos *pos)
{
    const step_config *c = sched_config(self);
    int64_t t = sched_time(c->unit, pos);
    if (t < 0)
        t = 0;
    return pow(c->gamma, (double)(t / c->step_size)) * sched_warmup_factor(&c->warmup, pos);
}

static const tp_schedule_ops step_ops = {
    .size = sizeof(tp_schedule_ops),
    .factor = step_factor,
};

const tp_component sched_step_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SCHEDULE,
    .name = "step",
    .summary = "multiply by gamma every step_size steps or epochs (StepLR)",
    .params = step_params,
    .n_params = sizeof(step_params) / sizeof(step_params[0]),
    .config_size = sizeof(step_config),
    .create = step_create,
    .destroy = sched_destroy_copy,
    .ops = &step_ops,
};
