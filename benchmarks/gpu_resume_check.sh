#!/usr/bin/env bash
# GPU check of the training system: stage 2 at the paper's shapes (ViT-B, 1024 frames, 12 clips,
# 8 clones, fp16) through fairseq-hydra-train from a stage-1 checkpoint, UPDATES updates without a
# stop, then the same run stopped with SIGUSR2 half way and launched again. Prints updates per
# second, the fp16 loss scale and whether the resumed losses equal the uninterrupted ones
# (a JSON summary in $OUT/gpu_resume_check.json). Run from the repository root:
#
#   UPDATES=300 bash benchmarks/gpu_resume_check.sh
#
# Needs torch, torchaudio, soundfile and fairseq-fixed (installed here when missing, from .whl/ when
# benchmarks/device_wheels.sh filled it: fairseq-fixed builds in about two minutes). CPU smoke test:
#   SCALE=0.1 EXTRA="common.cpu=true common.fp16=false model.encoder.depth=2 model.average_top_k_layers=2 task.target_length=128 dataset.batch_size=4" \
#     EXTRA2=model.mixing.unmixed_window_frames=32 UPDATES=6 bash benchmarks/gpu_resume_check.sh
set -euo pipefail
OUT=${OUT:-/tmp/gpu_resume_check}
UPDATES=${UPDATES:-300}
EXTRA=${EXTRA:-}  # overrides for both stages
EXTRA2=${EXTRA2:-}  # overrides for stage 2 only
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WHEELS=${WHEELS:-.whl}  # benchmarks/device_wheels.sh fills it, for a machine without a package registry
if ! $PY -c "import fairseq, sslam_plugin" 2>/dev/null; then
  FROM=()
  [ -d "$WHEELS" ] && FROM=(--no-index --find-links "$WHEELS")
  $PY -m pip install -q "${FROM[@]}" soundfile submitit cython hydra-core==1.3.2 omegaconf==2.3.0 bitarray cffi
  env -u CUDA_HOME MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install -q "${FROM[@]}" --no-build-isolation fairseq-fixed==0.12.3.1
  $PY -m pip install -q --no-deps --no-build-isolation .
fi
TRAIN="$(dirname "$(command -v $PY)")/fairseq-hydra-train"
[ -x "$TRAIN" ] || TRAIN=fairseq-hydra-train
COMMON="task.data=$OUT/data/manifests dataset.num_workers=8 common.log_format=simple common.log_interval=1 task.effective_batch_size=12 checkpoint.save_interval_updates=0 $EXTRA"

[ -f "$OUT/data/manifests/train.tsv" ] || $PY scripts/make_demo_data.py "$OUT/data" --scale "${SCALE:-1}"
[ -f "$OUT/s1/checkpoints/checkpoint_last.pt" ] || \
  $TRAIN --config-dir config/pretrain --config-name eat_stage1 $COMMON optimization.max_update=5 hydra.run.dir="$OUT/s1" > "$OUT/s1.log" 2>&1
S2="--config-dir config/pretrain --config-name sslam_stage2 $COMMON checkpoint.continue_once=$OUT/s1/checkpoints/checkpoint_last.pt optimization.max_update=$UPDATES $EXTRA2"

rm -rf "$OUT/straight" "$OUT/stopped"
$TRAIN $S2 hydra.run.dir="$OUT/straight" > "$OUT/straight.log" 2>&1
$TRAIN $S2 hydra.run.dir="$OUT/stopped" > "$OUT/stopped_first.log" 2>&1 &
pid=$!
until grep -q "num_updates=$((UPDATES / 2))," "$OUT/stopped_first.log" 2>/dev/null; do sleep 0.5; kill -0 $pid; done
kill -USR2 $pid
wait $pid || [ $? -eq 75 ]
$TRAIN $S2 hydra.run.dir="$OUT/stopped" > "$OUT/stopped_second.log" 2>&1

$PY - "$OUT" <<'EOF'
import json, re, sys
out = sys.argv[1]
def values(path, key):
    found = {}
    for line in open(path):
        match = re.search(rf"[ ,]{key}=([-\d.e]+)", line)
        if "train_inner" in line and match:
            found[int(re.search(r"num_updates=(\d+)", line).group(1))] = float(match.group(1))
    return found
straight = f"{out}/straight.log"
resumed = f"{out}/stopped_second.log"
keys = ["loss", "loss_frame", "loss_utterance", "loss_frame_mixed", "loss_utterance_mixed", "loss_source_retention"]
a = {k: values(straight, k) for k in keys}
b = {k: values(resumed, k) for k in keys}
start = min(b["loss"])
equal = all(b[k][u] == a[k][u] for k in keys for u in b[k])
# GPU kernels with atomics (scatter/index backward, some attention backwards) are not bitwise
# deterministic, so also report how far apart the runs are (compare: two straight runs)
rel = max((abs(b[k][u] - a[k][u]) / max(abs(a[k][u]), 1e-12) for k in keys for u in b[k] if u in a[k]), default=0.0)
ups = values(straight, "ups")
steady = [v for u, v in ups.items() if u > 10]
summary = {
    "resumed_from_update": start - 1,
    "updates_compared": len(b["loss"]),
    "resumed_losses_equal_uninterrupted": equal,
    "resumed_losses_max_rel_diff": rel,
    "updates_per_second": sum(steady) / max(len(steady), 1),
    "loss_scale_last": values(straight, "loss_scale").get(max(a["loss"]), None),
}
json.dump(summary, open(f"{out}/gpu_resume_check.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
EOF
