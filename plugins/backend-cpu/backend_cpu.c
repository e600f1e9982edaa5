/* backend-cpu: the component (parameters, create/destroy, info) and its operation table.
 * Layers run on oneDNN primitives cached per shape; the rest are plain fused loops. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_backend.h"
#include "cpu_image_ops.h"
#include "cpu_ops.h"

static const char *const precision_choices[] = {"fp32", "bf16", NULL};

static const tp_param_def cpu_params[] = {
    TP_PARAM_DEF_INT(cpu_config, threads, "threads", "0", 0, 4096,
                     "CPU threads for oneDNN and OpenMP (0: all cores)"),
    TP_PARAM_DEF_BOOL(cpu_config, deterministic, "deterministic", "false",
                      "request bitwise reproducible results (oneDNN CPU primitives already are "
                      "for a fixed thread count)"),
    TP_PARAM_DEF_ENUM(cpu_config, precision, "precision", "fp32", precision_choices,
                      "Activations and their gradients: fp32, or bf16 (weights, batch-norm "
                      "state and the optimizer stay f32; needs AVX-512 BF16, and pays with "
                      "AMX)."),
};

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    if (cpu_isa_has(isa, dnnl_cpu_isa_avx512_core_amx))
        return "AVX-512 with AMX";
    if (cpu_isa_has(isa, dnnl_cpu_isa_avx512_core_bf16))
        return "AVX-512 BF16";
    if (cpu_isa_has(isa, dnnl_cpu_isa_avx512_core))
        return "AVX-512 without BF16";
    return "no AVX-512";
}

/* The CPU model from /proc/cpuinfo, or a generic name. */
static void read_cpu_name(char *buf, size_t size)
{
    snprintf(buf, size, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t')
                    colon++;
                snprintf(buf, size, "%s", colon);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

static void cpu_destroy(void *self)
{
    cpu_backend *be = self;
    if (!be)
        return;
    cpu_cache_clear(&be->cache);
    if (be->stream)
        dnnl_stream_destroy(be->stream);
    if (be->engine)
        dnnl_engine_destroy(be->engine);
    free(be->arena);
    pthread_mutex_destroy(&be->lock);
    free(be);
}

static tp_status cpu_create(const tp_host *host, const void *config, void **self)
{
    const cpu_config *cfg = config;
    tp_status st = TP_OK;
    cpu_backend *be = calloc(1, sizeof *be);
    if (!be)
        return host->fail(host, TP_ERR_NOMEM, "backend-cpu: cannot allocate the backend");
    be->host = host;
    be->threads = (int)cfg->threads;
    be->deterministic = cfg->deterministic;
    be->act_dtype = TP_DTYPE_F32;
    pthread_mutex_init(&be->lock, NULL);
    read_cpu_name(be->device_name, sizeof be->device_name);
    cpu_pin_runtime();
    if (cfg->precision == CPU_PRECISION_BF16) {
        /* ONEDNN_MAX_CPU_ISA lowers what oneDNN reports, which tests use */
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        if (!cpu_isa_has(isa, dnnl_cpu_isa_avx512_core_bf16)) { /* oneDNN's native bf16 */
            st = host->fail(host, TP_ERR_UNSUPPORTED,
                            "backend-cpu: precision = bf16 needs a CPU with AVX-512 BF16 or "
                            "AMX, and oneDNN finds %s on this one (%s); use precision = fp32",
                            isa_name(isa), be->device_name);
            goto fail;
        }
        be->act_dtype = TP_DTYPE_BF16;
        host->log(host, TP_LOG_INFO, "backend-cpu",
                  "precision bf16: activations and their gradients in bf16 on %s (%s)",
                  isa_name(isa), be->device_name);
    }
    CPU_DNNL(be, dnnl_engine_create, &be->engine, dnnl_cpu, 0);
    CPU_DNNL(be, dnnl_stream_create, &be->stream, be->engine, dnnl_stream_default_flags);
    cpu_apply_threads(be);
    if (be->threads > 0) {
        be->threads_used = be->threads;
    } else {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        be->threads_used = n > 0 ? (int)n : 1;
    }
    *self = be;
    return TP_OK;
fail:
    cpu_destroy(be);
    return st;
}

static tp_status cpu_info(void *self, tp_backend_info *out)
{
    cpu_backend *be = self;
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    out->name = "cpu";
    out->device_name = be->device_name;
    /* oneDNN's direct convolutions read channels-last without a reorder. */
    out->preferred_layout = TP_LAYOUT_NHWC;
    out->has_device_memory = 0;
    out->threads = be->threads_used;
    out->activation_dtype = be->act_dtype; /* bf16 only with precision = bf16 */
    return TP_OK;
}

/* The image operations live in cpu_image_ops.c and take the host rather than the backend. */
static tp_status op_convert_u8_batch(void *self, const tp_tensor *src, double scale,
                                     tp_tensor *dst)
{
    return cpu_convert_u8_batch(((cpu_backend *)self)->host, src, scale, dst);
}

static tp_status op_crop_flip(void *self, const tp_crop_flip_desc *d, const tp_tensor *src,
                              tp_tensor *dst)
{
    return cpu_crop_flip(((cpu_backend *)self)->host, d, src, dst);
}

static tp_status op_standardize_images(void *self, tp_tensor *x)
{
    return cpu_standardize_images(((cpu_backend *)self)->host, x);
}

static tp_status op_normalize_channels(void *self, tp_tensor *x, const float *mean,
                                       const float *std)
{
    return cpu_normalize_channels(((cpu_backend *)self)->host, x, mean, std);
}

static const tp_backend_ops cpu_ops = {
    .size = sizeof(tp_backend_ops),
    .info = cpu_info,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .stream_wait = cpu_stream_wait,
    .event_sync = cpu_event_sync,
    .sync = cpu_sync,
    .conv_forward = cpu_conv_forward,
    .conv_backward_data = cpu_conv_backward_data,
    .conv_backward_filter = cpu_conv_backward_filter,
    .batchnorm_train = cpu_batchnorm_train,
    .batchnorm_infer = cpu_batchnorm_infer,
    .batchnorm_backward = cpu_batchnorm_backward,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .add = cpu_add,
    .add_relu = cpu_add_relu,
    .batchnorm_relu_workspace_bytes = cpu_batchnorm_relu_workspace_bytes,
    .batchnorm_relu_train = cpu_batchnorm_relu_train,
    .batchnorm_relu_backward = cpu_batchnorm_relu_backward,
    .pool_forward = cpu_pool_forward,
    .pool_backward = cpu_pool_backward,
    .global_avgpool_forward = cpu_global_avgpool_forward,
    .global_avgpool_backward = cpu_global_avgpool_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .softmax_xent = cpu_softmax_xent,
    .topk_correct = cpu_topk_correct,
    .subsample_pad_forward = cpu_subsample_pad_forward,
    .subsample_pad_backward = cpu_subsample_pad_backward,
    .axpby = cpu_axpby,
    .scale = cpu_scale,
    .sum_squares = cpu_sum_squares,
    .convert_u8_batch = op_convert_u8_batch,
    .crop_flip = op_crop_flip,
    .standardize_images = op_standardize_images,
    .normalize_channels = op_normalize_channels,
    .sgd_update = cpu_sgd_update,
    .adam_update = cpu_adam_update,
    .sgd_update_dev = cpu_sgd_update_dev,
    .adam_update_dev = cpu_adam_update_dev,
    .sgd_update_group_dev = cpu_sgd_update_group_dev,
    .adam_update_group_dev = cpu_adam_update_group_dev,
    .batchnorm_add_relu_train = cpu_batchnorm_add_relu_train,
    .check_finite_group = cpu_check_finite_group,
};

static const tp_component cpu_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_BACKEND,
    .name = "cpu",
    .summary = "CPU compute backend on oneDNN (convolution, batch norm, pooling) and fused loops",
    .params = cpu_params,
    .n_params = sizeof cpu_params / sizeof cpu_params[0],
    .config_size = sizeof(cpu_config),
    .create = cpu_create,
    .destroy = cpu_destroy,
    .ops = &cpu_ops,
};

static const tp_component *const cpu_components[] = { &cpu_component };

static const tp_plugin_info cpu_plugin = {
    TP_PLUGIN_INFO_HEADER,
    .name = "backend-cpu",
    .version = PACKAGE_VERSION,
    .license = "MIT",
    .summary = "CPU backend on oneDNN",
    .components = cpu_components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void)
{
    return &cpu_plugin;
}
