#!/usr/bin/env bash
# GPU speed check of the pre-training step (issue 10): stage 1 (16 clones) and stage 2 (8 clones) at the
# paper's shapes (ViT-B, 12 clips of 1024 frames), in one call of at most 5 minutes:
#   1. bf16 and fp16, the plain step and the fast step, in one process so the speed-ups are ratios from
#      one run ($OUT/gpu_speed_check.json), with a CUDA profile of one step per case in $OUT/profile/;
#   2. then the fast step with torch.compile (bf16; COMPILE_MODE, default "default"; "reduce-overhead"
#      adds CUDA graphs) beside the plain one ($OUT/gpu_speed_check_compiled.json), cut off after
#      COMPILE_TIMEOUT seconds so a slow compiler cannot cost part 1's figures.
# A case that fails (out of memory, a compiler error) is recorded with its error; the others still run.
# Needs torch and numpy only (no fairseq). Run from the repository root:
#
#   bash benchmarks/gpu_speed_check.sh            # about 3-4 minutes on an H100/H200
#   COMPILE=0 bash benchmarks/gpu_speed_check.sh  # part 1 only
#
# CPU smoke test of the script itself (tests/test_gpu_scripts.py):
#   SIZE=tiny BATCH=2 FRAMES=128 STEPS=1 COMPILE=0 bash benchmarks/gpu_speed_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_speed_check}
PY=${PYTHON:-python3}
SIZE=${SIZE:-base}
BATCH=${BATCH:-12}
FRAMES=${FRAMES:-1024}
STEPS=${STEPS:-10}
DTYPES=${DTYPES:-bfloat16,float16}
COMPILE=${COMPILE:-1}
COMPILE_MODE=${COMPILE_MODE:-default}
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-150}
mkdir -p "$OUT"
EXTRA=()
[ -n "${PEAK_TFLOPS:-}" ] && EXTRA+=(--peak-tflops "$PEAK_TFLOPS")
GOLDEN=${GOLDEN:-../shared/reference/golden}
[ -d "$GOLDEN" ] && EXTRA+=(--golden "$GOLDEN")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
$PY -m sslam_plugin.cli.benchmark_pretraining \
  --size "$SIZE" --batch "$BATCH" --frames "$FRAMES" --steps "$STEPS" --dtypes "$DTYPES" \
  --modes plain,fast --profile "$OUT/profile" --json "$OUT/gpu_speed_check.json" "${EXTRA[@]}" \
  2>&1 | tee "$OUT/gpu_speed_check.log"
status=${PIPESTATUS[0]}
if [ "$COMPILE" = 1 ]; then
  timeout --signal=INT "$COMPILE_TIMEOUT" $PY -m sslam_plugin.cli.benchmark_pretraining \
    --size "$SIZE" --batch "$BATCH" --frames "$FRAMES" --steps "$STEPS" --dtypes bfloat16 \
    --modes plain,compiled --compile-mode "$COMPILE_MODE" --no-teacher-accuracy \
    --json "$OUT/gpu_speed_check_compiled.json" ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} \
    2>&1 | tee "$OUT/gpu_speed_check_compiled.log"
  echo "compiled run exit status ${PIPESTATUS[0]} (124 or 130: cut off after ${COMPILE_TIMEOUT}s)"
fi
$PY - "$OUT"/gpu_speed_check*.json <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    res = json.load(open(path))
    print(f"{path}: {res['device']}  torch {res['torch']}")
    for name, err in res.get("teacher_target_rel_error", {}).items():
        print(f"  teacher targets under {name} autocast: patch {err['patch']:.2e}, utterance {err['utterance']:.2e} (rel. to float32)")
    print(f"{'stage':>5} {'dtype':>9} {'mode':>9} {'ms/step':>8} {'MFU':>6} {'GiB':>6}")
    for c in res["cases"]:
        if "error" in c:
            print(f"{c['stage']:>5} {c['dtype']:>9} {c['mode']:>9}  FAILED: {c['error']}")
        elif "mode" in c:
            mfu = "-" if c["mfu"] is None else f"{100 * c['mfu']:.1f}%"
            print(f"{c['stage']:>5} {c['dtype']:>9} {c['mode']:>9} {c['step_ms']:>8} {mfu:>6} {c['peak_mem_gib']}")
        else:
            print(f"      {c['compare']}: {c['speedup']}x, first-step losses max rel diff {c['first_step_max_rel_diff']:.2e}")
PYEOF
exit "$status"
