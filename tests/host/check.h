/* Minimal assertions for the host's C tests: each failed CHECK prints file:line and the
 * expression, and the test exits 1 at the end if any failed. */
#ifndef TRAINPIPE_TEST_CHECK_H
#define TRAINPIPE_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            check_failures++;                                                            \
        }                                                                                \
    } while (0)

/* The message must contain `needle`. */
#define CHECK_CONTAINS(haystack, needle)                                                 \
    do {                                                                                 \
        const char *h_ = (haystack);                                                     \
        if (!h_ || !strstr(h_, (needle))) {                                              \
            fprintf(stderr, "%s:%d: expected \"%s\" in \"%s\"\n", __FILE__, __LINE__,    \
                    (needle), h_ ? h_ : "(null)");                                       \
            check_failures++;                                                            \
        }                                                                                \
    } while (0)

#define CHECK_EXIT() (check_failures ? (fprintf(stderr, "%d check(s) failed\n", check_failures), 1) : 0)

#endif
