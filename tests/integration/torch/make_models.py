#!/usr/bin/python3
"""Third-party ONNX for kiln's runtime: the book's MLP shapes written by PyTorch's
torch.onnx.export (Debian python3-torch), at opsets 13 and 17, with inputs and
PyTorch's outputs as .npy. The files are committed under fixtures/ so CI needs no
torch; run this again only to regenerate them:

    /usr/bin/python3 tests/integration/torch/make_models.py

Widths are the book's except the text models' vocabulary (10000 -> 500) and some
hidden layers (Reuters 64 -> 32, Fashion-MNIST 512 -> 32), to keep the fixtures
small (about 1.2 MB in all). Every x.npy is 2-D (rows, features); the Flatten
model takes them reshaped to (rows, 28, 28).
Variants: nn.Linear (exported as Gemm, transB=1), a MatMul+Add model (explicit
parameters, x @ W + b), and a Flatten in front of the first layer.
"""
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
ROWS = 33  # an odd batch: no kernel gets a multiple of its block size


class MatMulAdd(nn.Module):
    """A dense layer as x @ W + b, which exports as MatMul followed by Add."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))
        nn.init.xavier_uniform_(self.weight)
        nn.init.uniform_(self.bias, -0.1, 0.1)

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


def linear(n_in, n_out):
    layer = nn.Linear(n_in, n_out)
    nn.init.uniform_(layer.bias, -0.1, 0.1)  # non-zero, so a lost bias shows
    return layer


def mlp(widths, hidden, final, dense=linear, flatten=False, dropout=False):
    layers = [nn.Flatten()] if flatten else []
    for i in range(len(widths) - 1):
        layers.append(dense(widths[i], widths[i + 1]))
        act = hidden if i < len(widths) - 2 else final
        if act is not None:
            layers.append(act())
        if dropout and i < len(widths) - 2:
            layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


def softmax():
    return nn.Softmax(dim=-1)


# name: (model, input shape without the batch, kind of input)
MODELS = {
    "imdb": (lambda: mlp([500, 16, 16, 1], nn.ReLU, nn.Sigmoid), (500,), "multi_hot"),
    "reuters": (lambda: mlp([500, 32, 32, 46], nn.ReLU, softmax), (500,), "multi_hot"),
    "housing": (lambda: mlp([8, 64, 64, 1], nn.ReLU, None), (8,), "normal"),
    "fashion": (lambda: mlp([784, 32, 10], nn.ReLU, softmax), (784,), "pixels"),
    "dropout_tanh": (lambda: mlp([20, 32, 32, 3], nn.Tanh, softmax, dropout=True), (20,), "normal"),
    "housing_matmul": (lambda: mlp([8, 64, 64, 1], nn.ReLU, None, dense=MatMulAdd), (8,), "normal"),
    "reuters_matmul": (lambda: mlp([500, 32, 46], nn.ReLU, softmax, dense=MatMulAdd), (500,),
                       "multi_hot"),
    "fashion_flatten": (lambda: mlp([784, 16, 10], nn.ReLU, softmax, flatten=True), (28, 28),
                        "pixels"),
}


def make_input(kind, shape, rng):
    if kind == "multi_hot":
        return (rng.random((ROWS,) + shape) < 0.05).astype(np.float32)
    if kind == "pixels":
        return rng.random((ROWS,) + shape).astype(np.float32)
    return rng.standard_normal((ROWS,) + shape).astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    total = 0
    for name, (build, shape, kind) in MODELS.items():
        model = build().eval()
        x = make_input(kind, shape, rng)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy().astype(np.float32)
        np.save(os.path.join(OUT, f"{name}_x.npy"), x.reshape(ROWS, -1))
        np.save(os.path.join(OUT, f"{name}_y.npy"), y)
        for opset in (13, 17):
            path = os.path.join(OUT, f"{name}_opset{opset}.onnx")
            torch.onnx.export(model, torch.from_numpy(x[:1]), path, export_params=True,
                              opset_version=opset, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              do_constant_folding=True)
            total += os.path.getsize(path)
        total += os.path.getsize(os.path.join(OUT, f"{name}_x.npy"))
        total += os.path.getsize(os.path.join(OUT, f"{name}_y.npy"))
    print(f"wrote {len(MODELS)} models to {OUT} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
