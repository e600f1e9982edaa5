/* Atomic file replacement and whole-file reads (see atomic_file.h). */
#include "config.h"

#include "atomic_file.h"
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* write() until done, retrying short writes and EINTR. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The directory part of path ("." when there is none), for the fsync after rename. */
static void dir_of(const char *path, char *dir, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, size, ".");
    else if (slash == path)
        snprintf(dir, size, "/");
    else
        snprintf(dir, size, "%.*s", (int)(slash - path), path);
}

tp_status atomic_write_file(const char *path, const atomic_piece *pieces, size_t n)
{
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp)
        return services_fail(TP_ERR_NOMEM, "%s: out of memory", path);
    /* Same directory as the target, so rename() never crosses file systems; the pid keeps
     * concurrent writers (several ranks by mistake) apart. */
    snprintf(tmp, len, "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        tp_status st = services_fail(TP_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    int err = 0;
    for (size_t i = 0; i < n && !err; i++)
        if (write_all(fd, pieces[i].data, pieces[i].size))
            err = errno;
    if (!err && fsync(fd))
        err = errno;
    if (close(fd) && !err)
        err = errno;
    if (!err && rename(tmp, path))
        err = errno;
    if (err) {
        unlink(tmp);
        tp_status st = services_fail(TP_ERR_IO, "%s: cannot write: %s (the previous file, if "
                                     "any, is unchanged)", path, strerror(err));
        free(tmp);
        return st;
    }
    free(tmp);
    /* Make the rename itself durable. */
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TP_OK;
}

tp_status read_whole_file(const char *path, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return services_fail(errno == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return services_fail(TP_ERR_IO, "%s: not a regular file", path);
    }
    size_t want = (size_t)sb.st_size;
    uint8_t *buf = malloc(want + 1);
    if (!buf) {
        close(fd);
        return services_fail(TP_ERR_NOMEM, "%s: cannot allocate %zu bytes to read it", path,
                             want + 1);
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            tp_status st = services_fail(TP_ERR_IO, "%s: read error at byte %zu: %s", path, got,
                                         r < 0 ? strerror(errno) : "file shrank while reading");
            free(buf);
            close(fd);
            return st;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[want] = 0;
    *data = buf;
    *size = want;
    return TP_OK;
}
