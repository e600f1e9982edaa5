/* The communication thread (see comm_worker.h): a FIFO of jobs, a mutex and two condition
 * variables. Jobs are few (a handful of buckets per step), so nothing cleverer is needed. */
#include "config.h"

#include "comm_worker.h"
#include "comm_transport.h"
#include "services.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct comm_worker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t posted; /* a job arrived, or stopping */
    pthread_cond_t ran;    /* a job finished */
    comm_job *head, *tail;
    int stopping;
    double busy;           /* seconds inside jobs */
};

static void *worker_main(void *arg)
{
    comm_worker *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->posted, &w->lock);
        comm_job *job = w->head;
        if (!job)
            break; /* stopping, and nothing left */
        w->head = job->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);

        double start = comm_now();
        tp_status st = job->run(job->arg);
        double took = comm_now() - start;
        if (st)
            snprintf(job->error, sizeof job->error, "%s", services_last_error());

        pthread_mutex_lock(&w->lock);
        w->busy += took;
        job->status = st;
        job->done = 1;
        pthread_cond_broadcast(&w->ran);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

tp_status comm_worker_start(comm_worker **out)
{
    *out = NULL;
    comm_worker *w = calloc(1, sizeof *w);
    if (!w)
        return services_fail(TP_ERR_NOMEM, "comm: out of memory");
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->posted, NULL);
    pthread_cond_init(&w->ran, NULL);
    /* The thread inherits the creator's signal mask: block everything for it, so SIGINT
     * and SIGTERM keep reaching the main thread's handlers. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&w->ran);
        pthread_cond_destroy(&w->posted);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return services_fail(TP_ERR_IO, "comm: cannot start the communication thread: %s",
                             strerror(rc));
    }
    *out = w;
    return TP_OK;
}

void comm_worker_post(comm_worker *w, comm_job *job)
{
    job->status = TP_OK;
    job->error[0] = '\0';
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->posted);
    pthread_mutex_unlock(&w->lock);
}

tp_status comm_worker_wait(comm_worker *w, comm_job *job)
{
    pthread_mutex_lock(&w->lock);
    while (!job->done)
        pthread_cond_wait(&w->ran, &w->lock);
    tp_status st = job->status;
    pthread_mutex_unlock(&w->lock);
    if (st)
        return services_fail(st, "%s", job->error[0] ? job->error : "collective failed");
    return TP_OK;
}

tp_status comm_worker_call(comm_worker *w, tp_status (*run)(void *arg), void *arg)
{
    comm_job job;
    memset(&job, 0, sizeof job);
    job.run = run;
    job.arg = arg;
    comm_worker_post(w, &job);
    return comm_worker_wait(w, &job);
}

int comm_worker_job_done(comm_worker *w, const comm_job *job)
{
    pthread_mutex_lock(&w->lock);
    int done = job->done;
    pthread_mutex_unlock(&w->lock);
    return done;
}

double comm_worker_busy_seconds(comm_worker *w)
{
    pthread_mutex_lock(&w->lock);
    double busy = w->busy;
    pthread_mutex_unlock(&w->lock);
    return busy;
}

void comm_worker_stop(comm_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->posted);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->ran);
    pthread_cond_destroy(&w->posted);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
