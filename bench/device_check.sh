#!/usr/bin/env bash
# Device check: every stage of the default pipeline after the CPU's decoding, on a GPU, under
# KERAS_BACKEND=jax with no TensorFlow; then the 21-view features pass that feeding is judged by.
#
# Run from the repo root of a throwaway copy (it edits params.yaml and writes data/, models/,
# metrics/ and plots/), with the files `python -m bench.device_files` makes carried along:
#
#   bash bench/device_check.sh                 # in a device call with carry [".whl", ".device"]
#
#   .whl/                          wheels of keras, dvclive, dvc and what they import, for the
#                                  machine's python3 (3.12), which has JAX but no TensorFlow
#   .device/data.tar.xz            data/merged, data/split, data/prepared, data/external
#   .device/vgg16_hed_fp16.weights.h5   the hed backbone in float16 (backbone.weights points here)
#
# Steps: install the wheels; print the GPU, versions and jax.devices(); unpack the data; run
# each stage of dvc.yaml after merge, split, prepare and external (whose outputs travel), in
# dvc.yaml's order, every task, with the default params; predict with Grad-CAM on two images;
# train binary with per-epoch augmentation (no bank) and with block5 fine-tuned; then
# `features` with 20 augmented views and the plain one. Per stage: seconds and the GPU's mean
# busy share (nvidia-smi, 5 samples a second). The last line is OK or what failed.
# Results go to $OUT (default /tmp/device_check_out): device_check.log, gpu_usage.csv,
# stages.csv and results.tar.gz (models/*.json and metrics/).
#
# Environment:
#   DEVICE_CHECK_QUICK=1     2 epochs, 2 repeat and holdout splits, 2 views (a rehearsal)
#   DEVICE_CHECK_DEVICE      the device train must report; default jax:gpu
#   DEVICE_CHECK_WHEELS=0    use the Python environment as it is (a CPU rehearsal in the venv)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/device_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1

EXPECT=${DEVICE_CHECK_DEVICE:-jax:gpu}
QUICK=${DEVICE_CHECK_QUICK:-0}
WEIGHTS=.device/vgg16_hed_fp16.weights.h5
STAGES=$OUT/stages.csv
STARTED=$(date +%s)
SMI_PID=

fail() {
    echo "device_check: FAILED: $*" >&2
    exit 1
}

finish() {
    local rc=$?
    [ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null || true
    tar czf "$OUT/results.tar.gz" models/*.json metrics 2>/dev/null || true
    echo "device_check: exit $rc after $(( $(date +%s) - STARTED )) s"
}
trap finish EXIT

# Runs one command, timed, into stages.csv (name, start, end); stops at its first failure.
stage() {
    local name=$1 t0 t1 rc=0
    shift
    echo
    echo "=== $name: $*"
    t0=$(date +%s.%N)
    "$@" || rc=$?
    t1=$(date +%s.%N)
    [ "$rc" -eq 0 ] || fail "$name exited $rc: $*"
    echo "$name,$t0,$t1" >>"$STAGES"
}

# Sets params.yaml keys, given as dotted.key=value (YAML values); `tasks.*.epochs` sets all.
set_params() {
    python3 - "$@" <<'EOF' || fail "params.yaml: $*"
import sys, yaml
with open("params.yaml") as f:
    params = yaml.safe_load(f)
for change in sys.argv[1:]:
    key, value = change.split("=", 1)
    *path, last = key.split(".")
    sections = [params]
    for part in path:
        sections = [s[k] for s in sections for k in (s if part == "*" else [part])]
    for section in sections:
        section[last] = yaml.safe_load(value)
with open("params.yaml", "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
print("params:", *sys.argv[1:])
EOF
}

echo "=== 1. Python packages"
if [ "${DEVICE_CHECK_WHEELS:-1}" = 1 ]; then
    ls .whl/*.whl >/dev/null 2>&1 || fail "no wheels in .whl/ (python -m bench.device_files; carry .whl)"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || fail "pip install of .whl/*.whl"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# JAX takes 75% of the GPU's memory at start unless told to allocate as it goes; the stages
# compile the same XLA programs again and again, so each is compiled once and kept
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false \
    JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

echo
echo "=== 2. machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
        -lms 200 >"$OUT/gpu_usage.csv" 2>&1 &
    SMI_PID=$!
else
    echo "no nvidia-smi"
fi
python3 - <<'EOF' || fail "imports (jax, keras, dvclive)"
import sys
from importlib.metadata import version
import jax, keras
from dvclive import Live  # noqa: F401
print("python", sys.version.split()[0], "| jax", jax.__version__, "| keras", keras.__version__,
      keras.backend.backend(), "| dvclive", version("dvclive"))
print("jax.devices():", jax.devices())
try:
    import tensorflow
    print("tensorflow", tensorflow.__version__, "is importable: the check does not prove its absence")
except ImportError:
    print("tensorflow: not importable")
EOF
if [ "${EXPECT#jax:}" = gpu ]; then
    JAX_PLATFORMS=cuda python3 -c "import jax; jax.devices()" >/dev/null 2>&1 \
        || fail "jax sees no CUDA GPU (JAX_PLATFORMS=cuda fails)"
    export JAX_PLATFORMS=cuda  # a stage that fell back to the CPU would fail instead
fi

echo
echo "=== 3. data and params"
[ -f .device/data.tar.xz ] && [ -f "$WEIGHTS" ] || fail "no .device/ files (carry .device)"
tar xJf .device/data.tar.xz || fail "unpacking .device/data.tar.xz"
du -sh data/prepared data/external
set_params backbone.weights="$WEIGHTS"
[ "$QUICK" = 1 ] && set_params 'tasks.*.epochs=2' repeat.splits=2 holdout.splits=2
rm -f "$STAGES"

echo
echo "=== 4. the pipeline's stages, in dvc.yaml's order"
python3 - >"$OUT/commands.txt" <<'EOF' || fail "reading dvc.yaml"
import yaml
stages = yaml.safe_load(open("dvc.yaml"))["stages"]
tasks = yaml.safe_load(open("params.yaml"))["tasks"]
for name, stage in stages.items():
    if name in ("merge", "split", "prepare", "external"):  # decoding: their outputs travel
        continue
    for task in tasks if "foreach" in stage else [None]:
        cmd = stage["do"]["cmd"].replace("${key}", task) if task else stage["cmd"]
        print(f"{name}@{task}" if task else name, cmd.replace("python ", "python3 "))
EOF
while read -r name cmd; do
    stage "$name" $cmd
    if [[ $name == train@* ]]; then
        got=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['device'])" \
              "models/${name#train@}.json")
        [ "$got" = "$EXPECT" ] || fail "$name ran on $got, expected $EXPECT"
    fi
done <"$OUT/commands.txt"

echo
echo "=== 5. predict with Grad-CAM on two prepared images"
python3 -c "
import numpy as np; from PIL import Image
images = np.load('data/prepared/images/00000.npy', mmap_mode='r')
for i in (0, 1): Image.fromarray(np.asarray(images[i])).save(f'/tmp/xray-{i}.png')"
stage predict python3 -m covidxray predict --task binary --gradcam /tmp/gradcam /tmp/xray-0.png \
    /tmp/xray-1.png
ls /tmp/gradcam/*.png >/dev/null || fail "predict wrote no Grad-CAM image"

echo
echo "=== 6. train binary with per-epoch augmentation (no bank), then with block5 fine-tuned"
set_params features.views=0 features.plain_view=false
stage train-per-epoch python3 -m stages.train binary
set_params features.plain_view=true backbone.trainable_blocks=1
stage features-block4 python3 -m stages.features
stage train-fine-tune python3 -m stages.train binary

echo
VIEWS=20
[ "$QUICK" = 1 ] && VIEWS=2
echo "=== 7. the features pass of $VIEWS augmented views and the plain one"
set_params features.views=$VIEWS backbone.trainable_blocks=0
stage "features-$VIEWS-views" python3 -m stages.features

echo
echo "=== 8. seconds and GPU use by stage"
python3 - "$STAGES" "$OUT/gpu_usage.csv" <<'EOF'
import csv, datetime, sys
samples = []
try:
    for row in csv.reader(open(sys.argv[2])):
        when = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((when, float(row[1]), float(row[2])))
except (OSError, ValueError, IndexError):
    samples = []  # no GPU, or nvidia-smi said something else
print(f"{'stage':24} {'seconds':>8} {'GPU busy %':>10} {'GPU MiB':>8}")
for name, start, end in csv.reader(open(sys.argv[1])):
    inside = [s for s in samples if float(start) <= s[0] <= float(end)]
    busy = f"{sum(s[1] for s in inside) / len(inside):.0f}" if inside else "-"
    memory = f"{max(s[2] for s in inside):.0f}" if inside else "-"
    print(f"{name:24} {float(end) - float(start):8.1f} {busy:>10} {memory:>8}")
EOF
grep -h "images/s" "$OUT/device_check.log" | tail -1
echo "device_check: OK, every stage ran on $EXPECT"
