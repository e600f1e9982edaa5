/* schedule "onecycle": PyTorch's OneCycleLR (two phases, cosine annealing) with the
 * optimizer's lr as max_lr, so factors are relative to it:
 *     initial = 1 / div_factor,   minimum = initial / final_div_factor,
 *     phase 1: steps 0 .. pct_start * T - 1, cosine from initial up to 1;
 *     phase 2: up to step T - 1, cosine from 1 down to minimum,
 * where cosine(a, b, p) = b + (a - b) * (1 + cos(pi * p)) / 2 and p is the fraction of the
 * phase done, computed exactly as PyTorch does (T = total_steps). Momentum cycling is not
 * done (the optimizer's momentum stays fixed). */
#include <math.h>
#include <stddef.h>

#include "schedule.h"

typedef struct onecycle_config {
    sched_warmup warmup;
    double pct_start;
    double div_factor;
    double final_div_factor;
} onecycle_config;

static const tp_param_def onecycle_params[] = {
    TP_PARAM_DEF_FLOAT(onecycle_config, pct_start, "pct_start", "0.3", 0, 1,
                       "fraction of the run spent increasing the learning rate"),
    TP_PARAM_DEF_FLOAT(onecycle_config, div_factor, "div_factor", "25", 1e-12, 1e12,
                       "initial lr = max lr / div_factor"),
    TP_PARAM_DEF_FLOAT(onecycle_config, final_div_factor, "final_div_factor", "1e4", 1e-12,
                       1e12, "minimum lr = initial lr / final_div_factor"),
    SCHED_WARMUP_PARAMS(onecycle_config),
};

static tp_status onecycle_create(const tp_host *host, const void *config, void **self)
{
    const onecycle_config *c = config;
    tp_status st = sched_warmup_check(host, "onecycle", &c->warmup);
    return st ? st : sched_create_copy(host, config, sizeof *c, self);
}

static double anneal_cos(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1.0);
}

static double onecycle_factor(void *self, const tp_schedule_pos *pos)
{
    const onecycle_config *c = sched_config(self);
    double initial = 1.0 / c->div_factor, minimum = initial / c->final_div_factor;
    double total = (double)pos->total_steps;
    double ends[2] = {c->pct_start * total - 1.0, total - 1.0};
    double starts_lr[2] = {initial, 1.0}, ends_lr[2] = {1.0, minimum};
    double step = (double)pos->step, start_step = 0.0, f = minimum;
    for (int i = 0; i < 2; i++) {
        if (step <= ends[i] || i == 1) {
            double span = ends[i] - start_step;
            double pct = span > 0 ? (step - start_step) / span : 1.0;
            if (pct > 1.0)
                pct = 1.0;
            f = anneal_cos(starts_lr[i], ends_lr[i], pct);
            break;
        }
        start_step = ends[i];
    }
    return f * sched_warmup_factor(&c->warmup, pos);
}

static const tp_schedule_ops onecycle_ops = {
    .size = sizeof(tp_schedule_ops),
    .factor = onecycle_factor,
};

const tp_component sched_onecycle_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SCHEDULE,
    .name = "onecycle",
    .summary = "one-cycle policy (OneCycleLR defaults: pct_start 0.3, div 25, final div 1e4)",
    .params = onecycle_params,
    .n_params = sizeof(onecycle_params) / sizeof(onecycle_params[0]),
    .config_size = sizeof(onecycle_config),
    .create = onecycle_create,
    .destroy = sched_destroy_copy,
    .ops = &onecycle_ops,
};
