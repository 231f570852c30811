#!/bin/sh
# scripts/bench.sh: the benchmarks (not tests). Builds dmakit (Release), bench/dkbench and
# bench/dkscale, reserves 2 MiB hugepages for DPDK, then runs in order:
#   dkbench startup          dmakit's pool start-up against rte_eal_init, fresh process each
#   dkbench run legacy       EAL --legacy-mem -m 1024: one buffer at a time, interleaved
#   dkbench run dynamic      EAL dynamic memory: the same cases
#   dkscale run              EAL --legacy-mem -m 1536: thousands to a million buffers live
#                            (sweep, churn, threads, producer/consumer, mapper, resident bytes)
#   dkextmem                 registering 1 GiB the program already has: withAddressRange +
#                            prepare against rte_extmem_register (EAL dynamic memory)
# and prints the markdown tables (medians, ratios, each target met or not). Must run as root
# (EAL in PA mode and dmakit's physical addresses need it). The hugepage counts and any
# hugetlbfs mount it made are put back on exit. Method and the last measured tables:
# docs/benchmarks.md.
#   bench.sh [--quick] [--only single|scale|extmem]
#     --quick                the live-count cases at small counts (about a minute), nothing else
#     --only single|scale|extmem  only the one-buffer cases (dkbench), only the live-count ones,
#                            or only the external-memory registration (dkextmem)
#   DK_BENCH_HUGEPAGES=N      2 MiB pages to have reserved while it runs (default 1536; 1088 for
#                             the live-count cases alone, 704 for --quick)
#   DK_BENCH_OUT=build-bench  where the build, raw results, JSON, SVG and logs go
#   DK_SCALE_MAX_MB, DK_SCALE_BUDGET_S, DK_SCALE_EAL_MB: see docs/benchmarks.md
set -eu
cd "$(dirname "$0")/.."
root="$(pwd)"
out="${DK_BENCH_OUT:-build-bench}"
args="$*"
parts="single scale extmem"
scale_flag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) parts="scale"; scale_flag="--quick" ;;
    --only)
      [ $# -ge 2 ] || { echo "bench.sh: --only takes single, scale or extmem" >&2; exit 2; }
      case "$2" in single|scale|extmem) parts="$2" ;; *) echo "bench.sh: --only takes single, scale or extmem" >&2; exit 2 ;; esac
      shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$parts$scale_flag" in
  "single scale extmem") default_pages=1536 ;;
  extmem)         default_pages=0 ;;       # EAL dynamic memory, nothing allocated from it
  scale--quick)   default_pages=704 ;;     # EAL -m 1024 and dmakit's 256 MiB points, with room
  scale)          default_pages=1088 ;;    # EAL -m 1536 and dmakit's 512 MiB points, with room
  *)              default_pages=1536 ;;
esac
want_pages="${DK_BENCH_HUGEPAGES:-$default_pages}"

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
cmake --build "$out" -j"$(nproc)" --target dkbench dkscale dkextmem >"$out/build.log" 2>&1 ||
  { cat "$out/build.log" >&2; exit 1; }
bin="$out/dkbench"
scale="$out/dkscale"
extmem="$out/dkextmem"

# ---- the machine's test lock ---------------------------------------------------------------
# Held from here to the end, as scripts/test.sh holds it for each test run: hugepage counts
# are never changed under a running physical test (or the other way round). A caller that
# already holds it sets DK_TEST_LOCK_HELD=1.
if [ -z "${DK_TEST_LOCK_HELD:-}" ]; then
  lock="${DK_TEST_LOCK:-/tmp/dmakit-test.lock}"
  [ -e "$lock" ] || (umask 0; : >"$lock")
  exec 9<"$lock"
  flock -n 9 || { echo "bench.sh: waiting for $lock (a test run holds it)" >&2; flock 9; }
  export DK_TEST_LOCK_HELD=1
fi

# ---- hugepages: reserve now, restore on exit ----------------------------------------------
# every hugepage limit is put back as found (dmakit's pool may raise overcommit or 1 GiB counts)
# (nr_hugepages as its persistent pages, read whole: scripts/hugepages.sh)
. scripts/hugepages.sh
nr=/proc/sys/vm/nr_hugepages
saved=""
for f in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages \
         /sys/kernel/mm/hugepages/hugepages-*/nr_overcommit_hugepages; do
  if [ -w "$f" ]; then saved="$saved $f=$(dk_hp_value "$f")"; fi
done
prev_pages="$(cat "$nr")"
mounted=""
hugedir="$(awk '$3 == "hugetlbfs" { print $2; exit }' /proc/mounts)"
cleanup() {
  for d in $(awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts); do
    rm -f "$d"/dkbench* "$d"/dkextmem* 2>/dev/null || true
  done
  rm -rf /var/run/dpdk/dkbench /var/run/dpdk/dkbench-scale /var/run/dpdk/dkextmem 2>/dev/null || true
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
sres="$out/scale.tsv"
log="$out/eal.log"
: >"$log"
case " $parts " in *" single "*)
  : >"$res"
  for step in "startup" "run legacy" "run dynamic"; do
    echo "bench.sh: dkbench $step" >&2
    # shellcheck disable=SC2086
    if ! "$bin" $step >>"$res" 2>>"$log"; then
      echo "bench.sh: warning: dkbench $step failed (status $?); see $log" >&2
    fi
  done ;;
esac
case " $parts " in *" scale "*)
  echo "bench.sh: dkscale run $scale_flag (thousands to a million buffers live)" >&2
  # shellcheck disable=SC2086
  if ! "$scale" run $scale_flag >"$sres" 2>>"$log"; then
    echo "bench.sh: warning: dkscale run failed (status $?); see $log" >&2
  fi ;;
esac
case " $parts " in *" extmem "*)
  echo "bench.sh: dkextmem (registering 1 GiB of the program's own memory)" >&2
  if ! "$extmem" >"$out/extmem.md" 2>>"$log"; then
    echo "bench.sh: warning: dkextmem failed (status $?); see $log" >&2
  fi ;;
esac

# ---- table --------------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
mem="$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
{
  echo "## dmakit benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`sudo sh scripts/bench.sh${args:+ }$args\` (dmakit $(git describe --always --dirty 2>/dev/null || echo '?'))."
  echo "Machine: $cpu, $(nproc) cores, $mem, Linux $(uname -r), DPDK $(pkg-config --modversion libdpdk),"
  echo "$got_pages x 2 MiB hugepages reserved for the run (hugetlbfs at $hugedir);"
  echo "load average at start $load (anything else running on the machine shows in the p25 - p75 spread)."
  case " $parts " in *" single "*)
    echo
    "$bin" report "$res" ;;
  esac
  case " $parts " in *" scale "*)
    echo
    echo "### Thousands to a million buffers live (dkscale${scale_flag:+ }$scale_flag)"
    echo
    echo "Plot: \`$out/scale.svg\`; every point with every trial: \`$out/scale.json\`."
    echo
    "$scale" report "$sres" --json "$out/scale.json" --svg "$out/scale.svg" | sed 's/^### /#### /' ;;
  esac
  case " $parts " in *" extmem "*)
    echo
    echo "### Memory the program already has (dkextmem)"
    echo
    cat "$out/extmem.md" ;;
  esac
} >"$out/bench.md"
cat "$out/bench.md"
echo "bench.sh: raw results in $res $sres, EAL output in $log, tables in $out/bench.md," \
     "plot in $out/scale.svg, JSON in $out/scale.json" >&2
exit 0
