#!/bin/sh
# tests/test_cli.sh DMAKIT [SOURCE_DIR]: the dmakit command, every sub-command: --help, bad
# flags (exit 2, the flag named on stderr), JSON checked against hand-written schemas
# (python3), allocation results verified, --hold released by a signal, the picture (the SVG
# parses and holds each buffer; the PNG has its signature when cairo is built in), the
# progress bar quiet in pipes, and a run as an ordinary user (uid 65534, through setpriv, as
# root). POSIX sh. Last line: "N passed, N failed"; exit 1 on any failure.
set -u
bin="${1:?usage: test_cli.sh path/to/dmakit [source dir]}"
src="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
case "$bin" in /*) ;; *) bin="$(pwd)/$bin" ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
# keep the pool's low-memory searches short (doctor and 32-bit masks try them)
DMAKIT_LOWMEM_SEARCH_MS=${DMAKIT_LOWMEM_SEARCH_MS:-500}
export DMAKIT_LOWMEM_SEARCH_MS
pass=0
fail=0
root=0
[ "$(id -u)" -eq 0 ] && root=1

ok() { pass=$((pass + 1)); echo "ok - $1"; }
nok() { fail=$((fail + 1)); echo "not ok - $1"; [ -n "${2:-}" ] && sed 's/^/#   /' "$2" | head -20; }

# run NAME EXPECTED_STATUS ARGS...: stdout in $tmp/out, stderr in $tmp/err
run() {
  name=$1 want=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  got=$?
  if [ "$got" -eq "$want" ]; then ok "$name (exit $got)"; return 0; fi
  echo "# $name: exit $got, wanted $want" >>"$tmp/err"
  nok "$name" "$tmp/err"
  return 1
}

# schema NAME FILE: check a JSON document against the schema of that name
cat >"$tmp/schema.py" <<'PY'
import json, sys
I, B, S, F, N = int, bool, str, (int, float), type(None)
def opt(t): return (t, N) if not isinstance(t, tuple) else t + (N,)
path3 = {"ok": opt(B), "reason": opt(S)}
segment = {"bus": I, "cpu_physical": I, "length": I}
buffer = {"label": opt(S), "capacity": I, "length": I, "allocation_size": I, "alignment": I,
          "physical_limit": I, "address_bits": I, "contiguous": B, "pageable": B, "wired": B,
          "pinned": B, "provider": S, "direction": S, "cache": S, "task": S,
          "virtual_address": opt(I), "segment_count": I, "segments": [segment], "segments_unavailable?": S,
          "verified": {"mask": opt(B), "low": opt(B), "alignment": opt(B), "contiguous": opt(B),
                       "boundary": opt(B), "device_segments": I, "all": B}}
error = {"code": S, "constraint": S, "text": S}
ranges = [{"start": I, "end": I, "name": S}]
SCHEMAS = {
  "caps": {"page_size": I, "root": B, "pagemap_frames": B, "pin_method": S, "pin_detail": S,
           "compact_unevictable_allowed": I, "ram_top": I, "memlock_limit": I,
           "hugepage_sizes": [I], "pool_usable": B},
  "doctor": {"status": S, "exit_code": I, "root": B, "pagemap_frames": B, "page_size": I,
             "hugepages": [{"size": I, "nr": I, "free": I, "reserved": I, "surplus": I,
                            "overcommit": I, "reservable": I}],
             "memory": {"source": S, "ram_top": I, "ranges": ranges},
             "lowest_frame": {"pages_4k": opt(I), "pages_4k_reason": opt(S), "pool": opt(I),
                              "pool_reason": opt(S)},
             "masks": [{"bits": I, "mask": I, "pages_4k": path3, "pool": path3, "iommu": path3,
                        "next_process": {"state": S, "reserved": I, "reserved_free": I}}],
             "reservations": [{"mask": I, "bytes": I, "pages": I, "pages_claimed": I}],
             "iommu": {"present": B, "groups": I, "iommufd": B},
             "vfio": {"dev_vfio": B, "container": B, "vfio_pci": B},
             "memlock_limit": opt(I), "pin": {"method": S, "detail": S, "compact_unevictable_allowed": I},
             "problems": [{"severity": S, "text": S, "fix": opt(S), "fix_kind": opt(S)}]},
  "reserve_status": {"reservations": [{"mask": I, "page_size": I, "pages": I, "bytes": I, "pages_claimed": I,
                                       "lowest": I, "highest": I, "created": I}],
                     "nr_hugepages?": I, "free_hugepages?": I},
  "reserve_estimate": {"estimate": {"mask": I, "bytes": I, "have": I, "need": I, "free_above": I, "free_cut": I,
                                    "free_below": I, "hold": I, "hold_max": I, "available": I, "max_hold": I,
                                    "keep_free": I, "max_seconds": I, "fits": B, "text": S}},
  "alloc": {"ok": B, "call": S, "request": S, "buffer": buffer},
  "alloc_error": {"ok": B, "call": S, "request": S, "error": error},
  "map": {"svg": opt(S), "png": opt(S), "memory": {"source": S, "ram_top": I, "ranges": ranges},
          "pool": {"bytes_held": I, "runs": I, "lowest_frame": I}, "reserved_pages": I,
          "buffers": [{"index": I, "request": S, "ok": B, "buffer?": buffer, "error?": error}]},
  "stats": {"pool": {"version": I, "bytes_4k": I, "bytes_pool_2m": I, "bytes_pool_1g": I,
                     "bytes_pool_used": I, "bytes_pool_free": I, "runs": I, "largest_run": I,
                     "largest_free": I, "fragmentation": F, "requests_4k": I, "requests_pool": I,
                     "requests_slab": I, "grows": I, "lowmem_searches": I, "trims": I,
                     "hugepages_raised_2m": I, "hugepages_raised_1g": I, "lowest_frame": I,
                     "failures": dict},
            "system_hugepages": [{"size": I, "nr": I, "free": I, "reserved": I, "surplus": I}],
            "reservations": [{"mask": I, "bytes": I, "pages": I, "pages_claimed": I}],
            "reserved_now": I, "buffers": I},
}
def check(v, s, where):
    if isinstance(s, dict):
        if not isinstance(v, dict): raise SystemExit("%s: not an object" % where)
        for k, t in s.items():
            optional = k.endswith("?")
            k = k.rstrip("?")
            if k not in v:
                if optional: continue
                raise SystemExit("%s: missing %s" % (where, k))
            check(v[k], t, where + "." + k)
        extra = set(v) - {k.rstrip("?") for k in s}
        if extra: raise SystemExit("%s: unexpected %s" % (where, sorted(extra)))
    elif isinstance(s, list):
        if not isinstance(v, list): raise SystemExit("%s: not an array" % where)
        for i, e in enumerate(v): check(e, s[0], "%s[%d]" % (where, i))
    elif s is dict:
        if not isinstance(v, dict): raise SystemExit("%s: not an object" % where)
    else:
        ts = s if isinstance(s, tuple) else (s,)
        if isinstance(v, bool) and bool not in ts: raise SystemExit("%s: boolean, wanted %s" % (where, ts))
        if not isinstance(v, ts): raise SystemExit("%s: %r is not %s" % (where, v, ts))
doc = json.load(open(sys.argv[2]))
check(doc, SCHEMAS[sys.argv[1]], sys.argv[1])
# extra assertions: python expressions over `d`
for expr in sys.argv[3:]:
    if not eval(expr, {"d": doc}): raise SystemExit("assertion failed: " + expr)
PY
schema() {
  name=$1 file=$2
  shift 2
  if python3 "$tmp/schema.py" "$name" "$file" "$@" >"$tmp/schema.err" 2>&1; then ok "$name JSON matches its schema${1:+ and $*}"
  else nok "$name JSON schema" "$tmp/schema.err"; fi
}

# bad NAME FLAG ARGS...: exit 2 with FLAG named on stderr
bad() {
  name=$1 flag=$2
  shift 2
  if run "$name" 2 "$@"; then
    if grep -q -- "$flag" "$tmp/err"; then ok "$name names '$flag' on stderr"
    else nok "$name names '$flag' on stderr" "$tmp/err"; fi
  fi
}

echo "# dmakit CLI tests: $bin (root=$root)"

# ---- conventions: help on every command, bad usage --------------------------------------
run "dmakit --help" 0 "$bin" --help
run "dmakit without a command" 2 "$bin"
for c in doctor caps alloc map stats bench demo reserve; do
  if run "$c --help" 0 "$bin" "$c" --help && grep -q "usage: dmakit $c" "$tmp/out"; then ok "$c --help prints usage"
  else nok "$c --help prints usage" "$tmp/out"; fi
  bad "$c --no-such-flag" "--no-such-flag" "$bin" "$c" --no-such-flag
done
bad "unknown command" "frobnicate" "$bin" frobnicate
bad "alloc --mask with a bad value" "--mask" "$bin" alloc --mask zz 4K
bad "alloc --align not a power of two" "align" "$bin" alloc --align 3000 4K
bad "alloc --task bad" "task" "$bin" alloc --task user 4K
bad "alloc --direction bad" "direction" "$bin" alloc --direction sideways 4K
bad "alloc --cache bad" "cache" "$bin" alloc --cache fast 4K
bad "alloc --boundary with --pageable" "--pageable" "$bin" alloc --pageable --boundary 64K 4K
bad "alloc without SIZE" "SIZE" "$bin" alloc
bad "alloc with a bad SIZE" "12Q" "$bin" alloc 12Q
bad "alloc --mask without a value" "--mask" "$bin" alloc --mask
bad "map --alloc bad key" "colour" "$bin" map --alloc 4K,colour=red -o "$tmp/x.svg"
bad "stats --reserve bad" "--reserve" "$bin" stats --reserve lots
bad "stats --page-size bad" "--page-size" "$bin" stats --reserve 2M --page-size 4K
bad "bench --hugepages bad" "--hugepages" "$bin" bench --hugepages many
bad "bench --only bad" "--only" "$bin" bench --only everything
bad "reserve without SIZE" "SIZE" "$bin" reserve
bad "reserve --mask not 2^n - 1" "--mask" "$bin" reserve --mask 0x12345 4M
bad "reserve --max-seconds bad" "--max-seconds" "$bin" reserve --max-seconds forever 4M
bad "reserve --status with --release" "--status" "$bin" reserve --status --release

# ---- reserve (read-only here: a private directory, nothing is reserved) --------------------------
DMAKIT_RESERVE_DIR="$tmp/reserve-dir"
export DMAKIT_RESERVE_DIR
run "reserve --status" 0 "$bin" reserve --status && grep -q "no reservations" "$tmp/out" && ok "reserve --status: none"
run "reserve --status --json" 0 "$bin" reserve --status --json && schema reserve_status "$tmp/out" "d['reservations'] == []"
st=0; "$bin" reserve --estimate --json --mask 40bit 4M >"$tmp/out" 2>"$tmp/err" </dev/null || st=$?
case $st in 0|1) schema reserve_estimate "$tmp/out" "d['estimate']['need'] == 4 << 20" \
                   "(d['estimate']['hold'] <= d['estimate']['max_hold']) == d['estimate']['fits'] or not d['estimate']['fits']" ;;
  *) nok "reserve --estimate --json exit $st" "$tmp/err" ;; esac
run "reserve without --yes and no terminal is not started" 1 "$bin" reserve --mask 40bit --max-hold 8M 4M &&
  { grep -q -- "--yes" "$tmp/err" && ok "reserve: asks for --yes" || nok "reserve: asks for --yes" "$tmp/err"; }
run "reserve --release with none" 1 "$bin" reserve --release

# ---- caps ------------------------------------------------------------------------------------
run "caps" 0 "$bin" caps
run "caps --json" 0 "$bin" caps --json && schema caps "$tmp/out" "d['page_size'] >= 4096"

# ---- doctor ------------------------------------------------------------------------------------
# What the probes find (how low the kernel's frames lie, whether 2 MiB can be reserved now) changes
# from one run to the next and with what other processes hold, so no two runs are compared: each
# run's exit status must be the worst severity among the problems that same run reported, and
# its result line must say that status. Only what needs no probe is required of every run.
worst_json="(3 if any(p['severity'] == 'fatal' for p in d['problems']) else 1 if any(p['severity'] == 'warning' for p in d['problems']) else 0)"
# doctor_text FILE STATUS: the text report's problems, result line and exit status agree
doctor_text() {
  awk -v st="$2" '
    /^fatal: / { w = 3 } /^warning: / { if (w < 3) w = 1 }
    /^result: / { r = $0 }
    END { want = "(exit " st ")"
          if (w + 0 != st + 0) { print "# worst problem says exit " w + 0 ", doctor exited " st; exit 1 }
          if (index(r, want) == 0) { print "# result line \"" r "\" does not say " want; exit 1 } }' "$1" >"$tmp/doctor.err"
}
"$bin" doctor --json >"$tmp/doctor.json" 2>"$tmp/err" </dev/null
st=$?
case $st in 0|1|3) ok "doctor --json exit $st is 0, 1 or 3" ;; *) nok "doctor --json exit $st" "$tmp/err" ;; esac
schema doctor "$tmp/doctor.json" "d['exit_code'] == $st" "d['exit_code'] == $worst_json" \
  "[m['bits'] for m in d['masks']] == [28, 32, 36, 40]" \
  "all((p['fix'] is None) == (p['fix_kind'] is None) for p in d['problems'])" \
  "all(p['fix_kind'] in (None, 'root', 'compact-unevictable', 'reserve') for p in d['problems'])" \
  "all(m['next_process']['state'] in ('all-ram', 'reserved', 'found-now', 'no', 'unknown') for m in d['masks'])"
"$bin" doctor >"$tmp/out" 2>&1 </dev/null
tst=$?
if grep -q "^masks" "$tmp/out" && doctor_text "$tmp/out" "$tst"; then ok "doctor text: masks, and an exit ($tst) its own problems and result line give"
else cat "$tmp/doctor.err" >>"$tmp/out"; nok "doctor text" "$tmp/out"; fi
if [ $root -eq 1 ]; then
  # as root with frame numbers, whatever the probes find: no fatal problem about frame numbers,
  # and each mask row says whether 4K pages met it
  schema doctor "$tmp/doctor.json" "d['root'] and d['pagemap_frames']" "d['memory']['source'] == '/proc/iomem'" \
    "d['lowest_frame']['pages_4k']" \
    "all(m['pages_4k']['ok'] is not None for m in d['masks'])" \
    "not any('pagemap' in p['text'] and p['severity'] == 'fatal' for p in d['problems'])"
fi
# Without probes: nothing about the lowest frames or the masks is claimed, and the exit status
# is still the worst of that run's own problems.
"$bin" doctor --no-probe --json >"$tmp/out" 2>"$tmp/err" </dev/null
np=$?
case $np in 0|1|3) ok "doctor --no-probe exit $np is 0, 1 or 3" ;; *) nok "doctor --no-probe exit $np" "$tmp/err" ;; esac
schema doctor "$tmp/out" "d['exit_code'] == $np" "d['exit_code'] == $worst_json" \
  "d['lowest_frame']['pages_4k'] is None and d['lowest_frame']['pool'] is None" \
  "all(m['pages_4k']['ok'] is None and m['pool']['ok'] is None for m in d['masks'])"
"$bin" doctor --no-probe >"$tmp/out" 2>&1 </dev/null
tst=$?
if doctor_text "$tmp/out" "$tst"; then ok "doctor --no-probe text: exit $tst agrees with its problems"
else cat "$tmp/doctor.err" >>"$tmp/out"; nok "doctor --no-probe text" "$tmp/out"; fi

# ---- alloc -----------------------------------------------------------------------------------
run "alloc 64K" 0 "$bin" alloc 64K
if grep -q "segment 0" "$tmp/out" || [ $root -eq 0 ]; then ok "alloc 64K shows segments (as root)"; else nok "alloc 64K segments" "$tmp/out"; fi
run "alloc --json 0x4000" 0 "$bin" alloc --json 0x4000 &&
  schema alloc "$tmp/out" "d['buffer']['capacity'] == 16384"
run "alloc every flag" 0 "$bin" alloc --json --direction out --cache writecombine --task null 16K &&
  schema alloc "$tmp/out" "d['buffer']['task'] == 'null'" "d['buffer']['virtual_address'] is None" \
    "d['buffer']['cache'] == 'writecombine'" "d['buffer']['direction'] == 'out'"
run "alloc --pageable" 0 "$bin" alloc --json --pageable 64K && schema alloc "$tmp/out" "d['buffer']['pageable']"
if [ $root -eq 1 ]; then
  run "alloc 4K pages" 0 "$bin" alloc --json --pool 0 64K &&
    schema alloc "$tmp/out" "d['buffer']['provider'] == 'memfd-4k'" "d['buffer']['verified']['all']" \
      "sum(s['length'] for s in d['buffer']['segments']) == 65536"
  run "alloc contiguous aligned 2M" 0 "$bin" alloc --json --contiguous --align 2M 2M &&
    schema alloc "$tmp/out" "d['buffer']['segment_count'] == 1" "d['buffer']['segments'][0]['cpu_physical'] % (2 << 20) == 0" \
      "d['buffer']['verified']['all']"
  run "alloc --boundary (inTaskWithConstraints)" 0 "$bin" alloc --json --contiguous --boundary 64K --mask 36bit 48K &&
    schema alloc "$tmp/out" "d['call'] == 'inTaskWithConstraints'" "d['buffer']['verified']['boundary']" \
      "d['buffer']['verified']['mask']" "all(s['cpu_physical'] + s['length'] <= 1 << 36 for s in d['buffer']['segments'])"
  run "alloc refused: boundary smaller than the buffer" 1 "$bin" alloc --contiguous --boundary 16K 32K &&
    { grep -q "boundary" "$tmp/err" && ok "refusal gives the reason on stderr" || nok "refusal reason" "$tmp/err"; }
  run "alloc refused --json" 1 "$bin" alloc --json --contiguous --boundary 16K 32K && schema alloc_error "$tmp/out" "not d['ok']"
else
  run "alloc --mask refused without root" 1 "$bin" alloc --mask 32bit 4K
fi
# --hold: alive until a signal, then releases and exits 0
"$bin" alloc --hold 64K >"$tmp/hold.out" 2>"$tmp/hold.err" </dev/null &
hp=$!
# it says "holding" once its signal handlers are in place (a loaded machine may take a while)
i=0
while [ $i -lt 300 ] && ! grep -q "holding" "$tmp/hold.err" && kill -0 "$hp" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
sleep 0.2
if grep -q "holding" "$tmp/hold.err" && kill -0 "$hp" 2>/dev/null; then ok "alloc --hold keeps running"
else nok "alloc --hold keeps running" "$tmp/hold.err"; fi
kill -TERM "$hp" 2>/dev/null
wait "$hp"
hs=$?
if [ "$hs" -eq 0 ] && grep -q "releasing" "$tmp/hold.err"; then ok "alloc --hold releases on SIGTERM"
else nok "alloc --hold releases on SIGTERM (exit $hs)" "$tmp/hold.err"; fi

# ---- map ---------------------------------------------------------------------------------------
png_flag=""
if "$bin" map --help | grep -q "cairo" && ! "$bin" map --png "$tmp/probe.png" --alloc 4K -o "$tmp/probe.svg" 2>&1 >/dev/null | grep -q "without cairo"; then
  png_flag=1
fi
if [ -n "$png_flag" ]; then
  run "map (SVG, PNG, JSON)" 0 "$bin" map --json -o "$tmp/map.svg" --png "$tmp/map.png" \
    --alloc 64K,pool=0,label=four-k --alloc 256K,contiguous --alloc 16K,mask=36bit --alloc 32K,contiguous,boundary=64K
else
  run "map (SVG, JSON; no cairo)" 0 "$bin" map --json -o "$tmp/map.svg" \
    --alloc 64K,pool=0,label=four-k --alloc 256K,contiguous --alloc 16K,mask=36bit --alloc 32K,contiguous,boundary=64K
fi
schema map "$tmp/out" "len(d['buffers']) == 4" "d['buffers'][0]['buffer']['label'] == 'four-k'"
if [ $root -eq 1 ]; then schema map "$tmp/out" "all(b['ok'] and b['buffer']['verified']['all'] for b in d['buffers'])"; fi
cat >"$tmp/svg.py" <<'PY'
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == ns + "svg", root.tag
ids = {e.get("id") for e in root.iter() if e.get("id")}
n, need_phys = int(sys.argv[2]), sys.argv[3] == "1"
for i in range(1, n + 1):
    assert "legend-%d" % i in ids, "legend-%d missing" % i
    if need_phys: assert "buffer-%d" % i in ids, "buffer-%d missing" % i
classes = {e.get("class") for e in root.iter()}
assert "line-4g" in classes, "no 4 GiB line"
assert "ram" in classes, "no RAM ranges"
if need_phys: assert "mask" in classes, "no mask line"
PY
if python3 "$tmp/svg.py" "$tmp/map.svg" 4 "$root" >"$tmp/svg.err" 2>&1; then ok "SVG parses and holds every buffer, RAM, the 4 GiB line"
else nok "SVG content" "$tmp/svg.err"; fi
if [ -n "$png_flag" ]; then
  if [ -s "$tmp/map.png" ] && [ "$(od -An -tx1 -N8 "$tmp/map.png" | tr -d ' \n')" = "89504e470d0a1a0a" ]; then
    ok "PNG has the PNG signature and a nonzero size"
  else nok "PNG signature" "$tmp/err"; fi
else
  run "map --png without cairo is bad usage" 2 "$bin" map --png "$tmp/x.png" -o "$tmp/x.svg"
  echo "# cairo not built in: PNG not checked"
fi
# the picture's format comes from -o's extension; anything else is refused, nothing written
if [ -n "$png_flag" ]; then
  run "map -o FILE.png writes a PNG" 0 "$bin" map -o "$tmp/o.png" --alloc 8K --json &&
    if [ "$(od -An -tx1 -N8 "$tmp/o.png" | tr -d ' \n')" = "89504e470d0a1a0a" ]; then ok "-o FILE.png holds a PNG, not SVG"
    else nok "-o FILE.png holds a PNG" "$tmp/o.png"; fi
  schema map "$tmp/out" "d['png'].endswith('o.png') and d['svg'] is None"
  run "map -o FILE.PNG (any case) writes a PNG" 0 "$bin" map -o "$tmp/o2.PNG" --alloc 8K &&
    if [ "$(od -An -tx1 -N8 "$tmp/o2.PNG" | tr -d ' \n')" = "89504e470d0a1a0a" ]; then ok "-o FILE.PNG holds a PNG"
    else nok "-o FILE.PNG holds a PNG" "$tmp/o2.PNG"; fi
else
  run "map -o FILE.png without cairo is bad usage" 2 "$bin" map -o "$tmp/o.png" --alloc 8K &&
    { grep -q "without cairo" "$tmp/err" && [ ! -e "$tmp/o.png" ] && ok "no PNG support: said so, nothing written" ||
      nok "-o FILE.png without cairo" "$tmp/err"; }
fi
for o in o.jpg o.svgz noext o.png.txt; do
  run "map -o $o is bad usage" 2 "$bin" map -o "$tmp/$o" --alloc 8K &&
    { grep -q "extension: .svg or .png" "$tmp/err" && [ ! -e "$tmp/$o" ] && ok "-o $o: refused with the reason, nothing written" ||
      nok "-o $o refusal" "$tmp/err"; }
done
run "map --png FILE.svg is bad usage" 2 "$bin" map -o "$tmp/p.svg" --png "$tmp/p2.svg" --alloc 8K &&
  { grep -q "must end in .png" "$tmp/err" && [ ! -e "$tmp/p.svg" ] && ok "--png FILE.svg: refused with the reason" ||
    nok "--png FILE.svg refusal" "$tmp/err"; }
run "map -o - writes the SVG on stdout" 0 "$bin" map -o - --alloc 8K &&
  { python3 -c 'import sys,xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$tmp/out" && ok "stdout SVG parses" || nok "stdout SVG" "$tmp/out"; }

# ---- stats and bench ---------------------------------------------------------------------------
run "stats" 0 "$bin" stats
run "stats --json" 0 "$bin" stats --json && schema stats "$tmp/out"
if [ $root -eq 1 ]; then
  run "stats --reserve 64M --alloc 2M,contiguous" 0 "$bin" stats --json --reserve 64M --alloc 2M,contiguous &&
    schema stats "$tmp/out" "d['pool']['bytes_pool_2m'] + d['pool']['bytes_pool_1g'] >= 64 << 20" \
      "d['pool']['bytes_pool_used'] >= 2 << 20"
  if grep -q '\[#\|\[\.\.\.' "$tmp/err"; then nok "no progress bar in a pipe" "$tmp/err"; else ok "no progress bar in a pipe"; fi
fi
run "bench --where" 0 "$bin" bench --where && { [ -f "$(cat "$tmp/out")" ] && ok "bench finds scripts/bench.sh" || nok "bench script" "$tmp/out"; }
run "bench without a source tree" 1 env DMAKIT_SOURCE_DIR="$tmp/nowhere" "$bin" bench &&
  { grep -q "scripts/bench.sh" "$tmp/err" && ok "bench says where the script lives" || nok "bench message" "$tmp/err"; }

# ---- a reservation, seen by reserve --status, stats, map and doctor (root; the private directory) --
hp=/sys/kernel/mm/hugepages/hugepages-2048kB
if [ $root -eq 1 ] && [ -w "$hp/nr_hugepages" ]; then
  . "$src/scripts/hugepages.sh"
  persistent() { dk_hp_persistent "$hp"; }   # nr_hugepages less surplus, read whole
  nr0=$(persistent)
  # 48 bits lie above all RAM here: every page qualifies, so this reservation never searches
  run "reserve --mask 48bit --yes 2M" 0 "$bin" reserve --mask 48bit --yes 2M &&
    { grep -q "reserved below mask 0xffffffffffff: 2 MiB in 1 pages" "$tmp/out" && ok "reserve reports what it kept" ||
      nok "reserve output" "$tmp/out"; }
  run "reserve --status --json (one)" 0 "$bin" reserve --status --json &&
    schema reserve_status "$tmp/out" "len(d['reservations']) == 1" "d['reservations'][0]['bytes'] == 2 << 20"
  run "stats --json shows the reservation" 0 "$bin" stats --json &&
    schema stats "$tmp/out" "d['reservations'] == [{'mask': (1 << 48) - 1, 'bytes': 2 << 20, 'pages': 1, 'pages_claimed': 0}]"
  run "map --json counts the reserved page" 0 "$bin" map --json -o "$tmp/rmap.svg" &&
    schema map "$tmp/out" "d['reserved_pages'] == 1"
  grep -q 'reserved page 0x' "$tmp/rmap.svg" && ok "map draws the reserved page" || nok "map: no reserved page" "$tmp/rmap.svg"
  "$bin" doctor --no-probe --json >"$tmp/out" 2>"$tmp/err" </dev/null
  schema doctor "$tmp/out" "d['reservations'] == [{'mask': (1 << 48) - 1, 'bytes': 2 << 20, 'pages': 1, 'pages_claimed': 0}]"
  run "reserve --release" 0 "$bin" reserve --release
  [ "$(persistent)" -eq "$nr0" ] && ok "release gives the page back" || nok "persistent hugepages $(persistent), were $nr0"
  grep -q " $DMAKIT_RESERVE_DIR/hugetlbfs-2M " /proc/mounts && nok "release left hugetlbfs mounted" || ok "release unmounts hugetlbfs"
fi

# ---- demo ----------------------------------------------------------------------------------------
run "demo" 0 "$bin" demo && { grep -q "What to look at" "$tmp/out" && ok "demo ends with what to look at" || nok "demo text" "$tmp/out"; }

# ---- as an ordinary user ------------------------------------------------------------------------
if [ $root -eq 1 ] && command -v setpriv >/dev/null; then
  udir="$tmp/user"
  mkdir -p "$udir"
  cp "$bin" "$udir/dmakit"
  chmod 755 "$udir/dmakit"
  chmod 1777 "$udir"
  asuser() { setpriv --reuid=65534 --regid=65534 --clear-groups "$udir/dmakit" "$@"; }
  run "user: doctor --json exits 3" 3 asuser doctor --json &&
    schema doctor "$tmp/out" "d['status'] == 'no-physical-dma'" "not d['root']" "d['memory']['source'] == '/proc/zoneinfo'" \
      "any(p['fix'] == 'sudo dmakit doctor' and p['fix_kind'] == 'root' for p in d['problems'])"
  run "user: alloc 64K works without addresses" 0 asuser alloc --json 64K &&
    schema alloc "$tmp/out" "d['buffer']['segments'] == []" "not d['buffer']['verified']['all']"
  run "user: a mask is refused (not privileged)" 1 asuser alloc --mask 32bit 4K &&
    { grep -q "kIOReturnNotPrivileged" "$tmp/err" && ok "user: refusal names kIOReturnNotPrivileged" || nok "user refusal" "$tmp/err"; }
  run "user: a contiguous 8K buffer is refused (not privileged)" 1 asuser alloc --contiguous 8K &&
    { grep -q "kIOReturnNotPrivileged" "$tmp/err" && grep -q "privilege" "$tmp/err" &&
      ok "user: contiguity beyond a page names kIOReturnNotPrivileged and the privilege constraint" ||
      nok "user contiguity refusal" "$tmp/err"; }
  run "user: map draws zones" 0 asuser map --json -o "$udir/u.svg" --alloc 64K --alloc 4K,contiguous &&
    schema map "$tmp/out" "d['memory']['source'] == '/proc/zoneinfo'"
  if python3 "$tmp/svg.py" "$udir/u.svg" 2 0 >"$tmp/svg.err" 2>&1; then ok "user: SVG parses and lists both buffers"
  else nok "user: SVG" "$tmp/svg.err"; fi
  run "user: stats --reserve fails with the reason" 1 asuser stats --reserve 64M
else
  echo "# not root: the ordinary-user runs are skipped (this run is one)"
fi

# ---- completion and man page -------------------------------------------------------------------
comp="$src/tools/dmakit.bash-completion"
if command -v bash >/dev/null && [ -f "$comp" ]; then
  if bash -c ". '$comp' && complete -p dmakit >/dev/null && COMP_WORDS=(dmakit al) COMP_CWORD=1 && _dmakit && [ \"\${COMPREPLY[*]}\" = alloc ]" 2>"$tmp/err"; then
    ok "bash completion loads and completes commands"
  else nok "bash completion" "$tmp/err"; fi
  if bash -c ". '$comp' && COMP_WORDS=(dmakit alloc --con) COMP_CWORD=2 && _dmakit && [ \"\${COMPREPLY[*]}\" = --contiguous ]" 2>"$tmp/err"; then
    ok "bash completion completes alloc flags"
  else nok "bash completion flags" "$tmp/err"; fi
fi
man="$src/docs/dmakit.1"
missing=""
for c in doctor caps alloc map stats bench demo reserve; do grep -q "^\.SS $c" "$man" 2>/dev/null || missing="$missing $c"; done
if [ -z "$missing" ] && grep -q '^\.TH DMAKIT 1' "$man"; then ok "man page documents every command"
else nok "man page: missing$missing"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
