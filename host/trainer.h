/* The training loop, evaluation and weight export behind `trainpipe train`, `trainpipe eval`
 * and `trainpipe export`.
 *
 * A run: the pipeline is resolved, the backend started (auto: CUDA, else the CPU), the
 * sources opened, the model built and bound, parameters initialised from the seed (or from
 * [model] init = FILE, or from a checkpoint when resuming), then steps are taken until
 * `steps` or `epochs` are done. Each step: the next batch from the prefetch ring, forward,
 * softmax cross-entropy (with label smoothing), a finiteness check of the loss, backward,
 * one optimizer update at the schedule's learning rate. Around the steps: logging every
 * log_every_steps (loss, top-1 error, learning rate, images/s, data-wait fraction),
 * evaluation every N epochs or steps and at the end, checkpoints every N epochs or steps,
 * at the end and on SIGINT/SIGTERM.
 *
 * Resuming continues exactly where the checkpoint was taken: the data loader restarts at
 * the same epoch position (the order is a function of the seed), augmentation draws from
 * per-sample streams, and the optimizer's state comes from the file, so an interrupted and
 * resumed run ends with the same weights as one that never stopped (bit-identical on the
 * CPU in deterministic mode). */
#ifndef TRAINPIPE_HOST_TRAINER_H
#define TRAINPIPE_HOST_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

/* Exit statuses of the commands (also used by main.c). */
#define TRAINER_EXIT_RUNTIME 1
#define TRAINER_EXIT_CONFIG 2

typedef struct trainer_args {
    const char *config;              /* the INI file */
    const char *const *sets;         /* --set SECTION.KEY=VALUE overrides */
    size_t n_sets;
    const char *resume;              /* NULL: a fresh run; "auto": the newest checkpoint in
                                      * the checkpoint directory (fresh when there is none);
                                      * otherwise a checkpoint file */
} trainer_args;

/* The process's own argv, for re-executing it as the ranks of `[pipeline] gpus = N`. */
void trainer_set_command_line(int argc, char **argv);

/* Trains. Returns the process exit status: 0 when the run finished, 1 for a runtime
 * failure (including a non-finite loss), 2 for a configuration error, 128 + the signal
 * number after SIGINT/SIGTERM (a checkpoint was written first). Errors are printed. */
int trainer_train(const trainer_args *args);

/* Evaluates `checkpoint` on the pipeline's validation source and prints loss and top-1 /
 * top-5 error. Returns an exit status like trainer_train. */
int trainer_eval(const trainer_args *args, const char *checkpoint);

/* Writes a checkpoint's model tensors (no optimizer state) as a safetensors file in
 * PyTorch's names and layouts; batch-norm layers get PyTorch's num_batches_tracked so the
 * file loads into torchvision with strict checking. Returns an exit status. */
int trainer_export(const char *checkpoint, const char *out_path);

#endif
