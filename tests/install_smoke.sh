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

# The C++ layer: driver code with Apple's include paths, through dmakit-cxx.pc and through the
# CMake package (find_package(dmakit), dmakit::cxx). Skipped without a C++ compiler.
if command -v c++ >/dev/null 2>&1; then
  cat > "$pfx/driver.cpp" <<'CXX'
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IODMACommand.h>
#include <DriverKit/IOBufferMemoryDescriptor.h>
#include <libkern/c++/OSSharedPtr.h>
#include <stdio.h>
int main()
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor::withCapacity(4096, kIODirectionInOut);
  if (!b || b->getLength() != 4096) return 1;
  IODMACommand *c = IODMACommand::withSpecification(kIODMACommandOutputHost64, 64, 0);
  if (!c) return 2;
  OSSharedPtr<IOBufferMemoryDescriptor> d;
  if (IOBufferMemoryDescriptor::Create(kIOMemoryDirectionIn, 100, 0, d.attach()) != kIOReturnSuccess) return 3;
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  puts("c++ consumer ok");
  return 0;
}
CXX
  pc_cxx=$(find "$pfx" -name dmakit-cxx.pc)
  [ -n "$pc_cxx" ] || { echo "FAIL: dmakit-cxx.pc not installed"; exit 1; }
  c++ -std=c++17 -Wall -Wextra -Werror $(pkg-config --cflags dmakit-cxx) "$pfx/driver.cpp" -o "$pfx/driver" \
     -Wl,-rpath,"$(pkg-config --variable=libdir dmakit)" $(pkg-config --libs dmakit-cxx)
  "$pfx/driver"
  mkdir -p "$pfx/cmake-consumer"
  cat > "$pfx/cmake-consumer/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES C CXX)
find_package(dmakit REQUIRED)
add_executable(driver ../driver.cpp)
target_link_libraries(driver PRIVATE dmakit::cxx)
add_executable(cdriver ../consumer.c)
target_link_libraries(cdriver PRIVATE dmakit::dmakit_static)
CMK
  cmake -S "$pfx/cmake-consumer" -B "$pfx/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$pfx" \
        -DCMAKE_BUILD_RPATH="$(pkg-config --variable=libdir dmakit)" >/dev/null
  cmake --build "$pfx/cmake-consumer/build" >/dev/null
  "$pfx/cmake-consumer/build/driver"
  "$pfx/cmake-consumer/build/cdriver"
else
  echo "SKIP: no C++ compiler: the C++ layer's consumers are not built"
fi
echo "1 passed, 0 failed"
