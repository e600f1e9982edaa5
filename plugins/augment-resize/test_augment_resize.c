/* augment-resize: exact geometry of resize_center_crop and random_resized_crop on gradient
 * images (a bilinear resample of a linear ramp is the ramp at the sampled coordinate), the
 * crop distribution and fallback, determinism from the rng, output sizes, and evaluation
 * mode matching resize_center_crop. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "registry.h"
#include "resize.h"
#include "services.h"

static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            printf("FAIL line %d: ", __LINE__);                                                \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* H x W x 3: R = x, G = y, B = 7 (so a resampled pixel reads back its source coordinate). */
static tp_image gradient(int H, int W)
{
    tp_image im = {malloc((size_t)H * (size_t)W * 3), H, W, 3, (size_t)H * (size_t)W * 3};
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = im.data + ((size_t)y * (size_t)W + (size_t)x) * 3;
            p[0] = (uint8_t)x;
            p[1] = (uint8_t)y;
            p[2] = 7;
        }
    return im;
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Max |out - expected coordinate| for R (x) and G (y), and whether B stayed 7. */
static double geometry_error(const tp_image *out, double ox, double sx, double lox, double hix,
                             double oy, double sy, double loy, double hiy)
{
    double worst = 0;
    for (int y = 0; y < out->height; y++)
        for (int x = 0; x < out->width; x++) {
            const uint8_t *p = out->data + ((size_t)y * (size_t)out->width + (size_t)x) * 3;
            double ex = clampd(ox + (x + 0.5) * sx - 0.5, lox, hix);
            double ey = clampd(oy + (y + 0.5) * sy - 0.5, loy, hiy);
            worst = fmax(worst, fabs(p[0] - ex));
            worst = fmax(worst, fabs(p[1] - ey));
            if (p[2] != 7)
                worst = fmax(worst, 99);
        }
    return worst;
}

static const registry_entry *rrc_entry, *rcc_entry;

static instance make(const registry_entry *e, const char *const *kv)
{
    instance inst;
    memset(&inst, 0, sizeof inst);
    if (instance_create(e->component, kv, &inst) != TP_OK) {
        printf("FAIL create %s: %s\n", e->component->name, services_last_error());
        failures++;
    }
    return inst;
}

static void test_center_crop(void)
{
    const tp_augment_ops *ops = rcc_entry->component->ops;
    instance inst = make(rcc_entry, (const char *[]){"resize=64", "crop=48", NULL});
    if (!inst.self)
        return;
    CHECK(ops->place(inst.self) == TP_AUGMENT_SAMPLE, "place");
    int oh, ow, oc;
    CHECK(ops->output_size(inst.self, 0, 0, 3, &oh, &ow, &oc) == TP_OK && oh == 48 && ow == 48 &&
              oc == 3,
          "output_size %dx%dx%d", oh, ow, oc);
    /* Landscape 100x150: frame 64x96, top 8, left 24. Portrait 150x100: frame 96x64. */
    for (int portrait = 0; portrait < 2; portrait++) {
        int H = portrait ? 150 : 100, W = portrait ? 100 : 150;
        tp_image in = gradient(H, W), out = {0};
        CHECK(ops->apply_sample(inst.self, &in, &out, NULL, 1) == TP_OK && out.height == 48 &&
                  out.width == 48 && out.channels == 3,
              "apply: %s", services_last_error());
        int rh = portrait ? 96 : 64, rw = portrait ? 64 : 96;
        int top = (rh - 48) / 2, left = (rw - 48) / 2;
        double sy = (double)H / rh, sx = (double)W / rw;
        double err = geometry_error(&out, left * sx, sx, 0, W - 1, top * sy, sy, 0, H - 1);
        printf("resize_center_crop %dx%d -> 48x48: max coordinate error %.3f px\n", H, W, err);
        CHECK(err <= 0.51, "geometry off by %.3f", err);
        /* Spot values: output (0,0) samples source x = (24.5) * 1.5625 - 0.5. */
        if (!portrait)
            CHECK(out.data[0] == (uint8_t)lrint(24.5 * 1.5625 - 0.5) &&
                      out.data[1] == (uint8_t)lrint(8.5 * 1.5625 - 0.5),
                  "corner pixel (%d, %d)", out.data[0], out.data[1]);
        free(in.data);
        free(out.data);
    }
    /* An identity: resize = shorter side, crop = whole square image. */
    tp_image sq = gradient(64, 64), out = {0};
    CHECK(ops->apply_sample(inst.self, &sq, &out, NULL, 0) == TP_OK, "square");
    instance id = make(rcc_entry, (const char *[]){"resize=64", "crop=64", NULL});
    if (id.self) {
        CHECK(ops->apply_sample(id.self, &sq, &out, NULL, 0) == TP_OK &&
                  memcmp(out.data, sq.data, 64 * 64 * 3) == 0,
              "64x64 -> resize 64 crop 64 is not the identity");
        instance_destroy(&id);
    }
    free(sq.data);
    free(out.data);
    instance_destroy(&inst);
}

static void test_choose(void)
{
    /* Distribution: area fraction and ratio inside their ranges (up to rounding), crops
     * inside the image, and deterministic from the rng. */
    int H = 375, W = 500, bad = 0, fallback = 0;
    for (int i = 0; i < 2000; i++) {
        tp_rng r1 = tp_rng_make(42, 3, (uint64_t)i), r2 = r1;
        resize_crop a = random_resized_crop_choose(H, W, 0.08, 1.0, 0.75, 4.0 / 3, 10, &r1);
        resize_crop b = random_resized_crop_choose(H, W, 0.08, 1.0, 0.75, 4.0 / 3, 10, &r2);
        if (memcmp(&a, &b, sizeof a) != 0)
            bad++;
        double frac = (double)a.h * a.w / (H * W), ratio = (double)a.w / a.h;
        if (a.y < 0 || a.x < 0 || a.y + a.h > H || a.x + a.w > W || frac < 0.075 ||
            frac > 1.0 || ratio < 0.74 || ratio > 1.35)
            bad++;
        if (a.h == H && a.w == W)
            fallback++;
    }
    CHECK(bad == 0, "%d crops out of range or not deterministic", bad);
    printf("random_resized_crop: 2000 crops in range (%d whole-image)\n", fallback);
    /* Fallback: only a 1:1 crop of the whole area is allowed, which a 100x150 image cannot
     * hold: the centered 100x100 square. */
    tp_rng r = tp_rng_make(1, 2, 3);
    resize_crop c = random_resized_crop_choose(100, 150, 1.0, 1.0, 1.0, 1.0, 10, &r);
    CHECK(c.y == 0 && c.x == 25 && c.h == 100 && c.w == 100, "fallback crop %d,%d %dx%d", c.y,
          c.x, c.h, c.w);
    c = random_resized_crop_choose(300, 100, 1.0, 1.0, 0.75, 1.0, 10, &r);
    CHECK(c.w == 100 && c.h == 133 && c.y == 83 && c.x == 0, "tall fallback %d,%d %dx%d", c.y,
          c.x, c.h, c.w);
}

static void test_random_resized_crop(void)
{
    const tp_augment_ops *ops = rrc_entry->component->ops;
    instance inst = make(rrc_entry, (const char *[]){"size=40", NULL});
    if (!inst.self)
        return;
    int oh, ow, oc;
    CHECK(ops->output_size(inst.self, 0, 0, 3, &oh, &ow, &oc) == TP_OK && oh == 40 && ow == 40,
          "output_size %dx%d", oh, ow);
    tp_image in = gradient(120, 200), a = {0}, b = {0};
    double worst = 0;
    int differ = 0;
    for (int i = 0; i < 30; i++) {
        tp_rng r1 = tp_rng_make(7, 0, (uint64_t)i), r2 = r1, predict = r1;
        CHECK(ops->apply_sample(inst.self, &in, &a, &r1, 1) == TP_OK && a.height == 40 &&
                  a.width == 40 && a.channels == 3,
              "apply: %s", services_last_error());
        CHECK(ops->apply_sample(inst.self, &in, &b, &r2, 1) == TP_OK &&
                  memcmp(a.data, b.data, 40 * 40 * 3) == 0,
              "same rng gave different output (sample %d)", i);
        /* Each output pixel reads back the coordinate inside the predicted crop. */
        resize_crop c = random_resized_crop_choose(120, 200, 0.08, 1.0, 0.75, 4.0 / 3, 10,
                                                   &predict);
        double sx = (double)c.w / 40, sy = (double)c.h / 40;
        double err = geometry_error(&a, c.x, sx, c.x, c.x + c.w - 1, c.y, sy, c.y, c.y + c.h - 1);
        worst = fmax(worst, err);
        tp_rng r3 = tp_rng_make(7, 1, (uint64_t)i);
        CHECK(ops->apply_sample(inst.self, &in, &b, &r3, 1) == TP_OK, "apply");
        if (memcmp(a.data, b.data, 40 * 40 * 3) != 0)
            differ++;
    }
    printf("random_resized_crop: max coordinate error %.3f px; %d of 30 differ by seed\n", worst,
           differ);
    CHECK(worst <= 0.51, "crop geometry off by %.3f", worst);
    CHECK(differ >= 25, "only %d of 30 outputs change with the seed", differ);

    /* Evaluation: same as resize_center_crop(resize = round(40 / 0.625) = 64, crop = 40). */
    instance ev = make(rrc_entry, (const char *[]){"size=40", "eval_crop_fraction=0.625", NULL});
    instance cc = make(rcc_entry, (const char *[]){"resize=64", "crop=40", NULL});
    if (ev.self && cc.self) {
        tp_rng r = tp_rng_make(1, 1, 1), before = r;
        CHECK(ops->apply_sample(ev.self, &in, &a, &r, 0) == TP_OK, "eval apply");
        CHECK(r.state == before.state, "evaluation drew random numbers");
        const tp_augment_ops *cops = rcc_entry->component->ops;
        CHECK(cops->apply_sample(cc.self, &in, &b, NULL, 0) == TP_OK &&
                  memcmp(a.data, b.data, 40 * 40 * 3) == 0,
              "evaluation differs from resize_center_crop");
    }
    if (ev.self)
        instance_destroy(&ev);
    if (cc.self)
        instance_destroy(&cc);
    /* One channel in, one channel out. */
    tp_image g = {malloc(50 * 60), 50, 60, 1, 50 * 60};
    memset(g.data, 200, 50 * 60);
    tp_rng r = tp_rng_make(3, 3, 3);
    CHECK(ops->apply_sample(inst.self, &g, &a, &r, 1) == TP_OK && a.channels == 1 &&
              a.data[0] == 200 && a.data[40 * 40 - 1] == 200,
          "gray input");
    /* Bad parameters are refused. */
    instance bad;
    CHECK(instance_create(rrc_entry->component, (const char *[]){"scale_min=0.9", "scale_max=0.5",
                                                                 NULL},
                          &bad) != TP_OK,
          "scale_min > scale_max accepted");
    free(g.data);
    free(in.data);
    free(a.data);
    free(b.data);
    instance_destroy(&inst);
}

int main(void)
{
    const char *plugdir = getenv("TP_PLUGIN_DIR");
    char so[512];
    snprintf(so, sizeof so, "%s/augment-resize.so", plugdir ? plugdir : ".libs");
    registry *reg = registry_new();
    if (registry_load_file(reg, so) != TP_OK ||
        !(rrc_entry = registry_find(reg, TP_KIND_AUGMENT, "random_resized_crop")) ||
        !(rcc_entry = registry_find(reg, TP_KIND_AUGMENT, "resize_center_crop"))) {
        printf("FAIL cannot load %s: %s\n", so, services_last_error());
        registry_free(reg);
        return 1;
    }
    test_choose();
    test_center_crop();
    test_random_resized_crop();
    registry_free(reg);
    printf("%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
