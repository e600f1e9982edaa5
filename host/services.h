/* The host-services table handed to plugins, and the host's error channel.
 *
 * Errors: any code (host or plugin) calls fail() to record a one-line message for the
 * calling thread and gets the status back; whoever finally handles the failure prints
 * services_last_error(). */
#ifndef TRAINPIPE_HOST_SERVICES_H
#define TRAINPIPE_HOST_SERVICES_H

#include <trainpipe/trainpipe.h>

/* The process-wide services table (thread-safe, never NULL). */
const tp_host *services_host(void);

/* Records an error for this thread (like tp_host.fail) and returns status. */
tp_status services_fail(tp_status status, const char *fmt, ...) TP_PRINTF(2, 3);

/* The calling thread's last error message ("" if none). */
const char *services_last_error(void);
void services_clear_error(void);

/* Log verbosity: messages above this level are dropped. Default TP_LOG_INFO. */
void services_set_log_level(tp_log_level level);
/* Drops messages above `level` too, unless debug output was asked for (-v): the ranks of a
 * data-parallel job other than 0 keep only warnings and errors. */
void services_limit_log_level(tp_log_level level);

/* The backend that tp_host.backend() returns (NULL to clear). */
void services_set_backend(const tp_backend *backend);

/* Signal handling: after services_install_signal_handlers(), SIGINT/SIGTERM set the flag
 * that tp_host.interrupted() reports. */
void services_install_signal_handlers(void);
int services_interrupted(void);
/* The signal number behind the interruption (SIGINT, SIGTERM), or 0. */
int services_interrupt_signal(void);

/* Seconds on the monotonic clock, for durations. */
double services_monotonic_seconds(void);
void services_set_interrupted(int value);

#endif
