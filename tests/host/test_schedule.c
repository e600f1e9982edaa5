/* schedule-standard: exact factors at known steps, computed by hand (and with PyTorch's
 * formulas for cosine annealing and OneCycleLR), for every schedule, with warm-up, plus the
 * refused configurations. */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "services.h"
#include "test_graph_backend.h"

static registry *reg;
static double worst;

typedef struct point {
    int64_t step;
    double factor;
} point;

static void check_schedule(const char *name, const char *const *kv, int64_t total, int64_t spe,
                           const point *pts, size_t n)
{
    instance inst;
    if (!test_instance(reg, TP_KIND_SCHEDULE, name, kv, &inst)) {
        CHECK(0);
        return;
    }
    const tp_schedule_ops *ops = inst.component->ops;
    for (size_t i = 0; i < n; i++) {
        tp_schedule_pos pos = {sizeof pos, pts[i].step, total, spe};
        double f = ops->factor(inst.self, &pos);
        double err = fabs(f - pts[i].factor);
        if (err > 1e-12) {
            fprintf(stderr, "%s step %lld: factor %.17g, expected %.17g\n", name,
                    (long long)pts[i].step, f, pts[i].factor);
            CHECK(0);
        }
        worst = fmax(worst, err);
    }
    printf("%-10s %zu points checked\n", name, n);
    instance_destroy(&inst);
}

static void check_refused(const char *name, const char *const *kv, const char *needle)
{
    instance inst;
    const registry_entry *e = registry_find(reg, TP_KIND_SCHEDULE, name);
    services_clear_error();
    CHECK(e && instance_create(e->component, kv, &inst) != TP_OK);
    CHECK_CONTAINS(services_last_error(), needle);
    printf("refused: %s\n", services_last_error());
}

/* PyTorch's OneCycleLR (anneal_strategy cos, three_phase False) relative to max_lr. */
static double torch_onecycle(int64_t step, int64_t total, double pct, double div, double fdiv)
{
    double initial = 1.0 / div, min = initial / fdiv;
    double end1 = pct * total - 1, end2 = total - 1;
    if (step <= end1) {
        double p = step / end1;
        return 1.0 + (initial - 1.0) / 2 * (cos(M_PI * p) + 1);
    }
    double p = (step - end1) / (end2 - end1);
    return min + (1.0 - min) / 2 * (cos(M_PI * p) + 1);
}

int main(void)
{
    reg = registry_new();
    if (test_load_plugin(reg, "schedule-standard.so") != TP_OK) {
        fprintf(stderr, "schedule-standard.so not built\n");
        return 1;
    }
    /* constant */
    check_schedule("constant", NULL, 1000, 100,
                   (point[]){{0, 1}, {1, 1}, {999, 1}, {5000, 1}}, 4);
    /* constant with a 10-step warm-up from 0.1: 0.1 + 0.9 * s / 10 */
    check_schedule("constant", (const char *[]){"warmup_steps=10", NULL}, 1000, 100,
                   (point[]){{0, 0.1}, {1, 0.19}, {5, 0.55}, {9, 0.91}, {10, 1}, {500, 1}}, 6);
    /* warm-up over 2 epochs of 50 steps from 0: s / 100 */
    check_schedule("constant",
                   (const char *[]){"warmup_epochs=2", "warmup_start_factor=0", NULL}, 1000, 50,
                   (point[]){{0, 0}, {25, 0.25}, {99, 0.99}, {100, 1}}, 4);

    /* piecewise, the Keras CIFAR-10 example: x0.1 after epochs 80, 120, 160 and x0.5 after
     * 180 (Keras tests `epoch > 80`, so the boundaries are 81, 121, 161, 181). */
    const char *keras[] = {"boundaries=81,121,161,181", "factors=0.1,0.1,0.1,0.5",
                           "unit=epochs", NULL};
    check_schedule("piecewise", keras, 200 * 391, 391,
                   (point[]){{0, 1},
                             {80 * 391 + 390, 1},
                             {81 * 391, 0.1},
                             {121 * 391 - 1, 0.1},
                             {121 * 391, 0.1 * 0.1},
                             {161 * 391, 0.1 * 0.1 * 0.1},
                             {181 * 391, 0.1 * 0.1 * 0.1 * 0.5},
                             {199 * 391, 0.1 * 0.1 * 0.1 * 0.5}},
                   8);
    /* piecewise in steps, the CIFAR seed's 32k / 48k. */
    check_schedule("piecewise", (const char *[]){"boundaries=32000,48000", "factors=0.1,0.1",
                                                 NULL}, 64000, 390,
                   (point[]){{31999, 1}, {32000, 0.1}, {47999, 0.1}, {48000, 0.1 * 0.1}}, 4);

    /* step: gamma^(epoch / step_size) */
    check_schedule("step", (const char *[]){"step_size=30", "gamma=0.1", NULL}, 90 * 10, 10,
                   (point[]){{0, 1}, {299, 1}, {300, 0.1}, {599, 0.1}, {600, 0.1 * 0.1}}, 5);
    check_schedule("step", (const char *[]){"step_size=2", "gamma=0.5", "unit=steps",
                                            "warmup_steps=4", NULL}, 100, 10,
                   (point[]){{0, 0.1}, {1, 0.325}, {2, 0.55 * 0.5}, {3, 0.775 * 0.5},
                             {4, 0.25}, {7, 0.125}},
                   6);

    /* cosine (CosineAnnealingLR): final + (1 - final) (1 + cos(pi t / T)) / 2 */
    check_schedule("cosine", NULL, 100, 10,
                   (point[]){{0, 1}, {25, (1 + cos(M_PI / 4)) / 2}, {50, 0.5},
                             {75, (1 + cos(3 * M_PI / 4)) / 2}, {100, 0}, {150, 0}},
                   6);
    check_schedule("cosine", (const char *[]){"final_factor=0.1", "unit=epochs", NULL}, 100, 10,
                   (point[]){{0, 1}, {9, 1}, {50, 0.1 + 0.9 * 0.5}, {59, 0.55},
                             {99, 0.1 + 0.9 * (1 + cos(M_PI * 9 / 10)) / 2}},
                   5);
    /* cosine with a 10-step warm-up: the product, the cosine's clock is not shifted */
    check_schedule("cosine", (const char *[]){"warmup_steps=10", "warmup_start_factor=0.5",
                                              NULL}, 100, 10,
                   (point[]){{0, 0.5}, {5, 0.75 * (1 + cos(M_PI * 5 / 100)) / 2},
                             {50, 0.5}},
                   3);

    /* onecycle: hand values for total 100, pct 0.3: phase 1 ends at step 29, phase 2 at
     * 99; initial 1/25 = 0.04, minimum 0.04 / 1e4 = 4e-6. */
    point oc[8] = {{0, 0.04},
                   {29, 1.0},
                   {99, 4e-6},
                   {10, 0}, {15, 0}, {30, 0}, {64, 0}, {90, 0}};
    for (int i = 3; i < 8; i++)
        oc[i].factor = torch_onecycle(oc[i].step, 100, 0.3, 25, 1e4);
    /* A value worked by hand: step 64 is half-way through phase 2, (64-29)/(99-29) = 0.5,
     * so the factor is (1 + 4e-6) / 2. */
    CHECK(fabs(oc[6].factor - (1 + 4e-6) / 2) < 1e-15);
    check_schedule("onecycle", NULL, 100, 10, oc, 8);
    point oc2[4] = {{0, 0.1}, {3, 0}, {7, 0}, {19, 0.1 / 100}};
    oc2[1].factor = torch_onecycle(3, 20, 0.25, 10, 100);
    oc2[2].factor = torch_onecycle(7, 20, 0.25, 10, 100);
    check_schedule("onecycle", (const char *[]){"pct_start=0.25", "div_factor=10",
                                                "final_div_factor=100", NULL}, 20, 5, oc2, 4);

    printf("max |factor - expected| = %.3e\n", worst);

    check_refused("piecewise", (const char *[]){"boundaries=10,20", "factors=0.1", NULL},
                  "2 boundaries but 1 factors");
    check_refused("piecewise", (const char *[]){"boundaries=20,10", "factors=0.1,0.1", NULL},
                  "must increase");
    check_refused("piecewise", (const char *[]){"factors=0.1", NULL}, "boundaries");
    check_refused("constant", (const char *[]){"warmup_steps=5", "warmup_epochs=1", NULL},
                  "not both");
    registry_free(reg);
    return CHECK_EXIT();
}
