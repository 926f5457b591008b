"""kNN-20 (SPEC §5: cosine, weight exp(sim/0.07)) of a trained ResNet's features read at several
layers: the pooled output of each stage (l1..l4, l4 is what `svib knn` reads), l4 max-pooled,
l3 and l4 concatenated, and the outputs of the projection head's layers (h1, h2, z). The network
is svib_ref's PyTorch ResNet and head, built from the run's config.toml and loaded with the
checkpoint's tensors, so its l4 column must reproduce `svib train`'s last kNN of the run (it does:
docs/RESULTS.md, "Which layer the kNN reads").

    bench/reference/.venv/bin/python bench/reference/knn_layers.py RUN/ckpt-N.safetensors \
        [--data fashion-mnist | --data idx:DIR] [--prefix teacher] [--precise-bn N]

--precise-bn N first re-estimates every BatchNorm layer's running statistics as a cumulative
average over N batches of 64 seeded, unaugmented training images ("precise BN"), to see whether
the statistics gathered on the training views are what limits the kNN.
"""
import argparse
import json
import struct
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from svib_ref import Encoder, find, knn, read_idx

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_safetensors(path):
    """The F32/I64 tensors of a safetensors file (the venv has torch, not safetensors)."""
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header, base, out = json.loads(raw[8:8 + n]), 8 + n, {}
    for key, v in header.items():
        if key == "__metadata__" or v["dtype"] not in ("F32", "I64"):
            continue
        a, b = v["data_offsets"]
        dt = np.float32 if v["dtype"] == "F32" else np.int64
        out[key] = torch.from_numpy(np.frombuffer(raw[base + a:base + b], dtype=dt).reshape(v["shape"]).copy())
    return out


def load_encoder(checkpoint, prefix):
    """svib_ref's Encoder for the run's config.toml, with the `prefix` network's weights."""
    cfg = tomllib.loads((Path(checkpoint).parent / "config.toml").read_text())
    enc = Encoder(cfg)
    sd = {k[len(prefix) + 1:]: v for k, v in load_safetensors(checkpoint).items() if k.startswith(prefix + ".")}
    missing, _ = enc.load_state_dict(sd, strict=False)  # extra keys: the GMM, DINO's last layer
    assert all(k.endswith("num_batches_tracked") for k in missing), f"not in the checkpoint: {missing}"
    return enc.eval()


def layer_features(enc, x):
    """Pooled output of every ResNet stage, and the head's output after each activation and at its end."""
    bb, out = enc.backbone, {}
    x = F.relu(bb.bn1(bb.conv1(x)))
    for i in range(1, 5):
        x = getattr(bb, f"layer{i}")(x)
        out[f"l{i}"] = x.mean((2, 3))
    out["l4max"] = x.amax((2, 3))
    h, n = out["l4"], 0
    for m in enc.head.mlp:
        h = m(h)
        if isinstance(m, (nn.GELU, nn.ReLU)):
            n += 1
            out[f"h{n}"] = h
    out["z"] = h
    return out


def to_input(imgs, mean, std):
    """uint8 images [n, h, w] as the network's normalised input [n, 1, h, w]."""
    return (torch.from_numpy(imgs).float()[:, None] / 255 - mean) / std


def features(enc, imgs, mean, std):
    parts = {}
    with torch.no_grad():
        for s in range(0, len(imgs), 1000):
            for key, v in layer_features(enc, to_input(imgs[s:s + 1000], mean, std)).items():
                parts.setdefault(key, []).append(v)
    f = {key: F.normalize(torch.cat(v), dim=1) for key, v in parts.items()}
    f["l3+l4"] = F.normalize(torch.cat([f["l3"], f["l4"]], 1), dim=1)
    return f


def precise_bn(enc, imgs, mean, std, batches, seed=0):
    """Resets the backbone's BatchNorm statistics and re-estimates them on clean images."""
    for m in enc.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    enc.backbone.train()
    idx = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(seed))[:batches * 64].numpy()
    with torch.no_grad():
        for s in range(0, len(idx), 64):
            enc.backbone(to_input(imgs[idx[s:s + 64]], mean, std))
    enc.eval()


def load_data(spec):
    d = FMNIST if spec == "fashion-mnist" else spec.removeprefix("idx:")
    one = lambda stem: np.array(read_idx(find(d, stem)))  # a writable copy
    xtr, ytr = one("train-images-idx3-ubyte"), one("train-labels-idx1-ubyte")
    xte, yte = one("t10k-images-idx3-ubyte"), one("t10k-labels-idx1-ubyte")
    if spec == "fashion-mnist":
        mean, std = 0.2860, 0.3530  # svib's preset (src/data/norm.rs)
    else:  # svib computes the statistics over (up to 20,000 evenly spaced) training images
        sample = xtr[:: max(1, len(xtr) // 20000)] / 255.0
        mean, std = float(sample.mean()), float(sample.std())
    return xtr, torch.from_numpy(ytr.astype(np.int64)), xte, torch.from_numpy(yte.astype(np.int64)), mean, std


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="RUN/ckpt-N.safetensors; RUN/config.toml gives the architecture")
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or idx:DIR (IDX files, gz or not)")
    ap.add_argument("--prefix", default="teacher", help="teacher or student")
    ap.add_argument("--precise-bn", type=int, default=0, metavar="N", help="re-estimate BatchNorm statistics on N clean batches of 64 first")
    a = ap.parse_args()
    torch.set_num_threads(2)
    enc = load_encoder(a.checkpoint, a.prefix)
    xtr, ytr, xte, yte, mean, std = load_data(a.data)
    if a.precise_bn:
        precise_bn(enc, xtr, mean, std, a.precise_bn)
    ftr, fte = features(enc, xtr, mean, std), features(enc, xte, mean, std)
    top1 = {k: round(knn(ftr[k], ytr, fte[k], yte)[0], 2) for k in ftr}
    print(json.dumps({"checkpoint": a.checkpoint, **top1}))


if __name__ == "__main__":
    main()
