#!/bin/sh
# scripts/fuzz.sh: build and run the libFuzzer harnesses with Debian's clang
# (-fsanitize=fuzzer,address,undefined): fuzz/fuzz_bmd.c (IOBufferMemoryDescriptor against the
# model in fuzz/model.c) and fuzz/fuzz_proto.c (the sharing protocol's gate and a live driver).
# The library's .c files (the DK_SOURCES list of the top-level CMakeLists.txt) are compiled
# straight into each fuzzer; the main build is not touched. Output goes to build-fuzz/.
#   scripts/fuzz.sh                 build, then fuzz fuzz_bmd until stopped (extra args go to libFuzzer)
#   DK_FUZZ_TARGET=proto scripts/fuzz.sh        the same with fuzz_proto
#   scripts/fuzz.sh --ci            build, fuzz 60 s from the seed corpora (fuzz_bmd 45 s, then
#                                   fuzz_proto 15 s), fail on any crash
#   scripts/fuzz.sh --build         build only
#   DK_FUZZ_SECONDS=600 scripts/fuzz.sh --ci    a longer bounded run (split 3:1 the same way)
# Run as root so that physical promises and frames are checked too (as a user they are skipped
# by the model, which then expects kIOReturnNotPrivileged).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/build-fuzz"
mkdir -p "$out"
CC="${CC:-}"
if [ -z "$CC" ]; then
  for c in clang clang-16 clang-15 clang-14; do
    if command -v "$c" >/dev/null 2>&1; then CC="$c"; break; fi
  done
fi
if [ -z "$CC" ]; then
  echo "fuzz.sh: clang not found; as root: apt-get install clang" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
    CC=clang
  else
    exit 2
  fi
fi
# The library sources, exactly as the main build lists them. DK_FUZZ_SRC=<dir> takes them from
# another tree (e.g. a `git archive HEAD` snapshot while the working tree is mid-edit).
lib="${DK_FUZZ_SRC:-$root}"
srcs=$(sed -n '/^set(DK_SOURCES/,/^)/p' "$lib/CMakeLists.txt" | grep -o 'src/[A-Za-z0-9_/]*\.c' | sed "s|^|$lib/|")
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
flags="-g -O1 -std=gnu11 -D_GNU_SOURCE -DDK_BUILDING=1 -I$lib/include -I$lib/src -Wall -Wextra -Wno-unused-parameter"
# shellcheck disable=SC2086
$CC $flags $san -fsanitize=fuzzer -o "$out/fuzz_bmd" \
  "$root/fuzz/fuzz_bmd.c" "$root/fuzz/model.c" $srcs -lpthread
echo "fuzz.sh: built $out/fuzz_bmd"
# shellcheck disable=SC2086
$CC $flags $san -fsanitize=fuzzer -o "$out/fuzz_proto" \
  "$root/fuzz/fuzz_proto.c" $srcs -lpthread
echo "fuzz.sh: built $out/fuzz_proto"

mode="${1:-run}"
[ "$mode" = "--build" ] && exit 0
corpus="$out/corpus"
mkdir -p "$corpus" "$out/corpus_proto" "$out/artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
# Each input gives the pool back (trim) to compare leak counters; growing one 2 MiB page at a
# time keeps the next input's growth cheap.
export DMAKIT_POOL_GROW_MB="${DMAKIT_POOL_GROW_MB:-2}"
# A mask below all RAM starts a low-memory search (2 GiB / 3 s by default): keep it short.
export DMAKIT_LOWMEM_SEARCH_MB="${DMAKIT_LOWMEM_SEARCH_MB:-8}"
export DMAKIT_LOWMEM_SEARCH_MS="${DMAKIT_LOWMEM_SEARCH_MS:-50}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if [ "$mode" = "--ci" ]; then
  shift
  secs="${DK_FUZZ_SECONDS:-60}"
  proto_secs=$((secs / 4))
  [ "$proto_secs" -ge 1 ] || proto_secs=1
  bmd_secs=$((secs - proto_secs))
  [ "$bmd_secs" -ge 1 ] || bmd_secs=1
  # -rss_limit_mb: the fuzzer maps up to a few 4 MiB buffers per input
  "$out/fuzz_bmd" -max_total_time="$bmd_secs" -max_len=512 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/" "$@" "$corpus" "$root/fuzz/corpus"
  echo "fuzz.sh: fuzz_bmd: no crash in ${bmd_secs} s"
  "$out/fuzz_proto" -max_total_time="$proto_secs" -max_len=4096 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/proto-" "$@" "$out/corpus_proto" \
    "$root/fuzz/corpus_proto"
  echo "fuzz.sh: fuzz_proto: no crash in ${proto_secs} s"
elif [ "${DK_FUZZ_TARGET:-bmd}" = proto ]; then
  "$out/fuzz_proto" -max_len=4096 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/proto-" "$@" "$out/corpus_proto" "$root/fuzz/corpus_proto"
else
  "$out/fuzz_bmd" -max_len=512 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "$@" "$corpus" "$root/fuzz/corpus"
fi
