/* augment-image: the plugin descriptor (the one exported symbol). */
#include "config.h"

#include "augment_image.h"

static const tp_component *const augment_image_components[] = {
    &augment_random_crop_component,
    &augment_flip_component,
    &augment_whiten_component,
    &augment_normalize_component,
};

static const tp_plugin_info augment_image_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "augment-image",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "Batch augmenters on the compute backend: random_crop, flip, whiten, normalize.",
    .components = augment_image_components,
    .n_components = sizeof augment_image_components / sizeof augment_image_components[0],
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &augment_image_info; }
