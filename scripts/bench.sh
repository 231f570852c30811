#!/bin/sh
# scripts/bench.sh: the benchmarks (not tests). Builds dmakit (Release) and bench/dkbench,
# reserves 2 MiB hugepages for DPDK, then runs in order:
#   dkbench startup          dmakit's pool start-up against rte_eal_init, fresh process each
#   dkbench run legacy       EAL --legacy-mem -m 1024: dmakit and DPDK cases, interleaved
#   dkbench run dynamic      EAL dynamic memory: the same cases
# and prints the markdown table (medians and ratios). Must run as root (EAL in PA mode and
# dmakit's physical addresses need it). The hugepage count and any hugetlbfs mount it made
# are put back on exit. Method and the last measured table: docs/benchmarks.md.
#   DK_BENCH_HUGEPAGES=1536   2 MiB pages to have reserved while it runs
#   DK_BENCH_OUT=build-bench  where the build, raw results and logs go
set -eu
cd "$(dirname "$0")/.."
root="$(pwd)"
out="${DK_BENCH_OUT:-build-bench}"
want_pages="${DK_BENCH_HUGEPAGES:-1536}"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: run as root (DPDK's EAL in PA mode and physical addresses need it)" >&2
  exit 1
fi

# ---- packages -------------------------------------------------------------------------
sh scripts/deps.sh build
if ! pkg-config --exists libdpdk 2>/dev/null; then
  echo "bench.sh: installing libdpdk-dev (pkg-config libdpdk)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libdpdk-dev >/dev/null
fi
pkg-config --exists libdpdk || { echo "bench.sh: pkg-config libdpdk still missing" >&2; exit 1; }

# ---- build ------------------------------------------------------------------------------
echo "bench.sh: building dmakit (Release) and bench/dkbench in $out" >&2
cmake -S bench -B "$out" -DCMAKE_BUILD_TYPE=Release >"$root/$out.cmake.log" 2>&1 ||
  { cat "$root/$out.cmake.log" >&2; exit 1; }
rm -f "$root/$out.cmake.log"
cmake --build "$out" -j"$(nproc)" --target dkbench >"$out/build.log" 2>&1 ||
  { cat "$out/build.log" >&2; exit 1; }
bin="$out/dkbench"

# ---- hugepages: reserve now, restore on exit ----------------------------------------------
# every hugepage limit is put back as found (dmakit's pool may raise overcommit or 1 GiB counts)
nr=/proc/sys/vm/nr_hugepages
saved=""
for f in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages \
         /sys/kernel/mm/hugepages/hugepages-*/nr_overcommit_hugepages; do
  if [ -w "$f" ]; then saved="$saved $f=$(cat "$f")"; fi
done
prev_pages="$(cat "$nr")"
mounted=""
hugedir="$(awk '$3 == "hugetlbfs" { print $2; exit }' /proc/mounts)"
cleanup() {
  for d in $(awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts); do
    rm -f "$d"/dkbench* 2>/dev/null || true
  done
  rm -rf /var/run/dpdk/dkbench 2>/dev/null || true
  if [ -n "$mounted" ]; then umount "$mounted" 2>/dev/null || true; fi
  for kv in $saved; do
    echo "${kv#*=}" >"${kv%%=*}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$prev_pages" -lt "$want_pages" ]; then
  echo "$want_pages" >"$nr"
fi
got_pages="$(cat "$nr")"
if [ "$got_pages" -lt "$want_pages" ]; then
  echo "bench.sh: warning: asked for $want_pages hugepages, the kernel gave $got_pages" >&2
fi
if [ -z "$hugedir" ]; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages
  mounted=/dev/hugepages
  hugedir=/dev/hugepages
fi

# ---- run ----------------------------------------------------------------------------------
load="$(cut -d' ' -f1-3 /proc/loadavg)"
res="$out/results.tsv"
log="$out/eal.log"
: >"$res"
: >"$log"
for step in "startup" "run legacy" "run dynamic"; do
  echo "bench.sh: dkbench $step" >&2
  # shellcheck disable=SC2086
  if ! "$bin" $step >>"$res" 2>>"$log"; then
    echo "bench.sh: warning: dkbench $step failed (status $?); see $log" >&2
  fi
done

# ---- table --------------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
mem="$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
{
  echo "## dmakit benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`sudo sh scripts/bench.sh\` (dmakit $(git describe --always --dirty 2>/dev/null || echo '?'))."
  echo "Machine: $cpu, $(nproc) cores, $mem, Linux $(uname -r), DPDK $(pkg-config --modversion libdpdk),"
  echo "$got_pages x 2 MiB hugepages reserved for the run (hugetlbfs at $hugedir);"
  echo "load average at start $load (anything else running on the machine shows in the p25 - p75 spread)."
  echo
  "$bin" report "$res"
} >"$out/bench.md"
cat "$out/bench.md"
echo "bench.sh: raw results in $res, EAL output in $log, this table in $out/bench.md" >&2
exit 0
