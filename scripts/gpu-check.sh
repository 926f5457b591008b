#!/usr/bin/env bash
# The prepared GPU check (docs/PERFORMANCE.md, "GPU check"). Runs on a GPU machine with the
# release binary built elsewhere, against that machine's libtorch (python3's torch), in one go:
#   (a) every method for a few steps on CUDA in fp32, bf16 and fp16; the fp32 losses compared
#       with a CPU run of the same batches from the same checkpoint (resumed on CUDA at step 3);
#   (b) paper-rn50 and paper-vit-s16 on generated 500x375 JPEGs at 224 px, bf16: img/s, GPU
#       memory, the loader-wait share (SVIB_PROFILE);
#   (c) svib against the PyTorch reference (bench/reference/svib_ref.py, AMP bf16) on the same
#       configs, files and worker count, alternately A B A B;
#   (d) data-parallel training through the NCCL backend as a world of one (svib launch --nproc 1
#       and torchrun --no-python --nproc-per-node 1): its fp32 losses against a plain run of the
#       same batches, and paper-vit-s16's img/s with and without the group, alternately.
# Writes gpu-check.md (one table per part) and gpu-check.json to --out (default $OUT).
#
#   scripts/gpu-check.sh [--bin PATH] [--out DIR] [--dry-run]
#
# Environment knobs for a shorter run: PARTS (default "a c d"; c includes b), METHODS (default:
# all six), PRECISIONS (fp32 bf16 fp16), REPS (A B pairs, 2); and LOADER_THREADS="K ..." adds to
# each pair of (c) a svib run with train.loader_threads=K.
#
# --dry-run: the same steps on the CPU with tiny models, fp32 only, the reference skipped when
# python3 has no torchvision, (d) over Gloo and without torchrun when python3 has no torch:
# checks the script itself (tests/gpu_check.rs runs it).
set -u
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BIN=""
OUTDIR="${OUT:-$HERE/target/gpu-check}"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --out) OUTDIR="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "error: gpu-check.sh: unknown argument \`$1\` (expected --bin PATH, --out DIR, --dry-run)" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  for b in "$HERE/target/gpu/svib" "$HERE/target/release/svib"; do [ -x "$b" ] && BIN="$b" && break; done
fi
[ -x "$BIN" ] || { echo "error: gpu-check.sh: no svib binary (build with cargo build --release or pass --bin)" >&2; exit 2; }
mkdir -p "$OUTDIR/log"
W="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$W"' EXIT
LOG="$OUTDIR/log"
START=$(date +%s)

if [ $DRY = 1 ]; then
  DEV=cpu; PRECS="fp32"; PY="${PYTHON:-python3}"
  SMALL="--set model.width=4 --set head.hidden=64 --set head.out=32"; K=16
  PAPER_SETS="--set train.batch_size=4 --set augment.global_size=64 --set augment.local_size=32 --set gmm.k=256 --set head.hidden=256 --set model.img_size=64"
  RN_SETS="--set model.name=resnet18 --set model.width=8"; VIT_SETS="--set model.name=vit_tiny --set model.depth=2"
  PAPER_STEPS=3; PHOTOS=32; WARM=0; THREADS=2
else
  DEV=cuda; PRECS="${PRECISIONS:-fp32 bf16 fp16}"; PY="${PYTHON:-python3}"
  # the binary finds libtorch through python3's torch (and the CUDA libraries beside it)
  TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  NV="$("$PY" -c 'import glob, os, torch; print(":".join(glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "*", "lib"))))')"
  export LD_LIBRARY_PATH="$TORCH_LIB:$NV:${LD_LIBRARY_PATH:-}"
  SMALL="--set model.width=16 --set head.hidden=512 --set head.out=128"; K=256
  PAPER_SETS="--set train.batch_size=64"; RN_SETS=""; VIT_SETS=""
  PAPER_STEPS=40; PHOTOS=3000; WARM=10; THREADS=$(nproc)
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "binary: $BIN"
  "$BIN" --version 2>&1 || true
  grep -m1 'model name' /proc/cpuinfo
  echo "cores: $(nproc)"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 || true
} > "$LOG/machine.txt"

# Peak GPU memory of the machine while a command runs (nvidia-smi every 0.5 s), in MiB.
watch_gpu() { # FILE
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$1" 2>/dev/null &
    echo $!
  else
    echo ""
  fi
}

# --- data: a small ImageFolder for the methods, photos for the paper presets ---------------
"$BIN" data synth --out "$W/small" --train 512 --val 128 --size 32x32 --seed 1 > "$LOG/synth-small.txt" 2>&1
"$BIN" data synth --out "$W/photo" --train $PHOTOS --val $((PHOTOS / 8)) --size 500x375 --seed 2 > "$LOG/synth-photo.txt" 2>&1
COMMON="--data folder:$W/small --set augment.channels=3 --set augment.global_size=32 --set augment.local_size=16 --set train.batch_size=32 --set train.log_every=1 --set train.knn_at_start=false --set train.steps=6 --quiet"

# --- (a) every method: CPU vs CUDA fp32 from the same checkpoint; bf16 and fp16 -------------
# the key that sets each method's number of prototypes (MethodConfig::prototypes_key)
proto_key() { case "$1" in svib) echo "--set gmm.k=$K" ;; dino) echo "--set dino.out_dim=$K" ;; swav) echo "--set swav.prototypes=$K" ;; esac; }
PARTS="${PARTS:-a c d}"
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
part a || METHODS=" "
for m in ${METHODS:-svib dino byol mocov2 swav simclr}; do
  a="$W/a/$m"
  if [ $(( $(date +%s) - START )) -gt 240 ]; then echo "(a) $m skipped: over 240 s" >> "$LOG/progress.txt"; continue; fi
  SM="$SMALL $(proto_key $m)"
  timeout 90 "$BIN" --threads $THREADS train --method $m $COMMON $SM --set train.device=cpu --out "$a-cpu" --max-steps 3 > "$LOG/a-$m-cpu.txt" 2>&1
  cp -r "$a-cpu" "$a-resumed"
  timeout 90 "$BIN" --threads $THREADS train --method $m $COMMON $SM --set train.device=cpu --out "$a-cpu" >> "$LOG/a-$m-cpu.txt" 2>&1
  timeout 90 "$BIN" --threads $THREADS train --method $m $COMMON $SM --set train.device=$DEV --out "$a-resumed" > "$LOG/a-$m-resumed.txt" 2>&1
  for p in $PRECS; do
    timeout 90 "$BIN" --threads $THREADS train --method $m $COMMON $SM --set train.device=$DEV --set train.precision=$p --out "$a-$p" > "$LOG/a-$m-$p.txt" 2>&1
  done
  mkdir -p "$OUTDIR/a/$m"
  for d in "$a"-*; do cp "$d/metrics.jsonl" "$OUTDIR/a/$m/$(basename "$d").jsonl" 2>/dev/null; done
done
echo "(a) done after $(( $(date +%s) - START )) s" >> "$LOG/progress.txt"

# --- (b) + (c): the paper presets on photos, svib and the reference alternately ------------
REF="$HERE/bench/reference/svib_ref.py"
HAVE_REF=1
"$PY" -c 'import torch, torchvision' 2>/dev/null || HAVE_REF=0
# svib on a paper preset for PAPER_STEPS steps: NAME CFG SETS... [-- COMMAND...], COMMAND
# being how svib is started (default: the binary; e.g. `$BIN launch --nproc 1 --`); the GPU's
# memory watched; metrics and config copied to $OUTDIR/c.
paper_run() {
  local name=$1 cfg=$2; shift 2
  local sets=() pre=("$BIN")
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do sets+=("$1"); shift; done
  [ $# -gt 0 ] && shift && pre=("$@")
  local r="$W/c/$name" g
  g=$(watch_gpu "$OUTDIR/c-$name.gpu")
  timeout 240 "${pre[@]}" --threads $THREADS train --config $cfg --data folder:$W/photo "${sets[@]}" \
    --set train.device=$DEV --set train.steps=$PAPER_STEPS --set train.log_every=5 --set train.knn_at_start=false --set train.keep_checkpoints=1 \
    --quiet --json --out "$r" > "$LOG/c-$name.txt" 2>&1
  [ -n "$g" ] && kill $g 2>/dev/null
  mkdir -p "$OUTDIR/c"; cp "$r/metrics.jsonl" "$OUTDIR/c/$name.jsonl" 2>/dev/null; cp "$r/config.toml" "$OUTDIR/c/$name.toml" 2>/dev/null
}
# the paper presets run in bf16 on the GPU (fp32 in the dry run)
prec=""; [ $DRY = 0 ] && prec="--set train.precision=bf16"
part c || CONFIGS=" "
for cfg in ${CONFIGS:-paper-rn50 paper-vit-s16}; do
  sets="$PAPER_SETS"
  [ $cfg = paper-rn50 ] && sets="$sets $RN_SETS --set train.channels_last=true --set optim.name=adamw --set optim.lr=0.0005 --set optim.min_lr=1e-6"
  # the reference's ViT has no stochastic depth: both run without it
  [ $cfg = paper-vit-s16 ] && sets="$sets $VIT_SETS --set model.drop_path=0.0"
  for rep in $(seq 1 "${REPS:-2}"); do
    r="$W/c/$cfg-svib-$rep"
    SVIB_PROFILE=$([ $rep = 1 ] && echo 1 || echo 0) paper_run $cfg-svib-$rep $cfg $sets $prec
    if [ $HAVE_REF = 1 ] && [ -f "$r/config.toml" ]; then
      g=$(watch_gpu "$OUTDIR/c-$cfg-ref-$rep.gpu")
      amp=$([ $DRY = 0 ] && echo bf16 || echo none)
      timeout 240 "$PY" "$REF" train --config "$r/config.toml" --data "$W/photo" --steps $PAPER_STEPS --warmup $WARM --workers $THREADS \
        --device $DEV --amp $amp --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 > "$LOG/c-$cfg-ref-$rep.txt" 2>&1
      [ -n "$g" ] && kill $g 2>/dev/null
    fi
    for k in ${LOADER_THREADS:-}; do
      SVIB_PROFILE=$([ $rep = 1 ] && echo 1 || echo 0) paper_run $cfg-svib-$rep-lt$k $cfg $sets $prec --set train.loader_threads=$k
    done
  done
done
echo "(b, c) done after $(( $(date +%s) - START )) s" >> "$LOG/progress.txt"

# --- (d) the distributed path as a world of one: NCCL on the GPU (Gloo in the dry run) ---------
HAVE_TORCHRUN=0
"$PY" -c 'import torch.distributed.run' 2>/dev/null && HAVE_TORCHRUN=1
if part d; then
  D="--method svib $COMMON $SMALL --set gmm.k=$K --set train.device=$DEV"
  timeout 120 "$BIN" --threads $THREADS train $D --out "$W/d/plain" > "$LOG/d-plain.txt" 2>&1
  timeout 120 "$BIN" launch --nproc 1 -- --threads $THREADS train $D --out "$W/d/launch" > "$LOG/d-launch.txt" 2>&1
  if [ $HAVE_TORCHRUN = 1 ]; then
    timeout 120 "$PY" -m torch.distributed.run --standalone --no-python --nproc-per-node 1 "$BIN" --threads $THREADS train $D --out "$W/d/torchrun" > "$LOG/d-torchrun.txt" 2>&1
  fi
  mkdir -p "$OUTDIR/d"
  for n in plain launch torchrun; do cp "$W/d/$n/metrics.jsonl" "$OUTDIR/d/$n.jsonl" 2>/dev/null; done
  for rep in $(seq 1 "${REPS:-2}"); do
    paper_run d-vit-plain-$rep paper-vit-s16 $PAPER_SETS $VIT_SETS --set model.drop_path=0.0 $prec
    paper_run d-vit-group-$rep paper-vit-s16 $PAPER_SETS $VIT_SETS --set model.drop_path=0.0 $prec -- "$BIN" launch --nproc 1 --
  done
  echo "(d) done after $(( $(date +%s) - START )) s" >> "$LOG/progress.txt"
fi

"$PY" "$HERE/scripts/gpu-check-report.py" --dir "$OUTDIR" --dry-run $DRY --warm $WARM --have-ref $HAVE_REF --have-torchrun $HAVE_TORCHRUN --parts "$PARTS" --precisions $PRECS
