/* The local launcher behind `[pipeline] gpus = N`: runs N copies of this program on this
 * host, one per GPU, and supervises them.
 *
 * Each copy gets the same command line and environment plus TRAINPIPE_RANK (0..N-1),
 * TRAINPIPE_WORLD_SIZE (N), TRAINPIPE_LOCAL_RANK (= rank) and TRAINPIPE_COMM_FDS (the Unix
 * sockets of the local transport, see comm_star.c); comm_create() in the copy finds them.
 * The launcher itself joins no job and runs no training.
 *
 * A copy that exits non-zero or dies on a signal makes the launcher print "trainpipe: rank
 * R exited with status S" (or "was killed by signal S"), stop the others (SIGTERM, then
 * SIGKILL after a grace period) and return non-zero. SIGINT, SIGTERM and SIGHUP sent to the
 * launcher are passed on to the copies. */
#ifndef TRAINPIPE_HOST_COMM_LAUNCH_H
#define TRAINPIPE_HOST_COMM_LAUNCH_H

/* Whether a process configured for `gpus` local ranks should launch them: gpus > 1 and it
 * is not already a rank (neither TRAINPIPE_WORLD_SIZE nor an MPI launcher in the
 * environment; under MPI, mpirun decides the ranks and `gpus` is ignored). */
int comm_launch_wanted(int gpus);

/* Starts n copies of this program (/proc/self/exe, or argv[0] through PATH where /proc is
 * missing) with argv (NULL-terminated, argv[0] included), waits for all of them and returns
 * the exit status for main: 0 when every copy exited 0, else the failed copy's exit status
 * (128 + signal for a signal), or 1 when the copies could not be started (message through
 * services_fail() and on stderr). Call it before starting any thread. */
int comm_launch_run(int n, char *const argv[]);

#endif
