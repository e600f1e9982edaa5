/* schedule "constant": factor 1 (times the optional warm-up). */
#include <stddef.h>

#include "schedule.h"

typedef struct constant_config {
    sched_warmup warmup;
} constant_config;

static const tp_param_def constant_params[] = {
    SCHED_WARMUP_PARAMS(constant_config),
};

static tp_status constant_create(const tp_host *host, const void *config, void **self)
{
    const constant_config *c = config;
    tp_status st = sched_warmup_check(host, "constant", &c->warmup);
    return st ? st : sched_create_copy(host, config, sizeof *c, self);
}

static double constant_factor(void *self, const tp_schedule_pos *pos)
{
    const constant_config *c = sched_config(self);
    return sched_warmup_factor(&c->warmup, pos);
}

static const tp_schedule_ops constant_ops = {
    .size = sizeof(tp_schedule_ops),
    .factor = constant_factor,
};

const tp_component sched_constant_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SCHEDULE,
    .name = "constant",
    .summary = "constant learning rate (with optional linear warm-up)",
    .params = constant_params,
    .n_params = sizeof(constant_params) / sizeof(constant_params[0]),
    .config_size = sizeof(constant_config),
    .create = constant_create,
    .destroy = sched_destroy_copy,
    .ops = &constant_ops,
};
