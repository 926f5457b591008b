"""Profiles the 4 transformer blocks of the `vit` bench config (dim 192, 3 heads) with
torch.profiler: forward + backward of 256 x 50 and 256 x 10 tokens, 5 times, on 2 threads.
It compares how DINO writes attention with how svib's ViT does it (docs/PERFORMANCE.md):

  python profile_vit_blocks.py MODE    MODE = f32 | bf16 | autocast | f32-unbind | bf16-f32attn

f32 / bf16 / autocast: q, k, v by three selects (DINO's `qkv[0], qkv[1], qkv[2]`); bf16 casts
the linear layers' inputs and weights as svib's `model.bf16` does, so attention runs in bf16;
autocast is torch.autocast("cpu", torch.bfloat16). f32-unbind: q, k, v by unbind (svib in f32);
bf16-f32attn: svib's `model.bf16` (bf16 linear layers, unbind, attention in f32).
Run it with bench/reference/.venv/bin/python.
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

torch.set_num_threads(2)
MODE = sys.argv[1]
BF = torch.bfloat16
LOW = MODE.startswith("bf16")


def lin(x, layer):
    if not LOW:
        return layer(x)
    return F.linear(x.to(BF), layer.weight.to(BF), layer.bias.to(BF))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = lin(self.norm1(x), self.qkv).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if MODE == "bf16-f32attn":
            qkv = qkv.float()
        q, k, v = qkv.unbind(0) if MODE in ("f32-unbind", "bf16-f32attn") else (qkv[0], qkv[1], qkv[2])
        o = F.scaled_dot_product_attention(q, k, v)
        x = x + lin(o.transpose(1, 2).reshape(b, n, d), self.proj).float()
        return x + lin(F.gelu(lin(self.norm2(x), self.fc1)), self.fc2).float()


blocks = nn.ModuleList([Block(192, 3) for _ in range(4)])


def step(tokens):
    y = torch.randn(256, tokens, 192, requires_grad=True)
    with torch.autocast("cpu", dtype=BF, enabled=MODE == "autocast"):
        for blk in blocks:
            y = blk(y)
    y.float().square().mean().backward()


for _ in range(2):  # warm-up
    step(50), step(10)
t = time.time()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        step(50), step(10)
print(f"{MODE}: {time.time() - t:.2f} s")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
