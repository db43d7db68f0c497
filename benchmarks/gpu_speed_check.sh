#!/usr/bin/env bash
# GPU speed check of the pre-training step (issue 10): stage 1 (16 clones) and stage 2 (8 clones) at the
# paper's shapes (ViT-B, 12 clips of 1024 frames), bf16 and fp16, the plain step and the fast step
# (and, with COMPILE=1, the fast step with torch.compile), in one process so the speed-ups are ratios
# from one run. Writes $OUT/gpu_speed_check.json (the benchmark's JSON: step ms, MFU, peak memory,
# first-step loss agreement) and a profile of one step per case in $OUT/profile/. Needs torch and
# numpy only (no fairseq). Run from the repository root, one call of at most 5 minutes:
#
#   bash benchmarks/gpu_speed_check.sh            # about 2-3 minutes on an H100/H200
#   COMPILE=1 STEPS=10 bash benchmarks/gpu_speed_check.sh
#
# CPU smoke test of the script itself: SIZE=tiny BATCH=2 FRAMES=128 STEPS=1 bash benchmarks/gpu_speed_check.sh
set -euo pipefail
OUT=${OUT:-/tmp/gpu_speed_check}
PY=${PYTHON:-python3}
SIZE=${SIZE:-base}
BATCH=${BATCH:-12}
FRAMES=${FRAMES:-1024}
STEPS=${STEPS:-10}
DTYPES=${DTYPES:-bfloat16,float16}
mkdir -p "$OUT"
EXTRA=()
[ "${COMPILE:-0}" = 1 ] && EXTRA+=(--compile)
[ -n "${PEAK_TFLOPS:-}" ] && EXTRA+=(--peak-tflops "$PEAK_TFLOPS")
GOLDEN=${GOLDEN:-../shared/reference/golden}
[ -d "$GOLDEN" ] && EXTRA+=(--golden "$GOLDEN")
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" $PY -m sslam_plugin.cli.benchmark_pretraining \
  --size "$SIZE" --batch "$BATCH" --frames "$FRAMES" --steps "$STEPS" --dtypes "$DTYPES" \
  --modes plain,fast --profile "$OUT/profile" --json "$OUT/gpu_speed_check.json" "${EXTRA[@]}" \
  | tee "$OUT/gpu_speed_check.log"
$PY - "$OUT/gpu_speed_check.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
print(f"{res['device']}  torch {res['torch']}")
print(f"{'stage':>5} {'dtype':>9} {'mode':>13} {'ms/step':>8} {'MFU':>6} {'GiB':>6}")
for c in res["cases"]:
    if "mode" in c:
        mfu = "-" if c["mfu"] is None else f"{100 * c['mfu']:.1f}%"
        print(f"{c['stage']:>5} {c['dtype']:>9} {c['mode']:>13} {c['step_ms']:>8} {mfu:>6} {c['peak_mem_gib']}")
    else:
        print(f"      speed-up {c['speedup']}x, first-step losses max rel diff {c['first_step_max_rel_diff']:.2e}")
EOF
