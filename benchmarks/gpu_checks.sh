#!/usr/bin/env bash
# Every GPU check of this repository in one device call of at most about 10 minutes:
#   1. benchmarks/gpu_speed_check.sh (issue 10: pre-training step time, MFU, memory, compiled step),
#      cut off after SPEED_TIMEOUT seconds;
#   2. benchmarks/gpu_resume_check.sh (fp16 stage 2 through fairseq: updates per second, a stop with
#      SIGUSR2 and the resume), cut off after RESUME_TIMEOUT seconds;
#   3. benchmarks/fairseq_speedups_check.py (issue 20): a few fairseq fp16 updates of the ViT-B stage-1
#      model with the fairseq adapter's speed replacements on and off (SSLAM_FAIRSEQ_SPEEDUPS) from the
#      same start: the losses of each (equal to fp16 tolerance) and the step time of each, cut off after
#      SPEEDUPS_TIMEOUT seconds.
# CHECKS chooses the parts (default "speed resume speedups"). Without a CUDA device the script stops at
# once with an error; CPU=1 runs it on the CPU anyway (tests/test_gpu_scripts.py: CHECKS=speedups CPU=1
# SIZE=tiny BATCH=2 FRAMES=128).
# Everything they write goes into one archive, $OUT/gpu_checks.tar.gz (the device tool returns few
# files), with both summaries printed at the end. On a machine without a package registry, fill .whl/
# first with benchmarks/device_wheels.sh (here) and carry it:
#
#   bash benchmarks/device_wheels.sh                     # here, once
#   device run --carry .whl -- bash benchmarks/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_checks}
PY=${PYTHON:-python3}
CHECKS=${CHECKS:-speed resume speedups}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SPEEDUPS_ARGS=()
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [ "${CPU:-0}" != 1 ]; then
    echo "error: no CUDA device visible to $PY (torch.cuda.is_available() is False): these are GPU checks;" \
      "CPU=1 runs them on the CPU" >&2
    exit 2
  fi
  SPEEDUPS_ARGS+=(--cpu)
fi
case " $CHECKS " in *" speed "*)
  start=$(date +%s)
  OUT="$WORK/speed" COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-120} timeout "${SPEED_TIMEOUT:-270}" \
    bash benchmarks/gpu_speed_check.sh > "$WORK/speed.log" 2>&1
  echo "speed check: exit status $? after $(( $(date +%s) - start )) s (124: cut off)" | tee -a "$WORK/summary.txt"
esac
case " $CHECKS " in *" resume "*)
  start=$(date +%s)
  OUT="$WORK/resume" UPDATES=${UPDATES:-150} timeout "${RESUME_TIMEOUT:-300}" \
    bash benchmarks/gpu_resume_check.sh > "$WORK/resume.log" 2>&1
  echo "resume check: exit status $? after $(( $(date +%s) - start )) s (124: cut off)" | tee -a "$WORK/summary.txt"
esac
case " $CHECKS " in *" speedups "*)
  start=$(date +%s)
  timeout "${SPEEDUPS_TIMEOUT:-120}" $PY benchmarks/fairseq_speedups_check.py "${SPEEDUPS_ARGS[@]}" \
    --size "${SIZE:-base}" --batch "${BATCH:-12}" --frames "${FRAMES:-1024}" --updates "${SPEEDUPS_UPDATES:-6}" \
    --json "$WORK/fairseq_speedups.json" > "$WORK/speedups.log" 2>&1
  echo "fairseq speed replacements check: exit status $? after $(( $(date +%s) - start )) s (1: losses differ" \
    "beyond fp16 tolerance; 124: cut off)" | tee -a "$WORK/summary.txt"
esac
nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || true
# logs, JSON and profiles only: the checkpoints (GBs) and the generated demo corpus stay behind
tar czf "$OUT/gpu_checks.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='./resume/data' .
# the speed check's table, the resume check's JSON summary and the speed replacements' line
[ -f "$WORK/speed.log" ] && sed -n '/gpu_speed_check.*json: /,$p' "$WORK/speed.log" | tail -40
[ -f "$WORK/resume.log" ] && tail -12 "$WORK/resume.log"
[ -f "$WORK/speedups.log" ] && tail -1 "$WORK/speedups.log"
cat "$WORK/summary.txt"
ls -la "$OUT"
