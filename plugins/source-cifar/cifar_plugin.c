/* source-cifar: the plugin descriptor for the "cifar" (python pickles) and "cifar_bin"
 * (binary records) sources. */
#include "cifar_data.h"

static const tp_component *const cifar_components[] = {&cifar_py_component,
                                                       &cifar_bin_component};

static const tp_plugin_info cifar_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "source-cifar",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "CIFAR-10 and CIFAR-100, python and binary versions",
    .components = cifar_components,
    .n_components = 2,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void) { return &cifar_info; }
