/* tools/dmakit.c: placeholder until the command is written. */
#include <dmakit/dmakit.h>
#include <stdio.h>
int main(void) { printf("page size %u\n", dk_capabilities()->page_size); return 0; }
