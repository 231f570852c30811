#!/bin/sh
# scripts/demo.sh: build dmakit and run its demo: what this machine can do, then a few
# constrained DMA buffers and where they landed in physical memory (run as root to see
# physical addresses; as a user it shows what needs no frame numbers).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDK_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec ./build/tools/dmakit demo
