"""PyTorch reference of svib's SVIB training loop, for `svib bench` (docs/PERFORMANCE.md).

Written the way DINO's main_dino.py is: torchvision transforms in DataLoader worker processes
(DataAugmentationDINO), a multi-crop wrapper that runs the backbone once per resolution, the
teacher an EMA of the student, AdamW over DINO's parameter groups, per-parameter gradient
clipping, cosine schedules per iteration. Same backbone, head, GMM, loss and multi-crop config
as svib's presets (read from the resolved config svib writes), so the two do the same work.

  python svib_ref.py train --config RUN/config.toml --data DIR --steps N [--workers W]
        [--device cuda --amp bf16|fp16]   # DIR: Fashion-MNIST IDX files, or an ImageFolder (DIR/train/<class>/)
  python svib_ref.py check-loss --dump DIR     # loss on svib's fixed batch and weights

Prints one JSON line. Needs the full torch 2.11.0 + torchvision 0.26.0 (bench/reference/setup.sh).
"""
import argparse
import gzip
import json
import math
import os
import random
import time
import tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms


# ---------------------------------------------------------------- data (Fashion-MNIST IDX files)
def read_idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(dir_, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(dir_, name)):
            return os.path.join(dir_, name)
    raise SystemExit(f"{dir_}: no {stem}[.gz]")


class IdxImages(torch.utils.data.Dataset):
    def __init__(self, dir_, transform, limit=0):
        self.images = read_idx(find(dir_, "train-images-idx3-ubyte"))
        if limit:
            self.images = self.images[:limit]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L"))


class GaussianBlur:
    """DINO's utils.GaussianBlur: PIL blur with a radius drawn uniformly, applied with prob. p."""

    def __init__(self, p, radius):
        self.p, self.radius = p, radius

    def __call__(self, img):
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


class DataAugmentation:
    """DINO's DataAugmentationDINO with svib's augment.* config."""

    def __init__(self, a, mean, std):
        flip_and_color_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=a["flip_p"]),
            transforms.RandomApply([transforms.ColorJitter(a["brightness"], a["contrast"], a["saturation"], a["hue"])], p=a["jitter_p"]),
            transforms.RandomGrayscale(p=a["grayscale_p"]),
        ])
        normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        ratio = tuple(a["ratio"])

        def view(size, scale, blur_p, solarize_p):
            return transforms.Compose([
                transforms.RandomResizedCrop(size, scale=tuple(scale), ratio=ratio, interpolation=transforms.InterpolationMode.BICUBIC),
                flip_and_color_jitter,
                GaussianBlur(blur_p, a["blur_radius"]),
                Solarization(solarize_p),
                normalize,
            ])

        self.views = [view(a["global_size"], a["global_scale"], a["blur_p"][i], a["solarize_p"][i]) for i in (0, 1)]
        self.views += [view(a["local_size"], a["local_scale"], a["blur_p"][2], a["solarize_p"][2])] * a["local_crops"]

    def __call__(self, img):
        return [t(img) for t in self.views]


# ---------------------------------------------------------------- kNN-20 (SPEC §5)
def knn(ftrain, ltrain, ftest, ltest, k=20, t=0.07, classes=10, chunk=500):
    """Top-1 and top-5 (%) of weighted kNN on L2-normalised features: vote weight exp(sim / t)."""
    top1 = top5 = 0
    for s in range(0, len(ftest), chunk):
        sim, idx = (ftest[s:s + chunk] @ ftrain.T).topk(min(k, len(ftrain)), dim=1)
        votes = torch.zeros(len(sim), classes).scatter_add_(1, ltrain[idx], (sim / t).exp())
        pred = votes.argsort(1, descending=True)
        hit = pred == ltest[s:s + chunk, None]
        top1 += hit[:, :1].sum().item()
        top5 += hit[:, :5].sum().item()
    return 100.0 * top1 / len(ftest), 100.0 * top5 / len(ftest)


# ---------------------------------------------------------------- models (torchvision / timm names)
class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 with a base width and, for small images, a 3x3 stem without max-pool."""

    def __init__(self, in_ch, width, stem_stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i in range(4):
            planes = width << i
            layer = nn.Sequential(BasicBlock(cin, planes, 1 if i == 0 else 2), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{i + 1}", layer)
            cin = planes
        self.out_dim = cin

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_ch, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, patch)


class ViT(nn.Module):
    """timm/DINO VisionTransformer without head; DINO's interpolate_pos_encoding for local crops."""

    def __init__(self, in_ch, img_size, patch, dim, depth, heads):
        super().__init__()
        self.patch_embed = PatchEmbed(in_ch, dim, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_dim = dim

    def pos(self, h, w):
        n = self.pos_embed.shape[1] - 1
        side = int(round(math.sqrt(n)))
        if h == side and w == side:
            return self.pos_embed
        patch = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([self.pos_embed[:, :1], patch], 1)

    def forward(self, x):
        t = self.patch_embed.proj(x)
        h, w = t.shape[2:]
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t.flatten(2).transpose(1, 2)], 1) + self.pos(h, w)
        for b in self.blocks:
            t = b(t)
        return self.norm(t)[:, 0]


class FolderImages(torch.utils.data.Dataset):
    """torchvision's ImageFolder over DIR/train, labels dropped (svib's folder: layout)."""

    def __init__(self, dir_, transform, limit=0):
        from torchvision.datasets import ImageFolder
        self.ds = ImageFolder(os.path.join(dir_, "train"), transform=transform)
        self.n = min(limit, len(self.ds)) if limit else len(self.ds)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[i][0]


def backbone(model, channels):
    if model["name"] == "resnet50":
        from torchvision.models import resnet50
        net = resnet50()
        net.fc = nn.Identity()
        net.out_dim = 2048
        return net
    if model["name"].startswith("vit"):
        # svib's ArchConfig::vit_dims
        d, h = {"vit_tiny": (192, 3), "vit_base": (768, 12)}.get(model["name"], (384, 6))
        dim = model.get("dim") or d
        depth = model.get("depth") or 12
        heads = model.get("heads") or (max(dim // 64, 1) if model.get("dim") else h)
        return ViT(channels, model["img_size"], model["patch_size"], dim, depth, heads)
    assert model["name"] == "resnet18", f"reference: backbone {model['name']} not written here"
    return ResNet18(channels, model["width"], model["stem_stride"] if model["small_stem"] else None)


class Encoder(nn.Module):
    """Backbone + DINO's projection MLP (head.mlp.N); one backbone pass per resolution."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = backbone(cfg["model"], cfg["augment"]["channels"])
        h = cfg["head"]
        layers, dim = [], self.backbone.out_dim
        for i in range(h["layers"]):
            out = h["out"] if i == h["layers"] - 1 else h["hidden"]
            layers.append(nn.Linear(dim, out))
            if i != h["layers"] - 1:
                if h["bn"]:
                    layers.append(nn.BatchNorm1d(out))
                layers.append(nn.GELU() if h["act"] == "gelu" else nn.ReLU())
            dim = out
        self.head = nn.Module()
        self.head.mlp = nn.Sequential(*layers)

    def forward(self, crops):
        # DINO's MultiCropWrapper: consecutive crops of equal size go through the backbone together
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
        start, feats = 0, []
        for end in ends.tolist():
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return F.normalize(self.head.mlp(torch.cat(feats)), dim=-1)


# ---------------------------------------------------------------- the SVIB loss (SPEC §2)
@torch.no_grad()
def sinkhorn(logits, iters):
    """DINOv2's Sinkhorn-Knopp centring of the teacher: rows and columns of exp(logits) balanced."""
    q = logits.exp().t()  # [K, B]
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdim=True) * k
        q /= q.sum(0, keepdim=True) * b
    return (q * b).t()


def svib_loss(student, teacher, means, center, crops, g, beta, use_center, sk_iters=0):
    mu = F.normalize(means, dim=-1)
    z_s = student(crops)
    logp_s = (z_s @ mu.t() / g["sigma_student"] ** 2).log_softmax(-1).chunk(len(crops))
    with torch.no_grad():
        z_t = teacher(crops[:2])
    sim_t = z_t @ mu.t()  # gradient into the means only (bottleneck term)
    logits_t = ((sim_t - center) if use_center else sim_t) / g["sigma_teacher"] ** 2
    p_t = sinkhorn(logits_t.detach(), sk_iters) if sk_iters else logits_t.detach().softmax(-1)
    ce, n = 0.0, 0
    for i, q in enumerate(p_t.chunk(2)):
        for v, lp in enumerate(logp_s):
            if v != i:
                ce = ce + (-(q * lp).sum(-1)).mean()
                n += 1
    ce = ce / n
    logp_t = (sim_t / g["sigma_teacher"] ** 2).log_softmax(-1)  # the plain GMM posterior
    kl = (logp_t.exp() * (logp_t + math.log(g["k"]))).sum(-1).mean()
    return ce + beta * kl, ce, kl, sim_t.detach()


# ---------------------------------------------------------------- schedules (DINO's utils)
def cosine(start, end, progress):
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


class Schedules:
    def __init__(self, cfg, steps_per_epoch):
        o, t = cfg["optim"], cfg["train"]
        self.total = max(t["epochs"] * steps_per_epoch, 1)
        self.warmup = min(round(o["warmup_epochs"] * steps_per_epoch), self.total)
        self.peak, self.min_lr = o["lr"] * t["batch_size"] / 256, o["min_lr"]
        self.cfg = cfg

    def lr(self, s):
        if s < self.warmup:
            return self.peak * s / max(self.warmup - 1, 1)
        return cosine(self.peak, self.min_lr, (s - self.warmup) / max(self.total - self.warmup, 1))

    def wd(self, s):
        return cosine(self.cfg["optim"]["weight_decay"], self.cfg["optim"]["weight_decay_end"], s / self.total)

    def momentum(self, s):
        return cosine(self.cfg["teacher"]["momentum_start"], self.cfg["teacher"]["momentum_end"], s / self.total)

    def beta(self, s):
        ib = self.cfg["ib"]
        if ib["schedule"] == "const":
            return ib["beta_start"]
        return ib["beta_start"] * (ib["beta_end"] / ib["beta_start"]) ** (s / self.total) if ib["beta_start"] > 0 else 0.0


def build(cfg):
    student, teacher = Encoder(cfg), Encoder(cfg)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    g = cfg["gmm"]
    means = nn.Parameter(F.normalize(torch.randn(g["k"], cfg["head"]["out"]), dim=-1))
    return student, teacher, means


def peak_rss_mib():
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return own / 1024


def train(a):
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    assert cfg["method"] == "svib" and cfg["optim"]["name"] == "adamw", "reference: SVIB with AdamW only"
    torch.manual_seed(cfg["train"]["seed"])
    torch.set_num_threads(a.threads or os.cpu_count())
    t0 = time.time()
    aug = DataAugmentation(cfg["augment"], a.mean, a.std)
    folder = os.path.isdir(os.path.join(a.data, "train"))
    ds = (FolderImages if folder else IdxImages)(a.data, aug, cfg["data"].get("limit", 0))
    bs = cfg["train"]["batch_size"]
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=a.workers, drop_last=True, persistent_workers=a.workers > 0, prefetch_factor=2 if a.workers else None, pin_memory=cuda)
    student, teacher, means = build(cfg)
    cl = cuda and cfg["model"]["name"].startswith("resnet")
    if cuda:
        torch.backends.cudnn.benchmark = cl
        fmt = torch.channels_last if cl else torch.contiguous_format
        student, teacher = student.to(dev, memory_format=fmt), teacher.to(dev, memory_format=fmt)
        means = nn.Parameter(means.detach().to(dev))
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.amp]
    scaler = torch.amp.GradScaler("cuda", enabled=a.amp == "fp16")
    params = list(student.named_parameters()) + [("gmm.means", means)]
    groups = [{"params": [p for n, p in params if not (n.endswith(".bias") or p.ndim == 1)]},
              {"params": [p for n, p in params if n.endswith(".bias") or p.ndim == 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, betas=tuple(cfg["optim"]["betas"]), eps=cfg["optim"]["eps"])
    sched = Schedules(cfg, len(loader))
    center = torch.zeros(1, cfg["gmm"]["k"], device=dev)
    teacher_pairs = list(zip(student.parameters(), teacher.parameters()))
    step, seen, t_start, warm = 0, 0, None, a.warmup
    while step < a.steps:
        for crops in loader:
            if step == warm:
                t_start, seen = time.time(), 0
            for i, gr in enumerate(opt.param_groups):
                gr["lr"] = sched.lr(step)
                if i == 0:
                    gr["weight_decay"] = sched.wd(step)
            if cuda:
                crops = [c.to(dev, non_blocking=True, memory_format=torch.channels_last if cl else torch.contiguous_format) for c in crops]
            with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
                loss, ce, kl, sim_t = svib_loss(student, teacher, means, center, crops, cfg["gmm"], sched.beta(step), cfg["teacher"]["center"], cfg["teacher"].get("sinkhorn_iters", 0))
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss not finite at step {step}")
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            clip_gradients(student, cfg["optim"]["clip_grad"], cuda)
            if step < freeze_steps(cfg, len(loader)):
                means.grad = None  # DINO's cancel_gradients_last_layer
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                m = sched.momentum(step)
                for ps, pt in teacher_pairs:
                    pt.mul_(m).add_((1 - m) * ps.detach())
                cm = cfg["teacher"]["center_momentum"]
                center = center * cm + sim_t.mean(0, keepdim=True) * (1 - cm)
            step += 1
            seen += bs
            if step >= a.steps:
                break
    wall = time.time() - t0
    steady = seen / (time.time() - t_start) if t_start else float("nan")
    gpu = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None
    print(json.dumps({"impl": "pytorch", "steps": step, "images_per_second": steady, "wall_seconds": wall, "loss": loss.item(), "peak_rss_mib_main": peak_rss_mib(), "peak_gpu_allocated_mib": gpu, "workers": a.workers, "device": a.device, "amp": a.amp}))


def freeze_steps(cfg, steps_per_epoch):
    g = cfg["gmm"]
    return g.get("freeze_steps", 0) or g.get("freeze_epochs", 0) * steps_per_epoch


def clip_gradients(model, clip_grad, fused):
    """DINO's clip_gradients: each parameter's gradient scaled to norm <= clip_grad. On CUDA the
    factors stay on the device (no read-back per parameter), as svib does there."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if clip_grad <= 0 or not grads:
        return
    if fused:
        coefs = torch.clamp(clip_grad / (torch.stack(torch._foreach_norm(grads)) + 1e-6), max=1.0)
        torch._foreach_mul_(grads, list(coefs.unbind()))
        return
    for g in grads:
        clip = clip_grad / (g.norm() + 1e-6)
        if clip < 1:
            g.mul_(clip)


def loader(a):
    """images/s of the DataLoader alone (decode + DataAugmentationDINO + collate), as svib bench --loader."""
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    torch.set_num_threads(1)
    aug = DataAugmentation(cfg["augment"], a.mean, a.std)
    ds = FolderImages(a.data, aug)
    bs = cfg["train"]["batch_size"]
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=a.workers, drop_last=True, persistent_workers=a.workers > 0, prefetch_factor=2 if a.workers else None)

    def batches():
        while True:
            yield from dl
    it = batches()
    for _ in range(a.warmup):
        next(it)
    t = time.time()
    for _ in range(a.batches):
        next(it)
    ips = a.batches * bs / (time.time() - t)
    print(json.dumps({"impl": "pytorch", "images_per_second": ips, "workers": a.workers, "batches": a.batches, "peak_rss_mib_main": peak_rss_mib()}))


def check_loss(a):
    """Loads svib's dump (config, weights, fixed views, svib's loss) and computes the loss here."""
    with open(os.path.join(a.dump, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    sd = torch.load(os.path.join(a.dump, "state.pth"), weights_only=True)
    student, teacher, means = build(cfg)
    student.load_state_dict({k[len("student."):]: v for k, v in sd.items() if k.startswith("student.") and not k.startswith("student.gmm.")}, strict=True)
    teacher.load_state_dict({k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}, strict=True)
    with torch.no_grad():
        means.copy_(sd["student.gmm.means"])
    crops = [sd[f"view.{i}"] for i in range(sum(k.startswith("view.") for k in sd))]
    with open(os.path.join(a.dump, "expected.json")) as f:
        exp = json.load(f)
    student.train()
    teacher.train()
    loss, ce, kl, _ = svib_loss(student, teacher, means, sd["center"], crops, cfg["gmm"], exp["beta"], cfg["teacher"]["center"], cfg["teacher"].get("sinkhorn_iters", 0))
    loss.backward()
    got = {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(), "grad_norm_means": means.grad.norm().item()}
    rel = {k: abs(got[k] - exp[k]) / max(abs(exp[k]), 1e-12) for k in got}
    print(json.dumps({"pytorch": got, "svib": {k: exp[k] for k in got}, "max_rel_err": max(rel.values()), "rel_err": rel}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--warmup", type=int, default=10, help="steps left out of the img/s window")
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    t.add_argument("--mean", type=float, nargs="+", default=[0.2860])
    t.add_argument("--std", type=float, nargs="+", default=[0.3530])
    ld = sub.add_parser("loader")
    ld.add_argument("--config", required=True)
    ld.add_argument("--data", required=True)
    ld.add_argument("--batches", type=int, default=20)
    ld.add_argument("--warmup", type=int, default=3)
    ld.add_argument("--workers", type=int, default=2)
    ld.add_argument("--mean", type=float, nargs="+", default=[0.485, 0.456, 0.406])
    ld.add_argument("--std", type=float, nargs="+", default=[0.229, 0.224, 0.225])
    c = sub.add_parser("check-loss")
    c.add_argument("--dump", required=True)
    a = p.parse_args()
    {"train": train, "loader": loader, "check-loss": check_loss}[a.cmd](a)


if __name__ == "__main__":
    main()
