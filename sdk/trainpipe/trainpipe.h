/* trainpipe SDK: the one header a plugin includes.
 *
 *   #include <trainpipe/trainpipe.h>
 *
 * See plugin.h for the ABI and versioning rules, and share/doc/architecture.md for how to
 * write a plugin. Compile plugins with `pkg-config --cflags trainpipe`; they link against
 * nothing of trainpipe's. */
#ifndef TRAINPIPE_TRAINPIPE_H
#define TRAINPIPE_TRAINPIPE_H

#include <trainpipe/status.h>
#include <trainpipe/params.h>
#include <trainpipe/plugin.h>
#include <trainpipe/rng.h>
#include <trainpipe/tensor.h>
#include <trainpipe/backend.h>
#include <trainpipe/source.h>
#include <trainpipe/augment.h>
#include <trainpipe/model.h>
#include <trainpipe/optimizer.h>
#include <trainpipe/logger.h>

#endif /* TRAINPIPE_TRAINPIPE_H */
