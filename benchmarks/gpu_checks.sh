#!/usr/bin/env bash
# Every GPU check of this repository in one device call of at most about 9 minutes:
#   1. benchmarks/gpu_speed_check.sh (issue 10: pre-training step time, MFU, memory, compiled step),
#      cut off after SPEED_TIMEOUT seconds;
#   2. benchmarks/gpu_resume_check.sh (fp16 stage 2 through fairseq: updates per second, a stop with
#      SIGUSR2 and the resume), cut off after RESUME_TIMEOUT seconds.
# Everything they write goes into one archive, $OUT/gpu_checks.tar.gz (the device tool returns few
# files), with both summaries printed at the end. On a machine without a package registry, fill .whl/
# first with benchmarks/device_wheels.sh (here) and carry it:
#
#   bash benchmarks/device_wheels.sh                     # here, once
#   device run --carry .whl -- bash benchmarks/gpu_checks.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_checks}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
OUT="$WORK/speed" COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-120} timeout "${SPEED_TIMEOUT:-270}" \
  bash benchmarks/gpu_speed_check.sh > "$WORK/speed.log" 2>&1
echo "speed check: exit status $? after $(( $(date +%s) - start )) s (124: cut off)" | tee -a "$WORK/summary.txt"
start=$(date +%s)
OUT="$WORK/resume" UPDATES=${UPDATES:-150} timeout "${RESUME_TIMEOUT:-300}" \
  bash benchmarks/gpu_resume_check.sh > "$WORK/resume.log" 2>&1
echo "resume check: exit status $? after $(( $(date +%s) - start )) s (124: cut off)" | tee -a "$WORK/summary.txt"
nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || true
# logs, JSON and profiles only: the checkpoints (GBs) and the generated demo corpus stay behind
tar czf "$OUT/gpu_checks.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='./resume/data' .
# the speed check's table and the resume check's JSON summary
sed -n '/gpu_speed_check.*json: /,$p' "$WORK/speed.log" | tail -40
tail -12 "$WORK/resume.log"
cat "$WORK/summary.txt"
ls -la "$OUT"
