#!/bin/sh
# tests/cxx/compile_headers.sh SRC_DIR: the C++ layer's headers compile cleanly on their own and
# in every order with every other (each header alone, each ordered pair, all of them forwards
# and backwards), with and without IOKIT_ENABLE_SHARED_PTR, as C++17 and C++20, under g++ and
# clang++ at -Wall -Wextra -Wshadow -Werror (clang++ also -Wmismatched-tags); and the C++ tests
# themselves compile under both compilers. Compile only (-fsyntax-only).
set -eu
src="$1"
inc="$src/include"
compat="$inc/dmakit/compat"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

headers=$(cd "$compat" && find . -name '*.h' | sed 's|^\./||' | sort)
headers="$headers dmakit/dmakit.hpp dmakit/dmakit.h"
n=0
for h in $headers; do n=$((n + 1)); done

# one translation unit per line of $work/units: "<mode> <file>"
i=0
unit() {   # unit MODE HEADER...
  i=$((i + 1))
  f="$work/u$i.cpp"
  : > "$f"
  for h in "$@"; do [ "$h" = "$1" ] || printf '#include <%s>\n' "$h" >> "$f"; done
  printf 'int main() { return 0; }\n' >> "$f"
  printf '%s %s\n' "$1" "$f" >> "$work/units"
}
: > "$work/units"
for mode in 17 20 17s 20s; do
  for h in $headers; do unit "$mode" "$h"; done
  unit "$mode" $headers
  unit "$mode" $(printf '%s\n' $headers | sort -r)
done
for a in $headers; do
  for b in $headers; do
    [ "$a" = "$b" ] && continue
    unit 17 "$a" "$b"
    unit 17s "$a" "$b"
  done
done

failed=0
compilers=0
for cxx in g++ clang++; do
  if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "SKIP: $cxx not found (scripts/deps.sh test installs it)"
    continue
  fi
  compilers=$((compilers + 1))
  extra=""
  [ "$cxx" = clang++ ] && extra="-Wmismatched-tags"
  count=$(wc -l < "$work/units")
  # mode 17 / 20: the standard; an "s" suffix defines IOKIT_ENABLE_SHARED_PTR
  if ! awk -v cxx="$cxx" -v extra="$extra" -v inc="$inc" -v compat="$compat" '{
        std = $1; sp = "";
        if (std ~ /s$/) { sp = "-DIOKIT_ENABLE_SHARED_PTR"; sub(/s$/, "", std) }
        printf "%s -std=c++%s %s -Wall -Wextra -Wshadow -Werror %s -fsyntax-only -I%s -I%s %s\n", cxx, std, sp, extra, inc, compat, $2
      }' "$work/units" | xargs -P "$(nproc)" -I{} sh -c '{} || { echo "FAILED: {}"; exit 255; }' > "$work/log.$cxx" 2>&1; then
    cat "$work/log.$cxx" | head -60
    echo "FAIL: $cxx: a header combination does not compile cleanly"
    failed=$((failed + 1))
  else
    echo "ok: $cxx: $n headers, $count translation units (alone, ordered pairs, all; C++17/20; raw and shared OSPtr)"
  fi
  # the tests of the C++ layer, as CI builds them with the other compiler too
  for t in "$src"/tests/cxx/*.cpp; do
    if ! "$cxx" -std=c++17 -Wall -Wextra -Wshadow -Werror $extra -fsyntax-only -I"$inc" -I"$compat" \
         -I"$src/tests/support" -I"$src/tests/cxx" -D_GNU_SOURCE "$t"; then
      echo "FAIL: $cxx: $(basename "$t") does not compile cleanly"
      failed=$((failed + 1))
    fi
  done
  echo "ok: $cxx: the C++ tests compile"
done
[ "$compilers" -gt 0 ] || { echo "FAIL: no C++ compiler"; exit 1; }
if [ "$failed" -ne 0 ]; then echo "0 passed, $failed failed"; exit 1; fi
echo "$compilers passed, 0 failed"
