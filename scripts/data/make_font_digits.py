"""Writes a 28 px grey digit data set in Fashion-MNIST's IDX layout, rendered from the DejaVu fonts
that ship with the Rust crate `dejavu` (or any folder of .ttf files): a second domain to check a
recipe on, where left and right matter (a mirrored 2 is not a 2), unlike Fashion-MNIST's clothes.

Each image: one digit 0-9 in a random font (22 DejaVu faces: sans, serif, mono, condensed, bold,
italic, light), size, rotation (+-15 degrees), shear (+-0.3) and stroke, fitted into a 20 px box
and centred by its centre of mass in 28 x 28 as MNIST was made, then bent by a smooth random
displacement field (a few px). The test images use font faces that no training image uses. Seeded,
so the same command should write the same bytes.

  bench/reference/.venv/bin/python scripts/data/make_font_digits.py --out /tmp/font-digits   # 8,000 train, 2,000 test
  svib knn --raw-pixels --data idx:/tmp/font-digits
  svib train --config fmnist-cpu --data idx:/tmp/font-digits --out runs/digits
"""
import argparse
import glob
import gzip
import os
import random
import struct

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def font_files(folder):
    if folder:
        return sorted(glob.glob(os.path.join(folder, "**", "*.ttf"), recursive=True))
    home = os.path.expanduser("~/.cargo/registry/src")
    found = sorted(glob.glob(os.path.join(home, "*", "dejavu-*", "assets", "**", "*.ttf"), recursive=True))
    found += sorted(glob.glob("/usr/share/fonts/truetype/dejavu/*.ttf"))
    # one file per face name
    seen, faces = set(), []
    for f in found:
        if os.path.basename(f) not in seen and "Math" not in f:
            seen.add(os.path.basename(f))
            faces.append(f)
    return faces


def render(digit, font_path, rng):
    big = Image.new("L", (96, 96), 0)
    font = ImageFont.truetype(font_path, rng.randint(40, 60))
    ImageDraw.Draw(big).text((48, 48), str(digit), fill=rng.randint(190, 255), font=font, anchor="mm",
                             stroke_width=rng.choice([0, 0, 0, 1, 2]), stroke_fill=255)
    shear = rng.uniform(-0.3, 0.3)
    big = big.transform(big.size, Image.AFFINE, (1, shear, -shear * 48, 0, 1, 0), resample=Image.BILINEAR)
    big = big.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    box = big.getbbox()
    if box is None:
        return np.zeros((28, 28), np.uint8)
    glyph = big.crop(box)
    w, h = glyph.size
    s = 20.0 / max(w, h)
    glyph = glyph.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    a = np.asarray(glyph, np.float64)
    cy, cx = (np.indices(a.shape) * a).reshape(2, -1).sum(1) / max(a.sum(), 1e-9)
    out = Image.new("L", (28, 28), 0)
    out.paste(glyph, (int(round(14 - cx)), int(round(14 - cy))))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    return elastic(np.asarray(out, np.uint8), rng)


def elastic(img, rng, alpha=1.3):
    """Bilinear resampling through a smooth random displacement field (up to ~alpha px)."""
    g = np.random.default_rng(rng.getrandbits(32))
    field = [np.asarray(Image.fromarray(g.normal(0, alpha, (4, 4)).astype(np.float32), "F").resize((28, 28), Image.BICUBIC)) for _ in range(2)]
    yy, xx = np.indices((28, 28), dtype=np.float64)
    y, x = np.clip(yy + field[0], 0, 27), np.clip(xx + field[1], 0, 27)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, 27), np.minimum(x0 + 1, 27)
    fy, fx = y - y0, x - x0
    a = img.astype(np.float64)
    out = (a[y0, x0] * (1 - fy) * (1 - fx) + a[y1, x0] * fy * (1 - fx) + a[y0, x1] * (1 - fy) * fx + a[y1, x1] * fy * fx)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def write_idx(path, array):
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + array.astype(np.uint8).tobytes())
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=8000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--fonts", default="", help="folder of .ttf files (default: the dejavu crate's)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    faces = font_files(a.fonts)
    if not faces:
        raise SystemExit("error: no .ttf fonts found; pass --fonts DIR")
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    # every third face is kept for the test images: the test asks for digits in fonts the
    # training images never used, as a new writer's digits
    test_faces, train_faces = faces[::3], [f for i, f in enumerate(faces) if i % 3]
    for split, n, pool in [("train", a.train, train_faces), ("t10k", a.test, test_faces)]:
        labels = np.array([i % 10 for i in range(n)], np.uint8)
        rng.shuffle(labels)
        images = np.stack([render(int(d), rng.choice(pool), rng) for d in labels])
        write_idx(os.path.join(a.out, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(a.out, f"{split}-labels-idx1-ubyte.gz"), labels)
    print(f"{a.out}: {a.train} train images ({len(train_faces)} font faces) + {a.test} test images ({len(test_faces)} other faces)")


if __name__ == "__main__":
    main()
