/* The "tfrecord" source: sharded TFRecord files of tf.train.Example records holding JPEG
 * images (ImageNet as TensorFlow's conversion script writes it).
 *
 * open() lists the shards, loads or builds each shard's index of record offsets (one pass
 * over the framing, cached as a DALI-style text index), and sums the counts; read() maps a
 * global sample index to (shard, offset), preads the framed record (thread-safe), checks both
 * CRCs, finds the image and label features and decodes the JPEG.
 *
 * Choices worth knowing:
 *  - GZIP/ZLIB shards can only be read front to back, so each one is inflated once at open()
 *    into an uncompressed cache file (index_dir, else $XDG_CACHE_HOME/trainpipe or
 *    ~/.cache/trainpipe), reused while it is newer than the shard, and read with pread.
 *  - Every rank indexes every shard: the host shards samples by index across ranks, so the
 *    source does not shard by file (rank/world_size are not needed here).
 *  - max_bad_records counts distinct lost records: those dropped while indexing (bad length
 *    CRC, truncated tail) plus each record that fails to read or decode (counted once, however
 *    many epochs meet it). Past the budget open() / read() fail with TP_ERR_IO, which stops
 *    the run instead of being skipped. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <trainpipe/trainpipe.h>

#include "example.h"
#include "jpeg_decode.h"
#include "tfrecord.h"

typedef struct tfrecord_config {
    const char *files;
    const char *data_dir;
    int compression;
    const char *image_key;
    const char *label_key;
    int64_t label_offset;
    int64_t num_classes;
    int64_t channels;
    int64_t max_bad_records;
    const char *index_dir;
    int verify_crc;
    int scaled_decode;
} tfrecord_config;

enum { COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_ZLIB };
static const char *const compression_choices[] = {"auto", "none", "gzip", "zlib", NULL};

#define CFG tfrecord_config
static const tp_param_def tfrecord_params[] = {
    {"files", TP_PARAM_STRING, NULL, TP_PARAM_FLAG_REQUIRED, 0, 0, NULL, offsetof(CFG, files),
     "shards: a glob pattern or a comma-separated list of paths and globs (relative ones "
     "resolve against data_dir)"},
    TP_PARAM_DEF_PATH(CFG, data_dir, "data_dir", NULL,
                      "folder that relative entries of files resolve against (default: the "
                      "current directory)"),
    TP_PARAM_DEF_ENUM(CFG, compression, "compression", "auto", compression_choices,
                      "shard compression; auto detects it from each file's first bytes"),
    TP_PARAM_DEF_STRING(CFG, image_key, "image_key", "image/encoded",
                        "feature holding the JPEG bytes"),
    TP_PARAM_DEF_STRING(CFG, label_key, "label_key", "image/class/label",
                        "int64 feature holding the class label"),
    TP_PARAM_DEF_INT(CFG, label_offset, "label_offset", "0", -1e9, 1e9,
                     "added to every stored label (ImageNet's 1..1000 needs -1)"),
    TP_PARAM_DEF_INT(CFG, num_classes, "num_classes", "1000", 1, 1e9,
                     "labels after the offset must lie in [0, num_classes)"),
    TP_PARAM_DEF_INT(CFG, channels, "channels", "3", 1, 3,
                     "3 decodes to RGB, 1 to grayscale (2 is refused)"),
    TP_PARAM_DEF_INT(CFG, max_bad_records, "max_bad_records", "100", 0, 1e15,
                     "distinct corrupt or undecodable records tolerated before failing"),
    TP_PARAM_DEF_PATH(CFG, index_dir, "index_dir", NULL,
                      "folder for the .idx files and decompressed caches (default: next to "
                      "each shard, else $XDG_CACHE_HOME/trainpipe)"),
    TP_PARAM_DEF_BOOL(CFG, verify_crc, "verify_crc", "true",
                      "check both masked CRC32Cs of every record"),
    TP_PARAM_DEF_BOOL(CFG, scaled_decode, "scaled_decode", "true",
                      "decode at 1/2, 1/4 or 1/8 scale when still at least the pipeline's "
                      "target size"),
};
#undef CFG

typedef struct shard {
    char *path;      /* the shard as the user named it (for messages) */
    char *data_path; /* what is read: the shard, or its decompressed cache */
    int fd;
    tfrecord_index index;
    int64_t first; /* global index of its first record */
} shard;

typedef struct tfrecord_source {
    const tp_host *host;
    const tfrecord_config *cfg;
    shard *shards;
    size_t n_shards;
    int64_t count;
    int target_height, target_width;
    uint8_t *bad_seen;  /* one bit per record: already counted as bad */
    int64_t bad_count;  /* distinct bad records (atomic) */
    int64_t dropped;    /* records lost while indexing */
} tfrecord_source;

typedef struct tfrecord_worker {
    jpeg_decoder *jpeg;
    uint8_t *buf;
    size_t cap;
} tfrecord_worker;

static const char WHO[] = "tfrecord";

static tp_status tfrecord_create(const tp_host *host, const void *config, void **self)
{
    const tfrecord_config *cfg = config;
    if (cfg->channels == 2)
        return host->fail(host, TP_ERR_INVALID, "tfrecord: channels = 2 is not supported (1 or 3)");
    tfrecord_source *s = host->calloc(1, sizeof *s);
    if (!s)
        return host->fail(host, TP_ERR_NOMEM, "tfrecord: out of memory");
    s->host = host;
    s->cfg = cfg;
    *self = s;
    return TP_OK;
}

static void tfrecord_destroy(void *self)
{
    tfrecord_source *s = self;
    if (!s)
        return;
    for (size_t i = 0; i < s->n_shards; i++) {
        if (s->shards[i].fd >= 0)
            close(s->shards[i].fd);
        free(s->shards[i].path);
        free(s->shards[i].data_path);
        tfrecord_index_free(&s->shards[i].index);
    }
    free(s->shards);
    free(s->bad_seen);
    s->host->free(s);
}

/* snprintf into a path buffer; -1 when the result would not fit (the path is then unusable). */
static int TP_PRINTF(3, 4) fmt_path(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* ------------------------------------------------------------------ listing the shards */

static tp_status add_shard(tfrecord_source *s, const char *path)
{
    shard *n = realloc(s->shards, (s->n_shards + 1) * sizeof *n);
    if (!n)
        return s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
    s->shards = n;
    shard *sh = &s->shards[s->n_shards];
    memset(sh, 0, sizeof *sh);
    sh->fd = -1;
    sh->path = strdup(path);
    if (!sh->path)
        return s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
    s->n_shards++;
    return TP_OK;
}

/* Expands `files` into the shard list: entries split on commas, relative ones prefixed
 * with data_dir, globs expanded in sorted order (a glob matching nothing is an error, as is a
 * plain path that does not exist). */
static tp_status list_shards(tfrecord_source *s)
{
    const char *files = s->cfg->files, *dir = s->cfg->data_dir;
    tp_status st = TP_OK;
    char *copy = strdup(files ? files : "");
    if (!copy)
        return s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ' || *item == '\t')
            item++;
        size_t n = strlen(item);
        while (n && (item[n - 1] == ' ' || item[n - 1] == '\t'))
            item[--n] = '\0';
        if (!n)
            continue;
        char full[PATH_MAX];
        int too_long = item[0] != '/' && item[0] != '~' && dir && dir[0]
                           ? fmt_path(full, sizeof full, "%s/%s", dir, item)
                           : fmt_path(full, sizeof full, "%s", item);
        if (too_long) {
            st = s->host->fail(s->host, TP_ERR_INVALID, "tfrecord: files: '%s': path too long",
                               item);
            goto done;
        }
        if (strpbrk(full, "*?[") || full[0] == '~') {
            glob_t g;
            int gr = glob(full, GLOB_TILDE | GLOB_ERR, NULL, &g);
            if (gr == GLOB_NOMATCH) {
                st = s->host->fail(s->host, TP_ERR_NOT_FOUND,
                                   "tfrecord: files: '%s' matches no file", full);
                goto done;
            }
            if (gr != 0) {
                st = s->host->fail(s->host, TP_ERR_IO, "tfrecord: files: cannot expand '%s'",
                                   full);
                goto done;
            }
            for (size_t i = 0; i < g.gl_pathc && !st; i++)
                st = add_shard(s, g.gl_pathv[i]);
            globfree(&g);
            if (st)
                goto done;
        } else {
            struct stat sb;
            if (stat(full, &sb) != 0) {
                st = s->host->fail(s->host, TP_ERR_NOT_FOUND, "tfrecord: files: %s: %s", full,
                                   strerror(errno));
                goto done;
            }
            if ((st = add_shard(s, full)))
                goto done;
        }
    }
    if (s->n_shards == 0)
        st = s->host->fail(s->host, TP_ERR_INVALID, "tfrecord: files = '%s' names no shard",
                           files ? files : "");
done:
    free(copy);
    return st;
}

/* ------------------------------------------------------------------ index and cache paths */

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* FNV-1a of the absolute path: keeps same-named shards from different folders apart in the
 * shared cache folder. */
static uint64_t path_hash(const char *path)
{
    char abs[PATH_MAX];
    const char *p = realpath(path, abs) ? abs : path;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    return h;
}

/* mkdir -p; returns 0 when the folder exists afterwards. */
static int make_dirs(const char *dir)
{
    char tmp[PATH_MAX];
    if (fmt_path(tmp, sizeof tmp, "%s", dir))
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0777);
            *p = '/';
        }
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    return stat(tmp, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

/* The per-user cache folder ($XDG_CACHE_HOME/trainpipe or ~/.cache/trainpipe), created on
 * demand; 0 on success. */
static int cache_dir(char *out, size_t size)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/') {
        if (fmt_path(out, size, "%s/trainpipe", xdg))
            return -1;
    } else if (home && home[0]) {
        if (fmt_path(out, size, "%s/.cache/trainpipe", home))
            return -1;
    } else {
        return -1;
    }
    return make_dirs(out);
}

/* Candidate places for a file derived from `path` (an index or a decompressed cache), best
 * first: index_dir (when set) or `beside` the path itself (when allowed), then the user
 * cache. Returns the number of candidates written. */
static int derived_paths(const tfrecord_source *s, const char *path, const char *suffix,
                         int beside, char out[2][PATH_MAX])
{
    int n = 0;
    char cdir[PATH_MAX];
    if (s->cfg->index_dir && s->cfg->index_dir[0]) {
        make_dirs(s->cfg->index_dir);
        if (fmt_path(out[n], PATH_MAX, "%s/%s%s", s->cfg->index_dir, base_name(path), suffix) == 0)
            n++;
    } else if (beside) {
        if (fmt_path(out[n], PATH_MAX, "%s%s", path, suffix) == 0)
            n++;
    }
    if (cache_dir(cdir, sizeof cdir) == 0 &&
        fmt_path(out[n], PATH_MAX, "%s/%s-%016llx%s", cdir, base_name(path),
                 (unsigned long long)path_hash(path), suffix) == 0)
        n++;
    return n;
}

/* Is `derived` at least as new as `source` (and non-empty when required)? */
static int is_fresh(const char *derived, const struct stat *source, int need_data)
{
    struct stat sb;
    if (stat(derived, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    if (need_data && sb.st_size == 0)
        return 0;
    if (sb.st_mtim.tv_sec != source->st_mtim.tv_sec)
        return sb.st_mtim.tv_sec > source->st_mtim.tv_sec;
    return sb.st_mtim.tv_nsec >= source->st_mtim.tv_nsec;
}

/* A temporary file next to `final`, opened for writing; -1 when the folder is not writable. */
static int open_temp(const char *final, char *tmp, size_t size)
{
    if (fmt_path(tmp, size, "%s.tmp.XXXXXX", final))
        return -1;
    int fd = mkstemp(tmp);
    if (fd >= 0)
        fchmod(fd, 0644);
    return fd;
}

/* ------------------------------------------------------------------ opening one shard */

/* Inflates a compressed shard into a cache file (reused while fresh); sets data_path. */
static tp_status decompress_shard(tfrecord_source *s, shard *sh, const struct stat *sb)
{
    char cand[2][PATH_MAX], tmp[PATH_MAX + 16], err[256];
    int n = derived_paths(s, sh->path, ".raw", 0, cand);
    for (int i = 0; i < n; i++)
        if (is_fresh(cand[i], sb, 0)) {
            sh->data_path = strdup(cand[i]);
            return sh->data_path ? TP_OK
                                 : s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
        }
    for (int i = 0; i < n; i++) {
        int out = open_temp(cand[i], tmp, sizeof tmp);
        if (out < 0)
            continue;
        int in = open(sh->path, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            close(out);
            unlink(tmp);
            return s->host->fail(s->host, TP_ERR_IO, "%s: cannot open: %s", sh->path,
                                 strerror(errno));
        }
        s->host->log(s->host, TP_LOG_INFO, WHO, "%s: decompressing once into %s", sh->path,
                     cand[i]);
        int rc = tfrecord_inflate(in, out, err, sizeof err);
        close(in);
        if (close(out) != 0 && rc == 0) {
            fmt_path(err, sizeof err, "cannot write the decompressed cache: %s", strerror(errno));
            rc = -1;
        }
        if (rc != 0) {
            unlink(tmp);
            return s->host->fail(s->host, TP_ERR_FORMAT, "%s: %s", sh->path, err);
        }
        if (rename(tmp, cand[i]) != 0) {
            unlink(tmp);
            continue;
        }
        sh->data_path = strdup(cand[i]);
        return sh->data_path ? TP_OK
                             : s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
    }
    return s->host->fail(s->host, TP_ERR_IO,
                         "%s: no writable folder for its decompressed cache (set index_dir)",
                         sh->path);
}

static long read_fd(void *ctx, uint64_t offset, void *buf, size_t n)
{
    int fd = *(const int *)ctx;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (long)done;
}

/* Loads a fresh index from one of the candidates; 0 when one was usable. */
static int load_index(tfrecord_source *s, shard *sh, const struct stat *data_sb,
                      char cand[2][PATH_MAX], int n)
{
    for (int i = 0; i < n; i++) {
        if (!is_fresh(cand[i], data_sb, 0))
            continue;
        FILE *f = fopen(cand[i], "rb");
        if (!f)
            continue;
        char *text = NULL;
        size_t len = 0, cap = 0, got;
        char chunk[65536];
        int ok = 1;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (len + got > cap) {
                size_t ncap = cap ? cap * 2 : sizeof chunk;
                while (ncap < len + got)
                    ncap *= 2;
                char *t = realloc(text, ncap);
                if (!t) {
                    ok = 0;
                    break;
                }
                text = t;
                cap = ncap;
            }
            memcpy(text + len, chunk, got);
            len += got;
        }
        fclose(f);
        size_t bad_line = 0;
        if (ok && tfrecord_index_parse(text ? text : "", len, (uint64_t)data_sb->st_size,
                                       &sh->index, &bad_line) == 0) {
            free(text);
            s->host->log(s->host, TP_LOG_DEBUG, WHO, "%s: %zu records from index %s",
                         sh->path, sh->index.count, cand[i]);
            return 0;
        }
        free(text);
        tfrecord_index_free(&sh->index);
        if (ok)
            s->host->log(s->host, TP_LOG_WARN, WHO, "%s:%zu: malformed index line; rebuilding",
                         cand[i], bad_line);
    }
    return -1;
}

/* Writes the index to the first candidate that accepts it (atomically). Failure to cache is
 * not an error: the index stays in memory. */
static void save_index(tfrecord_source *s, shard *sh, char cand[2][PATH_MAX], int n)
{
    char tmp[PATH_MAX + 16];
    for (int i = 0; i < n; i++) {
        int fd = open_temp(cand[i], tmp, sizeof tmp);
        if (fd < 0)
            continue;
        FILE *f = fdopen(fd, "wb");
        if (!f) {
            close(fd);
            unlink(tmp);
            continue;
        }
        int bad = tfrecord_index_write(f, &sh->index) != 0;
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, cand[i]) != 0) {
            unlink(tmp);
            continue;
        }
        return;
    }
    s->host->log(s->host, TP_LOG_WARN, WHO, "%s: no writable place for its index (%s)",
                 sh->path, n ? cand[0] : "no cache folder");
}

static tp_status open_shard(tfrecord_source *s, shard *sh)
{
    struct stat sb, data_sb;
    uint8_t head[12];
    char cand[2][PATH_MAX];
    int fd = open(sh->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return s->host->fail(s->host, TP_ERR_IO, "%s: cannot open: %s", sh->path,
                             strerror(errno));
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return s->host->fail(s->host, TP_ERR_IO, "%s: cannot stat: %s", sh->path,
                             strerror(errno));
    }
    int comp = s->cfg->compression;
    if (comp == COMPRESSION_AUTO) {
        long got = read_fd(&fd, 0, head, sizeof head);
        tfrecord_compression c = tfrecord_detect(head, got > 0 ? (size_t)got : 0);
        comp = c == TFRECORD_GZIP ? COMPRESSION_GZIP
             : c == TFRECORD_ZLIB ? COMPRESSION_ZLIB : COMPRESSION_NONE;
    }
    if (comp != COMPRESSION_NONE) {
        close(fd);
        tp_status st = decompress_shard(s, sh, &sb);
        if (st)
            return st;
        fd = open(sh->data_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &data_sb) != 0) {
            if (fd >= 0)
                close(fd);
            return s->host->fail(s->host, TP_ERR_IO, "%s: cannot open: %s", sh->data_path,
                                 strerror(errno));
        }
    } else {
        sh->data_path = strdup(sh->path);
        if (!sh->data_path) {
            close(fd);
            return s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
        }
        data_sb = sb;
    }
    sh->fd = fd;

    /* A decompressed cache keeps its index beside it; a plain shard in index_dir, beside the
     * shard, or in the user cache. */
    int n = derived_paths(s, sh->data_path, ".idx", 1, cand);
    if (load_index(s, sh, &data_sb, cand, n) == 0)
        return TP_OK;

    tfrecord_end end;
    uint64_t end_offset;
    if (tfrecord_scan(read_fd, &sh->fd, (uint64_t)data_sb.st_size, s->cfg->verify_crc,
                      &sh->index, &end, &end_offset) != 0)
        return s->host->fail(s->host, TP_ERR_IO, "%s: cannot index: %s", sh->data_path,
                             errno ? strerror(errno) : "out of memory");
    if (end == TFRECORD_END_BAD_LENGTH) {
        s->host->log(s->host, TP_LOG_WARN, WHO,
                     "%s: corrupted record at offset %llu (length CRC mismatch): dropping the "
                     "rest of the file (%llu bytes) after %zu records",
                     sh->data_path, (unsigned long long)end_offset,
                     (unsigned long long)((uint64_t)data_sb.st_size - end_offset),
                     sh->index.count);
        s->dropped++;
    } else if (end == TFRECORD_END_TRUNCATED) {
        s->host->log(s->host, TP_LOG_WARN, WHO,
                     "%s: truncated record at offset %llu: dropping its last %llu bytes",
                     sh->data_path, (unsigned long long)end_offset,
                     (unsigned long long)((uint64_t)data_sb.st_size - end_offset));
        s->dropped++;
    }
    save_index(s, sh, cand, n);
    return TP_OK;
}

/* ------------------------------------------------------------------ source operations */

static tp_status tfrecord_open(void *self, const tp_source_open_args *args,
                               tp_source_info *info)
{
    tfrecord_source *s = self;
    tp_status st;
    if (s->shards)
        return s->host->fail(s->host, TP_ERR_INVALID, "tfrecord: opened twice");
    if ((st = list_shards(s)))
        return st;
    int64_t total = 0;
    for (size_t i = 0; i < s->n_shards; i++) {
        if (s->host->interrupted(s->host))
            return s->host->fail(s->host, TP_ERR_INTERRUPTED, "tfrecord: indexing interrupted");
        if ((st = open_shard(s, &s->shards[i])))
            return st;
        s->shards[i].first = total;
        total += (int64_t)s->shards[i].index.count;
    }
    if (s->dropped > s->cfg->max_bad_records)
        return s->host->fail(s->host, TP_ERR_FORMAT,
                             "tfrecord: %lld damaged shard tails exceed max_bad_records = %lld",
                             (long long)s->dropped, (long long)s->cfg->max_bad_records);
    if (total == 0)
        return s->host->fail(s->host, TP_ERR_FORMAT, "tfrecord: %s: no records in %zu shard(s)",
                             s->cfg->files, s->n_shards);
    s->bad_seen = calloc((size_t)(total + 7) / 8, 1);
    if (!s->bad_seen)
        return s->host->fail(s->host, TP_ERR_NOMEM, "tfrecord: out of memory");
    s->bad_count = s->dropped;
    s->count = total;
    if (s->cfg->scaled_decode && args && args->size >= offsetof(tp_source_open_args, target_width) + sizeof(int)) {
        s->target_height = args->target_height;
        s->target_width = args->target_width;
    }
    s->host->log(s->host, TP_LOG_INFO, WHO, "%lld records in %zu shard(s)", (long long)total,
                 s->n_shards);
    info->count = total;
    info->height = 0;
    info->width = 0;
    info->channels = (int)s->cfg->channels;
    info->num_classes = (int)s->cfg->num_classes;
    info->class_names = NULL;
    return TP_OK;
}

static tp_status tfrecord_worker_init(void *self, void **worker)
{
    tfrecord_source *s = self;
    tfrecord_worker *w = calloc(1, sizeof *w);
    if (!w || !(w->jpeg = jpeg_decoder_new())) {
        free(w);
        return s->host->fail(s->host, TP_ERR_LIBRARY, "tfrecord: cannot create a JPEG decoder");
    }
    *worker = w;
    return TP_OK;
}

static void tfrecord_worker_fini(void *self, void *worker)
{
    tfrecord_worker *w = worker;
    if (!w)
        return;
    jpeg_decoder_free(w->jpeg);
    free(w->buf);
    free(w);
}

/* Counts a bad record once; past the budget turns the error into one that stops the run. */
static tp_status count_bad(tfrecord_source *s, int64_t index, tp_status st)
{
    uint8_t bit = (uint8_t)(1u << (index & 7));
    uint8_t old = __atomic_fetch_or(&s->bad_seen[index >> 3], bit, __ATOMIC_RELAXED);
    int64_t bad = (old & bit) ? __atomic_load_n(&s->bad_count, __ATOMIC_RELAXED)
                              : __atomic_add_fetch(&s->bad_count, 1, __ATOMIC_RELAXED);
    if (st == TP_ERR_FORMAT && bad > s->cfg->max_bad_records)
        return s->host->fail(s->host, TP_ERR_IO,
                             "tfrecord: %lld bad records exceed max_bad_records = %lld",
                             (long long)bad, (long long)s->cfg->max_bad_records);
    return st;
}

static tp_status read_record(tfrecord_source *s, tfrecord_worker *w, int64_t index,
                             tp_image *out, int32_t *label)
{
    /* The shard holding `index`: the last whose first record is <= index. */
    size_t lo = 0, hi = s->n_shards - 1;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if (s->shards[mid].first <= index)
            lo = mid;
        else
            hi = mid - 1;
    }
    const shard *sh = &s->shards[lo];
    const tfrecord_entry *e = &sh->index.entries[index - sh->first];
    char where[PATH_MAX + 64];
    snprintf(where, sizeof where, "%s: record at offset %llu", sh->data_path,
             (unsigned long long)e->offset);

    if (e->size > SIZE_MAX / 2 || e->size > (uint64_t)1 << 32)
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: record of %llu bytes is too large",
                             where, (unsigned long long)e->size);
    if (e->size > w->cap) {
        uint8_t *p = realloc(w->buf, (size_t)e->size);
        if (!p)
            return s->host->fail(s->host, TP_ERR_NOMEM, "%s: cannot allocate %llu bytes",
                                 where, (unsigned long long)e->size);
        w->buf = p;
        w->cap = (size_t)e->size;
    }
    int fd = sh->fd;
    long got = read_fd(&fd, e->offset, w->buf, (size_t)e->size);
    if (got < 0)
        return s->host->fail(s->host, TP_ERR_IO, "%s: read failed: %s", where, strerror(errno));
    if ((uint64_t)got != e->size)
        return s->host->fail(s->host, TP_ERR_FORMAT,
                             "%s: truncated record (file shorter than its index)", where);

    const uint8_t *data;
    size_t len;
    const char *why;
    if (tfrecord_check_record(w->buf, e->size, s->cfg->verify_crc, &data, &len, &why))
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: %s", where, why);

    const char *keys[2] = {s->cfg->image_key, s->cfg->label_key};
    example_feature f[2];
    size_t err_at = 0;
    if (example_find(data, len, keys, 2, f, &err_at) != EXAMPLE_OK)
        return s->host->fail(s->host, TP_ERR_FORMAT,
                             "%s: not a tf.train.Example (malformed protobuf at byte %zu of %zu)",
                             where, err_at, len);
    const uint8_t *img;
    size_t img_len;
    int64_t raw_label;
    if (example_bytes_at(&f[0], 0, &img, &img_len) != EXAMPLE_OK)
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: no bytes feature '%s'", where,
                             keys[0]);
    if (example_int64_at(&f[1], 0, &raw_label) != EXAMPLE_OK)
        return s->host->fail(s->host, TP_ERR_FORMAT, "%s: no int64 feature '%s'", where,
                             keys[1]);
    int64_t lab = raw_label + s->cfg->label_offset;
    if (raw_label < -((int64_t)1 << 40) || raw_label > ((int64_t)1 << 40) || lab < 0 ||
        lab >= s->cfg->num_classes)
        return s->host->fail(s->host, TP_ERR_FORMAT,
                             "%s: label %lld%+lld is outside [0, %lld) (check label_offset "
                             "and num_classes)",
                             where, (long long)raw_label, (long long)s->cfg->label_offset,
                             (long long)s->cfg->num_classes);
    tp_status st = jpeg_decode(w->jpeg, s->host, img, img_len, (int)s->cfg->channels,
                               s->target_height, s->target_width, out, where);
    if (st)
        return st;
    *label = (int32_t)lab;
    return TP_OK;
}

static tp_status tfrecord_read(void *self, void *worker, int64_t index, tp_image *out,
                               int32_t *label)
{
    tfrecord_source *s = self;
    tfrecord_worker *w = worker, *own = NULL;
    tp_status st;
    if (!s->shards || s->count == 0)
        return s->host->fail(s->host, TP_ERR_INVALID, "tfrecord: read before open");
    if (index < 0 || index >= s->count)
        return s->host->fail(s->host, TP_ERR_INVALID, "tfrecord: sample %lld is outside [0, %lld)",
                             (long long)index, (long long)s->count);
    if (!w) { /* a host that keeps no per-thread state: a decoder for this call only */
        if ((st = tfrecord_worker_init(s, (void **)&own)))
            return st;
        w = own;
    }
    st = read_record(s, w, index, out, label);
    if (st == TP_ERR_FORMAT)
        st = count_bad(s, index, st);
    if (own)
        tfrecord_worker_fini(s, own);
    return st;
}

static const tp_source_ops tfrecord_ops = {
    .size = sizeof(tp_source_ops),
    .open = tfrecord_open,
    .worker_init = tfrecord_worker_init,
    .worker_fini = tfrecord_worker_fini,
    .read = tfrecord_read,
};

static const tp_component tfrecord_component = {
    .size = sizeof(tp_component),
    .kind = TP_KIND_SOURCE,
    .name = "tfrecord",
    .summary = "sharded TFRecord files of tf.train.Example with JPEG images (ImageNet)",
    .params = tfrecord_params,
    .n_params = sizeof tfrecord_params / sizeof tfrecord_params[0],
    .config_size = sizeof(tfrecord_config),
    .create = tfrecord_create,
    .destroy = tfrecord_destroy,
    .ops = &tfrecord_ops,
};

static const tp_component *const components[] = {&tfrecord_component};

static const tp_plugin_info plugin_info = {
    TP_PLUGIN_INFO_HEADER,
    .name = "source-tfrecord",
    .version = "1.0.0",
    .license = "MIT",
    .summary = "TFRecord / tf.train.Example / JPEG data source",
    .components = components,
    .n_components = 1,
};

TP_EXPORT const tp_plugin_info *trainpipe_plugin_entry(void)
{
    return &plugin_info;
}
