/* The local launcher (see comm_launch.h): fork/exec N copies of this program wired with
 * socket pairs for the local transport, then supervise them. */
#include "config.h"

#include "comm.h"
#include "comm_launch.h"
#include "comm_transport.h"
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define LAUNCH_MAX_RANKS 4096
#define LAUNCH_GRACE_SECONDS 5.0 /* SIGTERM first; SIGKILL for ranks still alive after this */

/* The children, for the signal handler that passes SIGINT/SIGTERM/SIGHUP on. */
static volatile pid_t *launch_pids;
static volatile int launch_count;

static void forward_signal(int sig)
{
    for (int i = 0; i < launch_count; i++)
        if (launch_pids[i] > 0)
            kill(launch_pids[i], sig);
}

static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP };
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])

int comm_launch_wanted(int gpus)
{
    return gpus > 1 && comm_detect_env() == COMM_ENV_SINGLE;
}

static int is_launch_variable(const char *entry)
{
    static const char *const names[] = { "TRAINPIPE_RANK=", "TRAINPIPE_WORLD_SIZE=",
                                         "TRAINPIPE_LOCAL_RANK=", "TRAINPIPE_COMM_FDS=",
                                         "TRAINPIPE_COMM=" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strncmp(entry, names[i], strlen(names[i])))
            return 1;
    return 0;
}

/* environ without our variables, plus ours for `rank`: a NULL-terminated array whose four
 * last strings are allocated (freed by free_env). */
static char **make_env(int rank, int n, const char *fds)
{
    size_t count = 0, k = 0;
    for (char **e = environ; e && *e; e++)
        count++;
    char **env = calloc(count + 5, sizeof *env);
    if (!env)
        return NULL;
    for (char **e = environ; e && *e; e++)
        if (!is_launch_variable(*e))
            env[k++] = *e;
    char buf[64];
    size_t first = k;
    snprintf(buf, sizeof buf, "TRAINPIPE_RANK=%d", rank);
    env[k++] = strdup(buf);
    snprintf(buf, sizeof buf, "TRAINPIPE_WORLD_SIZE=%d", n);
    env[k++] = strdup(buf);
    snprintf(buf, sizeof buf, "TRAINPIPE_LOCAL_RANK=%d", rank);
    env[k++] = strdup(buf);
    size_t len = strlen("TRAINPIPE_COMM_FDS=") + strlen(fds) + 1;
    if ((env[k] = malloc(len)))
        snprintf(env[k], len, "TRAINPIPE_COMM_FDS=%s", fds);
    k++;
    for (size_t i = first; i < k; i++) {
        if (!env[i]) {
            for (size_t j = first; j < k; j++)
                free(env[j]);
            free(env);
            return NULL;
        }
    }
    return env;
}

static void free_env(char **env)
{
    if (!env)
        return;
    size_t k = 0;
    while (env[k])
        k++;
    for (size_t i = k >= 4 ? k - 4 : 0; i < k; i++)
        free(env[i]);
    free(env);
}

/* The sockets of `rank`, as TRAINPIPE_COMM_FDS lists them: rank 0 holds pairs[r][0] for
 * every r > 0, rank r holds pairs[r][1]. */
static char *fd_list(int rank, int n, int (*pairs)[2])
{
    size_t cap = (size_t)n * 12 + 1, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    if (rank == 0) {
        for (int r = 1; r < n; r++)
            len += (size_t)snprintf(s + len, cap - len, "%s%d", r > 1 ? "," : "", pairs[r][0]);
    } else {
        snprintf(s, cap, "%d", pairs[rank][1]);
    }
    return s;
}

/* The child after fork(): keep its sockets across exec, restore signals, exec. */
static void exec_rank(int rank, int n, int (*pairs)[2], char *const argv[], char **env,
                      const sigset_t *old_mask)
{
    if (rank == 0) {
        for (int r = 1; r < n; r++)
            fcntl(pairs[r][0], F_SETFD, 0);
    } else {
        fcntl(pairs[rank][1], F_SETFD, 0);
    }
    for (size_t i = 0; i < N_FORWARDED; i++)
        signal(forwarded[i], SIG_DFL);
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    execve("/proc/self/exe", argv, env);
    execve(argv[0], argv, env);
    /* Only async-signal-safe calls here. */
    static const char msg[] = "trainpipe: launcher: cannot execute this program again\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
}

static void describe_status(int status, char *buf, size_t cap, int *code)
{
    if (WIFEXITED(status)) {
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
        *code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
        *code = 128 + WTERMSIG(status);
    } else {
        snprintf(buf, cap, "ended with wait status %d", status);
        *code = 1;
    }
}

static void sleep_seconds(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

/* A failure worth naming as the cause: not a rank that only lost its peer, not one we
 * stopped ourselves. */
static int is_consequence(int status, int stopping)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == COMM_EXIT_PEER_LOST;
    return stopping && WIFSIGNALED(status) &&
           (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL);
}

static void stop_all(const pid_t *pids, int n, int sig)
{
    for (int q = 0; q < n; q++)
        if (pids[q] > 0)
            kill(pids[q], sig);
}

/* Waits for every child. The first failure stops the others (SIGTERM, SIGKILL after the
 * grace period). The failure reported is the first one that is a cause; a rank that only
 * lost its peer is reported when no cause turns up within half a second (the peer's exit
 * is normally reaped within milliseconds). Returns main's exit status. */
static int supervise(pid_t *pids, int n, int stop_now)
{
    int alive = 0, stopping = 0, killed = 0, reported = 0;
    int cause = -1, cause_status = 0, cause_is_consequence = 0;
    double stop_at = 0.0;
    for (int r = 0; r < n; r++)
        alive += pids[r] > 0;
    if (stop_now) {
        stop_all(pids, n, SIGTERM);
        stopping = 1;
        stop_at = comm_now();
    }
    while (alive > 0 || (cause >= 0 && !reported)) {
        int reaped = 0;
        for (int r = 0; r < n; r++) {
            int status = 0;
            if (pids[r] <= 0)
                continue;
            pid_t got = waitpid(pids[r], &status, WNOHANG);
            if (got == 0 || (got < 0 && errno == EINTR))
                continue;
            pids[r] = 0; /* at once: the pid may be reused */
            alive--;
            reaped = 1;
            if (got < 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
                continue;
            int consequence = is_consequence(status, stopping);
            if (cause < 0 || (cause_is_consequence && !consequence && !reported)) {
                cause = r;
                cause_status = status;
                cause_is_consequence = consequence;
            }
            if (!stopping) {
                stop_all(pids, n, SIGTERM);
                stopping = 1;
                stop_at = comm_now();
            }
        }
        if (cause >= 0 && !reported &&
            (!cause_is_consequence || alive == 0 || comm_now() - stop_at > 0.5)) {
            char what[128];
            int code;
            describe_status(cause_status, what, sizeof what, &code);
            fprintf(stderr, "trainpipe: rank %d %s%s; stopping the other rank%s\n", cause, what,
                    cause_is_consequence && WIFEXITED(cause_status) ? " (it lost a peer)" : "",
                    n > 2 ? "s" : "");
            reported = 1;
        }
        if (stopping && !killed && comm_now() - stop_at > LAUNCH_GRACE_SECONDS) {
            stop_all(pids, n, SIGKILL);
            killed = 1;
        }
        if (!reaped && (alive > 0 || !reported))
            sleep_seconds(0.02);
    }
    if (cause < 0)
        return stop_now ? 1 : 0;
    char what[128];
    int code = 1;
    describe_status(cause_status, what, sizeof what, &code);
    return code ? code : 1;
}

int comm_launch_run(int n, char *const argv[])
{
    int code = 1;
    int (*pairs)[2] = NULL;
    pid_t *pids = NULL;
    char ***env = NULL;
    struct sigaction old_actions[N_FORWARDED];
    sigset_t block, old_mask;
    int started = 0, handlers = 0;

    if (n < 1 || n > LAUNCH_MAX_RANKS || !argv || !argv[0]) {
        services_fail(TP_ERR_INVALID, "launcher: %d ranks: expected 1..%d and a command line",
                      n, LAUNCH_MAX_RANKS);
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
        return 1;
    }
    pairs = calloc((size_t)n, sizeof *pairs);
    pids = calloc((size_t)n, sizeof *pids);
    env = calloc((size_t)n, sizeof *env);
    if (!pairs || !pids || !env) {
        services_fail(TP_ERR_NOMEM, "launcher: out of memory");
        goto report;
    }
    for (int r = 0; r < n; r++)
        pairs[r][0] = pairs[r][1] = -1;
    for (int r = 1; r < n; r++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[r]) != 0) {
            services_fail(TP_ERR_IO, "launcher: socketpair for rank %d: %s", r, strerror(errno));
            goto report;
        }
    }
    for (int r = 0; r < n; r++) {
        char *fds = fd_list(r, n, pairs);
        env[r] = fds ? make_env(r, n, fds) : NULL;
        free(fds);
        if (!env[r]) {
            services_fail(TP_ERR_NOMEM, "launcher: out of memory");
            goto report;
        }
    }

    /* Signals stay blocked while forking, so a child never runs our handler. */
    sigemptyset(&block);
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
    launch_pids = pids;
    launch_count = n;
    for (size_t i = 0; i < N_FORWARDED; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = forward_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(forwarded[i], &sa, &old_actions[i]);
    }
    handlers = 1;
    fflush(NULL);
    for (int r = 0; r < n; r++) {
        pid_t pid = fork();
        if (pid < 0) {
            services_fail(TP_ERR_IO, "launcher: fork for rank %d: %s", r, strerror(errno));
            break;
        }
        if (pid == 0)
            exec_rank(r, n, pairs, argv, env[r], &old_mask);
        pids[r] = pid;
        started++;
    }
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    /* The children hold their ends now; ours would keep a dead rank's peers waiting. */
    for (int r = 1; r < n; r++) {
        close(pairs[r][0]);
        close(pairs[r][1]);
        pairs[r][0] = pairs[r][1] = -1;
    }

    if (started < n && started > 0)
        fprintf(stderr, "trainpipe: error: %s; stopping the %d started rank(s)\n",
                services_last_error(), started);
    code = supervise(pids, n, started < n);
    if (started < n)
        code = 1;

report:
    if (handlers) {
        for (size_t i = 0; i < N_FORWARDED; i++)
            sigaction(forwarded[i], &old_actions[i], NULL);
        launch_count = 0;
        launch_pids = NULL;
    }
    if (!started && code)
        fprintf(stderr, "trainpipe: error: %s\n", services_last_error());
    if (pairs)
        for (int r = 1; r < n; r++) {
            if (pairs[r][0] >= 0)
                close(pairs[r][0]);
            if (pairs[r][1] >= 0)
                close(pairs[r][1]);
        }
    if (env)
        for (int r = 0; r < n; r++)
            free_env(env[r]);
    free(env);
    free(pids);
    free(pairs);
    return code;
}
