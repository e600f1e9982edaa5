/* safetensors reading and writing, with a small bounds-checked JSON reader for the header.
 * See safetensors.h. */
#include "config.h"

#include "safetensors.h"

#include "atomic_file.h"
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's byte order)"
#endif

typedef struct meta_kv {
    char *key, *value;
} meta_kv;

struct safetensors_file {
    uint8_t *bytes;
    size_t size;
    safetensors_entry *entries;
    size_t n_entries, cap_entries;
    meta_kv *meta;
    size_t n_meta, cap_meta;
};

/* ------------------------------------------------------------------ JSON reader */

typedef struct jreader {
    const char *label;
    const uint8_t *p, *end;
    const uint8_t *origin; /* start of the file image: offsets in messages count from it */
    int failed;
} jreader;

static tp_status jfail(jreader *j, const char *what)
{
    if (!j->failed)
        services_fail(TP_ERR_FORMAT, "%s: byte %zu: malformed safetensors header: %s", j->label,
                      (size_t)(j->p - j->origin), what);
    j->failed = 1;
    return TP_ERR_FORMAT;
}

static void jws(jreader *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jpeek(jreader *j)
{
    jws(j);
    return j->p < j->end ? *j->p : -1;
}

static tp_status jexpect(jreader *j, int c, const char *what)
{
    if (jpeek(j) != c)
        return jfail(j, what);
    j->p++;
    return TP_OK;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static tp_status jhex4(jreader *j, unsigned *out)
{
    if (j->end - j->p < 4)
        return jfail(j, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0)
            return jfail(j, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return TP_OK;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* A JSON string into a malloc'ed NUL-terminated buffer (embedded NULs are refused). */
static tp_status jstring(jreader *j, char **out)
{
    *out = NULL;
    if (jpeek(j) != '"')
        return jfail(j, "expected a string");
    j->p++;
    const uint8_t *start = j->p;
    /* The decoded string is never longer than the escaped one. */
    size_t cap = 0;
    while (start + cap < j->end && start[cap] != '"') {
        if (start[cap] == '\\')
            cap++;
        cap++;
    }
    if (start + cap >= j->end)
        return jfail(j, "unterminated string");
    char *s = malloc(cap + 1), *o = s;
    if (!s)
        return services_fail(TP_ERR_NOMEM, "%s: out of memory reading the header", j->label);
    while (*j->p != '"') {
        uint8_t c = *j->p;
        if (c < 0x20) {
            free(s);
            return jfail(j, "control character in a string");
        }
        if (c != '\\') {
            *o++ = (char)c;
            j->p++;
            continue;
        }
        j->p++;
        c = *j->p++;
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (jhex4(j, &cp)) {
                free(s);
                return TP_ERR_FORMAT;
            }
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
                    free(s);
                    return jfail(j, "unpaired surrogate in \\u escape");
                }
                j->p += 2;
                if (jhex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    free(s);
                    return jfail(j, "bad low surrogate in \\u escape");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                free(s);
                return jfail(j, "unpaired surrogate in \\u escape");
            }
            if (cp == 0) {
                free(s);
                return jfail(j, "NUL character in a string");
            }
            /* A \u escape is 6 bytes and decodes to at most 4 (or 12 -> 4). */
            o += utf8_put(o, cp);
            break;
        }
        default:
            free(s);
            j->p--;
            return jfail(j, "bad escape in a string");
        }
    }
    j->p++;
    *o = 0;
    *out = s;
    return TP_OK;
}

/* A non-negative integer (no sign, fraction or exponent) that fits in int64. */
static tp_status juint(jreader *j, int64_t *out)
{
    jws(j);
    const uint8_t *s = j->p;
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (v > (uint64_t)(INT64_MAX - 9) / 10)
            return jfail(j, "integer too large");
        v = v * 10 + (uint64_t)(*j->p - '0');
        j->p++;
    }
    if (j->p == s)
        return jfail(j, "expected a non-negative integer");
    if (j->p - s > 1 && *s == '0')
        return jfail(j, "integer with a leading zero");
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return jfail(j, "expected an integer, not a fraction");
    *out = (int64_t)v;
    return TP_OK;
}

/* [int, int, ...] with at most `max` elements. */
static tp_status jint_array(jreader *j, int64_t *vals, int max, int *n, const char *what)
{
    *n = 0;
    if (jexpect(j, '[', what))
        return TP_ERR_FORMAT;
    if (jpeek(j) == ']') {
        j->p++;
        return TP_OK;
    }
    for (;;) {
        if (*n >= max)
            return jfail(j, "too many elements in an array");
        if (juint(j, &vals[(*n)++]))
            return TP_ERR_FORMAT;
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == ']') {
            j->p++;
            return TP_OK;
        }
        return jfail(j, "expected ',' or ']' in an array");
    }
}

/* ------------------------------------------------------------------ the header */

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
              {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4},
              {"U64", 8}};

static tp_status parse_tensor(jreader *j, safetensors_entry *e, int64_t *begin, int64_t *end)
{
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (jexpect(j, '{', "expected '{' describing a tensor"))
        return TP_ERR_FORMAT;
    if (jpeek(j) == '}')
        return jfail(j, "empty tensor description");
    for (;;) {
        char *key;
        const uint8_t *key_at = j->p;
        if (jstring(j, &key))
            return TP_ERR_FORMAT;
        if (jexpect(j, ':', "expected ':' after a key")) {
            free(key);
            return TP_ERR_FORMAT;
        }
        tp_status st = TP_OK;
        if (strcmp(key, "dtype") == 0 && !have_dtype) {
            char *dt;
            const uint8_t *at = j->p;
            st = jstring(j, &dt);
            if (st == TP_OK) {
                size_t k;
                for (k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++)
                    if (strcmp(dt, dtypes[k].name) == 0)
                        break;
                if (k == sizeof dtypes / sizeof dtypes[0]) {
                    j->p = at;
                    st = jfail(j, "unknown dtype");
                } else {
                    snprintf(e->dtype, sizeof e->dtype, "%s", dtypes[k].name);
                    e->elem_size = dtypes[k].size;
                }
                free(dt);
            }
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            st = jint_array(j, e->shape, SAFETENSORS_MAX_DIMS, &e->ndim, "expected a shape array");
            have_shape = 1;
        } else if (strcmp(key, "data_offsets") == 0 && !have_offsets) {
            int64_t off[2];
            int n;
            st = jint_array(j, off, 2, &n, "expected a data_offsets array");
            if (st == TP_OK && n != 2)
                st = jfail(j, "data_offsets needs two numbers");
            if (st == TP_OK && off[1] < off[0])
                st = jfail(j, "data_offsets end before they begin");
            if (st == TP_OK) {
                *begin = off[0];
                *end = off[1];
            }
            have_offsets = 1;
        } else {
            j->p = key_at;
            st = jfail(j, "unknown or repeated key in a tensor description");
        }
        free(key);
        if (st)
            return st;
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == '}') {
            j->p++;
            break;
        }
        return jfail(j, "expected ',' or '}' in a tensor description");
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return jfail(j, "a tensor needs dtype, shape and data_offsets");
    return TP_OK;
}

static tp_status parse_metadata(jreader *j, safetensors_file *f)
{
    if (jexpect(j, '{', "__metadata__ must be an object"))
        return TP_ERR_FORMAT;
    if (jpeek(j) == '}') {
        j->p++;
        return TP_OK;
    }
    for (;;) {
        char *k = NULL, *v = NULL;
        if (jstring(j, &k) || jexpect(j, ':', "expected ':' after a key") ||
            (jpeek(j) != '"' ? jfail(j, "__metadata__ values must be strings") : jstring(j, &v))) {
            free(k);
            free(v);
            return TP_ERR_FORMAT;
        }
        if (f->n_meta == f->cap_meta) {
            size_t cap = f->cap_meta ? 2 * f->cap_meta : 8;
            meta_kv *m = realloc(f->meta, cap * sizeof *m);
            if (!m) {
                free(k);
                free(v);
                return services_fail(TP_ERR_NOMEM, "%s: out of memory", j->label);
            }
            f->meta = m;
            f->cap_meta = cap;
        }
        f->meta[f->n_meta++] = (meta_kv){k, v};
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == '}') {
            j->p++;
            return TP_OK;
        }
        return jfail(j, "expected ',' or '}' in __metadata__");
    }
}

typedef struct span {
    int64_t begin, end;
    size_t index;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static tp_status parse_header(safetensors_file *f, const char *label)
{
    if (f->size < 8)
        return services_fail(TP_ERR_FORMAT, "%s: byte 0: %zu bytes is too short for a safetensors "
                             "file (8-byte header length missing)", label, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->bytes[i];
    if (n < 2 || n > SAFETENSORS_MAX_HEADER || n > f->size - 8)
        return services_fail(TP_ERR_FORMAT, "%s: byte 0: header length %llu does not fit the "
                             "%zu-byte file (at most %u)", label, (unsigned long long)n, f->size,
                             SAFETENSORS_MAX_HEADER);
    const uint8_t *data = f->bytes + 8 + n;
    size_t data_len = f->size - 8 - (size_t)n;
    jreader j = {label, f->bytes + 8, f->bytes + 8 + n, f->bytes, 0};
    if (jpeek(&j) != '{')
        return jfail(&j, "the header must be a JSON object");
    j.p++;
    span *spans = NULL;
    tp_status st = TP_OK;
    int have_metadata = 0; /* an empty one counts: n_meta cannot tell */
    if (jpeek(&j) == '}') {
        j.p++;
    } else {
        for (;;) {
            const uint8_t *key_at = j.p;
            char *name;
            if ((st = jstring(&j, &name)) != TP_OK)
                break;
            if ((st = jexpect(&j, ':', "expected ':' after a key")) != TP_OK) {
                free(name);
                break;
            }
            if (strcmp(name, "__metadata__") == 0) {
                free(name);
                if (have_metadata) {
                    j.p = key_at;
                    st = jfail(&j, "__metadata__ given twice");
                    break;
                }
                have_metadata = 1;
                if ((st = parse_metadata(&j, f)) != TP_OK)
                    break;
            } else {
                if (safetensors_find(f, name)) {
                    free(name);
                    j.p = key_at;
                    st = jfail(&j, "tensor name used twice");
                    break;
                }
                if (f->n_entries == f->cap_entries) {
                    size_t cap = f->cap_entries ? 2 * f->cap_entries : 64;
                    safetensors_entry *e = realloc(f->entries, cap * sizeof *e);
                    span *sp = realloc(spans, cap * sizeof *sp);
                    if (e)
                        f->entries = e;
                    if (sp)
                        spans = sp;
                    if (!e || !sp) {
                        free(name);
                        st = services_fail(TP_ERR_NOMEM, "%s: out of memory", label);
                        break;
                    }
                    f->cap_entries = cap;
                }
                safetensors_entry *e = &f->entries[f->n_entries];
                memset(e, 0, sizeof *e);
                e->name = name;
                f->n_entries++;
                int64_t b = 0, en = 0;
                const uint8_t *desc_at = j.p;
                if ((st = parse_tensor(&j, e, &b, &en)) != TP_OK)
                    break;
                /* Size from the shape, overflow-checked. */
                uint64_t count = 1;
                for (int d = 0; d < e->ndim; d++) {
                    if (e->shape[d] && count > (uint64_t)INT64_MAX / (uint64_t)e->shape[d]) {
                        j.p = desc_at;
                        st = jfail(&j, "shape too large");
                        break;
                    }
                    count *= (uint64_t)e->shape[d];
                }
                if (st)
                    break;
                if (count > (uint64_t)INT64_MAX / e->elem_size ||
                    (uint64_t)(en - b) != count * e->elem_size) {
                    j.p = desc_at;
                    st = jfail(&j, "data_offsets do not match shape x dtype size");
                    break;
                }
                if ((uint64_t)en > data_len) {
                    j.p = desc_at;
                    st = jfail(&j, "data_offsets run past the end of the file");
                    break;
                }
                e->count = (int64_t)count;
                e->data = data + b;
                e->nbytes = (size_t)(en - b);
                spans[f->n_entries - 1] = (span){b, en, f->n_entries - 1};
            }
            int c = jpeek(&j);
            if (c == ',') {
                j.p++;
                continue;
            }
            if (c == '}') {
                j.p++;
                break;
            }
            st = jfail(&j, "expected ',' or '}' after a tensor");
            break;
        }
    }
    if (st == TP_OK && jpeek(&j) != -1)
        st = jfail(&j, "trailing bytes after the JSON object");
    if (st == TP_OK) {
        /* The tensors must tile the data exactly: no gaps, no overlaps. */
        if (f->n_entries)
            qsort(spans, f->n_entries, sizeof *spans, span_cmp);
        int64_t at = 0;
        for (size_t i = 0; i < f->n_entries && st == TP_OK; i++) {
            if (spans[i].begin != at)
                st = services_fail(TP_ERR_FORMAT, "%s: byte %llu: tensor %s's data_offsets "
                                   "[%lld, %lld] leave a gap or overlap (expected to begin at %lld)",
                                   label, (unsigned long long)(8 + n + (uint64_t)spans[i].begin),
                                   f->entries[spans[i].index].name, (long long)spans[i].begin,
                                   (long long)spans[i].end, (long long)at);
            at = spans[i].end;
        }
        if (st == TP_OK && (size_t)at != data_len)
            st = services_fail(TP_ERR_FORMAT, "%s: byte %llu: %zu bytes of data follow the last "
                               "tensor", label, (unsigned long long)(8 + n + (uint64_t)at),
                               data_len - (size_t)at);
    }
    free(spans);
    return st;
}

tp_status safetensors_parse(const uint8_t *bytes, size_t size, const char *label,
                            safetensors_file **out)
{
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->bytes = malloc(size ? size : 1))) {
        free(f);
        return services_fail(TP_ERR_NOMEM, "%s: out of memory (%zu bytes)", label, size);
    }
    memcpy(f->bytes, bytes, size);
    f->size = size;
    tp_status st = parse_header(f, label);
    if (st != TP_OK) {
        safetensors_free(f);
        return st;
    }
    *out = f;
    return TP_OK;
}

tp_status safetensors_read(const char *path, safetensors_file **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return services_fail(TP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    tp_status st = TP_OK;
    uint8_t *buf = NULL;
    long len = -1;
    if (fseek(fp, 0, SEEK_END) == 0)
        len = ftell(fp);
    if (len < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        st = services_fail(TP_ERR_IO, "%s: cannot determine the size: %s", path, strerror(errno));
        goto done;
    }
    buf = malloc(len ? (size_t)len : 1);
    if (!buf) {
        st = services_fail(TP_ERR_NOMEM, "%s: out of memory (%ld bytes)", path, len);
        goto done;
    }
    if (fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        st = services_fail(TP_ERR_IO, "%s: read error: %s", path,
                           ferror(fp) ? strerror(errno) : "file shrank while reading");
        goto done;
    }
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f) {
        st = services_fail(TP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    f->bytes = buf;
    f->size = (size_t)len;
    buf = NULL;
    st = parse_header(f, path);
    if (st != TP_OK)
        safetensors_free(f);
    else
        *out = f;
done:
    free(buf);
    fclose(fp);
    return st;
}

void safetensors_free(safetensors_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_entries; i++)
        free(f->entries[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->entries);
    free(f->meta);
    free(f->bytes);
    free(f);
}

size_t safetensors_count(const safetensors_file *f) { return f->n_entries; }

const safetensors_entry *safetensors_at(const safetensors_file *f, size_t i)
{
    return i < f->n_entries ? &f->entries[i] : NULL;
}

const safetensors_entry *safetensors_find(const safetensors_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_entries; i++)
        if (f->entries[i].name && strcmp(f->entries[i].name, name) == 0)
            return &f->entries[i];
    return NULL;
}

const char *safetensors_metadata(const safetensors_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

static float half_to_float(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

tp_status safetensors_to_f32(const safetensors_entry *e, const char *path, float *out)
{
    /* The dtype is checked before any element: an empty tensor of another dtype is refused
     * too (it was accepted, having no element to check). */
    const uint8_t *p = e->data;
    if (strcmp(e->dtype, "F32") == 0) {
        if (e->count)
            memcpy(out, p, (size_t)e->count * 4);
    } else if (strcmp(e->dtype, "F64") == 0) {
        for (int64_t i = 0; i < e->count; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
    } else if (strcmp(e->dtype, "F16") == 0) {
        for (int64_t i = 0; i < e->count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = half_to_float(h);
        }
    } else if (strcmp(e->dtype, "BF16") == 0) {
        for (int64_t i = 0; i < e->count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&out[i], &u, 4);
        }
    } else {
        return services_fail(TP_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s; "
                             "floating-point tensors (F32, F64, F16, BF16) are expected",
                             path, e->name, e->dtype);
    }
    return TP_OK;
}

/* ------------------------------------------------------------------ writing */

/* Appends s to the growing buffer. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

tp_status safetensors_serialize(const safetensors_input *tensors, size_t n,
                                const char *const *metadata, const char *label, uint8_t **out,
                                size_t *out_size)
{
    sbuf h = {0};
    char num[64];
    int first = 1;
    *out = NULL;
    *out_size = 0;
    sb_str(&h, "{");
    if (metadata && metadata[0]) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; metadata[i] && metadata[i + 1]; i += 2) {
            if (i)
                sb_str(&h, ",");
            sb_json_string(&h, metadata[i]);
            sb_str(&h, ":");
            sb_json_string(&h, metadata[i + 1]);
        }
        sb_str(&h, "}");
        first = 0;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const safetensors_input *t = &tensors[i];
        if (t->ndim < 0 || t->ndim > SAFETENSORS_MAX_DIMS) {
            free(h.p);
            return services_fail(TP_ERR_INVALID, "%s: tensor %s has %d dimensions", label,
                                 t->name, t->ndim);
        }
        uint64_t count = 1;
        if (!first)
            sb_str(&h, ",");
        first = 0;
        sb_json_string(&h, t->name);
        sb_str(&h, t->is_i64 ? ":{\"dtype\":\"I64\",\"shape\":[" : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(&h, num);
            count *= (uint64_t)t->shape[d];
        }
        const uint64_t elem = t->is_i64 ? 8 : 4;
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                 (unsigned long long)(offset + elem * count));
        sb_str(&h, num);
        offset += elem * count;
    }
    sb_str(&h, "}");
    while (!h.oom && (8 + h.len) % 8)
        sb_str(&h, " "); /* the data starts 8-byte aligned */
    size_t total = 8 + h.len + (size_t)offset;
    uint8_t *buf = h.oom ? NULL : malloc(total);
    if (!buf) {
        free(h.p);
        return services_fail(TP_ERR_NOMEM, "%s: out of memory serialising %zu bytes", label,
                             total);
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    memcpy(buf + 8, h.p, h.len);
    uint8_t *at = buf + 8 + h.len;
    for (size_t i = 0; i < n; i++) {
        size_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++)
            count *= (size_t)tensors[i].shape[d];
        size_t bytes = count * (tensors[i].is_i64 ? 8 : 4);
        if (bytes)
            memcpy(at, tensors[i].data, bytes); /* little-endian hosts only (configure checks) */
        at += bytes;
    }
    free(h.p);
    *out = buf;
    *out_size = total;
    return TP_OK;
}

tp_status safetensors_write(const char *path, const safetensors_input *tensors, size_t n,
                            const char *const *metadata)
{
    uint8_t *bytes;
    size_t size;
    tp_status st = safetensors_serialize(tensors, n, metadata, path, &bytes, &size);
    if (st)
        return st;
    atomic_piece piece = { bytes, size };
    st = atomic_write_file(path, &piece, 1);
    free(bytes);
    return st;
}

/* ------------------------------------------------------------------ graphs */

tp_status graph_save_safetensors(graph *g, const char *path, const char *const *metadata)
{
    size_t n = graph_tensor_count(g);
    safetensors_input *in = calloc(n ? n : 1, sizeof *in);
    float **bufs = calloc(n ? n : 1, sizeof *bufs);
    tp_status st = TP_OK;
    if (!in || !bufs) {
        st = services_fail(TP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        const tp_tensor *d = graph_tensor_desc(g, i);
        size_t count = (size_t)tp_tensor_count(d);
        bufs[i] = malloc(count * sizeof(float));
        if (!bufs[i]) {
            st = services_fail(TP_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        st = graph_tensor_get(g, i, bufs[i], count);
        in[i] = (safetensors_input){graph_tensor_name(g, i), d->ndim, d->shape, bufs[i], 0};
    }
    if (st == TP_OK)
        st = safetensors_write(path, in, n, metadata);
done:
    for (size_t i = 0; bufs && i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(in);
    return st;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

tp_status graph_load_safetensors(graph *g, const char *path)
{
    safetensors_file *f;
    tp_status st = safetensors_read(path, &f);
    if (st != TP_OK)
        return st;
    st = graph_load_tensors(g, f, path, NULL);
    safetensors_free(f);
    return st;
}

static int has_prefix(const char *s, const char *prefix)
{
    return prefix && strncmp(s, prefix, strlen(prefix)) == 0;
}

tp_status graph_load_tensors(graph *g, const safetensors_file *f, const char *path,
                             const char *skip_prefix)
{
    tp_status st = TP_OK;
    for (size_t i = 0; i < safetensors_count(f); i++) {
        const safetensors_entry *e = safetensors_at(f, i);
        if (has_prefix(e->name, skip_prefix))
            continue;
        if (graph_tensor_find(g, e->name) < 0 && !ends_with(e->name, ".num_batches_tracked")) {
            st = services_fail(TP_ERR_INVALID, "%s: tensor %s is not in the model", path,
                               e->name);
            goto done;
        }
    }
    for (size_t i = 0; i < graph_tensor_count(g); i++) {
        const char *name = graph_tensor_name(g, i);
        const tp_tensor *d = graph_tensor_desc(g, i);
        const safetensors_entry *e = safetensors_find(f, name);
        if (!e) {
            st = services_fail(TP_ERR_NOT_FOUND, "%s: the model's tensor %s is missing", path,
                               name);
            goto done;
        }
        int same = e->ndim == d->ndim;
        for (int k = 0; same && k < d->ndim; k++)
            same = e->shape[k] == d->shape[k];
        if (!same) {
            char want[96] = "", got[96] = "";
            for (int k = 0; k < d->ndim; k++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? "x" : "",
                         (long long)d->shape[k]);
            for (int k = 0; k < e->ndim; k++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "x" : "",
                         (long long)e->shape[k]);
            st = services_fail(TP_ERR_INVALID, "%s: tensor %s has shape [%s], the model needs [%s]",
                               path, name, got, want);
            goto done;
        }
        float *buf = malloc((size_t)(e->count ? e->count : 1) * sizeof *buf);
        if (!buf) {
            st = services_fail(TP_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        st = safetensors_to_f32(e, path, buf);
        if (st == TP_OK)
            st = graph_tensor_set(g, i, buf, (size_t)e->count);
        free(buf);
        if (st != TP_OK)
            goto done;
    }
done:
    return st;
}
