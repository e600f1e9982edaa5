/* Internal to the communication layer: a thread that runs collectives for a comm, one after
 * another in the order they were posted.
 *
 * Why: gradient buckets are reduced while backward goes on computing the next ones (the
 * overlap), and once that thread exists every other collective of the comm (metric sums,
 * broadcasts, synchronised batch norm) must queue behind the buckets, so every rank issues
 * its collectives in one order whichever thread asked for them. */
#ifndef TRAINPIPE_HOST_COMM_WORKER_H
#define TRAINPIPE_HOST_COMM_WORKER_H

#include <trainpipe/trainpipe.h>

typedef struct comm_worker comm_worker;

/* One unit of work. The poster fills run and arg, and keeps the job alive until
 * comm_worker_wait() returned for it. */
typedef struct comm_job {
    tp_status (*run)(void *arg);
    void *arg;
    /* Written by the worker. */
    tp_status status;
    char error[512]; /* services_last_error() of the worker thread when status != TP_OK */
    int done;
    struct comm_job *next;
} comm_job;

/* Starts the thread (with every signal blocked in it: signals stay the main thread's). */
tp_status comm_worker_start(comm_worker **out);

/* Queues `job` behind everything posted before it and returns at once. */
void comm_worker_post(comm_worker *w, comm_job *job);

/* Waits until `job` ran; returns its status, its message re-recorded on the calling thread. */
tp_status comm_worker_wait(comm_worker *w, comm_job *job);

/* post + wait. */
tp_status comm_worker_call(comm_worker *w, tp_status (*run)(void *arg), void *arg);

/* Whether `job` has run (without waiting). */
int comm_worker_job_done(comm_worker *w, const comm_job *job);

/* Seconds the worker spent running jobs since it started. */
double comm_worker_busy_seconds(comm_worker *w);

/* Runs what is queued, then ends the thread and frees w. NULL is ignored. */
void comm_worker_stop(comm_worker *w);

#endif
