/* Command-line front ends of the trainer (see cmd_train.h and trainer.h). */
#include "config.h"

#include "cmd_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

static int usage_error(const char *command, const char *what, const char *usage)
{
    fprintf(stderr, "trainpipe: error: %s: %s\nusage: %s\n", command, what, usage);
    return TRAINER_EXIT_CONFIG;
}

/* CONFIG, --set overrides and one optional valued option (--resume or --checkpoint). */
static int parse(int argc, char **argv, const char *option, const char **option_value,
                 trainer_args *a, const char **sets_storage, const char *usage)
{
    const char *cmd = argv[0];
    size_t olen = strlen(option);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--set") == 0 || strcmp(arg, "-s") == 0) {
            if (!next)
                return usage_error(cmd, "--set needs SECTION.KEY=VALUE", usage);
            sets_storage[a->n_sets++] = next;
            i++;
        } else if (strncmp(arg, "--set=", 6) == 0) {
            sets_storage[a->n_sets++] = arg + 6;
        } else if (strcmp(arg, option) == 0) {
            if (!next || !*next)
                return usage_error(cmd, "a value must follow the option", usage);
            *option_value = next;
            i++;
        } else if (strncmp(arg, option, olen) == 0 && arg[olen] == '=') {
            *option_value = arg + olen + 1;
        } else if (arg[0] == '-' && arg[1]) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%s'", arg);
            return usage_error(cmd, msg, usage);
        } else if (!a->config) {
            a->config = arg;
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "unexpected argument '%s'", arg);
            return usage_error(cmd, msg, usage);
        }
    }
    a->sets = sets_storage;
    if (!a->config)
        return usage_error(cmd, "missing CONFIG (an INI file)", usage);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    static const char usage[] =
        "trainpipe train CONFIG [--resume auto|CHECKPOINT] [--set SECTION.KEY=VALUE]...";
    trainer_args a = { 0 };
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    if (!sets)
        return TRAINER_EXIT_RUNTIME;
    int rc = parse(argc, argv, "--resume", &a.resume, &a, sets, usage);
    if (!rc)
        rc = trainer_train(&a);
    free(sets);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    static const char usage[] =
        "trainpipe eval CONFIG --checkpoint FILE [--set SECTION.KEY=VALUE]...";
    trainer_args a = { 0 };
    const char *checkpoint = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    if (!sets)
        return TRAINER_EXIT_RUNTIME;
    int rc = parse(argc, argv, "--checkpoint", &checkpoint, &a, sets, usage);
    if (!rc && !checkpoint)
        rc = usage_error(argv[0], "missing --checkpoint FILE", usage);
    if (!rc)
        rc = trainer_eval(&a, checkpoint);
    free(sets);
    return rc;
}

int cmd_export(int argc, char **argv)
{
    static const char usage[] = "trainpipe export CHECKPOINT OUT.safetensors";
    if (argc != 3)
        return usage_error(argv[0], argc < 3 ? "missing arguments" : "too many arguments",
                           usage);
    if (argv[1][0] == '-' || argv[2][0] == '-')
        return usage_error(argv[0], "options are not accepted", usage);
    return trainer_export(argv[1], argv[2]);
}
