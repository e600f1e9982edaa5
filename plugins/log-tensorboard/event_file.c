/* TensorBoard event files: naming, TFRecord framing, buffered whole-record writes. */
#include "config.h"

#include "event_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/crc32c.h"

#define EVENT_PREFIX "events.out.tfevents."

void event_file_init(event_file *f)
{
    f->fd = -1;
    f->path = NULL;
    pb_init(&f->pending);
}

tp_status event_file_mkdirs(const tp_host *host, const char *dir)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p)
        return host->fail(host, TP_ERR_NOMEM, "%s: out of memory", dir);
    memcpy(p, dir, n + 1);
    tp_status st = TP_OK;
    /* Create each prefix ending at a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = host->fail(host, TP_ERR_IO, "%s: cannot create directory: %s", p,
                            strerror(errno));
            goto done;
        }
        p[i] = saved;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        st = host->fail(host, TP_ERR_IO, "%s: cannot create directory: %s", dir,
                        strerror(errno));
        goto done;
    }
    if (!S_ISDIR(sb.st_mode)) {
        st = host->fail(host, TP_ERR_IO, "%s: cannot create directory: %s", dir,
                        strerror(ENOTDIR));
        goto done;
    }
done:
    free(p);
    return st;
}

/* The largest event-file name already in dir (into out), or "" when there is none. */
static tp_status last_event_name(const tp_host *host, const char *dir, char *out, size_t size)
{
    out[0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return host->fail(host, TP_ERR_IO, "%s: cannot list directory: %s", dir,
                          strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, EVENT_PREFIX, strlen(EVENT_PREFIX)) != 0)
            continue;
        if (strcmp(e->d_name, out) > 0 && strlen(e->d_name) < size)
            snprintf(out, size, "%s", e->d_name);
    }
    closedir(d);
    return TP_OK;
}

/* Hostname as it may appear in a file name: no '/' and no control characters. */
static void safe_hostname(char *out, size_t size)
{
    if (gethostname(out, size) != 0 || out[0] == '\0')
        snprintf(out, size, "localhost");
    out[size - 1] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '/' || (unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '_';
}

tp_status event_file_open(event_file *f, const tp_host *host, const char *dir, double now)
{
    static unsigned file_counter; /* distinguishes files one process opens in one second */
    char host_name[256];
    char last[NAME_MAX + 1];
    char *path = NULL;

    safe_hostname(host_name, sizeof host_name);
    tp_status st = last_event_name(host, dir, last, sizeof last);
    if (st)
        return st;

    long long seconds = now > 0 ? (long long)now : 0;
    /* A seconds field that would not sort after `last` moves to last's seconds + 1. */
    long long last_seconds = 0;
    if (last[0] && sscanf(last + strlen(EVENT_PREFIX), "%lld", &last_seconds) == 1 &&
        last_seconds >= seconds)
        seconds = last_seconds + 1;

    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned counter = __atomic_fetch_add(&file_counter, 1, __ATOMIC_RELAXED);
        int n = snprintf(NULL, 0, "%s/" EVENT_PREFIX "%010lld.%s.%ld.%u", dir, seconds,
                         host_name, (long)getpid(), counter);
        free(path);
        path = malloc((size_t)n + 1);
        if (!path)
            return host->fail(host, TP_ERR_NOMEM, "%s: out of memory", dir);
        snprintf(path, (size_t)n + 1, "%s/" EVENT_PREFIX "%010lld.%s.%ld.%u", dir, seconds,
                 host_name, (long)getpid(), counter);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_APPEND, 0666);
        if (fd >= 0) {
            f->fd = fd;
            f->path = path;
            pb_reset(&f->pending);
            return TP_OK;
        }
        if (errno != EEXIST) {
            st = host->fail(host, TP_ERR_IO, "%s: cannot create event file: %s", path,
                            strerror(errno));
            free(path);
            return st;
        }
    }
    st = host->fail(host, TP_ERR_IO, "%s: cannot create a new event file: every name tried exists",
                    path);
    free(path);
    return st;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

tp_status event_file_append(event_file *f, const tp_host *host, const uint8_t *event,
                            size_t len)
{
    uint8_t head[12], tail[4];
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)len >> (8 * i));
    put_le32(head + 8, crc32c_mask(crc32c(head, 8)));
    put_le32(tail, crc32c_mask(crc32c(event, len)));
    if (pb_reserve(&f->pending, sizeof head + len + sizeof tail))
        return host->fail(host, TP_ERR_NOMEM, "%s: out of memory queueing a %zu-byte record",
                          f->path, len);
    pb_raw(&f->pending, head, sizeof head);
    pb_raw(&f->pending, event, len);
    pb_raw(&f->pending, tail, sizeof tail);
    return TP_OK;
}

tp_status event_file_write(event_file *f, const tp_host *host)
{
    if (f->fd < 0)
        return TP_OK;
    size_t done = 0;
    while (done < f->pending.len) {
        ssize_t n = write(f->fd, f->pending.data + done, f->pending.len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return host->fail(host, TP_ERR_IO, "%s: write failed: %s", f->path,
                              strerror(errno));
        }
        done += (size_t)n;
    }
    pb_reset(&f->pending);
    return TP_OK;
}

tp_status event_file_sync(event_file *f, const tp_host *host)
{
    if (f->fd < 0)
        return TP_OK;
    tp_status st = event_file_write(f, host);
    if (st)
        return st;
    if (fdatasync(f->fd) != 0 && errno != EINVAL && errno != EROFS)
        return host->fail(host, TP_ERR_IO, "%s: fdatasync failed: %s", f->path,
                          strerror(errno));
    struct stat open_sb, name_sb;
    if (fstat(f->fd, &open_sb) != 0)
        return host->fail(host, TP_ERR_IO, "%s: fstat failed: %s", f->path, strerror(errno));
    if (stat(f->path, &name_sb) != 0)
        return host->fail(host, TP_ERR_IO, "%s: event file no longer reachable (removed?): %s",
                          f->path, strerror(errno));
    if (open_sb.st_dev != name_sb.st_dev || open_sb.st_ino != name_sb.st_ino)
        return host->fail(host, TP_ERR_IO,
                          "%s: event file was replaced by another file (removed?)", f->path);
    return TP_OK;
}

void event_file_close(event_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    free(f->path);
    f->path = NULL;
    pb_free(&f->pending);
}
