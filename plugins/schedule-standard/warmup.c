/* schedule-standard: the warm-up and the helpers every schedule shares. */
#include <stdalign.h>
#include <string.h>

#include "schedule.h"

const char *const sched_unit_choices[] = {"steps", "epochs", NULL};

tp_status sched_warmup_check(const tp_host *host, const char *who, const sched_warmup *w)
{
    if (w->steps > 0 && w->epochs > 0)
        return host->fail(host, TP_ERR_INVALID,
                          "%s: give warmup_steps (%lld) or warmup_epochs (%lld), not both", who,
                          (long long)w->steps, (long long)w->epochs);
    return TP_OK;
}

double sched_warmup_factor(const sched_warmup *w, const tp_schedule_pos *pos)
{
    int64_t spe = pos->steps_per_epoch > 0 ? pos->steps_per_epoch : 1;
    int64_t span = w->steps > 0 ? w->steps : w->epochs * spe;
    if (span <= 0 || pos->step >= span)
        return 1.0;
    int64_t s = pos->step > 0 ? pos->step : 0;
    return w->start_factor + (1.0 - w->start_factor) * (double)s / (double)span;
}

int64_t sched_time(int unit, const tp_schedule_pos *pos)
{
    if (unit == SCHED_UNIT_STEPS)
        return pos->step;
    int64_t spe = pos->steps_per_epoch > 0 ? pos->steps_per_epoch : 1;
    return pos->step / spe;
}

#define CONFIG_OFFSET ((sizeof(sched_instance) + alignof(max_align_t) - 1) / \
                       alignof(max_align_t) * alignof(max_align_t))

tp_status sched_create_copy(const tp_host *host, const void *config, size_t size, void **self)
{
    sched_instance *s = host->calloc(1, CONFIG_OFFSET + size);
    if (!s)
        return host->fail(host, TP_ERR_NOMEM, "schedule: cannot allocate the schedule");
    s->host = host;
    memcpy((char *)s + CONFIG_OFFSET, config, size);
    *self = s;
    return TP_OK;
}

void sched_destroy_copy(void *self)
{
    sched_instance *s = self;
    if (s)
        s->host->free(s);
}

const void *sched_config(const void *self) { return (const char *)self + CONFIG_OFFSET; }
