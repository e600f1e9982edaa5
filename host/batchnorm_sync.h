/* Synchronised batch normalisation: in data-parallel training, every rank normalises with
 * the statistics of the global batch (all ranks together), so N ranks of batch B train like
 * one process of batch N x B. Built from the backend's own batch-norm operations plus small
 * per-channel reductions on the host:
 *
 *   forward   batchnorm_train on the local batch gives the local mean and 1/sqrt(var + eps);
 *             the host combines them across ranks (two sums: the mean first, then the
 *             variance around the global mean, which keeps the variance accurate), and
 *             batchnorm_infer normalises with the global statistics. The running statistics
 *             move by the global ones (unbiased variance over the global count).
 *   backward  batchnorm_backward with the global statistics gives the local sums of dy and
 *             dy * xhat (dbeta, dgamma); the host sums them across ranks and dx is corrected
 *             by a per-channel affine function of x, applied with batchnorm_infer + add:
 *               dx += gamma * invstd * (dbeta_r / n - dbeta / N)
 *                     + gamma * invstd * xhat * (dgamma_r / n - dgamma / N)
 *             with n the local and N the global element count per channel.
 *
 * The parameter gradients stay the local sums: the trainer averages parameter gradients over
 * ranks, and the average of the local sums is the gradient of the global mean loss.
 *
 * Every call synchronises the backend (the statistics cross the host), which is the price of
 * exactness; per-rank statistics (the default, as in PyTorch) cost nothing. */
#ifndef TRAINPIPE_HOST_BATCHNORM_SYNC_H
#define TRAINPIPE_HOST_BATCHNORM_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include <trainpipe/trainpipe.h>

/* Sums `count` doubles in place across ranks; the same result on every rank. */
typedef tp_status (*bn_sync_allreduce_fn)(void *ctx, double *values, size_t count);

typedef struct bn_sync bn_sync;

/* Scratch for batch norms of up to `max_channels` channels over activations of up to
 * `max_count` values, on `backend`. `world_size` ranks with equal batches take part. */
tp_status bn_sync_create(const tp_backend *backend, bn_sync_allreduce_fn allreduce, void *ctx,
                         int world_size, int max_channels, int64_t max_count, bn_sync **out);
void bn_sync_free(bn_sync *s);

/* The training forward pass with global statistics; the arguments are batchnorm_train's.
 * save_mean / save_invstd receive the global statistics for bn_sync_backward. */
tp_status bn_sync_forward(bn_sync *s, const tp_bn_desc *d, const tp_tensor *x,
                          const tp_tensor *gamma, const tp_tensor *beta, tp_tensor *y,
                          tp_tensor *running_mean, tp_tensor *running_var, tp_tensor *save_mean,
                          tp_tensor *save_invstd);

/* The backward pass; the arguments are batchnorm_backward's (dx is always written). With
 * need_dx = 0 (a batch norm on the network's input) dx is left uncorrected and nothing
 * crosses ranks: only the parameter gradients matter then. */
tp_status bn_sync_backward(bn_sync *s, const tp_bn_desc *d, const tp_tensor *x,
                           const tp_tensor *dy, const tp_tensor *gamma,
                           const tp_tensor *save_mean, const tp_tensor *save_invstd,
                           tp_tensor *dx, tp_tensor *dgamma, tp_tensor *dbeta, int need_dx);

#endif
