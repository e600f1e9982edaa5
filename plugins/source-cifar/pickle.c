/* The safe pickle machine (see pickle.h).
 *
 * Opcodes understood (pickletools' names):
 *   framing   PROTO FRAME STOP
 *   stack     MARK POP POP_MARK DUP
 *   memo      BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET
 *   scalars   NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT
 *   strings   SHORT_BINSTRING BINSTRING SHORT_BINBYTES BINBYTES BINBYTES8 BYTEARRAY8
 *             SHORT_BINUNICODE BINUNICODE BINUNICODE8
 *   containers EMPTY_DICT EMPTY_LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
 *             APPEND APPENDS SETITEM SETITEMS
 *   objects   GLOBAL STACK_GLOBAL REDUCE BUILD (only for the globals in pickle.h)
 * Everything else is refused. */
#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pk_doc {
    pk_value *root;
    pk_value *all; /* every value, linked through next_alloc */
};

/* The machine's state while running one pickle. */
typedef struct pk_machine {
    const uint8_t *buf;
    size_t len, pos, op_pos; /* op_pos: where the current opcode starts (for messages) */
    const char *name;
    pk_options opt;
    size_t used_bytes;
    pk_doc *doc;
    pk_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    pk_value **memo;
    size_t memo_cap, memo_count;
    char *err;
    size_t err_size;
} pk_machine;

static int pk_fail(pk_machine *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pk_fail(pk_machine *m, const char *fmt, ...)
{
    if (m->err && m->err_size) {
        int n = snprintf(m->err, m->err_size, "%s: byte %zu: ", m->name, m->op_pos);
        if (n >= 0 && (size_t)n < m->err_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(m->err + n, m->err_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

const char *pickle_kind_name(pk_kind kind)
{
    switch (kind) {
    case PK_NONE: return "None";
    case PK_BOOL: return "bool";
    case PK_INT: return "int";
    case PK_FLOAT: return "float";
    case PK_BYTES: return "bytes";
    case PK_STR: return "str";
    case PK_LIST: return "list";
    case PK_TUPLE: return "tuple";
    case PK_DICT: return "dict";
    case PK_GLOBAL: return "global";
    case PK_DTYPE: return "numpy.dtype";
    case PK_ARRAY: return "numpy.ndarray";
    }
    return "?";
}

/* ------------------------------------------------------------------ memory */

/* Counts bytes against the budget; fails when it would be exceeded. */
static int pk_charge(pk_machine *m, size_t bytes)
{
    if (bytes > m->opt.max_bytes - m->used_bytes)
        return pk_fail(m, "the pickle needs more than %zu bytes of memory", m->opt.max_bytes);
    m->used_bytes += bytes;
    return 0;
}

/* A new value with `extra` owned bytes after it (for decoded strings). */
static pk_value *pk_new(pk_machine *m, pk_kind kind, size_t extra)
{
    if (extra > SIZE_MAX - sizeof(pk_value) || pk_charge(m, sizeof(pk_value) + extra))
        return NULL;
    pk_value *v = calloc(1, sizeof(pk_value) + extra);
    if (!v) {
        pk_fail(m, "out of memory");
        return NULL;
    }
    v->kind = kind;
    v->next_alloc = m->doc->all;
    m->doc->all = v;
    return v;
}

/* Appends to a list, tuple or dict's item array, growing it geometrically. */
static int pk_seq_push(pk_machine *m, pk_value *seq, pk_value *item)
{
    if (seq->u.seq.count == seq->u.seq.cap) {
        size_t ncap = seq->u.seq.cap ? seq->u.seq.cap * 2 : 4;
        if (ncap > SIZE_MAX / sizeof(pk_value *) ||
            pk_charge(m, (ncap - seq->u.seq.cap) * sizeof(pk_value *)))
            return -1;
        pk_value **n = realloc(seq->u.seq.items, ncap * sizeof(pk_value *));
        if (!n)
            return pk_fail(m, "out of memory");
        seq->u.seq.items = n;
        seq->u.seq.cap = ncap;
    }
    seq->u.seq.items[seq->u.seq.count++] = item;
    return 0;
}

void pickle_free(pk_doc *doc)
{
    if (!doc)
        return;
    pk_value *v = doc->all;
    while (v) {
        pk_value *next = v->next_alloc;
        if (v->kind == PK_LIST || v->kind == PK_TUPLE || v->kind == PK_DICT)
            free(v->u.seq.items);
        free(v);
        v = next;
    }
    free(doc);
}

const pk_value *pickle_root(const pk_doc *doc) { return doc ? doc->root : NULL; }

/* ------------------------------------------------------------------ input */

static int pk_need(pk_machine *m, size_t n)
{
    if (n > m->len - m->pos)
        return pk_fail(m, "truncated pickle: opcode 0x%02x needs %zu more bytes, the file "
                       "ends at byte %zu", m->buf[m->op_pos], n, m->len);
    return 0;
}

static uint64_t pk_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Reads an n-byte little-endian length and checks that many bytes follow. */
static int pk_read_sized(pk_machine *m, int n, const uint8_t **data, size_t *size)
{
    if (pk_need(m, (size_t)n))
        return -1;
    uint64_t l = pk_le(m->buf + m->pos, n);
    m->pos += (size_t)n;
    if (l > m->len - m->pos)
        return pk_fail(m, "truncated pickle: a %llu-byte string runs past the end of the file "
                       "(byte %zu)", (unsigned long long)l, m->len);
    *data = m->buf + m->pos;
    *size = (size_t)l;
    m->pos += (size_t)l;
    return 0;
}

/* ------------------------------------------------------------------ stack */

static int pk_push(pk_machine *m, pk_value *v)
{
    if (!v)
        return -1;
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= m->opt.max_stack)
            return pk_fail(m, "pickle stack deeper than %zu entries", m->opt.max_stack);
        size_t ncap = m->stack_cap ? m->stack_cap * 2 : 64;
        if (ncap > m->opt.max_stack)
            ncap = m->opt.max_stack;
        pk_value **n = realloc(m->stack, ncap * sizeof(*n));
        if (!n)
            return pk_fail(m, "out of memory");
        m->stack = n;
        m->stack_cap = ncap;
    }
    m->stack[m->sp++] = v;
    return 0;
}

/* The stack floor: items above the newest mark belong to the current frame. */
static size_t pk_floor(const pk_machine *m) { return m->n_marks ? m->marks[m->n_marks - 1] : 0; }

static pk_value *pk_pop(pk_machine *m)
{
    if (m->sp <= pk_floor(m)) {
        pk_fail(m, "pickle stack underflow at opcode 0x%02x", m->buf[m->op_pos]);
        return NULL;
    }
    return m->stack[--m->sp];
}

static pk_value *pk_top(pk_machine *m)
{
    if (m->sp <= pk_floor(m)) {
        pk_fail(m, "pickle stack underflow at opcode 0x%02x", m->buf[m->op_pos]);
        return NULL;
    }
    return m->stack[m->sp - 1];
}

static int pk_mark(pk_machine *m)
{
    if (m->n_marks == m->marks_cap) {
        if (m->marks_cap >= m->opt.max_stack)
            return pk_fail(m, "more than %zu nested marks", m->opt.max_stack);
        size_t ncap = m->marks_cap ? m->marks_cap * 2 : 16;
        size_t *n = realloc(m->marks, ncap * sizeof(*n));
        if (!n)
            return pk_fail(m, "out of memory");
        m->marks = n;
        m->marks_cap = ncap;
    }
    m->marks[m->n_marks++] = m->sp;
    return 0;
}

/* Pops the newest mark; *start is where its items begin on the stack. */
static int pk_pop_mark(pk_machine *m, size_t *start)
{
    if (!m->n_marks)
        return pk_fail(m, "opcode 0x%02x needs a MARK and there is none", m->buf[m->op_pos]);
    *start = m->marks[--m->n_marks];
    return 0;
}

/* ------------------------------------------------------------------ memo */

static int pk_memo_put(pk_machine *m, uint64_t index, pk_value *v)
{
    if (!v)
        return pk_fail(m, "memo store with an empty stack");
    if (index >= m->opt.max_memo)
        return pk_fail(m, "memo index %llu is beyond the limit %zu", (unsigned long long)index,
                       m->opt.max_memo);
    if (index >= m->memo_cap) {
        size_t ncap = m->memo_cap ? m->memo_cap : 64;
        while (ncap <= index)
            ncap *= 2;
        if (ncap > m->opt.max_memo)
            ncap = m->opt.max_memo;
        if (pk_charge(m, (ncap - m->memo_cap) * sizeof(pk_value *)))
            return -1;
        pk_value **n = realloc(m->memo, ncap * sizeof(*n));
        if (!n)
            return pk_fail(m, "out of memory");
        memset(n + m->memo_cap, 0, (ncap - m->memo_cap) * sizeof(*n));
        m->memo = n;
        m->memo_cap = ncap;
    }
    if (!m->memo[index])
        m->memo_count++;
    m->memo[index] = v;
    return 0;
}

static int pk_memo_get(pk_machine *m, uint64_t index)
{
    if (index >= m->memo_cap || !m->memo[index])
        return pk_fail(m, "memo index %llu was never stored", (unsigned long long)index);
    return pk_push(m, m->memo[index]);
}

/* ------------------------------------------------------------------ values */

int pickle_is_text(const pk_value *v) { return v && (v->kind == PK_BYTES || v->kind == PK_STR); }

static int pk_text_is(const pk_value *v, const char *s)
{
    size_t n = strlen(s);
    return pickle_is_text(v) && v->u.bytes.len == n && memcmp(v->u.bytes.data, s, n) == 0;
}

const pk_value *pickle_dict_get(const pk_value *dict, const char *key)
{
    if (!dict || dict->kind != PK_DICT)
        return NULL;
    for (size_t i = dict->u.seq.count; i >= 2; i -= 2)
        if (pk_text_is(dict->u.seq.items[i - 2], key))
            return dict->u.seq.items[i - 1];
    return NULL;
}

size_t pickle_length(const pk_value *v)
{
    if (!v)
        return 0;
    if (v->kind == PK_LIST || v->kind == PK_TUPLE)
        return v->u.seq.count;
    if (v->kind == PK_ARRAY && v->u.array.built && v->u.array.dtype)
        return v->u.array.len / (size_t)v->u.array.dtype->u.dtype.itemsize;
    return 0;
}

int pickle_int_at(const pk_value *v, size_t i, int64_t *out)
{
    if (!v)
        return -1;
    if (v->kind == PK_LIST || v->kind == PK_TUPLE) {
        if (i >= v->u.seq.count)
            return -1;
        const pk_value *e = v->u.seq.items[i];
        if (e->kind != PK_INT && e->kind != PK_BOOL)
            return -1;
        *out = e->u.i;
        return 0;
    }
    if (v->kind != PK_ARRAY || !v->u.array.built)
        return -1;
    const pk_value *dt = v->u.array.dtype;
    char t = dt->u.dtype.type;
    int size = dt->u.dtype.itemsize;
    if ((t != 'i' && t != 'u' && t != 'b') || size < 1 || size > 8 ||
        i >= v->u.array.len / (size_t)size)
        return -1;
    const uint8_t *p = v->u.array.data + i * (size_t)size;
    uint64_t x = 0;
    if (dt->u.dtype.byteorder == '>')
        for (int k = 0; k < size; k++)
            x = x << 8 | p[k];
    else
        x = pk_le(p, size);
    if (t == 'i' && size < 8 && (x >> (8 * size - 1)) & 1)
        x |= ~(uint64_t)0 << (8 * size); /* sign-extend */
    if (t == 'u' && size == 8 && x > INT64_MAX)
        return -1;
    *out = (int64_t)x;
    return 0;
}

static pk_value *pk_new_int(pk_machine *m, pk_kind kind, int64_t i)
{
    pk_value *v = pk_new(m, kind, 0);
    if (v)
        v->u.i = i;
    return v;
}

static pk_value *pk_new_bytes(pk_machine *m, pk_kind kind, const uint8_t *data, size_t len)
{
    pk_value *v = pk_new(m, kind, 0);
    if (v) {
        v->u.bytes.data = data;
        v->u.bytes.len = len;
    }
    return v;
}

/* A tuple of stack items [start, sp), which are popped. */
static pk_value *pk_tuple_from(pk_machine *m, size_t start)
{
    pk_value *t = pk_new(m, PK_TUPLE, 0);
    if (!t)
        return NULL;
    for (size_t i = start; i < m->sp; i++)
        if (pk_seq_push(m, t, m->stack[i]))
            return NULL;
    m->sp = start;
    return t;
}

/* Copies a text value into buf as a printable C string (for messages). */
static void pk_printable(const uint8_t *s, size_t n, char *buf, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < size; i++)
        buf[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (n > size - 1 && size > 4)
        memcpy(buf + size - 4, "...", 3), j = size - 1;
    buf[j] = 0;
}

/* ------------------------------------------------------------------ globals */

static int pk_global(pk_machine *m, const uint8_t *mod, size_t mod_len, const uint8_t *name,
                     size_t name_len)
{
    static const struct {
        const char *module, *name;
        pk_global_id id;
    } allowed[] = {
        {"numpy.core.multiarray", "_reconstruct", PK_GLOBAL_RECONSTRUCT},
        {"numpy._core.multiarray", "_reconstruct", PK_GLOBAL_RECONSTRUCT},
        {"numpy.core.numeric", "_frombuffer", PK_GLOBAL_FROMBUFFER},
        {"numpy._core.numeric", "_frombuffer", PK_GLOBAL_FROMBUFFER},
        {"numpy", "ndarray", PK_GLOBAL_NDARRAY},
        {"numpy", "dtype", PK_GLOBAL_DTYPE},
        {"_codecs", "encode", PK_GLOBAL_CODECS_ENCODE},
    };
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (strlen(allowed[i].module) == mod_len && strlen(allowed[i].name) == name_len &&
            memcmp(allowed[i].module, mod, mod_len) == 0 &&
            memcmp(allowed[i].name, name, name_len) == 0) {
            pk_value *v = pk_new(m, PK_GLOBAL, 0);
            if (!v)
                return -1;
            v->u.global = allowed[i].id;
            return pk_push(m, v);
        }
    char pm[80], pn[80];
    pk_printable(mod, mod_len, pm, sizeof(pm));
    pk_printable(name, name_len, pn, sizeof(pn));
    return pk_fail(m, "pickle global %s.%s is not allowed (refused, never executed: a data "
                   "file may only rebuild numpy arrays)", pm, pn);
}

/* GLOBAL: "module\nname\n" in the opcode stream. */
static int pk_op_global(pk_machine *m)
{
    const uint8_t *parts[2];
    size_t lens[2];
    for (int k = 0; k < 2; k++) {
        const uint8_t *start = m->buf + m->pos;
        const uint8_t *nl = memchr(start, '\n', m->len - m->pos);
        if (!nl)
            return pk_fail(m, "truncated pickle: GLOBAL's %s has no newline before the end of "
                           "the file (byte %zu)", k ? "name" : "module", m->len);
        parts[k] = start;
        lens[k] = (size_t)(nl - start);
        m->pos += lens[k] + 1;
    }
    return pk_global(m, parts[0], lens[0], parts[1], lens[1]);
}

static int pk_op_stack_global(pk_machine *m)
{
    pk_value *name = pk_pop(m);
    pk_value *mod = name ? pk_pop(m) : NULL;
    if (!mod)
        return -1;
    if (mod->kind != PK_STR || name->kind != PK_STR)
        return pk_fail(m, "STACK_GLOBAL needs two str, got %s and %s",
                       pickle_kind_name(mod->kind), pickle_kind_name(name->kind));
    return pk_global(m, mod->u.bytes.data, mod->u.bytes.len, name->u.bytes.data,
                     name->u.bytes.len);
}

/* numpy dtype descriptors as pickled: "u1", "<i8", "|b1", "f4". */
static int pk_parse_descr(pk_machine *m, const pk_value *d, pk_value *dt)
{
    char text[16];
    if (!pickle_is_text(d) || d->u.bytes.len < 2 || d->u.bytes.len > 6)
        return pk_fail(m, "numpy.dtype needs a short type string like 'u1'");
    memcpy(text, d->u.bytes.data, d->u.bytes.len);
    text[d->u.bytes.len] = 0;
    const char *p = text;
    char order = '=';
    if (*p == '<' || *p == '>' || *p == '|' || *p == '=')
        order = *p++;
    char type = *p++;
    int size = 0;
    for (; *p >= '0' && *p <= '9' && size < 100; p++)
        size = size * 10 + (*p - '0');
    if (*p || (type != 'b' && type != 'i' && type != 'u' && type != 'f') ||
        !(size == 1 || size == 2 || size == 4 || size == 8) || (type == 'b' && size != 1)) {
        /* The descriptor comes from the file: show it printable, on one line. */
        char shown[16];
        pk_printable(d->u.bytes.data, d->u.bytes.len, shown, sizeof(shown));
        return pk_fail(m, "numpy.dtype '%s' is not supported (only bool, ints and floats)",
                       shown);
    }
    dt->u.dtype.type = type;
    dt->u.dtype.itemsize = size;
    dt->u.dtype.byteorder = size == 1 ? '|' : order;
    return 0;
}

/* Reads a shape tuple into arr; checks product(shape) * itemsize against the data size. */
static int pk_set_shape(pk_machine *m, pk_value *arr, const pk_value *shape, size_t itemsize,
                        size_t data_len)
{
    if (shape->kind != PK_TUPLE || shape->u.seq.count > PK_MAX_DIMS)
        return pk_fail(m, "array shape must be a tuple of at most %d ints", PK_MAX_DIMS);
    size_t total = itemsize;
    int overflow = 0;
    for (size_t i = 0; i < shape->u.seq.count; i++) {
        const pk_value *d = shape->u.seq.items[i];
        if (d->kind != PK_INT || d->u.i < 0)
            return pk_fail(m, "array dimension %zu is not a non-negative int", i);
        arr->u.array.shape[i] = d->u.i;
        if (d->u.i && total > SIZE_MAX / (uint64_t)d->u.i)
            overflow = 1;
        else
            total *= (size_t)d->u.i;
    }
    arr->u.array.ndim = (int)shape->u.seq.count;
    for (size_t i = 0; i < shape->u.seq.count; i++)
        if (arr->u.array.shape[i] == 0)
            total = 0, overflow = 0;
    if (overflow || total != data_len)
        return pk_fail(m, "array data holds %zu bytes but its shape and dtype need %s%zu",
                       data_len, overflow ? "more than " : "", overflow ? SIZE_MAX : total);
    return 0;
}

/* REDUCE: calls one of the known globals with a tuple of arguments. */
static int pk_op_reduce(pk_machine *m)
{
    pk_value *args = pk_pop(m);
    pk_value *fn = args ? pk_pop(m) : NULL;
    if (!fn)
        return -1;
    if (fn->kind != PK_GLOBAL)
        return pk_fail(m, "REDUCE on a %s, not a callable global", pickle_kind_name(fn->kind));
    if (args->kind != PK_TUPLE)
        return pk_fail(m, "REDUCE arguments are a %s, not a tuple",
                       pickle_kind_name(args->kind));
    pk_value **a = args->u.seq.items;
    size_t n = args->u.seq.count;
    switch (fn->u.global) {
    case PK_GLOBAL_RECONSTRUCT: {
        /* _reconstruct(ndarray, (0,), b'b'): an empty array BUILD fills in. */
        if (n != 3 || a[0]->kind != PK_GLOBAL || a[0]->u.global != PK_GLOBAL_NDARRAY)
            return pk_fail(m, "_reconstruct expects (numpy.ndarray, shape, typecode)");
        pk_value *arr = pk_new(m, PK_ARRAY, 0);
        return pk_push(m, arr);
    }
    case PK_GLOBAL_DTYPE: {
        if (n < 1 || n > 3)
            return pk_fail(m, "numpy.dtype expects 1 to 3 arguments, got %zu", n);
        pk_value *dt = pk_new(m, PK_DTYPE, 0);
        if (!dt || pk_parse_descr(m, a[0], dt))
            return -1;
        return pk_push(m, dt);
    }
    case PK_GLOBAL_FROMBUFFER: {
        /* _frombuffer(buffer, dtype, shape, order) */
        if (n != 4 || a[0]->kind != PK_BYTES || a[1]->kind != PK_DTYPE ||
            a[2]->kind != PK_TUPLE || !pickle_is_text(a[3]))
            return pk_fail(m, "_frombuffer expects (bytes, dtype, shape, order)");
        int fortran = pk_text_is(a[3], "F");
        if (!fortran && !pk_text_is(a[3], "C"))
            return pk_fail(m, "_frombuffer order must be 'C' or 'F'");
        pk_value *arr = pk_new(m, PK_ARRAY, 0);
        if (!arr ||
            pk_set_shape(m, arr, a[2], (size_t)a[1]->u.dtype.itemsize, a[0]->u.bytes.len))
            return -1;
        arr->u.array.built = 1;
        arr->u.array.fortran = fortran;
        arr->u.array.dtype = a[1];
        arr->u.array.data = a[0]->u.bytes.data;
        arr->u.array.len = a[0]->u.bytes.len;
        return pk_push(m, arr);
    }
    case PK_GLOBAL_CODECS_ENCODE: {
        /* _codecs.encode(text, 'latin1'): how Python 3 writes bytes at protocol 2. The text
         * is UTF-8 in the file; every code point must be below 256. */
        if (n != 2 || a[0]->kind != PK_STR ||
            !(pk_text_is(a[1], "latin1") || pk_text_is(a[1], "latin-1")))
            return pk_fail(m, "_codecs.encode expects (str, 'latin1')");
        const uint8_t *s = a[0]->u.bytes.data;
        size_t len = a[0]->u.bytes.len, out_len = 0;
        for (size_t i = 0; i < len; i++)
            out_len += (s[i] & 0xc0) != 0x80;
        pk_value *v = pk_new(m, PK_BYTES, out_len);
        if (!v)
            return -1;
        uint8_t *out = (uint8_t *)(v + 1);
        size_t j = 0;
        for (size_t i = 0; i < len;) {
            if (s[i] < 0x80) {
                out[j++] = s[i++];
            } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < len &&
                       (s[i + 1] & 0xc0) == 0x80) {
                out[j++] = (uint8_t)((s[i] & 0x03) << 6 | (s[i + 1] & 0x3f));
                i += 2;
            } else {
                return pk_fail(m, "_codecs.encode: the text is not latin-1 in UTF-8 "
                               "(byte 0x%02x at index %zu)", s[i], i);
            }
        }
        v->u.bytes.data = out;
        v->u.bytes.len = j;
        return pk_push(m, v);
    }
    case PK_GLOBAL_NDARRAY:
        break;
    }
    return pk_fail(m, "numpy.ndarray cannot be called directly");
}

/* BUILD: the state of a reconstructed array or of a dtype. */
static int pk_op_build(pk_machine *m)
{
    pk_value *state = pk_pop(m);
    pk_value *obj = state ? pk_top(m) : NULL;
    if (!obj)
        return -1;
    if (obj->kind == PK_DTYPE) {
        /* (version, byteorder, subarray, names, fields, elsize, alignment, flags) */
        if (state->kind != PK_TUPLE || state->u.seq.count < 2)
            return pk_fail(m, "dtype state must be a tuple");
        const pk_value *order = state->u.seq.items[1];
        if (!pickle_is_text(order) || order->u.bytes.len != 1 ||
            !strchr("<>|=", order->u.bytes.data[0]))
            return pk_fail(m, "dtype byte order must be one of < > | =");
        if (state->u.seq.count > 2 && state->u.seq.items[2]->kind != PK_NONE)
            return pk_fail(m, "dtype with a sub-array is not supported");
        if (obj->u.dtype.itemsize > 1)
            obj->u.dtype.byteorder = (char)order->u.bytes.data[0];
        return 0;
    }
    if (obj->kind != PK_ARRAY || obj->u.array.built)
        return pk_fail(m, "BUILD on a %s is not supported", pickle_kind_name(obj->kind));
    /* (version, shape, dtype, is_fortran, data) or without the version. */
    if (state->kind != PK_TUPLE || (state->u.seq.count != 5 && state->u.seq.count != 4))
        return pk_fail(m, "ndarray state must be a tuple of 4 or 5 items");
    pk_value **s = state->u.seq.items + (state->u.seq.count - 4);
    if (state->u.seq.count == 5 && (s[-1]->kind != PK_INT || s[-1]->u.i != 1))
        return pk_fail(m, "ndarray state version must be 1");
    if (s[1]->kind != PK_DTYPE)
        return pk_fail(m, "ndarray state has a %s where the dtype belongs",
                       pickle_kind_name(s[1]->kind));
    if (s[2]->kind != PK_BOOL && s[2]->kind != PK_INT)
        return pk_fail(m, "ndarray state's fortran flag is a %s", pickle_kind_name(s[2]->kind));
    if (s[3]->kind != PK_BYTES)
        return pk_fail(m, "ndarray data is a %s, not bytes (object arrays are not supported)",
                       pickle_kind_name(s[3]->kind));
    if (pk_set_shape(m, obj, s[0], (size_t)s[1]->u.dtype.itemsize, s[3]->u.bytes.len))
        return -1;
    obj->u.array.built = 1;
    obj->u.array.dtype = s[1];
    obj->u.array.fortran = s[2]->u.i != 0;
    obj->u.array.data = s[3]->u.bytes.data;
    obj->u.array.len = s[3]->u.bytes.len;
    return 0;
}

/* ------------------------------------------------------------------ the loop */

static int pk_run(pk_machine *m)
{
    const uint8_t *data;
    size_t size, start = 0;
    pk_value *v, *w, *target;
    for (;;) {
        m->op_pos = m->pos;
        if (m->pos >= m->len)
            return pk_fail(m, "truncated pickle: the file ends before STOP");
        uint8_t op = m->buf[m->pos++];
        switch (op) {
        case 0x80: /* PROTO */
            if (pk_need(m, 1))
                return -1;
            if (m->buf[m->pos] > 5)
                return pk_fail(m, "pickle protocol %d is newer than 5", m->buf[m->pos]);
            m->pos++;
            break;
        case 0x95: /* FRAME: a length prefix; the opcodes inside are read as usual */
            if (pk_need(m, 8))
                return -1;
            if (pk_le(m->buf + m->pos, 8) > m->len - m->pos - 8)
                return pk_fail(m, "truncated pickle: a frame of %llu bytes runs past the end "
                               "of the file (byte %zu)",
                               (unsigned long long)pk_le(m->buf + m->pos, 8), m->len);
            m->pos += 8;
            break;
        case '.': /* STOP */
            if (!(v = pk_pop(m)))
                return -1;
            m->doc->root = v;
            return 0;
        case '(': /* MARK */
            if (pk_mark(m))
                return -1;
            break;
        case '0': /* POP: an item, or the mark when none is above it */
            if (m->sp > pk_floor(m))
                m->sp--;
            else if (m->n_marks)
                m->n_marks--;
            else
                return pk_fail(m, "POP on an empty stack");
            break;
        case '1': /* POP_MARK */
            if (pk_pop_mark(m, &start))
                return -1;
            m->sp = start;
            break;
        case '2': /* DUP */
            if (!(v = pk_top(m)) || pk_push(m, v))
                return -1;
            break;
        case 'N':
            if (pk_push(m, pk_new(m, PK_NONE, 0)))
                return -1;
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (pk_push(m, pk_new_int(m, PK_BOOL, op == 0x88)))
                return -1;
            break;
        case 'J': /* BININT: signed 32-bit */
            if (pk_need(m, 4))
                return -1;
            v = pk_new_int(m, PK_INT, (int32_t)(uint32_t)pk_le(m->buf + m->pos, 4));
            m->pos += 4;
            if (pk_push(m, v))
                return -1;
            break;
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */
            if (pk_need(m, op == 'K' ? 1 : 2))
                return -1;
            v = pk_new_int(m, PK_INT, (int64_t)pk_le(m->buf + m->pos, op == 'K' ? 1 : 2));
            m->pos += op == 'K' ? 1 : 2;
            if (pk_push(m, v))
                return -1;
            break;
        case 0x8a: { /* LONG1: n bytes of little-endian two's complement */
            if (pk_need(m, 1))
                return -1;
            int n = m->buf[m->pos++];
            if (n > 8)
                return pk_fail(m, "LONG1 of %d bytes does not fit in 64 bits", n);
            if (pk_need(m, (size_t)n))
                return -1;
            uint64_t x = pk_le(m->buf + m->pos, n);
            if (n > 0 && n < 8 && (m->buf[m->pos + (size_t)n - 1] & 0x80))
                x |= ~(uint64_t)0 << (8 * n);
            m->pos += (size_t)n;
            if (pk_push(m, pk_new_int(m, PK_INT, (int64_t)x)))
                return -1;
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            if (pk_need(m, 8))
                return -1;
            uint64_t bits = 0;
            for (int k = 0; k < 8; k++)
                bits = bits << 8 | m->buf[m->pos + (size_t)k];
            m->pos += 8;
            if (!(v = pk_new(m, PK_FLOAT, 0)))
                return -1;
            memcpy(&v->u.f, &bits, sizeof(double));
            if (pk_push(m, v))
                return -1;
            break;
        }
        case 'U': /* SHORT_BINSTRING */
        case 'C': /* SHORT_BINBYTES */
        case 0x8c: /* SHORT_BINUNICODE */
            if (pk_read_sized(m, 1, &data, &size) ||
                pk_push(m, pk_new_bytes(m, op == 0x8c ? PK_STR : PK_BYTES, data, size)))
                return -1;
            break;
        case 'T': /* BINSTRING: the length is a signed 32-bit int */
            if (pk_need(m, 4))
                return -1;
            if (m->buf[m->pos + 3] & 0x80)
                return pk_fail(m, "BINSTRING with a negative length");
            /* fall through */
        case 'B': /* BINBYTES */
        case 'X': /* BINUNICODE */
            if (pk_read_sized(m, 4, &data, &size) ||
                pk_push(m, pk_new_bytes(m, op == 'X' ? PK_STR : PK_BYTES, data, size)))
                return -1;
            break;
        case 0x8e: /* BINBYTES8 */
        case 0x96: /* BYTEARRAY8 */
        case 0x8d: /* BINUNICODE8 */
            if (pk_read_sized(m, 8, &data, &size) ||
                pk_push(m, pk_new_bytes(m, op == 0x8d ? PK_STR : PK_BYTES, data, size)))
                return -1;
            break;
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
            if (pk_need(m, op == 'q' ? 1 : 4))
                return -1;
            size = (size_t)pk_le(m->buf + m->pos, op == 'q' ? 1 : 4);
            m->pos += op == 'q' ? 1 : 4;
            if (pk_memo_put(m, size, m->sp > pk_floor(m) ? m->stack[m->sp - 1] : NULL))
                return -1;
            break;
        case 0x94: /* MEMOIZE: the next index is the number of entries so far */
            if (pk_memo_put(m, m->memo_count, m->sp > pk_floor(m) ? m->stack[m->sp - 1] : NULL))
                return -1;
            break;
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
            if (pk_need(m, op == 'h' ? 1 : 4))
                return -1;
            size = (size_t)pk_le(m->buf + m->pos, op == 'h' ? 1 : 4);
            m->pos += op == 'h' ? 1 : 4;
            if (pk_memo_get(m, size))
                return -1;
            break;
        case '}': /* EMPTY_DICT */
        case ']': /* EMPTY_LIST */
        case ')': /* EMPTY_TUPLE */
            if (pk_push(m, pk_new(m, op == '}' ? PK_DICT : op == ']' ? PK_LIST : PK_TUPLE, 0)))
                return -1;
            break;
        case 't': /* TUPLE */
            if (pk_pop_mark(m, &start) || pk_push(m, pk_tuple_from(m, start)))
                return -1;
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            size = (size_t)(op - 0x84);
            if (m->sp < pk_floor(m) + size)
                return pk_fail(m, "TUPLE%zu needs %zu stack items", size, size);
            if (pk_push(m, pk_tuple_from(m, m->sp - size)))
                return -1;
            break;
        case 'a': /* APPEND */
            if (!(v = pk_pop(m)) || !(target = pk_top(m)))
                return -1;
            if (target->kind != PK_LIST)
                return pk_fail(m, "APPEND to a %s", pickle_kind_name(target->kind));
            if (pk_seq_push(m, target, v))
                return -1;
            break;
        case 'e': /* APPENDS */
            if (pk_pop_mark(m, &start))
                return -1;
            if (start <= pk_floor(m) || start == 0)
                return pk_fail(m, "APPENDS without a list below its MARK");
            target = m->stack[start - 1];
            if (target->kind != PK_LIST)
                return pk_fail(m, "APPENDS to a %s", pickle_kind_name(target->kind));
            for (size_t i = start; i < m->sp; i++)
                if (pk_seq_push(m, target, m->stack[i]))
                    return -1;
            m->sp = start;
            break;
        case 's': /* SETITEM */
            if (!(v = pk_pop(m)) || !(w = pk_pop(m)) || !(target = pk_top(m)))
                return -1;
            if (target->kind != PK_DICT)
                return pk_fail(m, "SETITEM on a %s", pickle_kind_name(target->kind));
            if (pk_seq_push(m, target, w) || pk_seq_push(m, target, v))
                return -1;
            break;
        case 'u': /* SETITEMS */
            if (pk_pop_mark(m, &start))
                return -1;
            if (start <= pk_floor(m) || start == 0)
                return pk_fail(m, "SETITEMS without a dict below its MARK");
            target = m->stack[start - 1];
            if (target->kind != PK_DICT)
                return pk_fail(m, "SETITEMS on a %s", pickle_kind_name(target->kind));
            if ((m->sp - start) % 2)
                return pk_fail(m, "SETITEMS with an odd number of items");
            for (size_t i = start; i < m->sp; i++)
                if (pk_seq_push(m, target, m->stack[i]))
                    return -1;
            m->sp = start;
            break;
        case 'c': /* GLOBAL */
            if (pk_op_global(m))
                return -1;
            break;
        case 0x93: /* STACK_GLOBAL */
            if (pk_op_stack_global(m))
                return -1;
            break;
        case 'R': /* REDUCE */
            if (pk_op_reduce(m))
                return -1;
            break;
        case 'b': /* BUILD */
            if (pk_op_build(m))
                return -1;
            break;
        default:
            return pk_fail(m, "unsupported pickle opcode 0x%02x%s%c%s", op,
                           op >= 0x20 && op < 0x7f ? " ('" : "",
                           op >= 0x20 && op < 0x7f ? op : ' ',
                           op >= 0x20 && op < 0x7f ? "')" : "");
        }
    }
}

int pickle_load(const uint8_t *buf, size_t len, const char *name, const pk_options *options,
                pk_doc **out, char *err, size_t err_size)
{
    pk_machine m;
    memset(&m, 0, sizeof(m));
    m.buf = buf;
    m.len = len;
    m.name = name ? name : "pickle";
    m.err = err;
    m.err_size = err_size;
    if (options)
        m.opt = *options;
    if (!m.opt.max_stack)
        m.opt.max_stack = (size_t)1 << 20;
    if (!m.opt.max_memo)
        m.opt.max_memo = (size_t)1 << 22;
    if (!m.opt.max_bytes)
        m.opt.max_bytes = ((size_t)64 << 20) + (len < SIZE_MAX / 8 ? 4 * len : SIZE_MAX / 2);
    *out = NULL;
    m.doc = calloc(1, sizeof(pk_doc));
    if (!m.doc)
        return pk_fail(&m, "out of memory");
    int rc = pk_run(&m);
    free(m.stack);
    free(m.marks);
    free(m.memo);
    if (rc) {
        pickle_free(m.doc);
        return -1;
    }
    *out = m.doc;
    return 0;
}
