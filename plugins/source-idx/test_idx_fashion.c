/* source-idx on the real Fashion-MNIST (Debian's dataset-fashion-mnist). Facts asserted
 * here were verified with Python on the installed files: 60,000 train and 10,000 test images
 * of 28x28, every class exactly 6,000 / 1,000 times, first labels 9 (Ankle boot), and the
 * CRC-32 of the first and last images and the sum of all pixels. Skips (77) only when the
 * dataset is not installed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "params.h"
#include "registry.h"
#include "services.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

typedef struct expected {
    const char *split;
    int64_t count;
    int per_class;
    int first_label;
    uint32_t crc_first, crc_last;
    unsigned long long pixel_sum;
} expected;

static int check_split(const registry_entry *e, const expected *x)
{
    instance inst = {0};
    tp_image img = {0};
    const tp_source_ops *ops = e->component->ops;
    tp_source_open_args args = {.size = sizeof(args), .rank = 0, .world_size = 1};
    tp_source_info info = {.size = sizeof(info)};
    char split[32];
    int bad = 1;
    snprintf(split, sizeof(split), "split=%s", x->split);
    if (instance_create(e->component, (const char *[]){split, NULL}, &inst) ||
        ops->open(inst.self, &args, &info)) {
        printf("FAIL %s: %s\n", x->split, services_last_error());
        goto done;
    }
    int hist[10] = {0};
    unsigned long long sum = 0;
    uint32_t crc_first = 0, crc_last = 0;
    int first_label = -1, out_of_range = 0;
    for (int64_t i = 0; i < info.count; i++) {
        int32_t label;
        if (ops->read(inst.self, NULL, i, &img, &label)) {
            printf("FAIL read %lld: %s\n", (long long)i, services_last_error());
            goto done;
        }
        if (label < 0 || label > 9) {
            out_of_range++;
            continue;
        }
        hist[label]++;
        for (int k = 0; k < 28 * 28; k++)
            sum += img.data[k];
        if (i == 0) {
            first_label = label;
            crc_first = (uint32_t)crc32(0, img.data, 28 * 28);
        }
        if (i == info.count - 1)
            crc_last = (uint32_t)crc32(0, img.data, 28 * 28);
    }
    int max_dev = 0;
    for (int k = 0; k < 10; k++)
        max_dev = abs(hist[k] - x->per_class) > max_dev ? abs(hist[k] - x->per_class) : max_dev;
    const char *name9 = info.class_names ? info.class_names[9] : "(none)";
    bad = info.count != x->count || info.height != 28 || info.width != 28 ||
          info.channels != 1 || info.num_classes != 10 || strcmp(name9, "Ankle boot") != 0 ||
          out_of_range || max_dev != 0 || first_label != x->first_label ||
          crc_first != x->crc_first || crc_last != x->crc_last || sum != x->pixel_sum;
    printf("%s %s: %lld images %dx%dx%d, %d classes, class 9 \"%s\", histogram max deviation "
           "from %d: %d, first label %d, crc first %08x last %08x, pixel sum %llu "
           "(expected %llu)\n",
           bad ? "FAIL" : "ok  ", x->split, (long long)info.count, info.height, info.width,
           info.channels, info.num_classes, name9, x->per_class, max_dev, first_label,
           crc_first, crc_last, sum, x->pixel_sum);
done:
    free(img.data);
    instance_destroy(&inst);
    return bad;
}

int main(void)
{
    if (access(FASHION_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0 &&
        access(FASHION_DIR "/train-images-idx3-ubyte", R_OK) != 0) {
        printf("SKIP: %s not installed (Debian package dataset-fashion-mnist)\n", FASHION_DIR);
        return 77;
    }
    const char *dir = getenv("TP_PLUGIN_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/source-idx.so", dir ? dir : ".libs");
    registry *r = registry_new();
    const registry_entry *e;
    if (registry_load_file(r, path) || !(e = registry_find(r, TP_KIND_SOURCE, "idx"))) {
        printf("FAIL load: %s\n", services_last_error());
        return 1;
    }
    static const expected train = {"train", 60000, 6000, 9, 0xf270beb5u, 0x6d595368u,
                                   3431114169ull};
    static const expected test = {"test", 10000, 1000, 9, 0x52830860u, 0x4c5edc96u,
                                  573469082ull};
    int failed = check_split(e, &train) + check_split(e, &test);
    registry_free(r);
    printf("%s\n", failed ? "FAIL" : "PASS");
    return failed ? 1 : 0;
}
