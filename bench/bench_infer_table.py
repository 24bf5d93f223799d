#!/usr/bin/env python3
"""Tables for bench/run_infer_bench.sh from its JSON lines: medians over rounds."""
import json
import statistics
import sys
from collections import defaultdict

args = [a for a in sys.argv[1:] if not a.startswith("--")]
markdown = "--markdown" in sys.argv
lines = [json.loads(l) for l in open(args[0]) if l.strip().startswith("{")]

speed = defaultdict(list)   # (side, model, path, threads, batch) -> [rows/s per round]
build = defaultdict(list)   # (model, threads, batch) -> [multi-hot fill rows/s]
checks = defaultdict(list)
mem = defaultdict(list)
node_base = []
kernel = "?"
sizes = machine = None
for d in lines:
    if "sizes" in d:
        sizes = d
    elif "machine" in d:
        machine = d
    elif d.get("mem"):
        mem[(d["side"], d["model"])].append(d["maxrss_kb"])
        if "node_baseline_kb" in d:
            node_base.append(d["node_baseline_kb"])
    else:
        k = (d["side"], d["model"], d["path"], d["threads"], d["batch"])
        speed[k].append(d["rows_per_s"])
        checks[k].append(d.get("checksum"))
        if "build_rows_per_s" in d:
            build[(d["model"], d["threads"], d["batch"])].append(d["build_rows_per_s"])
        if d["side"] == "kiln":
            kernel = d.get("kernel", kernel)

med = lambda v: statistics.median(v) if v else float("nan")


def table(head, rows):
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    else:
        w = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(head)]
        out = ["  ".join(str(h).rjust(w[i]) for i, h in enumerate(head))]
        out += ["  ".join(str(c).rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    print("\n".join(out) + "\n")


def fmt(x):
    if x != x:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


models = []
for (side, m, *_rest) in speed:
    if m not in models and m != "identity":
        models.append(m)
# onnxruntime-node's per-call cost (s) from the Identity model at batch 1.
overhead = {t: 1.0 / med(speed[("ort", "identity", "dense", t, 1)])
            for t in (1, 2) if speed.get(("ort", "identity", "dense", t, 1))}

print("## Dense rows (rows/s, median over rounds; ratio = kiln / ORT)\n")
rows = []
for m in models:
    for t in (1, 2):
        for b in (1, 32, 1024):
            k, o = med(speed[("kiln", m, "dense", t, b)]), med(speed[("ort", m, "dense", t, b)])
            if k != k and o != o:
                continue
            adj, radj, target = "", "", ""
            if b == 1 and t in overhead and o == o:
                per = 1.0 / o - overhead[t]
                if per > 0:
                    adj, radj = fmt(1.0 / per), f"{k * per:.2f}x"
                else:
                    adj, radj = "below overhead", "-"
                target = ">=2x: " + ("met" if k / o >= 2 else "MISSED")
            if b == 1024:
                target = ">=1x: " + ("met" if k / o >= 1 else "MISSED")
            rows.append([m, t, b, fmt(k), fmt(o), f"{k / o:.2f}x", adj, radj, target])
table(["model", "threads", "batch", "kiln", "ORT", "ratio", "ORT-overhead", "ratio vs that", "target"], rows)
if overhead:
    print("ORT-overhead: ORT's batch-1 time minus onnxruntime-node's per-call cost, estimated "
          "by an Identity model at batch 1: "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {v * 1e6:.1f} us/call" for t, v in sorted(overhead.items()))
          + ". (That includes ORT's own fixed Run() cost, so the adjusted figure flatters ORT.)\n")

print("## Token ids -> predictions (rows/s; kiln: kiln_session_run_tokens; ORT: build the "
      "multi-hot rows in JS + session.run)\n")
rows = []
for m in models:
    for t in (1, 2):
        for b in (1, 32, 1024):
            k, o = med(speed[("kiln", m, "tokens", t, b)]), med(speed[("ort", m, "tokens", t, b)])
            if k != k and o != o:
                continue
            kd = med(speed[("kiln", m, "dense", t, b)])
            bf = med(build[(m, t, b)])
            rows.append([m, t, b, fmt(k), fmt(o), f"{k / o:.2f}x", ">=5x: " + ("met" if k / o >= 5 else "MISSED"),
                         fmt(kd), f"{k / kd:.1f}x", fmt(bf)])
if rows:
    table(["model", "threads", "batch", "kiln tokens", "ORT multi-hot+run", "ratio", "target",
           "kiln dense", "tokens/dense", "ORT fill only"], rows)

# Do both runtimes compute the same thing? (sum of the outputs at batch 1024, dense)
bad = []
for m in models:
    for t in (1, 2):
        ck = [c for c in checks[("kiln", m, "dense", t, 1024)] if c is not None]
        co = [c for c in checks[("ort", m, "dense", t, 1024)] if c is not None]
        if ck and co and abs(ck[0] - co[0]) > 1e-3 * max(1.0, abs(co[0])):
            bad.append(f"{m}/{t}: kiln {ck[0]:.6g} vs ORT {co[0]:.6g}")
print("Outputs agree (sum of outputs at batch 1024): " + ("yes" if not bad else "NO: " + "; ".join(bad)) + "\n")

print("## Peak RSS (KB; one process loads the model, runs 100 batches of 1024 rows, 1 thread)\n")
rows = []
for m in models:
    k, o = med(mem[("kiln", m)]), med(mem[("ort", m)])
    if k == k or o == o:
        rows.append([m, fmt(k), fmt(o), f"{o / k:.1f}x"])
if rows:
    table(["model", "kiln", "ORT (node)", "ORT / kiln"], rows)
    if node_base:
        print(f"node itself, before onnxruntime-node loads: {med(node_base):,.0f} KB peak RSS "
              "(part of every ORT figure; a C++ ORT program would not pay it).\n")

if sizes:
    print("## Sizes (bytes)\n")
    table(["what", "bytes"], [
        ["libkiln_infer.a, strip --strip-unneeded", f"{sizes['lib_stripped']:,}"],
        ["minimal predict program, stripped (kiln_infer + protobuf-c static; dynamic: "
         + (sizes["predict_dynamic"].strip() or "none") + ")", f"{sizes['predict_stripped']:,}"],
        ["libonnxruntime.so shipped by onnxruntime-node (for scale)", f"{sizes['ort_so']:,}"],
    ])
if machine:
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, flags: {machine['flags'].strip()}; "
          f"kiln kernel path: {kernel}; onnxruntime-node {machine['ort_version']}, node {machine['node']}")
    print(f"Token rows: {machine['tokens']}")
