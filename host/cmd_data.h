/* `trainpipe data CONFIG`: runs the configured source and augmenters on their own and
 * reports what comes out (counts, label histogram, per-channel statistics), optionally as a
 * PNG contact sheet or as a throughput benchmark. */
#ifndef TRAINPIPE_HOST_CMD_DATA_H
#define TRAINPIPE_HOST_CMD_DATA_H

/* argv[0] is "data". Returns the exit status (0, 1 runtime, 2 usage/configuration). */
int cmd_data(int argc, char **argv);

#endif
