/* schedule "piecewise": the factor is multiplied by factors[i] from boundaries[i] on
 * (cumulative): with boundaries = 80,120,160,180 (unit epochs) and factors = 0.1,0.1,0.1,0.5
 * the factor is 1 for epochs 0..79, 0.1 from epoch 80, 0.01 from 120, 0.001 from 160 and
 * 0.0005 from 180. A boundary is the first step (or epoch, 0-based) at which its factor
 * applies: Keras's `if epoch > 80` is boundary 81. */
#include <stddef.h>

#include "schedule.h"

typedef struct piecewise_config {
    sched_warmup warmup;
    tp_int_list boundaries;
    tp_float_list factors;
    int unit;
} piecewise_config;

static const tp_param_def piecewise_params[] = {
    {"boundaries", TP_PARAM_INT_LIST, NULL, TP_PARAM_FLAG_REQUIRED | TP_PARAM_FLAG_HAS_MIN, 0, 0,
     NULL, offsetof(piecewise_config, boundaries),
     "increasing steps or epochs at which the next factor starts to apply"},
    {"factors", TP_PARAM_FLOAT_LIST, NULL, TP_PARAM_FLAG_REQUIRED | TP_PARAM_FLAG_HAS_MIN, 0, 0,
     NULL, offsetof(piecewise_config, factors),
     "multiplier applied (cumulatively) at each boundary, one per boundary"},
    TP_PARAM_DEF_ENUM(piecewise_config, unit, "unit", "steps", sched_unit_choices,
                      "whether boundaries count steps or epochs"),
    SCHED_WARMUP_PARAMS(piecewise_config),
};

static tp_status piecewise_create(const tp_host *host, const void *config, void **self)
{
    const piecewise_config *c = config;
    tp_status st = sched_warmup_check(host, "piecewise", &c->warmup);
    if (st)
        return st;
    if (c->boundaries.count != c->factors.count)
        return host->fail(host, TP_ERR_INVALID,
                          "piecewise: %zu boundaries but %zu factors (one factor per boundary)",
                          c->boundaries.count, c->factors.count);
    for (size_t i = 1; i < c->boundaries.count; i++)
        if (c->boundaries.values[i] <= c->boundaries.values[i - 1])
            return host->fail(host, TP_ERR_INVALID,
                              "piecewise: boundaries must increase (%lld then %lld)",
                              (long long)c->boundaries.values[i - 1],
                              (long long)c->boundaries.values[i]);
    return sched_create_copy(host, config, sizeof *c, self);
}

static double piecewise_factor(void *self, const tp_schedule_pos *pos)
{
    const piecewise_config *c = sched_config(self);
    int64_t t = sched_time(c->unit, pos);
    double f = 1.0;
    for (size_t i = 0; i < c->boundaries.count && t >= c->boundaries.values[i]; i++)
        f *= c->factors.values[i];
    return f * sched_warmup_factor(&c->warmup, pos);
}

static const tp_schedule_ops piecewise_ops = {
    .size = sizeof(tp_schedule_ops),
    .factor = piecewise_factor,
};

const tp_component sched_piecewise_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SCHEDULE,
    .name = "piecewise",
    .summary = "piecewise-constant decay at given steps or epochs (cumulative factors)",
    .params = piecewise_params,
    .n_params = sizeof(piecewise_params) / sizeof(piecewise_params[0]),
    .config_size = sizeof(piecewise_config),
    .create = piecewise_create,
    .destroy = sched_destroy_copy,
    .ops = &piecewise_ops,
};
