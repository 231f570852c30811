#!/bin/sh
# scripts/demo.sh: build dmakit and show what it does on this machine, in three steps:
#   1. dmakit doctor   what this machine can do for DMA buffers, and what to fix
#   2. dmakit demo     a series of constrained buffers, each checked against its promise
#   3. dmakit map      a picture of physical memory with live buffers (build/dmakit-map.svg,
#                      and .png when cairo is there; this script installs libcairo2-dev as root)
# Run as root to see physical addresses; as a user it shows what needs no frame numbers.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh build
if ! pkg-config --exists cairo 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "demo.sh: installing libcairo2-dev (PNG pictures)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends libcairo2-dev >/dev/null ||
      echo "demo.sh: libcairo2-dev could not be installed: the picture is SVG only" >&2
  else
    echo "demo.sh: cairo missing (run as root to install libcairo2-dev): the picture is SVG only" >&2
  fi
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDK_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
dmakit=./build/tools/dmakit

# ---- the machine's test lock -----------------------------------------------------------------
# Held from here to the end, as scripts/test.sh holds it for each test run: the demo's pool
# never raises hugepage counts under a running physical test. A caller that already holds
# it sets DK_TEST_LOCK_HELD=1.
if [ -z "${DK_TEST_LOCK_HELD:-}" ]; then
  lock="${DK_TEST_LOCK:-/tmp/dmakit-test.lock}"
  [ -e "$lock" ] || (umask 0; : >"$lock")
  exec 9<"$lock"
  flock -n 9 || { echo "demo.sh: waiting for $lock (a test run holds it)" >&2; flock 9; }
  export DK_TEST_LOCK_HELD=1
fi

echo "==== 1. dmakit doctor ===================================================================="
status=0
$dmakit doctor || status=$?
echo
echo "==== 2. dmakit demo ======================================================================"
$dmakit demo
echo
echo "==== 3. dmakit map ======================================================================="
if pkg-config --exists cairo 2>/dev/null; then
  $dmakit map -o build/dmakit-map.svg --png build/dmakit-map.png
else
  $dmakit map -o build/dmakit-map.svg
fi
echo
echo "demo.sh: doctor said exit $status (0 all good, 1 warnings, 3 no physical DMA buffers here)."
echo "demo.sh: open build/dmakit-map.svg (or .png) to see where the buffers landed."
