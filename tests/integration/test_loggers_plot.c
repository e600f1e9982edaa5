/* `trainpipe plot` as a test program of its own: host/cmd_plot.c is compiled in here so
 * its test does not depend on the trainpipe binary's command dispatch.
 * usage: test_loggers_plot plot RUN_DIR [-o FILE] */
#include "cmd_plot.c"

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "plot") != 0) {
        fprintf(stderr, "usage: test_loggers_plot plot RUN_DIR [-o FILE]\n");
        return 2;
    }
    return cmd_plot(argc - 1, argv + 1);
}
