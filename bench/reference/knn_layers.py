"""kNN-20 (SPEC §5: cosine, weight exp(sim/0.07)) of a trained ResNet's features read at several
layers: the pooled output of each stage (l1..l4, l4 is what `svib knn` reads), l4 max-pooled,
l3 and l4 concatenated, and the projection head's layers (h1, h2, z). An independent PyTorch
re-implementation of the small-stem ResNet and the head from the checkpoint's tensors, so its l4
column must reproduce `svib train`'s last kNN of the run (it does: 85.77 and 92.65 in
docs/RESULTS.md).

    bench/reference/.venv/bin/python bench/reference/knn_layers.py RUN/ckpt-N.safetensors \
        --data fashion-mnist | --data idx:DIR [--stem-stride 2] [--prefix teacher]
"""
import argparse
import glob
import gzip
import json
import struct

import numpy as np
import torch
import torch.nn.functional as F

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_safetensors(path):
    """The F32/I64 tensors of a safetensors file (the venv has torch, not safetensors)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header, base, out = json.loads(raw[8:8 + n]), 8 + n, {}
    for key, v in header.items():
        if key == "__metadata__" or v["dtype"] not in ("F32", "I64"):
            continue
        a, b = v["data_offsets"]
        dt = np.float32 if v["dtype"] == "F32" else np.int64
        out[key] = torch.from_numpy(np.frombuffer(raw[base + a:base + b], dtype=dt).reshape(v["shape"]).copy())
    return out


def read_idx(path):
    d = gzip.open(path).read()
    nd = d[3]
    dims = struct.unpack(">" + "I" * nd, d[4:4 + 4 * nd])
    return np.frombuffer(d[4 + 4 * nd:], dtype=np.uint8).reshape(dims).copy()


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)


def basic_block(x, sd, p, stride):
    o = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn1"))
    o = bn(F.conv2d(o, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
    if p + ".downsample.0.weight" in sd:
        x = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
    return F.relu(o + x)


def backbone(sd, x, stem_stride):
    """ResNet-18 with a 3x3 stem and no max-pool (svib's `small_stem`), torchvision names."""
    out = {}
    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=stem_stride, padding=1), sd, "bn1"))
    for i in range(1, 5):
        for j in range(2):
            x = basic_block(x, sd, f"layer{i}.{j}", 2 if (j == 0 and i > 1) else 1)
        out[f"l{i}"] = x.mean((2, 3))
    out["l4max"] = x.amax((2, 3))
    return out


def head(sd, f):
    """svib's 3-layer head with BatchNorm and GELU: mlp.0/1 -> mlp.3/4 -> mlp.6."""
    h1 = F.gelu(bn(F.linear(f, sd["mlp.0.weight"], sd["mlp.0.bias"]), sd, "mlp.1"))
    h2 = F.gelu(bn(F.linear(h1, sd["mlp.3.weight"], sd["mlp.3.bias"]), sd, "mlp.4"))
    return {"h1": h1, "h2": h2, "z": F.linear(h2, sd["mlp.6.weight"], sd["mlp.6.bias"])}


def knn_top1(tr, ytr, te, yte, k=20, t=0.07, classes=10):
    tr, te, correct = F.normalize(tr, dim=1), F.normalize(te, dim=1), 0
    for s in range(0, te.shape[0], 500):
        v, i = (te[s:s + 500] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(v.shape[0], classes).scatter_add_(1, ytr[i], (v / t).exp())
        correct += (votes.argmax(1) == yte[s:s + 500]).sum().item()
    return round(100.0 * correct / te.shape[0], 2)


def features(sd, prefix, imgs, mean, std, stem_stride):
    bb = {k[len(prefix) + 10:]: v for k, v in sd.items() if k.startswith(prefix + ".backbone.")}
    hd = {k[len(prefix) + 6:]: v for k, v in sd.items() if k.startswith(prefix + ".head.")}
    parts = {}
    with torch.no_grad():
        for s in range(0, len(imgs), 1000):
            x = (torch.from_numpy(imgs[s:s + 1000]).float()[:, None] / 255 - mean) / std
            f = backbone(bb, x, stem_stride)
            if "mlp.1.running_mean" in hd:  # svib's BatchNorm head; other heads: backbone only
                f.update(head(hd, f["l4"]))
            for key, v in f.items():
                parts.setdefault(key, []).append(v)
    f = {key: torch.cat(v) for key, v in parts.items()}
    f["l3+l4"] = torch.cat([F.normalize(f["l3"], dim=1), F.normalize(f["l4"], dim=1)], 1)
    return f


def load_data(spec):
    d = FMNIST if spec == "fashion-mnist" else spec.removeprefix("idx:")
    one = lambda pat: read_idx(sorted(glob.glob(f"{d}/{pat}"))[0])
    xtr, ytr, xte, yte = one("train-images*"), one("train-labels*"), one("t10k-images*"), one("t10k-labels*")
    if spec == "fashion-mnist":
        mean, std = 0.2860, 0.3530  # svib's preset (src/data/norm.rs)
    else:  # svib computes the statistics over (up to 20,000 evenly spaced) training images
        sample = xtr[:: max(1, len(xtr) // 20000)] / 255.0
        mean, std = float(sample.mean()), float(sample.std())
    return xtr, torch.from_numpy(ytr.astype(np.int64)), xte, torch.from_numpy(yte.astype(np.int64)), mean, std


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--stem-stride", type=int, default=2)
    ap.add_argument("--prefix", default="teacher")
    a = ap.parse_args()
    torch.set_num_threads(2)
    sd = load_safetensors(a.checkpoint)
    xtr, ytr, xte, yte, mean, std = load_data(a.data)
    ftr = features(sd, a.prefix, xtr, mean, std, a.stem_stride)
    fte = features(sd, a.prefix, xte, mean, std, a.stem_stride)
    print(json.dumps({"checkpoint": a.checkpoint, **{k: knn_top1(ftr[k], ytr, fte[k], yte) for k in ftr}}))


if __name__ == "__main__":
    main()
