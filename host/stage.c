/* Creating component instances from a resolved pipeline. */
#include "config.h"

#include "stage.h"
#include "services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tp_status stage_create(const pipeline_stage *stage, void **self)
{
    *self = NULL;
    const tp_component *c = stage->entry->component;
    tp_status st = c->create(services_host(), stage->config.data, self);
    if (st && !*services_last_error())
        services_fail(st, "[%s] %s: could not be created (%s)", stage->section, c->name,
                      tp_status_name(st));
    return st;
}

void stage_destroy(const pipeline_stage *stage, void *self)
{
    if (self)
        stage->entry->component->destroy(self);
}

tp_status stage_model_input(const pipeline *p, tp_model_input *input)
{
    void *source = NULL;
    tp_source_info info = { .size = sizeof info };
    tp_status st = stage_create(&p->source_train, &source);
    if (st)
        return st;
    const tp_source_ops *ops = p->source_train.entry->component->ops;
    tp_source_open_args args = { .size = sizeof args, .rank = 0, .world_size = 1 };
    st = ops->open(source, &args, &info);
    if (st)
        goto done;
    int h = info.height, w = info.width, c = info.channels;
    for (size_t i = 0; i < p->n_augments && !st; i++) {
        const pipeline_stage *a = &p->augments[i];
        void *aug = NULL;
        if ((st = stage_create(a, &aug)))
            break;
        const tp_augment_ops *aops = a->entry->component->ops;
        int oh = h, ow = w, oc = c;
        if (aops->output_size)
            st = aops->output_size(aug, h, w, c, &oh, &ow, &oc);
        stage_destroy(a, aug);
        h = oh;
        w = ow;
        c = oc;
    }
    if (st)
        goto done;
    if (h <= 0 || w <= 0 || c <= 0) {
        st = services_fail(TP_ERR_INVALID,
                           "%s: [source.train] images vary in size and no augmenter brings them to "
                           "one size (add e.g. [augment.random_resized_crop] or "
                           "[augment.resize_center_crop])", p->doc.path);
        goto done;
    }
    *input = (tp_model_input){ .size = sizeof *input, .channels = c, .height = h, .width = w,
                               .num_classes = info.num_classes };
done:
    stage_destroy(&p->source_train, source);
    return st;
}

tp_status stage_data_open(const pipeline *p, const pipeline_stage *source,
                          const tp_source_open_args *args, stage_data *d)
{
    memset(d, 0, sizeof *d);
    tp_status st = stage_create(source, &d->source);
    if (st)
        return st;
    d->stage = source;
    d->info.size = sizeof d->info;
    const tp_source_ops *ops = source->entry->component->ops;
    if ((st = ops->open(d->source, args, &d->info)))
        return st;
    d->aug_selves = calloc(p->n_augments + 1, sizeof *d->aug_selves);
    d->augs = calloc(p->n_augments + 1, sizeof *d->augs);
    if (!d->aug_selves || !d->augs)
        return services_fail(TP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_augments; i++) {
        if ((st = stage_create(&p->augments[i], &d->aug_selves[i])))
            return st;
        d->n_augs = i + 1;
        d->augs[i] = (dataloader_augmenter){ p->augments[i].entry->component->ops,
                                             d->aug_selves[i], p->augments[i].section };
    }
    return TP_OK;
}

void stage_data_close(const pipeline *p, stage_data *d)
{
    for (size_t i = 0; i < d->n_augs; i++)
        stage_destroy(&p->augments[i], d->aug_selves[i]);
    free(d->aug_selves);
    free(d->augs);
    if (d->stage)
        stage_destroy(d->stage, d->source);
    memset(d, 0, sizeof *d);
}

void stage_loader_config(const pipeline *p, const stage_data *d, const tp_backend *backend,
                         tp_layout layout, int training, dataloader_config *c)
{
    const pipeline_settings *s = p->settings;
    dataloader_config_defaults(c);
    c->source = d->stage->entry->component->ops;
    c->source_self = d->source;
    c->info = d->info;
    c->augmenters = d->augs;
    c->n_augmenters = d->n_augs;
    c->backend = backend;
    c->layout = layout;
    c->batch_size = (int)s->batch_size;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = s->workers > 0 ? (int)s->workers : (int)(cores > 0 ? cores : 1);
    c->prefetch = (int)s->prefetch;
    c->seed = (uint64_t)s->seed;
    c->shuffle = training;
    c->drop_last = training ? s->drop_last : 0;
    c->training = training;
    c->input_scale = s->input_scale;
    c->max_bad_records = s->max_bad_records;
    c->name = training ? "train" : "val";
}

tp_status stage_create_backend(const pipeline *p, size_t *which, tp_backend *backend)
{
    tp_status st = TP_ERR_NOT_FOUND;
    char first_error[1024] = "";
    for (size_t i = 0; i < p->n_backends; i++) {
        void *self = NULL;
        st = stage_create(&p->backends[i], &self);
        if (st == TP_OK) {
            *which = i;
            backend->ops = p->backends[i].entry->component->ops;
            backend->self = self;
            if (i > 0)
                services_host()->log(services_host(), TP_LOG_INFO, "backend",
                                     "using %s (%s)", p->backends[i].entry->component->name,
                                     first_error);
            return TP_OK;
        }
        if (!first_error[0])
            snprintf(first_error, sizeof first_error, "%s", services_last_error());
    }
    return st;
}
