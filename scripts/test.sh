#!/bin/sh
# scripts/test.sh: build dmakit and run every test: the default build, then the whole suite
# again under ASan+UBSan and under TSan, then a short libFuzzer run against the model, then the
# end-to-end DMA test: Linux guests under QEMU whose edu device (28-bit DMA mask) round-trips
# data through buffers dmakit placed below its mask, and whose nvme device is driven by
# examples/nvme over an image the host checks (scripts/e2e.sh, needs root).
# Physical tests need root (they read frame numbers, force memory compaction and use
# hugepages); as a user they are skipped with the reason. As an ordinary user, run it in a
# clone you own, with the packages of `scripts/deps.sh test` installed (it names the missing
# ones); the end-to-end test is then skipped with its reason.
# Every test run (ctest, the fuzz run) holds an exclusive flock on $DK_TEST_LOCK
# (/tmp/dmakit-test.lock), the lock every engineer's physical tests on a shared machine take:
# two runs on one machine never interleave their hugepage, pinning and compaction tests.
# Builds and the QEMU guests run without it.
#   scripts/test.sh            all three builds, the fuzz run and the end-to-end test
#   DK_TEST_BUILDS="default" scripts/test.sh   a subset (default asan tsan fuzz e2e)
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh test
lock="${DK_TEST_LOCK:-/tmp/dmakit-test.lock}"
# created readable by everyone, never re-created (a root run must be able to open a lock an
# ordinary user's run created, and the other way round)
[ -e "$lock" ] || (umask 0; : >"$lock")
# locked CMD...: CMD while holding the machine's test lock (waits for other runs)
locked() {
  ( flock 9 || { echo "test.sh: cannot lock $lock" >&2; exit 1; }
    DK_TEST_LOCK_HELD=1 "$@" ) 9<"$lock"
}
# As root, every hugepage limit is put back as found when the run ends (as bench.sh does). A
# process killed holding hugepages cannot lower the limit it raised; it left a record in
# /run/dmakit (overcommit.<pid>: nr_overcommit_hugepages of 2 MiB pages, gigantic.<pid>:
# nr_hugepages of 1 GiB pages) that the next dmakit process gives back. Those of processes that
# are gone are given back here too, before the limits are saved and again before they are
# compared (as src/phys/huge.c does): then the records never lower a limit that was put back.
# Any other change is printed, not hidden, and put back.
hp_reclaim_dead() {
  for r in /run/dmakit/overcommit.* /run/dmakit/gigantic.*; do
    [ -f "$r" ] || continue
    pid=${r##*.}
    kill -0 "$pid" 2>/dev/null && continue
    pages=$(cat "$r" 2>/dev/null || echo 0)
    rm -f "$r"
    case $r in
      */overcommit.*) f=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages ;;
      *) f=/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages ;;
    esac
    [ -w "$f" ] && [ "$pages" -gt 0 ] 2>/dev/null || continue
    now=$(cat "$f")
    v=$((now - pages)); [ "$v" -ge 0 ] || v=0
    echo "$v" >"$f" || true
  done
}
# A limit's value as saved and put back (scripts/hugepages.sh): for nr_hugepages the persistent
# pages, read whole: surplus pages of a pool alive at the start must not come back as
# persistent ones.
. scripts/hugepages.sh
hp_saved=""
if [ "$(id -u)" -eq 0 ]; then
  hp_reclaim_dead
  for f in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages \
           /sys/kernel/mm/hugepages/hugepages-*/nr_overcommit_hugepages; do
    if [ -w "$f" ]; then hp_saved="$hp_saved $f=$(dk_hp_value "$f")"; fi
  done
fi
hp_restore() {
  [ -z "$hp_saved" ] || hp_reclaim_dead
  for kv in $hp_saved; do
    f=${kv%=*}; v=${kv##*=}
    now=$(dk_hp_value "$f")
    if [ "$now" != "$v" ]; then
      echo "test.sh: $f was $v before the run and is $now (persistent pages for nr_hugepages): put back to $v"
      echo "$v" >"$f" || echo "test.sh: could not put $f back to $v" >&2
    fi
  done
}
trap hp_restore EXIT
trap 'exit 130' INT TERM
builds="${DK_TEST_BUILDS:-default asan tsan fuzz e2e}"
jobs="$(nproc)"
for b in $builds; do
  if [ "$b" = e2e ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "=== e2e: SKIP: the QEMU end-to-end test needs root (packages, guest build)"
      continue
    fi
    echo "=== e2e: edu DMA and an NVMe driver through dmakit buffers in QEMU guests"
    bash scripts/e2e.sh
    continue
  fi
  if [ "$b" = fuzz ]; then
    echo "=== fuzz: ${DK_FUZZ_SECONDS:-60} s from the seed corpus"
    locked sh scripts/fuzz.sh --ci
    continue
  fi
  case "$b" in
    default) flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo" ;;
    asan)    flags="-DCMAKE_BUILD_TYPE=Debug -DDK_SANITIZE=address;undefined" ;;
    tsan)    flags="-DCMAKE_BUILD_TYPE=Debug -DDK_SANITIZE=thread" ;;
    *) echo "unknown build $b" >&2; exit 2 ;;
  esac
  echo "=== build: $b"
  cmake -S . -B "build-test-$b" $flags >/dev/null
  cmake --build "build-test-$b" -j"$jobs" >/dev/null
  # tests run one at a time, under the machine's lock: the physical ones compact memory and
  # count locked pages
  ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp" \
    locked ctest --test-dir "build-test-$b" --output-on-failure --timeout 900
done
echo "=== all builds passed: $builds"
