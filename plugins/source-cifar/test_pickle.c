/* The safe pickle machine on hand-made opcode streams: values of every scalar opcode, the
 * memo (short and long forms), marks, cycles, numpy arrays in both byte orders, and every
 * refusal (globals, truncation, limits, malformed streams) with its file and byte offset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle.h"

static int failed;

/* Test pickles are written as text where %NN is the byte 0xNN (exactly two hex digits),
 * so no C hex escape can swallow a following letter. */
static size_t decode(const char *spec, uint8_t *out, size_t size)
{
    size_t n = 0;
    for (const char *p = spec; *p && n < size; n++) {
        if (p[0] == '%' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            out[n] = (uint8_t)strtoul(hex, NULL, 16);
            p += 3;
        } else {
            out[n] = (uint8_t)*p++;
        }
    }
    return n;
}

/* Runs a pickle; expects failure containing `needle`, or success when needle is NULL.
 * Returns the document on success (caller frees). */
static pk_doc *run_bytes(const char *what, const uint8_t *buf, size_t len,
                         const pk_options *opt, const char *needle)
{
    pk_doc *doc = NULL;
    char err[512] = "";
    int rc = pickle_load(buf, len, "t.pkl", opt, &doc, err, sizeof(err));
    int ok = needle ? (rc == -1 && strstr(err, needle) && !strchr(err, '\n')) : rc == 0;
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what, rc ? err : "loaded");
    failed += !ok;
    if (rc == 0 && needle) {
        pickle_free(doc);
        doc = NULL;
    }
    return doc;
}

/* The decoded bytes must outlive the document, so each call gets its own buffer. */
static pk_doc *run(const char *what, const char *spec, const pk_options *opt,
                   const char *needle)
{
    static uint8_t buffers[64][512];
    static int next;
    uint8_t *buf = buffers[next++ % 64];
    return run_bytes(what, buf, decode(spec, buf, 512), opt, needle);
}

static void check(const char *what, int cond)
{
    printf("%s   %s\n", cond ? "ok  " : "FAIL", what);
    failed += !cond;
}

static void scalars(void)
{
    /* ( LONG1 ff7f, LONG1 80, LONG1 <empty>, BINFLOAT 1.5, BININT -1, BININT2 65535,
     *   [] LONG_BINPUT 300, POP, LONG_BINGET 300, DUP, POP, NEWTRUE, NONE, ( K5 POP_MARK,
     *   SHORT_BINBYTES "ab", TUPLE ) STOP */
    static const char p[] = "%80%02("
                               "%8a%02%ff%7f"
                               "%8a%01%80"
                               "%8a%00"
                               "G%3f%f8%00%00%00%00%00%00"
                               "J%ff%ff%ff%ff"
                               "M%ff%ff"
                               "]r%2c%01%00%00"
                               "0"
                               "j%2c%01%00%00"
                               "20"
                               "%88N"
                               "(K%05"
                               "1"
                               "C%02ab"
                               "t.";
    pk_doc *doc = run("scalars, memo, marks", p, NULL, NULL);
    if (!doc)
        return;
    const pk_value *t = pickle_root(doc);
    int64_t v[3];
    check("root is a 10-tuple", t->kind == PK_TUPLE && t->u.seq.count == 10);
    if (t->kind == PK_TUPLE && t->u.seq.count == 10) {
        pk_value **it = t->u.seq.items;
        check("LONG1 ff7f = 32767, 80 = -128, empty = 0",
              pickle_int_at(t, 0, &v[0]) == 0 && v[0] == 32767 &&
                  pickle_int_at(t, 1, &v[1]) == 0 && v[1] == -128 &&
                  pickle_int_at(t, 2, &v[2]) == 0 && v[2] == 0);
        check("BINFLOAT 1.5", it[3]->kind == PK_FLOAT && it[3]->u.f == 1.5);
        check("BININT -1, BININT2 65535", it[4]->u.i == -1 && it[5]->u.i == 65535);
        check("LONG_BINGET returns the stored list", it[6]->kind == PK_LIST);
        check("NEWTRUE, NONE", it[7]->kind == PK_BOOL && it[7]->u.i == 1 &&
                                   it[8]->kind == PK_NONE);
        check("SHORT_BINBYTES", it[9]->kind == PK_BYTES && it[9]->u.bytes.len == 2 &&
                                    memcmp(it[9]->u.bytes.data, "ab", 2) == 0);
    }
    pickle_free(doc);

    /* A list that contains itself: no recursion anywhere, so nothing blows up. */
    doc = run("self-referencing list", ("%80%02]q%00h%00a."), NULL, NULL);
    if (doc) {
        const pk_value *l = pickle_root(doc);
        check("list[0] is the list", l->kind == PK_LIST && l->u.seq.count == 1 &&
                                         l->u.seq.items[0] == l);
        pickle_free(doc);
    }

    /* A dict with str and bytes keys; a later duplicate wins. */
    doc = run("dict lookups", ("%80%03}(X%01%00%00%00aK%01C%01bK%02X%01%00%00%00"
                                "aK%03u."),
              NULL, NULL);
    if (doc) {
        const pk_value *d = pickle_root(doc);
        const pk_value *a = pickle_dict_get(d, "a"), *b = pickle_dict_get(d, "b");
        check("d['a'] = 3 (last wins), d[b'b'] = 2", a && a->u.i == 3 && b && b->u.i == 2 &&
                                                         !pickle_dict_get(d, "c"));
        pickle_free(doc);
    }
}

static void arrays(void)
{
    /* _frombuffer(b'%ff%fe%00%05', dtype('>i2'), (2,), 'C') */
    pk_doc *doc = run("big-endian int16 array",
                      ("%80%04%8c%12numpy.core.numeric%8c%0b_frombuffer%93("
                        "C%04%ff%fe%00%05"
                        "%8c%05numpy%8c%05dtype%93%8c%03>i2%85R"
                        "K%02%85%8c%01Ct" "R."),
                      NULL, NULL);
    if (doc) {
        const pk_value *a = pickle_root(doc);
        int64_t x = 0, y = 0;
        check("values -2 and 5", pickle_length(a) == 2 && pickle_int_at(a, 0, &x) == 0 &&
                                     x == -2 && pickle_int_at(a, 1, &y) == 0 && y == 5 &&
                                     pickle_int_at(a, 2, &x) == -1);
        pickle_free(doc);
    }
    /* numpy 2 module, dtype byte order set by BUILD ('<' i4), _reconstruct path. */
    doc = run("little-endian int32 via _reconstruct + BUILD",
              ("%80%02" "cnumpy._core.multiarray\n_reconstruct\n" "cnumpy\nndarray\n"
                "K%00%85U%01b%87R"
                "(K%01K%02%85" "cnumpy\ndtype\nU%02i4K%00K%01%87R"
                "(K%03U%01<NNNJ%ff%ff%ff%ffJ%ff%ff%ff%ffK%00tb"
                "%89U%08%fe%ff%ff%ff%07%00%00%00tb."),
              NULL, NULL);
    if (doc) {
        const pk_value *a = pickle_root(doc);
        int64_t x = 0, y = 0;
        check("values -2 and 7", pickle_int_at(a, 0, &x) == 0 && x == -2 &&
                                     pickle_int_at(a, 1, &y) == 0 && y == 7);
        pickle_free(doc);
    }
    /* _codecs.encode: latin-1 text as UTF-8 becomes bytes. */
    doc = run("_codecs.encode latin1", ("%80%02" "c_codecs\nencode\n"
                                         "X%05%00%00%00a%c3%bf%c2%80X%06%00%00%00"
                                         "latin1%86R."),
              NULL, NULL);
    if (doc) {
        const pk_value *b = pickle_root(doc);
        check("bytes 61 ff 80", b->kind == PK_BYTES && b->u.bytes.len == 3 &&
                                    memcmp(b->u.bytes.data, (const uint8_t[]){0x61, 0xff, 0x80}, 3) == 0);
        pickle_free(doc);
    }
}

static void refusals(void)
{
    run("empty file", "", NULL, "t.pkl: byte 0: truncated pickle");
    run("protocol 6", ("%80%06."), NULL, "byte 0: pickle protocol 6");
    run("GLOBAL os.system", ("%80%02}q%00cos\nsystem\n"), NULL,
        "t.pkl: byte 5: pickle global os.system is not allowed");
    run("STACK_GLOBAL builtins.eval", ("%80%04%8c%08builtins%8c%04" "eval%93"), NULL,
        "byte 18: pickle global builtins.eval is not allowed");
    run("GLOBAL with odd bytes", ("cnum%01py\nx%ff\n"), NULL, "global num?py.x? is not");
    run("GLOBAL without newline", ("%80%02" "cnumpy\nndarr"), NULL,
        "byte 2: truncated pickle: GLOBAL's name has no newline");
    run("BINGET never stored", ("%80%02h%05"), NULL, "byte 2: memo index 5 was never");
    run("LONG_BINPUT beyond limit", ("NN" "r%ff%ff%ff%7f"), NULL, "beyond the limit");
    run("STOP on empty stack", ("."), NULL, "byte 0: pickle stack underflow");
    run("text opcode INT", ("I1\n."), NULL, "unsupported pickle opcode 0x49 ('I')");
    run("SETITEMS without dict", ("(K%01K%02u"), NULL, "SETITEMS without a dict");
    run("SETITEMS odd count", ("}(K%01u"), NULL, "odd number");
    run("APPEND to an int", ("K%01K%02" "a"), NULL, "APPEND to a int");
    run("APPENDS to an int", ("K%01(K%02e"), NULL, "byte 5: APPENDS to a int");
    run("APPENDS at the bottom", ("(e"), NULL, "byte 1: APPENDS without a list below");
    run("TUPLE without MARK", ("K%01t"), NULL, "needs a MARK");
    run("TUPLE2 below mark", ("K%01(K%02%86"), NULL, "TUPLE2 needs 2 stack items");
    run("negative BINSTRING", ("T%ff%ff%ff%ff"), NULL, "negative length");
    run("BINBYTES8 past the end", ("%8e%00%00%00%00%00%00%00%01"), NULL,
        "byte 0: truncated pickle: a 72057594037927936-byte string runs past");
    run("truncated BININT", ("J%01%02"), NULL, "opcode 0x4a needs 4 more bytes, the file "
                                                  "ends at byte 3");
    run("FRAME past the end", ("%80%04%95%ff%00%00%00%00%00%00%00N."), NULL,
        "byte 2: truncated pickle: a frame of 255 bytes");
    run("LONG1 of 9 bytes", ("%8a%09%01%02%03%04%05%06%07%08%09."), NULL,
        "does not fit in 64 bits");
    run("not latin-1", ("c_codecs\nencode\nX%03%00%00%00%e2%82%acX%06%00%00%00"
                         "latin1%86R."),
        NULL, "not latin-1 in UTF-8 (byte 0xe2 at index 0)");
    run("_codecs.encode utf-8", ("c_codecs\nencode\nX%01%00%00%00aX%05%00%00%00"
                                  "utf-8%86R."),
        NULL, "expects (str, 'latin1')");
    run("BUILD on a list", ("]NbN."), NULL, "BUILD on a list");
    run("calling ndarray", ("cnumpy\nndarray\n)R."), NULL, "cannot be called directly");
    run("REDUCE on an int", ("K%01)R"), NULL, "REDUCE on a int");
    run("dtype object", ("cnumpy\ndtype\nU%02O8%85R."), NULL, "numpy.dtype 'O8' is not");
    /* Found by fuzz_pickle: a descriptor with a newline must still give a one-line error. */
    run("dtype with a newline", ("cnumpy\ndtype\nU%02u\n%85R."), NULL, "numpy.dtype 'u?' is not");
    run("short array data", ("cnumpy.core.numeric\n_frombuffer\n(C%03" "abc"
                              "cnumpy\ndtype\nU%02u1%85RK%04%85U%01" "CtR."),
        NULL, "array data holds 3 bytes but its shape and dtype need 4");
    run("array shape overflow", ("cnumpy.core.numeric\n_frombuffer\n(C%03" "abc"
                                  "cnumpy\ndtype\nU%02u8%85R"
                                  "%8a%08%ff%ff%ff%ff%ff%ff%ff%7f"
                                  "%8a%08%ff%ff%ff%ff%ff%ff%ff%7f%86U%01" "CtR."),
        NULL, "need more than");
    run("ndarray state with a list", ("cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                                       "K%00%85U%01" "b%87R(K%01K%01%85"
                                       "cnumpy\ndtype\nU%02u1%85R%89]tb."),
        NULL, "not bytes (object arrays");

    /* Limits. */
    pk_options small = {.max_stack = 1000, .max_memo = 100, .max_bytes = 20000};
    static uint8_t deep[5000];
    memset(deep, '(', sizeof(deep));
    run_bytes("5000 nested MARKs", deep, sizeof(deep), &small, "more than 1000 nested marks");
    memset(deep, '2', sizeof(deep)); /* N, then DUP: no new values, only stack entries */
    deep[0] = 'N';
    run_bytes("5000 pushes", deep, sizeof(deep), &small, "pickle stack deeper than 1000");
    for (size_t i = 0; i + 1 < sizeof(deep); i += 2)
        deep[i] = ']', deep[i + 1] = '0';
    run_bytes("memory budget", deep, sizeof(deep), &small, "needs more than 20000 bytes");
    run("memo limit", ("N" "r%64%00%00%00"), &small, "memo index 100 is beyond");
}

int main(void)
{
    scalars();
    arrays();
    refusals();
    printf("%s\n", failed ? "FAIL" : "PASS");
    return failed ? 1 : 0;
}
