/* The host-services table: logging, errors, memory, the active backend, interruption. */
#include "config.h"

#include "services.h"

#include <signal.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERROR_MESSAGE_MAX 1024

static _Thread_local char thread_error[ERROR_MESSAGE_MAX];
static tp_log_level log_threshold = TP_LOG_INFO;
static const tp_backend *active_backend;
static volatile sig_atomic_t interrupt_flag;
static volatile sig_atomic_t interrupt_signal; /* the signal that set the flag */

static const char *level_name(tp_log_level level)
{
    switch (level) {
    case TP_LOG_ERROR: return "error";
    case TP_LOG_WARN: return "warning";
    case TP_LOG_INFO: return "info";
    case TP_LOG_DEBUG: return "debug";
    }
    return "log";
}

static void host_log(const tp_host *host, tp_log_level level, const char *who, const char *fmt,
                     ...)
{
    (void)host;
    if (level > log_threshold)
        return;
    char line[ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line keeps lines from different threads whole. */
    fprintf(stderr, "trainpipe: %s: %s%s%s\n", level_name(level), who ? who : "",
            who ? ": " : "", line);
}

static tp_status vfail(tp_status status, const char *fmt, va_list ap)
{
    /* Formatted aside first: callers wrap the previous error, passing
     * services_last_error(), which is thread_error itself. */
    char line[ERROR_MESSAGE_MAX];
    vsnprintf(line, sizeof line, fmt, ap);
    memcpy(thread_error, line, sizeof line);
    /* Messages are one line by contract; fold any stray newline so output stays one line. */
    for (char *p = thread_error; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return status;
}

tp_status services_fail(tp_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(status, fmt, ap);
    va_end(ap);
    return status;
}

static tp_status host_fail(const tp_host *host, tp_status status, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    vfail(status, fmt, ap);
    va_end(ap);
    return status;
}

static void *host_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
static void *host_calloc(size_t count, size_t bytes) { return calloc(count ? count : 1, bytes ? bytes : 1); }
static void *host_realloc(void *p, size_t bytes) { return realloc(p, bytes ? bytes : 1); }
static void host_free(void *p) { free(p); }

static const tp_backend *host_backend(const tp_host *host)
{
    (void)host;
    return active_backend;
}

static int host_interrupted(const tp_host *host)
{
    (void)host;
    return interrupt_flag != 0;
}

static const tp_host host_table = {
    .size = sizeof(tp_host),
    .api_minor = TP_API_MINOR,
    .log = host_log,
    .fail = host_fail,
    .alloc = host_alloc,
    .calloc = host_calloc,
    .realloc = host_realloc,
    .free = host_free,
    .backend = host_backend,
    .interrupted = host_interrupted,
};

const tp_host *services_host(void) { return &host_table; }
const char *services_last_error(void) { return thread_error; }
void services_clear_error(void) { thread_error[0] = '\0'; }
void services_set_log_level(tp_log_level level) { log_threshold = level; }
void services_limit_log_level(tp_log_level level)
{
    if (log_threshold != TP_LOG_DEBUG && level < log_threshold)
        log_threshold = level;
}
void services_set_backend(const tp_backend *backend) { active_backend = backend; }
int services_interrupted(void) { return interrupt_flag != 0; }
void services_set_interrupted(int value) { interrupt_flag = value ? 1 : 0; }

static void on_signal(int signo)
{
    interrupt_signal = signo;
    interrupt_flag = 1;
}

int services_interrupt_signal(void) { return interrupt_signal; }

double services_monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void services_install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
