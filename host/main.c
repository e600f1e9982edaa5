/* trainpipe: the command-line front end.
 *
 * Exit status: 0 success, 1 a runtime failure, 2 a usage or configuration error (bad INI,
 * unknown plugin, a plugin that cannot be loaded). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "pipeline.h"
#include "registry.h"
#include "services.h"
#include "stage.h"
#include "cmd_data.h"
#include "cmd_plot.h"
#include "cmd_train.h"
#include "trainer.h"
#include "graph.h"

#define EXIT_RUNTIME 1
#define EXIT_CONFIG 2

static void usage(FILE *out)
{
    fprintf(out,
            "usage: trainpipe [-v | -q] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  train CONFIG [--resume auto|CHECKPOINT] [--set SECTION.KEY=VALUE]...\n"
            "                                              train the pipeline's model\n"
            "  eval CONFIG --checkpoint FILE               validation loss and top-1/top-5 error\n"
            "  export CHECKPOINT OUT.safetensors           the weights for PyTorch\n"
            "  check CONFIG [--set SECTION.KEY=VALUE]...  validate CONFIG and print it resolved\n"
            "  plugins [NAME] [--plugin-path DIRS]         list components, or NAME's parameters\n"
            "  model CONFIG [--set SECTION.KEY=VALUE]...  the model's layers, parameters, FLOPs\n"
            "  data CONFIG [--split train|val] [--count N] [--dump DIR] [--bench SECONDS]\n"
            "                                              the data as the network sees it\n"
            "  plot RUN_DIR [-o FILE]                      loss, error and learning-rate curves\n"
            "\n"
            "options:\n"
            "  -v, --verbose   more diagnostics        -q, --quiet   errors only\n"
            "  -h, --help      this help               --version     print the version\n"
            "\n"
            "See trainpipe(1) and trainpipe.ini(5).\n");
}

/* Exit status for a failed load: configuration problems are the user's to fix (2). */
static int exit_for(tp_status st)
{
    switch (st) {
    case TP_OK: return 0;
    case TP_ERR_INVALID:
    case TP_ERR_NOT_FOUND:
    case TP_ERR_FORMAT: return EXIT_CONFIG;
    default: return EXIT_RUNTIME;
    }
}

static int report(tp_status st)
{
    fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
    return exit_for(st);
}

/* Collects CONFIG and --set overrides; returns 0 or a usage error. */
static int parse_config_args(int argc, char **argv, const char **config, const char ***sets,
                             size_t *n_sets)
{
    *config = NULL;
    *n_sets = 0;
    *sets = calloc((size_t)argc + 1, sizeof **sets);
    if (!*sets)
        return EXIT_RUNTIME;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--set") == 0 || strcmp(a, "-s") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trainpipe: error: %s needs SECTION.KEY=VALUE\n", a);
                return EXIT_CONFIG;
            }
            (*sets)[(*n_sets)++] = argv[++i];
        } else if (strncmp(a, "--set=", 6) == 0) {
            (*sets)[(*n_sets)++] = a + 6;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "trainpipe: error: %s: unknown option '%s'\n", argv[0], a);
            return EXIT_CONFIG;
        } else if (!*config) {
            *config = a;
        } else {
            fprintf(stderr, "trainpipe: error: %s: unexpected argument '%s'\n", argv[0], a);
            return EXIT_CONFIG;
        }
    }
    if (!*config) {
        fprintf(stderr, "trainpipe: error: %s: missing CONFIG (an INI file)\n", argv[0]);
        return EXIT_CONFIG;
    }
    return 0;
}

/* Parses CONFIG and --set overrides and resolves the pipeline; returns 0 or the exit
 * status to end with (the error already printed). */
static int load_pipeline(int argc, char **argv, pipeline *p)
{
    const char *config;
    const char **sets;
    size_t n_sets;
    int rc = parse_config_args(argc, argv, &config, &sets, &n_sets);
    if (!rc) {
        tp_status st = pipeline_load(config, sets, n_sets, p);
        if (st)
            rc = report(st);
    }
    free(sets);
    return rc;
}

static int cmd_check(int argc, char **argv)
{
    pipeline p;
    int rc = load_pipeline(argc, argv, &p);
    if (rc)
        return rc;
    pipeline_print(&p, stdout);
    pipeline_free(&p);
    return 0;
}

static int cmd_model(int argc, char **argv)
{
    pipeline p;
    int rc = load_pipeline(argc, argv, &p);
    if (rc)
        return rc;
    tp_status st;
    tp_model_input input;
    void *model = NULL;
    graph *g = NULL;
    if ((st = stage_model_input(&p, &input)) || (st = stage_create(&p.model, &model)))
        goto done;
    g = graph_build(p.model.entry->component->ops, model, &input);
    if (!g) {
        st = TP_ERR_INVALID;
        goto done;
    }
    printf("model %s for %dx%dx%d inputs, %d classes\n\n", p.model.entry->component->name,
           input.channels, input.height, input.width, input.num_classes);
    graph_print_table(g, stdout); /* ends with the parameter and multiply-add totals */
done:
    graph_free(g);
    stage_destroy(&p.model, model);
    pipeline_free(&p);
    return st ? report(st) : 0;
}

static void print_param_table(const tp_component *c)
{
    if (!c->n_params) {
        printf("  (no parameters)\n");
        return;
    }
    for (size_t i = 0; i < c->n_params; i++) {
        const tp_param_def *d = &c->params[i];
        char allowed[512];
        params_describe(d, allowed, sizeof allowed);
        printf("  %s (%s)", d->name, params_type_name(d->type));
        if (d->flags & TP_PARAM_FLAG_REQUIRED)
            printf(", required");
        else if (d->default_value)
            printf(", default %s", *d->default_value ? d->default_value : "\"\"");
        else
            printf(", optional");
        printf("\n      %s\n      allowed: %s\n", d->help ? d->help : "", allowed);
    }
}

static int cmd_plugins(int argc, char **argv)
{
    const char *name = NULL, *extra_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            extra_path = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "trainpipe: error: plugins: unknown option '%s'\n", argv[i]);
            return EXIT_CONFIG;
        } else if (!name)
            name = argv[i];
        else {
            fprintf(stderr, "trainpipe: error: plugins: unexpected argument '%s'\n", argv[i]);
            return EXIT_CONFIG;
        }
    }
    char *path = registry_default_search_path(extra_path);
    registry *r = registry_new();
    tp_status st = path && r ? registry_load_path(r, path)
                             : services_fail(TP_ERR_NOMEM, "out of memory");
    int rc = 0;
    if (st) {
        rc = report(st);
        goto done;
    }
    if (!name) {
        printf("%-10s %-20s %-8s %-50s %s\n", "KIND", "NAME", "VERSION", "SUMMARY", "FILE");
        for (int k = TP_KIND_BACKEND; k <= TP_KIND_LOGGER; k++)
            for (size_t i = 0; i < registry_count(r); i++) {
                const registry_entry *e = registry_at(r, i);
                if ((int)e->component->kind != k)
                    continue;
                printf("%-10s %-20s %-8s %-50s %s\n", registry_kind_name(e->component->kind),
                       e->component->name, e->plugin->version,
                       e->component->summary ? e->component->summary : "", e->path);
            }
        printf("\nplugin path: %s\n", path);
        goto done;
    }
    int shown = 0;
    const tp_component *host_tables[] = { pipeline_settings_component(),
                                          pipeline_checkpoint_component() };
    for (size_t h = 0; h < 2; h++)
        if (strcmp(name, host_tables[h]->name) == 0) {
            printf("[%s]: %s\n", host_tables[h]->name, host_tables[h]->summary);
            print_param_table(host_tables[h]);
            shown = 1;
        }
    for (size_t i = 0; i < registry_count(r); i++) {
        const registry_entry *e = registry_at(r, i);
        if (strcmp(e->component->name, name) != 0 && strcmp(e->plugin->name, name) != 0)
            continue;
        if (shown)
            printf("\n");
        printf("%s %s: %s\n  from %s %s (%s), %s\n", registry_kind_name(e->component->kind),
               e->component->name, e->component->summary ? e->component->summary : "",
               e->plugin->name, e->plugin->version, e->plugin->license ? e->plugin->license : "?",
               e->path);
        print_param_table(e->component);
        shown = 1;
    }
    if (!shown) {
        const char *names[512];
        size_t n = 0;
        for (size_t i = 0; i < registry_count(r) && n < 511; i++)
            names[n++] = registry_at(r, i)->component->name;
        names[n] = NULL;
        const char *near = params_closest(name, names);
        fprintf(stderr, "trainpipe: error: no plugin or component named '%s'%s%s%s "
                "(`trainpipe plugins` lists them)\n", name, near ? " (did you mean '" : "",
                near ? near : "", near ? "'?)" : "");
        rc = EXIT_CONFIG;
    }
done:
    registry_free(r);
    free(path);
    return rc;
}

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    { "train", cmd_train },
    { "eval", cmd_eval },
    { "export", cmd_export },
    { "check", cmd_check },
    { "plugins", cmd_plugins },
    { "model", cmd_model },
    { "data", cmd_data },
    { "plot", cmd_plot },
};

int main(int argc, char **argv)
{
    trainer_set_command_line(argc, argv);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
            services_set_log_level(TP_LOG_DEBUG);
        else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0)
            services_set_log_level(TP_LOG_ERROR);
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("trainpipe %s (plugin ABI %d, API %d.%d)\n", PACKAGE_VERSION, TP_ABI_MAJOR,
                   TP_ABI_MAJOR, TP_API_MINOR);
            return 0;
        } else {
            fprintf(stderr, "trainpipe: error: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    const char *names[sizeof commands / sizeof commands[0] + 1];
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        names[c] = commands[c].name;
        if (strcmp(argv[i], commands[c].name) == 0)
            return commands[c].run(argc - i, argv + i);
    }
    names[sizeof commands / sizeof commands[0]] = NULL;
    const char *near = params_closest(argv[i], names);
    fprintf(stderr, "trainpipe: error: unknown command '%s'%s%s%s (try trainpipe --help)\n",
            argv[i], near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    return EXIT_CONFIG;
}
