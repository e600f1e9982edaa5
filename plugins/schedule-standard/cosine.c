/* schedule "cosine": cosine annealing from 1 to final_factor over the run (PyTorch's
 * CosineAnnealingLR with T_max = the run's length and eta_min = final_factor x base lr):
 *     factor(t) = final + (1 - final) * (1 + cos(pi * t / T)) / 2,   t clamped to T,
 * with t and T in steps (T = total_steps) or in epochs (T = total_steps / steps_per_epoch). */
#include <math.h>
#include <stddef.h>

#include "schedule.h"

typedef struct cosine_config {
    sched_warmup warmup;
    double final_factor;
    int unit;
} cosine_config;

static const tp_param_def cosine_params[] = {
    TP_PARAM_DEF_FLOAT(cosine_config, final_factor, "final_factor", "0", 0, 1,
                       "factor reached at the end of the run"),
    TP_PARAM_DEF_ENUM(cosine_config, unit, "unit", "steps", sched_unit_choices,
                      "anneal per step, or per epoch (constant within an epoch)"),
    SCHED_WARMUP_PARAMS(cosine_config),
};

static tp_status cosine_create(const tp_host *host, const void *config, void **self)
{
    const cosine_config *c = config;
    tp_status st = sched_warmup_check(host, "cosine", &c->warmup);
    return st ? st : sched_create_copy(host, config, sizeof *c, self);
}

static double cosine_factor(void *self, const tp_schedule_pos *pos)
{
    const cosine_config *c = sched_config(self);
    int64_t spe = pos->steps_per_epoch > 0 ? pos->steps_per_epoch : 1;
    int64_t total = c->unit == SCHED_UNIT_STEPS ? pos->total_steps : pos->total_steps / spe;
    int64_t t = sched_time(c->unit, pos);
    double f = 1.0;
    if (total > 0) {
        double x = t < 0 ? 0.0 : t > total ? 1.0 : (double)t / (double)total;
        f = c->final_factor + (1.0 - c->final_factor) * 0.5 * (1.0 + cos(M_PI * x));
    }
    return f * sched_warmup_factor(&c->warmup, pos);
}

static const tp_schedule_ops cosine_ops = {
    .size = sizeof(tp_schedule_ops),
    .factor = cosine_factor,
};

const tp_component sched_cosine_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SCHEDULE,
    .name = "cosine",
    .summary = "cosine annealing to final_factor over the run (CosineAnnealingLR)",
    .params = cosine_params,
    .n_params = sizeof(cosine_params) / sizeof(cosine_params[0]),
    .config_size = sizeof(cosine_config),
    .create = cosine_create,
    .destroy = sched_destroy_copy,
    .ops = &cosine_ops,
};
