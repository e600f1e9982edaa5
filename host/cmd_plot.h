/* `trainpipe plot RUN_DIR [-o FILE]`: training curves from a run's metrics.csv. */
#ifndef TRAINPIPE_HOST_CMD_PLOT_H
#define TRAINPIPE_HOST_CMD_PLOT_H

/* Reads RUN_DIR/metrics.csv (as the csv logger writes it) and draws loss, top-1 error (train
 * and validation) and learning rate against the step with gnuplot, into FILE (default
 * RUN_DIR/curves.png; .png or .svg chooses the format). argv[0] is "plot". Returns the
 * process exit status: 0 done, 1 runtime failure (no gnuplot, unreadable CSV, gnuplot
 * failed), 2 usage error. Messages go to stderr, one line each. */
int cmd_plot(int argc, char **argv);

#endif
