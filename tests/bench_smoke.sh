#!/bin/sh
# tests/bench_smoke.sh DKSCALE: the live-count benchmark with tiny counts and without DPDK.
# 1. `dkscale run --smoke --no-dpdk`: every case runs and writes well-formed result lines, and
#    every dmakit point has a value (nothing failed);
# 2. `dkscale report`: the markdown, the JSON (every point with its trials, every target with a
#    status) and the SVG (a panel per case, a line per subject and operation) are well-formed
#    and agree with the result lines;
# 3. the report judges the targets right on made-up result lines (met, not met, a trial stopped
#    by its budget as a bound, a missing point as not measured).
# Timing is not judged. Needs root (physical addresses and the hugepage pool): skipped as a user.
set -eu
bin="$1"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the benchmark needs root (physical addresses, the hugepage pool)"
  exit 77
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

"$bin" run --smoke --no-dpdk >"$dir/raw.tsv"
"$bin" report "$dir/raw.tsv" --json "$dir/r.json" --svg "$dir/r.svg" >"$dir/r.md"

python3 - "$dir" "$bin" <<'EOF'
import json, subprocess, sys, xml.etree.ElementTree as ET
d, binary = sys.argv[1], sys.argv[2]
fails, passed = [], [0]
def check(cond, what):
    if cond:
        passed[0] += 1
    else:
        print("FAILED " + what)
        fails.append(what)

# ---- 1. the result lines ----
pts = []
for line in open(d + "/raw.tsv"):
    f = line.rstrip("\n").split("\t")
    if f[0] == "P":
        check(len(f) == 13, "13 fields: " + line.strip()[:80])
        pts.append(f)
    else:
        check(f[0] == "I" and len(f) == 3, "information line: " + line.strip()[:80])
def have(case, param, subj, live, metric):
    return [p for p in pts if p[1:5] == [case, param, subj, str(live)] and p[6] == metric]
for p in pts:
    if p[3].startswith("dmakit"):
        check(float(p[7]) >= 0, "dmakit ran: %s %s %s live %s %s (%s)" % (p[1], p[2], p[3], p[4], p[6], p[11]))
    if float(p[7]) >= 0:
        vals = [float(v) for v in p[12].split(",")]
        check(len(vals) == int(p[10]), "one value per trial: %s %s %s %s" % (p[1], p[2], p[3], p[4]))
        check(min(vals) <= float(p[7]) <= max(vals), "the median lies among the trials")
for size, lives in (("64", (100, 1000)), ("4096", (100, 1000)), ("65536", (10, 100))):
    for n in lives:
        for m in ("create", "translate", "release"):
            check(len(have("sweep", size, "dmakit", n, m)) == 1, "sweep %s B, %d live, %s" % (size, n, m))
        check(len(have("sweep", size, "glibc", n, "create")) == 1, "sweep %s B glibc floor" % size)
        check(len(have("sweep", size, "floor", n, "release")) == 1, "sweep %s B, %d live: the release's memory floor" % (size, n))
        check(not have("sweep", size, "floor", n, "create"), "sweep %s B: the floor reports its release alone" % size)
for n in (100, 1000):
    check(len(have("churn", "mixed", "dmakit", n, "step")) == 1, "churn at %d live" % n)
for t in (1, 2):
    check(len(have("threads", "64", "dmakit", t, "pair")) == 1, "threads: %d" % t)
check(len(have("handoff", "64", "dmakit", 1024, "buffer")) == 1, "handoff: dmakit")
check(len(have("handoff", "64", "glibc", 1024, "buffer")) == 1, "handoff: glibc")
for n in (200, 2000):
    for s in ("dmakit_soft_mapper", "dmakit_no_mapper"):
        check(len(have("mapper", "4096", s, n, "release")) == 1, "mapper %s at %d" % (s, n))
check(len(have("rss", "64", "dmakit", 10000, "rss")) == 1, "resident memory: dmakit")
check(len(have("rss", "64", "glibc", 10000, "rss")) == 1, "resident memory: glibc")
check(not any(l.startswith("I\tmapper_leaks") for l in open(d + "/raw.tsv")), "no mapping left at the mapper's close")

# ---- 2. the report ----
j = json.load(open(d + "/r.json"))
check(len(j["points"]) == len(pts), "JSON has every point (%d)" % len(pts))
check(j["info"].get("mode") == "smoke", "JSON info carries the mode")
for p in j["points"]:
    check(p["median"] is None or len(p["trials"]) >= 1, "JSON trials for %s %s %s" % (p["case"], p["subject"], p["live"]))
ids = [t["id"] for t in j["targets"]]
want = ["create_1m_vs_dpdk", "release_1m_vs_dpdk", "growth_64_create", "growth_64_release", "growth_4k_create",
        "growth_4k_release", "mapper_release_100k", "rss_per_buffer", "two_threads", "handoff_vs_glibc"]
check(ids == want, "every target, in order: %s" % ids)
st = {t["id"]: t["status"] for t in j["targets"]}
check(all(v in ("met", "not met", "not measured") for v in st.values()), "every status is met / not met / not measured")
for t in want[:8]:
    check(st[t] == "not measured", "%s is not measured at smoke counts (%s)" % (t, st[t]))
check(st["two_threads"] in ("met", "not met"), "the threads target is judged")
check(st["handoff_vs_glibc"] in ("met", "not met"), "the handoff target is judged")
md = open(d + "/r.md").read()
check(md.startswith("### Targets"), "markdown starts with the targets")
for t in j["targets"]:
    row = [l for l in md.splitlines() if l.startswith("| " + t["target"] + " |")]
    word = {"met": "| met |", "not met": "| **not met** |", "not measured": "| not measured |"}[t["status"]]
    check(len(row) == 1 and row[0].endswith(word), "markdown row for %s says %s" % (t["id"], t["status"]))
svg = ET.parse(d + "/r.svg").getroot()
check(svg.tag.endswith("svg"), "the SVG parses")
ns = "{http://www.w3.org/2000/svg}"
texts = [e.text for e in svg.iter(ns + "text")]
for title in ("64 B buffers", "4 KiB buffers", "64 KiB buffers", "mixed-size churn (release+create)",
              "4 KiB under the software mapper"):
    check(title in texts, "SVG panel: " + title)
lines = [e.get("class") for e in svg.iter(ns + "line")]
check(lines.count("create") >= 6 and lines.count("release") >= 6, "SVG draws create and release lines")
check("memory floor of a release (no allocator work)" in texts, "SVG legend names the memory floor")
check(any(l.startswith("| memory floor of a release") for l in md.splitlines()), "markdown has the memory floor row")
marks = [e for e in svg.iter(ns + "rect") if e.get("class") == "point"]
plotted = [p for p in pts if p[1] in ("sweep", "churn", "mapper") and p[6] != "translate" and float(p[7]) > 0]
check(len(marks) == len(plotted), "one SVG mark per plotted point (%d, %d)" % (len(marks), len(plotted)))

# ---- 3. the targets on made-up results ----
def P(case, param, subj, live, metric, med, reached=None):
    r = live if reached is None else reached
    return "\t".join(["P", case, param, subj, str(live), str(r), metric, str(med), str(med), str(med), "1", "", str(med)])
rows = ["I\tmode\tfull",
        P("sweep", "64", "dmakit", 1000, "create", 100), P("sweep", "64", "dmakit", 1000000, "create", 150),
        P("sweep", "64", "dpdk", 1000000, "create", 160),
        P("sweep", "64", "dmakit", 1000, "release", 100), P("sweep", "64", "dmakit", 1000000, "release", 300),
        P("sweep", "64", "dpdk", 1000000, "release", 200),
        P("sweep", "4096", "dmakit", 1000, "create", 100), P("sweep", "4096", "dmakit", 100000, "create", 150, 5000),
        P("sweep", "4096", "dmakit", 1000, "release", 100), P("sweep", "4096", "dmakit", 100000, "release", 250, 5000),
        P("mapper", "4096", "dmakit_soft_mapper", 100000, "release", 1500),
        P("rss", "64", "dmakit", 1000000, "rss", 200),
        P("threads", "64", "dmakit", 1, "pair", 20), P("threads", "64", "dmakit", 2, "pair", 11)]
open(d + "/fake.tsv", "w").write("\n".join(rows) + "\n")
subprocess.run([binary, "report", d + "/fake.tsv", "--json", d + "/fake.json"], check=True, stdout=subprocess.DEVNULL)
st = {t["id"]: t["status"] for t in json.load(open(d + "/fake.json"))["targets"]}
expect = {"create_1m_vs_dpdk": "met", "release_1m_vs_dpdk": "not met", "growth_64_create": "met",
          "growth_64_release": "not met", "growth_4k_create": "not measured", "growth_4k_release": "not met",
          "mapper_release_100k": "not met", "rss_per_buffer": "met", "two_threads": "not met",
          "handoff_vs_glibc": "not measured"}
for k, v in expect.items():
    check(st.get(k) == v, "made-up results: %s is %s (got %s)" % (k, v, st.get(k)))
open(d + "/empty.tsv", "w").write("I\tmode\tfull\n")
r = subprocess.run([binary, "report", d + "/empty.tsv"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
check(r.returncode != 0, "a file without result lines is refused")

print("bench_scale_smoke: %d checks passed, %d failed" % (passed[0], len(fails)))
sys.exit(1 if fails else 0)
EOF
