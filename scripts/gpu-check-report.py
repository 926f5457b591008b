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
        for rep in range(1, 10):
            if not os.path.exists(os.path.join(d, "c", f"{c}-svib-{rep}.jsonl")):
                continue
            ref = ref_result(os.path.join(d, "log", f"c-{c}-ref-{rep}.txt"))
            ref_ips = ref["images_per_second"] if ref else None
            # the run with the config's loader threads, then those with LOADER_THREADS=K
            variants = [("", None)] + sorted((f[len(f"{c}-svib-{rep}"):-len(".jsonl")], int(f.rsplit("-lt", 1)[1][:-len(".jsonl")]))
                                             for f in os.listdir(os.path.join(d, "c")) if re.fullmatch(rf"{re.escape(c)}-svib-{rep}-lt\d+\.jsonl", f))
            for suffix, threads in variants:
                name = f"{c}-svib-{rep}{suffix}"
                svib = steady_ips(os.path.join(d, "c", f"{name}.jsonl"), warm)
                rows.append({
                    "config": c, "rep": rep, "loader_threads": threads, "svib_img_s": svib, "ref_img_s": ref_ips,
                    "ratio": svib / ref_ips if svib and ref_ips else None,
                    "svib_gpu_peak_mib": gpu_peak(os.path.join(d, f"c-{name}.gpu")),
                    "ref_gpu_peak_mib": gpu_peak(os.path.join(d, f"c-{c}-ref-{rep}.gpu")),
                    "ref_gpu_allocated_mib": ref.get("peak_gpu_allocated_mib") if ref else None,
                    "svib_loader_wait_pct": loader_wait(os.path.join(d, "log", f"c-{name}.txt")),
                })
    return rows


def part_d(d, warm):
    """The group of one: losses of `svib launch --nproc 1` and torchrun against the plain run,
    and paper-vit-s16's img/s with and without the group."""
    plain = losses(os.path.join(d, "d", "plain.jsonl"))
    out = {"plain_steps": len(plain)}
    for n in ("launch", "torchrun"):
        other = losses(os.path.join(d, "d", f"{n}.jsonl"))
        common = sorted(s for s in other if s in plain)
        out[f"{n}_steps"] = len(other)
        out[f"{n}_max_rel"] = max((rel(other[s], plain[s]) for s in common), default=None) if len(common) == len(plain) and plain else None
    out["vit"] = [{"rep": rep, "plain_img_s": steady_ips(os.path.join(d, "c", f"d-vit-plain-{rep}.jsonl"), warm),
                   "group_img_s": steady_ips(os.path.join(d, "c", f"d-vit-group-{rep}.jsonl"), warm)}
                  for rep in range(1, 10) if os.path.exists(os.path.join(d, "c", f"d-vit-plain-{rep}.jsonl"))]
    return out


def fmt(v, spec=".2f"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, spec) if isinstance(v, float) else str(v)


def markdown(a, c, dd, precisions, machine):
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
        config = r["config"] + (f" (loader_threads {r['loader_threads']})" if r["loader_threads"] else "")
        out.append(f"| {config} | {r['rep']} | {fmt(r['svib_img_s'], '.1f')} | {fmt(r['ref_img_s'], '.1f')} | {fmt(r['ratio'])} | "
                   f"{fmt(r['svib_gpu_peak_mib'])} | {fmt(r['ref_gpu_peak_mib'])} | {fmt(r['svib_loader_wait_pct'], '.1f')} |")
    if dd:
        out += ["", "## (d) the distributed path as a world of one (NCCL on a GPU, Gloo in the dry run)", "",
                "| started by | steps | max rel. loss diff to the plain run |", "|---|---|---|"]
        for n in ("launch", "torchrun"):
            out.append(f"| {'svib launch --nproc 1' if n == 'launch' else 'torchrun --no-python --nproc-per-node 1'} | {dd[f'{n}_steps']} | {fmt(dd[f'{n}_max_rel'], '.2e')} |")
        out += ["", "| paper-vit-s16 | rep | plain img/s | group of one img/s | ratio |", "|---|---|---|---|---|"]
        for r in dd["vit"]:
            ratio = r["group_img_s"] / r["plain_img_s"] if r["group_img_s"] and r["plain_img_s"] else None
            out.append(f"| | {r['rep']} | {fmt(r['plain_img_s'], '.1f')} | {fmt(r['group_img_s'], '.1f')} | {fmt(ratio)} |")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--warm", type=int, default=10, help="steps left out of svib's img/s")
    p.add_argument("--have-ref", type=int, default=1)
    p.add_argument("--have-torchrun", type=int, default=0)
    p.add_argument("--parts", default="a c d")
    p.add_argument("--precisions", nargs="+", default=["fp32"])
    a = p.parse_args()
    machine = open(os.path.join(a.dir, "log", "machine.txt")).read() if os.path.exists(os.path.join(a.dir, "log", "machine.txt")) else ""
    parts = a.parts.split()
    ra, rc = part_a(a.dir, a.precisions), part_c(a.dir, a.warm)
    rd = part_d(a.dir, a.warm) if "d" in parts else None
    md = markdown(ra, rc, rd, a.precisions, machine)
    with open(os.path.join(a.dir, "gpu-check.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.dir, "gpu-check.json"), "w") as f:
        json.dump({"dry_run": bool(a.dry_run), "machine": machine, "methods": ra, "paper": rc, "distributed": rd}, f, indent=1)
    print(md)
    # the check fails when a method did not run or the device's fp32 loss left the CPU's
    bad = [r["method"] for r in ra if not r["fp32_finite"] or r["cpu_vs_device_max_rel"] is None or r["cpu_vs_device_max_rel"] > 1e-4]
    bad += [f"{r['config']} (svib)" for r in rc if r["svib_img_s"] is None]
    bad += [f"{r['config']} (reference)" for r in rc if a.have_ref and r["ref_img_s"] is None]
    if rd is not None:
        runs = ["launch"] + (["torchrun"] if a.have_torchrun else [])
        bad += [f"group of one ({n})" for n in runs if rd[f"{n}_max_rel"] is None or rd[f"{n}_max_rel"] > 1e-5]
        bad += ["group of one (paper-vit-s16)" for r in rd["vit"] if not r["plain_img_s"] or not r["group_img_s"]]
        bad += ["group of one (paper-vit-s16 did not run)"] if not rd["vit"] else []
    if bad:
        print("gpu-check: FAILED for " + ", ".join(sorted(set(bad))) + f" (logs in {a.dir}/log)")
        raise SystemExit(1)
    print("gpu-check: all parts ran")


if __name__ == "__main__":
    main()
