#!/usr/bin/env bash
# GPU check for a machine with JAX but no TensorFlow (and perhaps no package index).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# Installs Keras from wheels shipped beside the repository (WHEELS, default
# ./wheels: keras, namex, optree; fetch them with
# `pip download --no-deps -d wheels keras==3.15.1 namex optree`) unless the
# right Keras is already there, then, on the JAX backend with synthetic
# in-memory data, trains the paper model (224 px improved-CBAM
# EfficientNetV2-S) and keras.applications' EfficientNetV2S side by side
# (benchmarks/train_throughput.py), in float32 and in mixed bfloat16, and
# prints images/s for both, their ratio, and the mixed-precision speed-up.
# About 400 training steps in all; well inside 8 minutes on a recent GPU.
# Settings: IMAGE_SIZE (224), BATCH (32), STEPS (100 timed per model and
# precision), WARMUP (3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/wheels}"
IMAGE_SIZE="${IMAGE_SIZE:-224}" BATCH="${BATCH:-32}" STEPS="${STEPS:-100}" WARMUP="${WARMUP:-3}"
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2
# The package is not installed there (its TensorFlow pin cannot be met): import it from the checkout.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$(python -c 'import keras; print(keras.__version__)' 2>/dev/null)" != "3.15.1" ]]; then
  echo "installing keras 3.15.1 from $WHEELS"
  python -m pip install --quiet --no-index --find-links "$WHEELS" keras==3.15.1 namex optree
fi
python -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())'

run() {  # $1: dtype policy
  python "$ROOT/benchmarks/train_throughput.py" --image-size "$IMAGE_SIZE" --batch "$BATCH" \
    --steps "$STEPS" --warmup "$WARMUP" --mixed-precision "$1"
}
FLOAT32="$(run none)"; echo "$FLOAT32"
BF16="$(run mixed_bfloat16)"; echo "$BF16"

python - "$FLOAT32" "$BF16" <<'PY'
import re, sys
def rates(text):
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(ours|reference)\s+([0-9.]+)", text, re.M)}
float32, bf16 = rates(sys.argv[1]), rates(sys.argv[2])
for name in ("ours", "reference"):
    print(f"{name:10s} float32 {float32[name]:8.1f} img/s   mixed_bfloat16 {bf16[name]:8.1f} img/s   "
          f"speed-up {bf16[name] / float32[name]:.2f}")
print(f"train_throughput_ratio_float32={float32['ours'] / float32['reference']:.2f}")
print(f"mixed_precision_speedup_ours={bf16['ours'] / float32['ours']:.2f}")
PY
