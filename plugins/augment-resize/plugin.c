/* augment-resize: the plugin descriptor for its two host-side augmenters. */
#include "resize.h"

static const tp_component *const components[] = {
    &random_resized_crop_component,
    &resize_center_crop_component,
};

static const tp_plugin_info plugin_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "augment-resize",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "host-side resizing: random_resized_crop, resize_center_crop",
    .components = components,
    .n_components = sizeof components / sizeof components[0],
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void)
{
    return &plugin_info;
}
