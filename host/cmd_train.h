/* `trainpipe train`, `trainpipe eval` and `trainpipe export`: argument parsing in front of
 * trainer.h. Each returns the process exit status. */
#ifndef TRAINPIPE_HOST_CMD_TRAIN_H
#define TRAINPIPE_HOST_CMD_TRAIN_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
