#!/bin/sh
# examples/ring/run.sh: runs the ring example: starts the driver (ring_driver) on a socket in a
# fresh temporary directory, then the device emulator (ring_emulator) against it, and waits for
# both. Exit 0 only when both exit 0 (every completion matched, the read-only page refused the
# write). The CTest test example_ring runs this.
#   sh examples/ring/run.sh [DRIVER EMULATOR] [MESSAGES]
# Without DRIVER and EMULATOR, they are taken from build/examples/ of this checkout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 2 ]; then
  driver=$1 emulator=$2
  shift 2
else
  driver="$here/../../build/examples/ring_driver"
  emulator="$here/../../build/examples/ring_emulator"
fi
messages="${1:-100000}"
for b in "$driver" "$emulator"; do
  if [ ! -x "$b" ]; then
    echo "run.sh: $b not found; build first: cmake -S . -B build && cmake --build build" >&2
    exit 2
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/dk-ring.XXXXXX")
sock="$dir/driver.sock"
driver_pid=
cleanup() {
  # only the driver this script started, by its pid
  if [ -n "$driver_pid" ]; then kill "$driver_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$driver" "$sock" "$messages" &
driver_pid=$!
# The emulator retries its connection until the driver listens.
emulator_rc=0
"$emulator" "$sock" || emulator_rc=$?
driver_rc=0
wait "$driver_pid" || driver_rc=$?
driver_pid=
echo "run.sh: driver exit $driver_rc, emulator exit $emulator_rc"
if [ "$driver_rc" -ne 0 ] || [ "$emulator_rc" -ne 0 ]; then
  echo "run.sh: FAILED" >&2
  exit 1
fi
echo "run.sh: ring example passed ($messages descriptors)"
