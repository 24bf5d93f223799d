#!/usr/bin/env python3
"""Tables for bench/run_int8_bench.sh from its JSON lines: medians over rounds."""
import json
import statistics
import sys
from collections import defaultdict

args = [a for a in sys.argv[1:] if not a.startswith("--")]
markdown = "--markdown" in sys.argv
lines = [json.loads(l) for l in open(args[0]) if l.strip().startswith("{")]

speed = defaultdict(list)  # (side, prec, model, threads, batch) -> [rows/s per round]
agree, machine, kernels = [], None, set()
for d in lines:
    if "machine" in d:
        machine = d
    elif d.get("agree"):
        agree.append(d)
    else:
        speed[(d["side"], d["prec"], d["model"], d["threads"], d["batch"])].append(d["rows_per_s"])
        if d["side"] == "kiln":
            kernels.add(f'{d["prec"]}: {d.get("kernel", "?")}')

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
for (_s, _p, m, *_r) in speed:
    if m not in models:
        models.append(m)
cells = sorted({(t, b) for (_s, _p, _m, t, b) in speed})

print("kiln int8 vs ONNX Runtime int8, rows/s, median of rounds. ORT int8: the same QDQ file;"
      " ORT u8: the uint8-activation twin (ORT's fused x86 path); target against the faster ORT")
rows = []
for m in models:
    for t, b in cells:
        k, o = med(speed[("kiln", "int8", m, t, b)]), med(speed[("ort", "int8", m, t, b)])
        u = med(speed[("ort", "int8u8", m, t, b)])
        best = max(x for x in (o, u) if x == x)
        target = 2.0 if b == 1 else 1.0 if b == 1024 else None
        verdict = "" if target is None else ("met" if k / best >= target else "MISSED") + f" (>= {target:g}x)"
        rows.append([m, t, b, fmt(k), fmt(o), f"{k / o:.2f}x", fmt(u), f"{k / u:.2f}x", verdict])
table(["model", "threads", "batch", "kiln int8", "ORT int8", "kiln/ORT", "ORT u8", "kiln/ORT u8",
       "target"], rows)

fl = [m for m in models if speed.get(("kiln", "float", m, 1, 1024))]
if fl:
    print("kiln int8 vs kiln float, rows/s, median of rounds")
    rows = []
    for m in fl:
        for t, b in cells:
            i8, f = med(speed[("kiln", "int8", m, t, b)]), med(speed[("kiln", "float", m, t, b)])
            verdict = (("met" if i8 / f >= 2 else "MISSED") + " (>= 2x)") if b == 1024 else ""
            rows.append([m, t, b, fmt(i8), fmt(f), f"{i8 / f:.2f}x", verdict])
    table(["model", "threads", "batch", "kiln int8", "kiln float", "int8/float", "target"], rows)

sp = [m for m in models if speed.get(("kiln", "int8_b80", m, 1, 1024))]
if sp:
    print("sparse int8 vs dense int8 (kiln), rows/s, median of rounds; 80% pruned: unstructured (u80)"
          " and in 4x16 blocks (b80, the block-sparse kernel)")
    rows = []
    for m in sp:
        for t, b in cells:
            d = med(speed[("kiln", "int8", m, t, b)])
            u, bl = med(speed[("kiln", "int8_u80", m, t, b)]), med(speed[("kiln", "int8_b80", m, t, b)])
            verdict = ("faster" if bl > d else "SLOWER") if b in (1, 1024) else ""
            rows.append([m, t, b, fmt(d), fmt(u), f"{u / d:.2f}x", fmt(bl), f"{bl / d:.2f}x", verdict])
    table(["model", "threads", "batch", "dense int8", "u80", "u80/dense", "b80 (4x16)", "b80/dense",
           "blocks vs dense"], rows)

if agree:
    print("output agreement on the 1024 benchmark rows (argmax; one-output models: > 0.5)")
    rows = [[a["model"], f'{100 * a["kiln_ort_agreement"]:.1f}%', f'{a["kiln_ort_max_abs_diff"]:.3g}',
             f'{100 * a.get("kiln_ortu8_agreement", float("nan")):.1f}%',
             f'{a.get("kiln_ortu8_max_abs_diff", float("nan")):.3g}',
             f'{100 * a["kiln_int8_float_agreement"]:.1f}%', f'{a["kiln_int8_float_max_abs_diff"]:.3g}']
            for a in agree]
    table(["model", "kiln int8 = ORT int8", "max abs diff", "kiln int8 = ORT u8", "max abs diff",
           "kiln int8 = kiln float", "max abs diff"], rows)
    print("(housing is a regression: its > 0.5 agreement says little; max |diff| is the check)")

print("kiln_session_kernel_name (the float kernel set; int8 layers take the int8 path AUTO picks, VNNI where the CPU has it): " + ", ".join(sorted(kernels)))
if machine:
    print(f'CPU: {machine["cpu"]}, {machine["cores"]} cores, flags: {machine["flags"]}')
    print(f'onnxruntime-node {machine["ort_version"]}, node {machine["node"]}; '
          f'load average at the end: {machine["load_end"]}')
