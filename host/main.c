/* trainpipe: placeholder main until the CLI lands. */
#include "config.h"
int main(void) { return 0; }
