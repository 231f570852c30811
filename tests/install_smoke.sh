#!/bin/sh
# tests/install_smoke.sh BUILD_DIR: install into a scratch prefix, then build a consumer with
# pkg-config against the installed headers and library (shared and static) and run it.
set -eu
build="$1"
pfx=$(mktemp -d)
trap 'rm -rf "$pfx"' EXIT
cmake --install "$build" --prefix "$pfx" >/dev/null
pc=$(find "$pfx" -name dmakit.pc)
[ -n "$pc" ] || { echo "FAIL: dmakit.pc not installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
cat > "$pfx/consumer.c" <<'C'
#include <dmakit/dmakit.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(4096, kIODirectionInOut, false);
  if (!b) return 1;
  unsigned char *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  for (int i = 0; i < 4096; i++) if (p[i]) return 2;
  memset(p, 0x5a, 16);
  unsigned char x[16];
  if (IOMemoryDescriptor_readBytes((IOMemoryDescriptor *)b, 0, x, 16) != 16 || x[15] != 0x5a) return 3;
  if (kIOReturnNoMemory != (IOReturn)0xE00002BD) return 4;
  OSSafeReleaseNULL(b);
  puts("consumer ok");
  return 0;
}
C
cc -std=c11 -Wall -Werror $(pkg-config --cflags dmakit) "$pfx/consumer.c" -o "$pfx/consumer" \
   -Wl,-rpath,"$(pkg-config --variable=libdir dmakit)" $(pkg-config --libs dmakit)
"$pfx/consumer"
cc -std=c11 -Wall -Werror $(pkg-config --cflags dmakit) "$pfx/consumer.c" -o "$pfx/consumer-static" \
   "$(pkg-config --variable=libdir dmakit)/libdmakit.a" -lpthread
"$pfx/consumer-static"
[ -x "$pfx/bin/dmakit" ] || { echo "FAIL: dmakit command not installed"; exit 1; }
echo "1 passed, 0 failed"
