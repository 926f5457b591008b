"""lightly's DINO on Fashion-MNIST: a peer run to put beside `svib train --config fmnist-cpu`.

Usage (after bench/peer/setup.sh):

  bench/peer/.venv/bin/python bench/peer/lightly_dino.py --seconds 1800      # a 30-minute budget
  bench/peer/.venv/bin/python bench/peer/lightly_dino.py --epochs 9          # the preset's 9 epochs
  bench/peer/.venv/bin/python bench/peer/lightly_dino.py --preset-crops --seconds 1800   # fmnist-cpu's views, batch, lr and teacher
  bench/peer/.venv/bin/python bench/peer/lightly_dino.py --limit 1000 --steps 5 --batch-size 32 --limit-test 500 --threads 1  # smoke

Everything that lightly provides comes from lightly 1.6.0: DINOTransform (multi-crop),
DINOProjectionHead, DINOLoss, deactivate_requires_grad / update_momentum (EMA teacher) and
cosine_schedule (teacher momentum). The rest follows svib's fmnist-cpu preset (presets/fmnist-cpu.toml
and svib's defaults):
- backbone: svib's ResNet-18, width 16, 3x3 stride-2 stem without max-pool, 1 input channel
  (the class of bench/reference/svib_ref.py, imported); channels-last unless --no-channels-last;
- head: DINOProjectionHead(128 -> hidden 1024 -> bottleneck 256 -> --k 256, batch_norm=True),
  last layer weight-normalised with gain 1 and frozen for the first epoch (freeze_last_layer=1);
- loss: DINOLoss, teacher temperature 0.04 -> 0.07 over --warmup-teacher-temp-epochs (default 30,
  as svib's DINO preset and main_dino.py), student 0.1, centre momentum 0.9;
- crops (defaults; --preset-crops switches to fmnist-cpu's since session 15: global scale 0.9-1, no
  local crops, no flips, with batch 64, lr 0.002, teacher momentum 0.996 and a 60-step warm-up as
  `dino-fmnist-cpu`): 2 global 28 px at scale (0.5, 1), 2 local 14 px at scale (0.2, 0.5), ratio (3/4, 4/3),
  flip 0.5, colour jitter p 0.8 (0.4, 0.4, 0.2, 0.1), grey 0.2, blur p (0.5, 0.1, 0.2) with sigma
  in (0.1, 0.6), solarisation 0.2 on global view 2; grey 1-channel PIL images go through
  DINOTransform unchanged (hue/saturation are no-ops on grey), normalised with Fashion-MNIST's
  mean 0.2860 / std 0.3530;
- optimiser: AdamW, lr 0.016 * batch / 256 with a linear warm-up of 1 epoch then cosine to 1e-6,
  weight decay cosine 0.04 -> 0.4 (none on biases and norms), DINO's per-parameter gradient
  clipping at 3.0, batch 128; teacher momentum cosine 0.95 -> 1.
- budget: --steps N (schedules span N steps), or --epochs E, or --seconds S: after 30 steps
  (10 untimed, 20 timed) the remaining steps are set from the measured step time, so that the
  schedules span the whole budget (svib's --budget does the same with a probe run); training also
  stops if the wall clock passes S. The kNN evaluation is not part of the budget.
- threads: on a machine where another job holds the cores, use --threads 1: with 2 OpenMP threads
  every op waited for a descheduled thread (8 s a step at batch 8 against 0.15 s with 1 thread).

At the end: kNN-20 on the Fashion-MNIST test set with svib's protocol (teacher backbone, eval
mode, pooled features, L2-normalised, cosine similarity, k 20, votes weighted exp(sim / 0.07);
the training images used are the kNN bank, as in svib with data.limit). Prints one JSON line:
{"knn_top1", "knn_top5", "steps", "seconds", "images_per_second", ...}; "seconds" is the training
wall clock (from the first step, data loader start-up included), images_per_second = steps *
batch / seconds.
"""
import argparse
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.dino_transform import DINOTransform
from lightly.utils.scheduler import cosine_schedule

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from svib_ref import ResNet18, find, knn, read_idx  # noqa: E402  (svib's ResNet, the kNN-20 and the IDX reader)

MEAN, STD = 0.2860, 0.3530
# lightly's DINOProjectionHead uses torch.nn.utils.weight_norm (deprecated, still correct)
warnings.filterwarnings("ignore", message=".*weight_norm` is deprecated", category=FutureWarning)


class Images(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L"))


class Dino(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.backbone = ResNet18(1, a.width, 2)
        self.head = DINOProjectionHead(self.backbone.out_dim, 1024, 256, a.k, batch_norm=True, freeze_last_layer=1)

    def forward(self, views):
        """Backbone once per resolution (as DINO's MultiCropWrapper and svib's encoder do)."""
        out, i = [], 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-1] == views[i].shape[-1]:
                j += 1
            out.append(self.head(self.backbone(torch.cat(views[i:j]))))
            i = j
        return list(torch.cat(out).chunk(len(views)))


def features(backbone, images, channels_last, batch=1000):
    backbone.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = (torch.tensor(images[s:s + batch]).float().div_(255).unsqueeze(1) - MEAN) / STD
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(nn.functional.normalize(backbone(x), dim=1))
    return torch.cat(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="folder with the (gz) IDX files")
    p.add_argument("--limit", type=int, default=0, help="first N training images only (0: all 60000)")
    p.add_argument("--indices", default="", help="JSON list of training-image indices to use (svib quality writes the seeded subset's)")
    p.add_argument("--limit-test", type=int, default=0, help="first N test images only (quick checks)")
    p.add_argument("--steps", type=int, default=0, help="train exactly N steps (schedules span N)")
    p.add_argument("--epochs", type=float, default=9, help="schedule length in epochs without --steps (default 9, the preset's)")
    p.add_argument("--seconds", type=float, default=0, help="wall-clock training budget (sets the step count after a 30-step probe)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.016, help="per 256 images")
    p.add_argument("--warmup-epochs", type=float, default=1)
    p.add_argument("--warmup-steps", type=int, default=0, help="linear lr warm-up in steps (overrides --warmup-epochs when > 0)")
    p.add_argument("--global-scale", type=float, nargs=2, default=(0.5, 1.0), help="global crop scale range")
    p.add_argument("--local-scale", type=float, nargs=2, default=(0.2, 0.5), help="local crop scale range")
    p.add_argument("--local-crops", type=int, default=2, help="number of 14 px local crops")
    p.add_argument("--flip", type=float, default=0.5, help="horizontal flip probability")
    p.add_argument("--preset-crops", action="store_true",
                   help="svib's fmnist-cpu views and optimiser: global scale 0.9-1, no local crops, no flips, batch 64, lr 0.002, momentum 0.996, warm-up 60 steps")
    p.add_argument("--k", type=int, default=256, help="DINO head output dimension")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--warmup-teacher-temp-epochs", type=int, default=30)
    p.add_argument("--momentum-start", type=float, default=0.95)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50, help="progress line on stderr every N steps (0: none)")
    if p.parse_known_args()[0].preset_crops:  # new defaults: flags given explicitly still win
        p.set_defaults(global_scale=(0.9, 1.0), local_crops=0, flip=0.0, batch_size=64, lr=0.002, momentum_start=0.996, warmup_steps=60)
    a = p.parse_args()

    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    train_images = read_idx(find(a.data, "train-images-idx3-ubyte"))
    train_labels = read_idx(find(a.data, "train-labels-idx1-ubyte"))
    if a.limit:
        train_images, train_labels = train_images[:a.limit], train_labels[:a.limit]
    if a.indices:
        with open(a.indices) as f:
            keep = json.load(f)
        train_images, train_labels = train_images[keep], train_labels[keep]
    test_images = read_idx(find(a.data, "t10k-images-idx3-ubyte"))
    test_labels = read_idx(find(a.data, "t10k-labels-idx1-ubyte"))
    if a.limit_test:
        test_images, test_labels = test_images[:a.limit_test], test_labels[:a.limit_test]

    transform = DINOTransform(
        global_crop_size=28, global_crop_scale=tuple(a.global_scale), local_crop_size=14, local_crop_scale=tuple(a.local_scale),
        n_local_views=a.local_crops, hf_prob=a.flip, cj_prob=0.8, cj_strength=0.5, cj_bright=0.8, cj_contrast=0.8, cj_sat=0.4, cj_hue=0.2, random_gray_scale=0.2,
        gaussian_blur=(0.5, 0.1, 0.2), sigmas=(0.1, 0.6), solarization_prob=0.2, normalize={"mean": [MEAN], "std": [STD]})
    loader = torch.utils.data.DataLoader(Images(train_images, transform), batch_size=a.batch_size, shuffle=True, drop_last=True,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)
    steps_per_epoch = len(loader)
    assert steps_per_epoch > 0, "fewer training images than one batch"

    student = Dino(a)
    teacher = Dino(a)  # not copy.deepcopy: the head's weight_norm does not support it
    teacher.load_state_dict(student.state_dict())
    deactivate_requires_grad(teacher)
    if a.channels_last:
        student, teacher = student.to(memory_format=torch.channels_last), teacher.to(memory_format=torch.channels_last)
    loss_fn = DINOLoss(output_dim=a.k, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=a.warmup_teacher_temp_epochs,
                       student_temp=0.1, center_momentum=0.9)
    named = list(student.named_parameters())
    decay = [q for n, q in named if q.requires_grad and not (n.endswith(".bias") or q.ndim == 1)]
    no_decay = [q for n, q in named if q.requires_grad and (n.endswith(".bias") or q.ndim == 1)]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    peak = a.lr * a.batch_size / 256

    total = a.steps or max(1, round(a.epochs * steps_per_epoch))
    warmup = lambda: min(a.warmup_steps or round(a.warmup_epochs * steps_per_epoch), total)  # noqa: E731
    probe_warm, probe_timed = 10, 20

    def lr_at(s):
        w = warmup()
        if s < w:
            return peak * s / max(w - 1, 1)
        return 1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * (s - w) / max(total - w, 1)))

    step, t0, t_probe, loss = 0, time.time(), None, float("nan")
    while step < total:
        for views in loader:
            if a.seconds and step == probe_warm:
                t_probe = time.time()
            if a.seconds and not a.steps and step == probe_warm + probe_timed:
                per_step = (time.time() - t_probe) / probe_timed
                total = max(step + 1, step + int((a.seconds - (time.time() - t0)) / per_step))
            epoch = step // steps_per_epoch
            for i, g in enumerate(opt.param_groups):
                g["lr"] = lr_at(step)
                if i == 0:
                    g["weight_decay"] = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * step / total))
            if a.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with torch.no_grad():
                t_out = teacher(views[:2])
            s_out = student(views)
            l = loss_fn(t_out, s_out, epoch=epoch)
            loss = l.item()
            if not math.isfinite(loss):
                raise SystemExit(f"loss not finite at step {step}")
            opt.zero_grad()
            l.backward()
            for q in student.parameters():  # DINO's clip_gradients: per parameter, 3.0
                if q.grad is not None:
                    c = 3.0 / (q.grad.norm() + 1e-6)
                    if c < 1:
                        q.grad.mul_(c)
            student.head.cancel_last_layer_gradients(epoch)
            opt.step()
            update_momentum(student, teacher, m=cosine_schedule(step, total, a.momentum_start, 1.0))
            step += 1
            if a.log_every and (step % a.log_every == 0 or step == 1):
                print(f"step {step}/{total} epoch {epoch} loss {loss:.4f} lr {lr_at(step - 1):.2e} {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
            if step >= total or (a.seconds and time.time() - t0 > a.seconds):
                total = step
                break
    seconds = time.time() - t0

    ftrain = features(teacher.backbone, train_images, a.channels_last)
    ftest = features(teacher.backbone, test_images, a.channels_last)
    top1, top5 = knn(ftrain, torch.from_numpy(train_labels.astype(np.int64)), ftest, torch.from_numpy(test_labels.astype(np.int64)))
    print(json.dumps({"knn_top1": top1, "knn_top5": top5, "steps": step, "seconds": round(seconds, 2), "images_per_second": round(step * a.batch_size / seconds, 1),
                      "epochs": round(step / steps_per_epoch, 3), "loss": loss, "train_images": len(train_images), "test_images": len(test_images),
                      "impl": "lightly", "lightly": __import__("lightly").__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
