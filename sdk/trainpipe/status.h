/* trainpipe SDK: status codes returned by every host service and plugin operation.
 *
 * Functions return a tp_status; TP_OK is zero so `if (st) goto fail;` reads naturally.
 * The human-readable message travels separately, through tp_host.fail(), so a status
 * code never has to carry text. */
#ifndef TRAINPIPE_STATUS_H
#define TRAINPIPE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_status {
    TP_OK = 0,
    TP_ERR_INVALID = 1,     /* a bad argument or configuration value */
    TP_ERR_IO = 2,          /* a file or device could not be read or written */
    TP_ERR_FORMAT = 3,      /* input data is malformed (bad magic, truncated, bad CRC) */
    TP_ERR_NOMEM = 4,       /* host or device memory exhausted */
    TP_ERR_UNSUPPORTED = 5, /* the operation or combination is not implemented here */
    TP_ERR_LIBRARY = 6,     /* an underlying library call failed (cuDNN, oneDNN, ...) */
    TP_ERR_END = 7,         /* end of data: not a failure for sources */
    TP_ERR_INTERRUPTED = 8, /* stopped by a signal or a user request */
    TP_ERR_NOT_FOUND = 9    /* a named thing (file, plugin, tensor) does not exist */
} tp_status;

/* A short constant name for a status ("invalid", "io", ...). Implemented inline so
 * plugins need not link against anything. */
static inline const char *tp_status_name(tp_status st)
{
    switch (st) {
    case TP_OK: return "ok";
    case TP_ERR_INVALID: return "invalid argument";
    case TP_ERR_IO: return "i/o error";
    case TP_ERR_FORMAT: return "malformed data";
    case TP_ERR_NOMEM: return "out of memory";
    case TP_ERR_UNSUPPORTED: return "unsupported";
    case TP_ERR_LIBRARY: return "library error";
    case TP_ERR_END: return "end of data";
    case TP_ERR_INTERRUPTED: return "interrupted";
    case TP_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

#ifdef __cplusplus
}
#endif
#endif /* TRAINPIPE_STATUS_H */
