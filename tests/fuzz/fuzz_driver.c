#include "config.h"
#include "tap.h"
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int main(void) { LLVMFuzzerTestOneInput((const uint8_t *)"", 0); return tap_done(); }
