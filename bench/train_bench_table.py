#!/usr/bin/python3
"""Summarizes the JSON lines of bench_train and bench_train_torch.py (one per run) into
the training-benchmark table: medians over repeats of each run's median epoch time
(epochs after the first), speed and memory ratios, and the targets.

    /usr/bin/python3 bench/train_bench_table.py RESULTS.jsonl [--markdown]
"""
import json
import sys
from collections import defaultdict

MODELS = ["imdb", "reuters", "housing", "fashion_mnist"]
SPARSE = ["coo", "csr", "embbag"]
SPARSE_NAME = {"coo": "sparse COO mm", "csr": "sparse CSR mm", "embbag": "EmbeddingBag"}
MAX_OTHER = 0.15
# (model, column, minimum ratio): kiln must be this many times faster / smaller.
TARGETS = [("imdb", "dense", 10.0), ("reuters", "dense", 10.0), ("housing", "dense", 10.0),
           ("imdb", "sparse", 3.0), ("reuters", "sparse", 3.0),
           ("fashion_mnist", "dense", 1.2), ("imdb", "memory", 10.0)]


def median(v):
    v = sorted(v)
    k = len(v)
    if k == 0:
        return None
    return v[k // 2] if k % 2 else 0.5 * (v[k // 2 - 1] + v[k // 2])


def fmt_s(v):
    if v is None:
        return "n/a"
    return "%.3g" % v if v < 0.1 else "%.3f" % v


def fmt_x(v):
    return "n/a" if v is None else "%.1fx" % v


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    runs = defaultdict(list)
    errors = []
    with open(args[0]) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "error" in r:
                errors.append(r)
                continue
            runs[(r["model"], r["variant"])].append(r)
    # Runs during which other processes used more than MAX_OTHER of the machine are
    # left out, as long as a cleaner repeat of the same (model, variant) exists.
    dropped = {}
    for key, rs in runs.items():
        clean = [r for r in rs if r.get("other_load", 0) <= MAX_OTHER]
        dropped[key] = len(rs) - len(clean) if clean else 0
        if clean:
            runs[key] = clean

    def paired(model, variants, key="median_epoch_s"):
        """Per-repeat ratios other/kiln (run i of each variant pairs with kiln's run i;
        the driver interleaves them, so a slow spell of the machine hits both)."""
        out = []
        for kr in runs.get((model, "kiln"), []):
            best = None
            for v in variants:
                for r in runs.get((model, v), []):
                    if r.get("repeat") == kr.get("repeat") and r[key] > 0 and \
                            (best is None or r[key] < best):
                        best = r[key]
            if best is not None and kr[key] > 0:
                out.append(best / kr[key])
        return out

    def med(model, variant, key):
        return median([r[key] for r in runs.get((model, variant), []) if r.get(key, -1) >= 0])

    rows = []
    got = {}
    spread = {}
    for m in MODELS:
        k = med(m, "kiln", "median_epoch_s")
        d = med(m, "dense", "median_epoch_s")
        best, best_v = None, None
        for v in SPARSE:
            t = med(m, v, "median_epoch_s")
            if t is not None and (best is None or t < best):
                best, best_v = t, v
        km, dm = med(m, "kiln", "peak_rss_mb"), med(m, "dense", "peak_rss_mb")
        ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
        got[(m, "dense")] = ratio(d, k)
        got[(m, "sparse")] = ratio(best, k)
        got[(m, "memory")] = ratio(dm, km)
        spread[(m, "dense")] = paired(m, ["dense"])
        spread[(m, "sparse")] = paired(m, SPARSE)
        spread[(m, "memory")] = [x for x in paired(m, ["dense"], "peak_rss_mb")]
        rows.append([m, fmt_s(k), fmt_s(d), fmt_x(ratio(d, k)),
                     "%s (%s)" % (fmt_s(best), SPARSE_NAME[best_v]) if best_v else "-",
                     fmt_x(ratio(best, k)) if best_v else "-",
                     "%.0f" % km if km is not None else "n/a",
                     "%.0f" % dm if dm is not None else "n/a", fmt_x(ratio(dm, km))])
    head = ["model", "kiln s/epoch", "torch-dense s/epoch", "ratio",
            "torch best sparse s/epoch", "ratio", "kiln peak MB", "torch-dense peak MB",
            "memory ratio"]
    table(head, rows, markdown)

    print()
    print("Targets (kiln faster / smaller by at least):")
    for m, col, want in TARGETS:
        v = got.get((m, col))
        what = {"dense": "vs torch-dense per epoch", "sparse": "vs torch best sparse per epoch",
                "memory": "peak memory vs torch-dense"}[col]
        state = "n/a" if v is None else ("met" if v >= want else "MISSED")
        p = spread.get((m, col)) or []
        rng = ("  (per-repeat ratios %s..%s, met in %d of %d)" %
               (fmt_x(min(p)), fmt_x(max(p)), sum(x >= want for x in p), len(p))) if p else ""
        print("  %-14s %-32s >= %4.1fx : %-7s %-6s%s" % (m, what, want, fmt_x(v), state, rng))

    print()
    print("Every variant (median over repeats; spread = min..max of the repeats' medians; "
          "runs = used/left out for other load > %d%%):" % (100 * MAX_OTHER))
    head = ["model", "variant", "runs", "s/epoch", "spread", "load s", "fit peak MB",
            "peak MB", "nnz", "last loss"]
    detail = []
    for m in MODELS:
        for v in ["kiln", "dense"] + SPARSE:
            rs = runs.get((m, v))
            if not rs:
                continue
            meds = [r["median_epoch_s"] for r in rs]
            detail.append([m, v if v == "kiln" else "torch-" + v,
                           "%d/%d" % (len(rs), dropped.get((m, v), 0)),
                           fmt_s(median(meds)), "%s..%s" % (fmt_s(min(meds)), fmt_s(max(meds))),
                           "%.2f" % median([r["load_s"] for r in rs]),
                           "%.0f" % (med(m, v, "fit_peak_rss_mb") or -1),
                           "%.0f" % med(m, v, "peak_rss_mb"), str(rs[0]["nnz"]),
                           "%.4g" % median([r["loss"][-1] for r in rs])])
    table(head, detail, markdown)
    for e in errors:
        print("FAILED: %s %s: %s" % (e.get("model"), e.get("variant"), e["error"]))

    # Both sides must run on the same BLAS library and kernel set.
    cores = {(r["side"], r.get("openblas_core")) for rs in runs.values() for r in rs}
    libs = set()
    for rs in runs.values():
        for r in rs:
            for p in r.get("blas", "").split(","):
                if "openblas" in p and "libopenblas" in p.rsplit("/", 1)[-1]:
                    libs.add((r["side"], p))
    print()
    print("OpenBLAS kernels per side: %s" % ", ".join(sorted("%s=%s" % c for c in cores)))
    print("OpenBLAS library per side: %s" % ", ".join(sorted("%s=%s" % c for c in libs)))
    if len({c for _, c in cores}) > 1 or len({p for _, p in libs}) > 1:
        print("WARNING: kiln and PyTorch did not run on the same OpenBLAS build/kernels; "
              "the speed ratios are not comparable.")
    return 0


def table(head, rows, markdown):
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    print("  ".join("-" * w[i] for i in range(len(head))))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    sys.exit(main())
