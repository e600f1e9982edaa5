// fuzz-sources: plugins/source-cifar/pickle.c
// fuzz-cflags: -Iplugins/source-cifar
// fuzz-seeds: plugins/source-cifar/fixtures/variants plugins/source-cifar/fixtures/malicious plugins/source-cifar/fixtures/truncated plugins/source-cifar/fixtures/cifar-10-batches-py plugins/source-cifar/fixtures/cifar-100-python
/* libFuzzer target: the safe pickle machine of source-cifar on arbitrary bytes. A run must
 * end in a document or a one-line error; every byte the document points at must lie in the
 * input (ASan checks the reads below); nothing may leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every byte of a value's own storage so stray pointers show up under ASan. */
static unsigned touch(const pk_value *v)
{
    unsigned acc = 0;
    switch (v->kind) {
    case PK_BYTES:
    case PK_STR:
        for (size_t i = 0; i < v->u.bytes.len; i++)
            acc += v->u.bytes.data[i];
        break;
    case PK_ARRAY:
        if (v->u.array.built)
            for (size_t i = 0; i < v->u.array.len; i++)
                acc += v->u.array.data[i];
        break;
    default:
        break;
    }
    return acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pk_options opt = {.max_stack = 1 << 16, .max_memo = 1 << 16, .max_bytes = 32u << 20};
    pk_doc *doc = NULL;
    char err[256];
    err[0] = 0;
    if (pickle_load(data, size, "fuzz", &opt, &doc, err, sizeof(err)) != 0) {
        /* Errors are one NUL-terminated line naming the file. */
        if (strnlen(err, sizeof(err)) == sizeof(err) || strchr(err, '\n') ||
            strncmp(err, "fuzz: byte ", 11) != 0)
            __builtin_trap();
        return 0;
    }
    const pk_value *root = pickle_root(doc);
    volatile unsigned sink = touch(root);
    /* What the CIFAR reader looks at: dict entries, their elements as ints, array bytes. */
    if (root->kind == PK_DICT || root->kind == PK_LIST || root->kind == PK_TUPLE) {
        for (size_t i = 0; i < root->u.seq.count; i++) {
            const pk_value *v = root->u.seq.items[i];
            sink += touch(v);
            size_t n = pickle_length(v);
            for (size_t k = 0; k < n; k++) {
                int64_t x;
                if (pickle_int_at(v, k, &x) == 0)
                    sink += (unsigned)x;
                if ((v->kind == PK_LIST || v->kind == PK_TUPLE))
                    sink += touch(v->u.seq.items[k]);
            }
        }
        const pk_value *d = pickle_dict_get(root, "data");
        if (d)
            sink += touch(d);
    }
    (void)sink;
    pickle_free(doc);
    return 0;
}
