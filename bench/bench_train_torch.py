#!/usr/bin/python3
"""PyTorch twin of bench_train.c: trains one book model, one input variant, per process.

    /usr/bin/python3 bench/bench_train_torch.py --model imdb --variant dense

Reads the same files as kiln (the data directory: --data-dir, else $KILN_DATA_DIR,
else ../shared/data beside the repository; Fashion-MNIST from Debian's
/usr/share/datasets/fashion-mnist) with gzip and numpy, as a Keras user would, builds
the same model (glorot_uniform kernels, zero biases, Keras' optimizer defaults), and
prints one JSON line with per-epoch seconds, their median after the first epoch, and
the process's peak RSS (resource.getrusage ru_maxrss).

Variants:
  dense   float32 multi-hot / pixel tensors, nn.Linear everywhere (the Keras way).
  coo     IMDB/Reuters: the first layer is torch.sparse.mm(batch as sparse COO, W).
  csr     IMDB/Reuters: the same with a sparse CSR batch.
  embbag  IMDB/Reuters: the first layer is nn.EmbeddingBag(mode='sum') over each
          document's distinct token ids (exactly the multi-hot product) plus a bias.
Every epoch reshuffles (torch.randperm) and slices mini-batches from tensors that are
already in memory; the time of building each batch counts, as kiln's does.
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

# Set before torch (and its OpenMP/OpenBLAS) load; run_train_bench.sh sets them too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

NUM_WORDS = 10000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def data_dir(arg):
    if arg:
        return arg
    if os.environ.get("KILN_DATA_DIR"):
        return os.environ["KILN_DATA_DIR"]
    return os.path.join(REPO, "..", "shared", "data")


# --- data ---------------------------------------------------------------------------

def read_text(path, num_words):
    """label<TAB>ids lines -> labels, CSR (indptr, indices) of each document's distinct
    ids, with ids >= num_words mapped to 2 (out of vocabulary) as Keras does."""
    labels, docs = [], []
    with gzip.open(path, "rt", encoding="ascii") as f:
        for line in f:
            label, _, ids = line.partition("\t")
            labels.append(int(label))
            docs.append(np.array(ids.split(), dtype=np.int64))
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    ids = np.concatenate(docs)
    del docs
    ids[ids >= num_words] = 2
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    key = np.unique(rows * num_words + ids)  # sorted, distinct (row, id) pairs
    del rows, ids
    rows, cols = key // num_words, key % num_words
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(lengths)), out=indptr[1:])
    return np.array(labels, dtype=np.int64), indptr, cols


def multi_hot_dense(indptr, cols, width):
    """The book's vectorize_sequences, in float32."""
    n = len(indptr) - 1
    x = np.zeros((n, width), dtype=np.float32)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    x[rows, cols] = 1.0
    return x


# kiln's seeded generator (xoshiro256** seeded by splitmix64, Lemire's bounded draw,
# Fisher-Yates), so that the housing split is the same 480 rows kiln trains on.
M64 = (1 << 64) - 1


def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class KilnRng:
    def __init__(self, seed, stream):
        x = (seed ^ (stream * 0xD1B54A32D192ED03)) & M64
        self.s = []
        for _ in range(4):
            x, v = _splitmix64(x)
            self.s.append(v)

    def next(self):
        s = self.s
        result = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def below(self, n):
        threshold = ((1 << 64) - n) % n
        while True:
            m = self.next() * n
            if (m & M64) >= threshold:
                return m >> 64

    def shuffle(self, idx):
        for i in range(len(idx) - 1, 0, -1):
            j = self.below(i + 1)
            idx[i], idx[j] = idx[j], idx[i]


def load_housing(ddir):
    """First 600 rows, kiln's seeded 80/20 split (seed 113, stream 4), empty cells set
    to the training median, features standardized on the training split, targets /
    100000."""
    path = os.path.join(ddir, "housing", "california_housing.csv")
    rows = []
    with open(path) as f:
        f.readline()
        for _ in range(600):
            rows.append([float(v) if v else np.nan for v in f.readline().strip().split(",")])
    table = np.array(rows, dtype=np.float32)
    n = len(table)
    n_train = int(n * (1.0 - 0.2))
    idx = list(range(n))
    KilnRng(113, 4).shuffle(idx)
    train = table[idx[:n_train]]
    x, y = train[:, :8].astype(np.float64), train[:, 8]
    for c in range(8):
        col = x[:, c]
        if np.isnan(col).any():
            col[np.isnan(col)] = np.median(col[~np.isnan(col)])
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    return x, (y / 100000.0).astype(np.float32).reshape(-1, 1)


def read_idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def load_fashion():
    d = os.environ.get("KILN_FASHION_DIR", FASHION_DIR)
    x = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), 16)
    y = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), 8)
    x = x.reshape(-1, 784).astype(np.float32) / 255.0
    return x, y.astype(np.int64)


# --- models -------------------------------------------------------------------------

def glorot(linear):
    nn.init.xavier_uniform_(linear.weight)  # Keras glorot_uniform (fan_in + fan_out)
    nn.init.zeros_(linear.bias)
    return linear


class SparseMM(nn.Module):
    """Dense(units) over a sparse (COO or CSR) batch: torch.sparse.mm(x, W) + b."""

    def __init__(self, in_features, units):
        super().__init__()
        bound = (6.0 / (in_features + units)) ** 0.5
        self.weight = nn.Parameter(torch.empty(in_features, units).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(units))

    def forward(self, x):
        return torch.sparse.mm(x, self.weight) + self.bias


class BagDense(nn.Module):
    """Dense(units) over multi-hot rows as a sum of embedding rows."""

    def __init__(self, in_features, units):
        super().__init__()
        self.bag = nn.EmbeddingBag(in_features, units, mode="sum")
        bound = (6.0 / (in_features + units)) ** 0.5
        with torch.no_grad():
            self.bag.weight.uniform_(-bound, bound)
        self.bias = nn.Parameter(torch.zeros(units))

    def forward(self, x):
        ids, offsets = x
        return self.bag(ids, offsets) + self.bias


def build(model, variant, in_features):
    widths = {"imdb": [16, 16, 1], "reuters": [64, 64, 46], "housing": [64, 64, 1],
              "fashion_mnist": [512, 10]}[model]
    if variant == "dense":
        first = glorot(nn.Linear(in_features, widths[0]))
    elif variant in ("coo", "csr"):
        first = SparseMM(in_features, widths[0])
    else:
        first = BagDense(in_features, widths[0])
    layers = [first]
    prev = widths[0]
    for w in widths[1:]:
        layers += [nn.ReLU(), glorot(nn.Linear(prev, w))]
        prev = w
    # The output activation (sigmoid / softmax) is fused into the loss, as PyTorch
    # users write it; kiln fuses it the same way.
    return nn.Sequential(*layers)


# --- batches ------------------------------------------------------------------------

class SparseBatches:
    """Gathers the rows idx of a CSR (indptr, cols) as a batch in the variant's form."""

    def __init__(self, indptr, cols, width, variant):
        self.indptr = indptr
        self.cols = cols
        self.width = width
        self.variant = variant

    def __call__(self, idx):
        idx = idx.numpy()
        starts = self.indptr[idx]
        lens = self.indptr[idx + 1] - starts
        ends = np.cumsum(lens)
        pos = np.arange(ends[-1], dtype=np.int64) + np.repeat(starts - (ends - lens), lens)
        cols = torch.from_numpy(self.cols[pos])
        crow = np.zeros(len(idx) + 1, dtype=np.int64)
        crow[1:] = ends
        crow = torch.from_numpy(crow)
        if self.variant == "embbag":
            return cols, crow[:-1]
        ones = torch.ones(len(cols), dtype=torch.float32)
        if self.variant == "csr":
            return torch.sparse_csr_tensor(crow, cols, ones, (len(idx), self.width))
        rows = torch.from_numpy(np.repeat(np.arange(len(idx), dtype=np.int64), lens))
        x = torch.sparse_coo_tensor(torch.stack([rows, cols]), ones, (len(idx), self.width))
        # Rows ascending, ids ascending and distinct within a row: already coalesced.
        return x._coalesced_(True) if hasattr(x, "_coalesced_") else x.coalesce()


# --- main ---------------------------------------------------------------------------

def mapped_blas():
    paths = []
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.find("/")
            if p >= 0 and "blas" in line[p:]:
                path = line[p:].strip()
                if path not in paths:
                    paths.append(path)
    return paths


def openblas_info():
    import ctypes
    try:
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    except OSError:
        return "not loaded", -1
    lib.openblas_get_corename.restype = ctypes.c_char_p
    return lib.openblas_get_corename().decode(), lib.openblas_get_num_threads()


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=["imdb", "reuters", "housing", "fashion_mnist"])
    ap.add_argument("--variant", default="dense", choices=["dense", "coo", "csr", "embbag"])
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.variant != "dense" and a.model not in ("imdb", "reuters"):
        ap.error("sparse variants are for imdb and reuters")
    epochs = a.epochs or {"imdb": 8, "reuters": 10, "housing": 20, "fashion_mnist": 4}[a.model]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    t0 = time.perf_counter()
    ddir = data_dir(a.data_dir)
    nnz = None
    if a.model in ("imdb", "reuters"):
        labels, indptr, cols = read_text(os.path.join(ddir, a.model, "train.txt.gz"), NUM_WORDS)
        n, width, nnz = len(labels), NUM_WORDS, len(cols)
        if a.variant == "dense":
            X = torch.from_numpy(multi_hot_dense(indptr, cols, width))
            del indptr, cols
            gather = X.index_select
            take = lambda idx: gather(0, idx)  # noqa: E731
        else:
            take = SparseBatches(indptr, cols, width, a.variant)
        if a.model == "imdb":
            Y = torch.from_numpy(labels.astype(np.float32)).reshape(-1, 1)
            loss_fn = nn.BCEWithLogitsLoss()
        else:
            Y = nn.functional.one_hot(torch.from_numpy(labels), 46).float()  # to_categorical
            loss_fn = nn.CrossEntropyLoss()  # accepts one-hot (probability) targets
    elif a.model == "housing":
        x, y = load_housing(ddir)
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        n, width = X.shape
        take = lambda idx: X.index_select(0, idx)  # noqa: E731
        loss_fn = nn.MSELoss()
    else:
        x, y = load_fashion()
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        n, width = X.shape
        take = lambda idx: X.index_select(0, idx)  # noqa: E731
        loss_fn = nn.CrossEntropyLoss()
    load_s = time.perf_counter() - t0

    model = build(a.model, a.variant, width)
    batch = {"imdb": 512, "reuters": 512, "housing": 16, "fashion_mnist": 128}[a.model]
    if a.model == "fashion_mnist":
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    def metric(out, yb):  # what Keras' fit computes beside the loss
        if a.model == "imdb":
            return ((out > 0) == (yb > 0.5)).sum().item()
        if a.model == "reuters":
            return (out.argmax(1) == yb.argmax(1)).sum().item()
        if a.model == "housing":
            return (out - yb).abs().sum().item()
        return (out.argmax(1) == yb).sum().item()

    rss_before_fit = status_mb("VmRSS")
    hwm_reset = reset_hwm()
    times, losses = [], []
    g = torch.Generator().manual_seed(a.seed)
    model.train()
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        loss_sum, metric_sum = 0.0, 0.0
        for b in range(0, n, batch):
            idx = perm[b:b + batch]
            xb, yb = take(idx), Y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            with torch.no_grad():
                metric_sum += metric(out, yb)
            loss_sum += loss.item() * len(idx)
        times.append(time.perf_counter() - t)
        losses.append(loss_sum / n)
    fit_peak = status_mb("VmHWM") if hwm_reset else -1.0

    core, threads = openblas_info()
    steady = sorted(times[1:] if len(times) > 1 else times)
    k = len(steady)
    median = steady[k // 2] if k % 2 else 0.5 * (steady[k // 2 - 1] + steady[k // 2])
    print(json.dumps({
        "side": "torch", "model": a.model, "variant": a.variant,
        "input": "dense" if a.variant == "dense" else a.variant,
        "rows": n, "features": width, "nnz": nnz if nnz is not None else n * width,
        "batch": batch, "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(times), "epoch_s": [round(v, 6) for v in times],
        "loss": [float("%.6g" % v) for v in losses],
        "median_epoch_s": round(median, 6), "load_s": round(load_s, 3),
        "rss_before_fit_mb": round(rss_before_fit, 1), "fit_peak_rss_mb": round(fit_peak, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                       + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 3),
        "blas": ",".join(mapped_blas()) or "unknown", "openblas_core": core,
        "openblas_threads": threads, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
