/* schedule-standard: the plugin descriptor listing the learning-rate schedules. */
#include "schedule.h"

static const tp_component *const schedule_components[] = {
    &sched_constant_component, &sched_piecewise_component, &sched_step_component,
    &sched_cosine_component,   &sched_onecycle_component,
};

static const tp_plugin_info schedule_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "schedule-standard",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "learning-rate schedules: constant, piecewise, step, cosine, one-cycle",
    .components = schedule_components,
    .n_components = sizeof(schedule_components) / sizeof(schedule_components[0]),
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &schedule_info; }
