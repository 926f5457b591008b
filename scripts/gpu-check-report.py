"""Turns what scripts/gpu-check.sh left in --dir into gpu-check.md and gpu-check.json.

Standard library only (runs on the GPU machines and on the CPU machines' system python3).
"""
import argparse
import glob
import json
import math
import os
import re

METHODS = ["svib", "dino", "byol", "mocov2", "swav", "simclr"]
CONFIGS = ["paper-rn50", "paper-vit-s16"]


def losses(path):
    """{step: loss} of a metrics.jsonl (training lines only)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "loss" in r and "step" in r and "knn_top1" not in r:
                out[r["step"]] = r["loss"]
    return out


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def part_a(d, precisions):
    rows = []
    for m in METHODS:
        if not os.path.isdir(os.path.join(d, "a", m)):
            continue
        f = lambda n: losses(os.path.join(d, "a", m, f"{m}-{n}.jsonl"))
        cpu, resumed = f("cpu"), f("resumed")
        common = sorted(s for s in resumed if s in cpu and s > 3)
        row = {"method": m, "cpu_vs_device_steps": common}
        row["cpu_vs_device_max_rel"] = max((rel(resumed[s], cpu[s]) for s in common), default=None)
        ref = f("fp32")
        for p in precisions:
            lp = f(p)
            row[f"{p}_steps"] = len(lp)
            row[f"{p}_finite"] = bool(lp) and all(math.isfinite(v) for v in lp.values())
            row[f"{p}_last_loss"] = lp[max(lp)] if lp else None
            if p != "fp32" and 1 in lp and 1 in ref:
                row[f"{p}_step1_rel_to_fp32"] = rel(lp[1], ref[1])
        rows.append(row)
    return rows


def steady_ips(path, after):
    """Mean of the metrics' images_per_second windows after step `after`."""
    v = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if "images_per_second" in r and r.get("step", 0) > after and "knn_top1" not in r:
                    v.append(r["images_per_second"])
    return sum(v) / len(v) if v else None


def ref_result(path):
    if not os.path.exists(path):
        return None
    for line in open(path).read().splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return None


def gpu_peak(path):
    try:
        return max(int(x) for x in open(path).read().split() if x.strip().isdigit())
    except (OSError, ValueError):
        return None


def loader_wait(path):
    """The 'waiting for the loader' share of SVIB_PROFILE's report, in %."""
    if not os.path.exists(path):
        return None
    m = re.search(r"waiting for the loader\s+[\d.]+ s\s+([\d.]+) %", open(path).read())
    return float(m.group(1)) if m else None


def part_c(d, warm):
    rows = []
    for c in CONFIGS:
        for rep in (1, 2):
            if not os.path.exists(os.path.join(d, "c", f"{c}-svib-{rep}.jsonl")):
                continue
            svib = steady_ips(os.path.join(d, "c", f"{c}-svib-{rep}.jsonl"), warm)
            ref = ref_result(os.path.join(d, "log", f"c-{c}-ref-{rep}.txt"))
            ref_ips = ref["images_per_second"] if ref else None
            rows.append({
                "config": c, "rep": rep, "svib_img_s": svib, "ref_img_s": ref_ips,
                "ratio": svib / ref_ips if svib and ref_ips else None,
                "svib_gpu_peak_mib": gpu_peak(os.path.join(d, f"c-{c}-svib-{rep}.gpu")),
                "ref_gpu_peak_mib": gpu_peak(os.path.join(d, f"c-{c}-ref-{rep}.gpu")),
                "ref_gpu_allocated_mib": ref.get("peak_gpu_allocated_mib") if ref else None,
                "svib_loader_wait_pct": loader_wait(os.path.join(d, "log", f"c-{c}-svib-{rep}.txt")),
            })
    return rows


def fmt(v, spec=".2f"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, spec) if isinstance(v, float) else str(v)


def markdown(a, c, precisions, machine):
    out = ["# svib GPU check", "", "```", machine.strip(), "```", "",
           "## (a) every method: CPU vs device fp32 from the same step-3 checkpoint; bf16 / fp16", ""]
    head = ["method", "max rel. diff CPU vs device (steps 4-6)"]
    for p in precisions:
        head += [f"{p} finite (6 steps)", f"{p} loss at step 6"] + ([f"{p} step-1 rel. to fp32"] if p != "fp32" else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in a:
        cells = [r["method"], fmt(r["cpu_vs_device_max_rel"], ".2e")]
        for p in precisions:
            cells += [fmt(r[f"{p}_finite"]), fmt(r[f"{p}_last_loss"], ".4f")]
            if p != "fp32":
                cells.append(fmt(r.get(f"{p}_step1_rel_to_fp32"), ".2e"))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## (b, c) paper presets on 500x375 JPEGs at 224 px: svib vs the PyTorch reference (A B A B)", "",
            "| config | rep | svib img/s | PyTorch img/s | ratio | svib GPU peak MiB | PyTorch GPU peak MiB | svib loader wait % |",
            "|---|---|---|---|---|---|---|---|"]
    for r in c:
        out.append(f"| {r['config']} | {r['rep']} | {fmt(r['svib_img_s'], '.1f')} | {fmt(r['ref_img_s'], '.1f')} | {fmt(r['ratio'])} | "
                   f"{fmt(r['svib_gpu_peak_mib'])} | {fmt(r['ref_gpu_peak_mib'])} | {fmt(r['svib_loader_wait_pct'], '.1f')} |")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--warm", type=int, default=10, help="steps left out of svib's img/s")
    p.add_argument("--have-ref", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["fp32"])
    a = p.parse_args()
    machine = open(os.path.join(a.dir, "log", "machine.txt")).read() if os.path.exists(os.path.join(a.dir, "log", "machine.txt")) else ""
    ra, rc = part_a(a.dir, a.precisions), part_c(a.dir, a.warm)
    md = markdown(ra, rc, a.precisions, machine)
    with open(os.path.join(a.dir, "gpu-check.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.dir, "gpu-check.json"), "w") as f:
        json.dump({"dry_run": bool(a.dry_run), "machine": machine, "methods": ra, "paper": rc}, f, indent=1)
    print(md)
    # the check fails when a method did not run or the device's fp32 loss left the CPU's
    bad = [r["method"] for r in ra if not r["fp32_finite"] or r["cpu_vs_device_max_rel"] is None or r["cpu_vs_device_max_rel"] > 1e-4]
    bad += [f"{r['config']} (svib)" for r in rc if r["svib_img_s"] is None]
    bad += [f"{r['config']} (reference)" for r in rc if a.have_ref and r["ref_img_s"] is None]
    if bad:
        print("gpu-check: FAILED for " + ", ".join(sorted(set(bad))) + f" (logs in {a.dir}/log)")
        raise SystemExit(1)
    print("gpu-check: all parts ran")


if __name__ == "__main__":
    main()
