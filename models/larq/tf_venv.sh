#!/usr/bin/env bash
# Makes the TensorFlow venv that exports the larq-zoo fixtures (models/larq/export.py) and runs
# Larq Compute Engine for the benchmark (models/larq/bench_lce.py).  It is NOT the project's .venv:
# TF 2.16 needs numpy < 2, protobuf 3.20 and legacy Keras (TF_USE_LEGACY_KERAS=1), the project's
# venv has numpy 2 and protobuf 7.  Neither the tests nor ./build.sh need it (the fixtures are
# committed).  Usage: models/larq/tf_venv.sh [DIR]   (default /work/venvs/tf; re-runs install nothing)
set -euo pipefail
DIR=${1:-/work/venvs/tf}
PY=${PYTHON:-python3.11}
PINS=(
  tensorflow-cpu==2.16.2 tf-keras==2.16.0 larq==0.14.0 larq-zoo==2.4.0 larq-compute-engine==0.16.0
  tf2onnx==1.16.1 onnx==1.16.2 onnxruntime==1.19.2 protobuf==3.20.3 numpy==1.26.4
)
stamp=$DIR/.pins
if [[ -f $stamp && $(cat "$stamp") == "${PINS[*]}" ]]; then echo "$DIR: up to date"; exit 0; fi
"$PY" -m venv "$DIR"
"$DIR/bin/pip" install -q "${PINS[@]}"
"$DIR/bin/python" - <<'PY'
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf, larq, larq_zoo, larq_compute_engine, tf2onnx
print("tf", tf.__version__, "larq", larq.__version__, "lce", larq_compute_engine.__version__, "tf2onnx", tf2onnx.__version__)
PY
printf '%s' "${PINS[*]}" >"$stamp"
