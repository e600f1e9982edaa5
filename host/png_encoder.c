/* The PNG encoder is shared with the plugins (TensorBoard images); the host compiles the
 * same single source rather than keeping a copy. */
#include "png.c"
