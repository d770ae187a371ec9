#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a GPU, no network and torch, torchaudio, lightning,
# torchmetrics, scipy, scikit-image and matplotlib installed: it installs the wheels in .whl/ (made here by
# benchmarks/fetch_wheels.sh), then runs, each step timed and logged:
#   versions and flags; the quickstart fit; the exact modes' check (bf16 and TF32: the probabilities move
#   within explain.batching.ERROR_BOUNDS and, with the near-threshold rows run again in float32, AI and Fid-In
#   equal float32's for the same maps: benchmarks/bound.py); `test --explain study,controls` with the sanity
#   check on the device; the numerics check (batch 1 vs one batch, TF32 off/on, bf16, each against the CPU); the width-64
#   benchmark in fp32 (with the full-study estimate); the device's test run against the same clips on the
#   CPU, clip by clip; the benchmark in bf16; the reference column of the benchmark.
# It writes summary.txt, log.txt, steps.tsv and up to five JSON files into $OUT (default ./gpu-check), stops
# itself before BUDGET seconds (default 450) and skips a step whose estimate no longer fits.
#   bash benchmarks/gpu_check.sh                  # on the GPU machine
#   SMOKE=1 DEV=cpu bash benchmarks/gpu_check.sh  # every step, small, on a CPU (the test suite runs this)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
DEV="${DEV:-cuda}"
SMOKE="${SMOKE:-0}"
BUDGET="${BUDGET:-450}"
OUT="${OUT:-$ROOT/gpu-check}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$OUT" "$WORK"
: > "$OUT/log.txt"
printf 'step\tstatus\tseconds\n' > "$OUT/steps.tsv"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

if [ "$DEV" = cuda ]; then ACCEL=gpu; else ACCEL=cpu; fi
if ls .whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    >> "$OUT/log.txt" 2>&1 || echo "installing .whl/ failed (see log.txt)" >&2
  export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export WANDB_MODE=offline PYTHONUNBUFFERED=1

# step NAME ESTIMATE_SECONDS COMMAND...: runs COMMAND in $WORK when ESTIMATE still fits in the budget
step() {
  local name="$1" estimate="$2"; shift 2
  local t0 rc remaining
  remaining=$(left)
  if [ "$remaining" -lt "$estimate" ]; then
    printf '%s\tskipped (%ss left, needs ~%ss)\t0\n' "$name" "$remaining" "$estimate" >> "$OUT/steps.tsv"
    echo "== $name: skipped, ${remaining}s left" | tee -a "$OUT/log.txt"
    return 0
  fi
  echo "== $name ($(date +%T))" | tee -a "$OUT/log.txt"
  t0=$(date +%s)
  (cd "$WORK" && timeout "$remaining" "$@") >> "$OUT/log.txt" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "failed ($rc)")" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
  tail -n 3 "$OUT/log.txt"
  return 0
}

main=("$PY" "$ROOT/main.py")
cfg=(--config "$ROOT/configs/quickstart.yaml" --trainer.logger false)
test_args=(--ckpt_path runs/quickstart/best.ckpt --explain study,controls --explainer.cache false --data.batch_size 16)
if [ "$SMOKE" = 1 ]; then
  fit_size=(--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1)
  # 2 batches of 2 clips (a limit of 1 would read as the fraction 1.0: every batch)
  test_size=(--trainer.limit_test_batches 2 --data.batch_size 2 --explainer.lime_samples 20 --explainer.sanity_clips 2
             --explainer.examples 0)
  cpu_size=("${test_size[@]}")
  numerics_size=(--clips 2 --lime-samples 10 --background 2 --methods saliency,lime,random)
  bound_size=(--clips 2 --methods random)
  bench_size=(--width 8 --clips 2 --lime-samples 10 --background 2 --steps 2 --samples 2 --repeat 1
              --methods saliency,gradcam,lime,shap,metrics,curves --data data/quickstart)
  bf16_methods=(--methods saliency,metrics)  # bfloat16 runs slowly on a CPU
else
  fit_size=()
  test_size=()
  cpu_size=(--trainer.limit_test_batches 2)  # the first 32 clips, in the same batches as the device's run
  numerics_size=(--clips 16 --lime-samples 100 --background 20)
  bound_size=(--clips 32)  # Saliency, Grad-CAM and the controls: 32 x 4 x 28 masked inputs, seconds on a GPU
  # width 64 as PANNs; 8 clips and 2 timed runs: LIME's 1000 forwards per clip took 3.7 s a clip on an H200
  # in float32 (2026-11-30), and its bound as long again; a large card takes 32 GB calls
  bench_size=(--width 64 --clips 8 --lime-samples 1000 --background 100 --repeat 2 --memory-gb 32
              --methods saliency,gradcam,lime,shap,metrics,curves)
  bf16_methods=()
fi

versions() {
  echo "date $(date -u +%FT%TZ); host $(hostname); DEV=$DEV SMOKE=$SMOKE BUDGET=$BUDGET"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  "$PY" - <<'EOF'
import torch, lightning, torchmetrics, numpy
print(f"python torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
      f"lightning {lightning.__version__} torchmetrics {torchmetrics.__version__} numpy {numpy.__version__}")
print(f"defaults: cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, matmul.allow_tf32 "
      f"{torch.backends.cuda.matmul.allow_tf32}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
      f"float32_matmul_precision {torch.get_float32_matmul_precision()}")
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for name in ("jsonargparse", "captum", "soundfile", "shap", "lime", "quantus", "skimage"):
    try:
        print(name, getattr(__import__(name), "__version__", "?"))
    except Exception as err:
        print(name, "MISSING", type(err).__name__, err)
EOF
}
versions > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

step fit 60 "${main[@]}" fit "${cfg[@]}" --trainer.accelerator "$ACCEL" "${fit_size[@]}"
for mode in bf16 tf32; do
  step "exact_$mode" 40 "$PY" -m benchmarks.bound --ckpt runs/quickstart/best.ckpt --data data/quickstart \
    --device "$DEV" --mode "$mode" "${bound_size[@]}"
done
step test_device 150 "${main[@]}" test "${cfg[@]}" --trainer.accelerator "$ACCEL" "${test_args[@]}" \
  --explainer.sanity true --explainer.output_dir "$WORK/device" "${test_size[@]}"
step numerics 90 "$PY" -m benchmarks.numerics --ckpt runs/quickstart/best.ckpt --data data/quickstart \
  --device "$DEV" "${numerics_size[@]}" --out "$OUT/numerics.json"
step bench_fp32 150 "$PY" -m benchmarks.explain --device "$DEV" "${bench_size[@]}" --skip-reference \
  --out "$OUT/bench-fp32.json"
step test_cpu 100 "${main[@]}" test "${cfg[@]}" --trainer.accelerator cpu "${test_args[@]}" \
  --explainer.output_dir "$WORK/cpu" "${cpu_size[@]}"
if [ -f "$WORK/device/per_clip.csv" ] && [ -f "$WORK/cpu/per_clip.csv" ]; then
  exact=(); [ "$DEV" = cpu ] && exact=(--exact)  # a CPU against itself must agree exactly
  step compare 10 "$PY" -m benchmarks.device_check compare "$WORK/device" "$WORK/cpu" --out "$OUT/compare.json" "${exact[@]}"
fi
step bench_bf16 120 "$PY" -m benchmarks.explain --device "$DEV" "${bench_size[@]}" "${bf16_methods[@]}" --precision bf16 \
  --skip-reference --out "$OUT/bench-bf16.json"
step bench_reference 150 "$PY" -m benchmarks.explain --device "$DEV" "${bench_size[@]}" --repeat 1 \
  --methods saliency,gradcam,lime,shap,metrics --out "$OUT/bench-reference.json"

(cd "$ROOT" && "$PY" -m benchmarks.device_check summary "$OUT") > /dev/null 2>> "$OUT/log.txt"
rm -f "$OUT/versions.txt"  # it heads summary.txt; a device returns at most 8 files
cat "$OUT/summary.txt" 2> /dev/null
echo "gpu check done in $(( $(date +%s) - START ))s; files in $OUT"
# failed steps make the check fail (skipped ones do not: the budget decides those)
! grep -q $'\tfailed' "$OUT/steps.tsv"
