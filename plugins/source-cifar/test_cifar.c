/* source-cifar against the committed fixtures: every source listed in fixtures/expected.txt
 * (written by share/scripts/make_cifar_fixtures.py) must give exactly the listed count, class
 * names, labels and image CRC-32s (HWC order); every bad file must be refused with the listed
 * message parts (file and byte offset). Then parameter errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "params.h"
#include "registry.h"
#include "services.h"

#define MAX_KV 16

static registry *reg;
static char fixtures[4096];
static int failed, sources_checked, samples_checked, errors_checked;

/* Splits "component k=v k=v ..." into the component and key=value strings; path= values
 * are made absolute under the fixtures folder; expectation keys go to `expect`. */
typedef struct spec {
    char component[32];
    char *kv[MAX_KV + 1];
    int n_kv;
    long count, classes;
    char class0[128], classlast[128];
} spec;

static void spec_free(spec *s)
{
    for (int i = 0; i < s->n_kv; i++)
        free(s->kv[i]);
    s->n_kv = 0;
}

static int spec_parse(char *text, spec *s)
{
    memset(s, 0, sizeof(*s));
    s->count = s->classes = -1;
    char *save = NULL;
    char *tok = strtok_r(text, " \n", &save);
    if (!tok)
        return -1;
    snprintf(s->component, sizeof(s->component), "%s", tok);
    while ((tok = strtok_r(NULL, " \n", &save)) && s->n_kv < MAX_KV) {
        if (strncmp(tok, "count=", 6) == 0)
            s->count = atol(tok + 6);
        else if (strncmp(tok, "classes=", 8) == 0)
            s->classes = atol(tok + 8);
        else if (strncmp(tok, "class0=", 7) == 0)
            snprintf(s->class0, sizeof(s->class0), "%s", tok + 7);
        else if (strncmp(tok, "classlast=", 10) == 0)
            snprintf(s->classlast, sizeof(s->classlast), "%s", tok + 10);
        else {
            size_t n = strlen(tok) + strlen(fixtures) + 8;
            char *kv = malloc(n);
            if (strncmp(tok, "path=", 5) == 0)
                snprintf(kv, n, "path=%s/%s", fixtures, tok + 5);
            else
                snprintf(kv, n, "%s", tok);
            s->kv[s->n_kv++] = kv;
        }
    }
    s->kv[s->n_kv] = NULL;
    return 0;
}

/* Creates and opens a source; returns the status, leaves inst/info filled. */
static tp_status open_source(const spec *s, instance *inst, tp_source_info *info)
{
    const registry_entry *e = registry_find(reg, TP_KIND_SOURCE, s->component);
    if (!e)
        return services_fail(TP_ERR_NOT_FOUND, "no source component %s", s->component);
    tp_status st = instance_create(e->component, (const char *const *)s->kv, inst);
    if (st)
        return st;
    const tp_source_ops *ops = e->component->ops;
    tp_source_open_args args = {.size = sizeof(args), .rank = 0, .world_size = 1};
    return ops->open(inst->self, &args, info);
}

static const char *names_at(const tp_source_info *info, int i)
{
    return info->class_names ? info->class_names[i] : "-";
}

/* Reads a "source" group: its header and the "sample" lines that follow. */
static void check_source(char *header, FILE *f, const char *line_text)
{
    spec s;
    instance inst = {0};
    tp_source_info info = {.size = sizeof(info)};
    tp_image img = {0};
    char line[512];
    int bad = 0, n_samples = 0;
    spec_parse(header, &s);
    tp_status st = open_source(&s, &inst, &info);
    if (st) {
        printf("FAIL %s: %s\n", line_text, services_last_error());
        failed++;
    }
    const tp_source_ops *ops = st ? NULL : inst.component->ops;
    if (ops && (info.count != s.count || info.num_classes != s.classes ||
                info.height != 32 || info.width != 32 || info.channels != 3 ||
                strcmp(names_at(&info, 0), s.class0) != 0 ||
                strcmp(names_at(&info, info.num_classes - 1), s.classlast) != 0)) {
        printf("FAIL %s: count %lld, %d classes (%s .. %s), %dx%dx%d\n", line_text,
               (long long)info.count, info.num_classes, names_at(&info, 0),
               names_at(&info, info.num_classes - 1), info.height, info.width, info.channels);
        bad++;
    }
    /* The sample lines. */
    long pos = ftell(f);
    while (fgets(line, sizeof(line), f)) {
        int index, label;
        unsigned crc;
        if (sscanf(line, "sample %d %d %x", &index, &label, &crc) != 3) {
            fseek(f, pos, SEEK_SET);
            break;
        }
        pos = ftell(f);
        n_samples++;
        if (!ops)
            continue;
        int32_t got = -1;
        if (ops->read(inst.self, NULL, index, &img, &got)) {
            printf("FAIL %s: read %d: %s\n", line_text, index, services_last_error());
            bad++;
            continue;
        }
        unsigned got_crc = (unsigned)crc32(0, img.data, 32 * 32 * 3);
        if (got != label || got_crc != crc) {
            printf("FAIL %s: sample %d: label %d crc %08x, expected %d %08x\n", line_text,
                   index, got, got_crc, label, crc);
            bad++;
        }
        samples_checked++;
    }
    if (ops && n_samples != s.count) {
        printf("FAIL %s: %d sample lines for count %ld\n", line_text, n_samples, s.count);
        bad++;
    }
    if (ops) {
        int32_t label;
        if (ops->read(inst.self, NULL, info.count, &img, &label) != TP_ERR_INVALID) {
            printf("FAIL %s: reading index count did not fail\n", line_text);
            bad++;
        }
        if (!bad)
            printf("ok   %s: %lld samples, labels and CRCs exact\n", line_text,
                   (long long)info.count);
    }
    failed += bad;
    sources_checked++;
    free(img.data);
    instance_destroy(&inst);
    spec_free(&s);
}

/* "error COMPONENT k=v ... | needle | needle". */
static void check_error(char *text, const char *line_text)
{
    char *needles[8];
    int n = 0;
    char *bar, *rest = text;
    while ((bar = strstr(rest, " | ")) && n < 8) {
        *bar = 0;
        rest = needles[n++] = bar + 3;
    }
    for (int i = 0; i < n; i++)
        needles[i][strcspn(needles[i], "\n")] = 0;
    spec s;
    instance inst = {0};
    tp_source_info info = {.size = sizeof(info)};
    spec_parse(text, &s);
    services_clear_error();
    tp_status st = open_source(&s, &inst, &info);
    const char *msg = services_last_error();
    int ok = st == TP_ERR_FORMAT && !strchr(msg, '\n');
    for (int i = 0; i < n; i++)
        ok = ok && strstr(msg, needles[i]) != NULL;
    printf("%s %s\n     -> %s: %s\n", ok ? "ok  " : "FAIL", line_text, tp_status_name(st),
           msg);
    failed += !ok;
    errors_checked++;
    instance_destroy(&inst);
    spec_free(&s);
}

/* Parameter errors that need no special file. */
static void check_param_error(const char *component, const char *const *kv, tp_status want,
                              const char *needle)
{
    spec s;
    instance inst = {0};
    tp_source_info info = {.size = sizeof(info)};
    char text[1024];
    int len = snprintf(text, sizeof(text), "%s", component);
    for (int i = 0; kv[i]; i++)
        len += snprintf(text + len, sizeof(text) - (size_t)len, " %s", kv[i]);
    char copy[1024];
    snprintf(copy, sizeof(copy), "%s", text);
    spec_parse(copy, &s);
    services_clear_error();
    tp_status st = open_source(&s, &inst, &info);
    const char *msg = services_last_error();
    int ok = st == want && strstr(msg, needle) != NULL;
    printf("%s %s -> %s: %s\n", ok ? "ok  " : "FAIL", text, tp_status_name(st), msg);
    failed += !ok;
    instance_destroy(&inst);
    spec_free(&s);
}

int main(void)
{
    const char *plugins = getenv("TP_PLUGIN_DIR");
    const char *src = getenv("TP_SRCDIR");
    char path[4200], line[1024];
    snprintf(path, sizeof(path), "%s/source-cifar.so", plugins ? plugins : ".libs");
    snprintf(fixtures, sizeof(fixtures), "%s/source-cifar/fixtures", src ? src : ".");
    reg = registry_new();
    if (registry_load_file(reg, path)) {
        printf("FAIL load: %s\n", services_last_error());
        return 1;
    }
    snprintf(path, sizeof(path), "%s/expected.txt", fixtures);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    while (fgets(line, sizeof(line), f)) {
        char shown[1024];
        snprintf(shown, sizeof(shown), "%.*s", (int)strcspn(line, "\n"), line);
        if (strncmp(line, "source ", 7) == 0)
            check_source(line + 7, f, shown);
        else if (strncmp(line, "error ", 6) == 0)
            check_error(line + 6, shown);
        else if (line[0] != '#' && line[0] != '\n') {
            printf("FAIL unexpected line in expected.txt: %s\n", shown);
            failed++;
        }
    }
    fclose(f);

    check_param_error("cifar", (const char *[]){"path=cifar-10-batches-py", "split=test",
                                                "holdout=1", NULL},
                      TP_ERR_INVALID, "holdout applies to split=train only");
    check_param_error("cifar", (const char *[]){"path=cifar-10-batches-py", "subset=holdout",
                                                NULL},
                      TP_ERR_INVALID, "subset=holdout needs holdout > 0");
    check_param_error("cifar", (const char *[]){"path=cifar-10-batches-py", "holdout=6", NULL},
                      TP_ERR_INVALID, "holdout=6 leaves no training images of 6");
    check_param_error("cifar", (const char *[]){"path=cifar-10-batches-py", "labels=coarse",
                                                NULL},
                      TP_ERR_INVALID, "labels=coarse needs CIFAR-100");
    check_param_error("cifar_bin", (const char *[]){"path=cifar-10-batches-bin",
                                                    "labels=coarse", NULL},
                      TP_ERR_INVALID, "labels=coarse needs CIFAR-100");
    check_param_error("cifar", (const char *[]){"path=no-such-folder", NULL}, TP_ERR_NOT_FOUND,
                      "no-such-folder");
    check_param_error("cifar", (const char *[]){"path=variants", NULL}, TP_ERR_NOT_FOUND,
                      "neither data_batch_1 (CIFAR-10) nor train (CIFAR-100)");
    check_param_error("cifar_bin", (const char *[]){"path=cifar-10-batches-py", NULL},
                      TP_ERR_NOT_FOUND, "neither data_batch_1.bin");
    check_param_error("cifar", (const char *[]){"path=cifar-10-batches-bin/test_batch.bin",
                                                NULL},
                      TP_ERR_FORMAT, "test_batch.bin: byte 0: unsupported pickle opcode");

    registry_free(reg);
    printf("%d sources (%d samples) and %d bad files checked\n", sources_checked,
           samples_checked, errors_checked);
    int ok = !failed && sources_checked >= 20 && errors_checked >= 6;
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
