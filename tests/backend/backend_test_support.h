/* What the backend test programs share: whether they run under AddressSanitizer, and where
 * the backend plugin under test is. */
#ifndef TRAINPIPE_BACKEND_TEST_SUPPORT_H
#define TRAINPIPE_BACKEND_TEST_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* LeakSanitizer crashes at exit while walking the dynamic TLS of OpenMP worker threads once
 * libdnnl has been dlopen'ed (a 20-line program that dlopens libdnnl and runs one ReLU
 * reproduces it; nothing of trainpipe is involved), so under AddressSanitizer the tests
 * either keep backend-cpu on one thread or leave with _exit. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* The plugin file of backend `name` into path: $TP_PLUGIN_DIR, else the build tree
 * ($TP_BUILDDIR/plugins/.libs). 0 when neither holds a readable one. */
static inline int find_backend_plugin(const char *name, char *path, size_t size)
{
    const char *dir = getenv("TP_PLUGIN_DIR");
    const char *build = getenv("TP_BUILDDIR");
    if (dir) {
        snprintf(path, size, "%s/backend-%s.so", dir, name);
        if (access(path, R_OK) == 0)
            return 1;
    }
    if (build) {
        snprintf(path, size, "%s/plugins/.libs/backend-%s.so", build, name);
        if (access(path, R_OK) == 0)
            return 1;
    }
    return 0;
}

#endif
