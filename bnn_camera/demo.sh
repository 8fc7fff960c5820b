#!/usr/bin/env bash
# The camera-app demo: checks the Python dependencies, builds libbnn.so when it is missing,
# then runs the app on the bundled sample clip and prints fps and (measured) power.
#   bnn_camera/demo.sh [--model PATH] [any other python -m bnn_camera option]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CLIP=bnn_camera/samples/people-384x216.mp4

missing=()
for mod in numpy cffi cv2; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "demo: missing Python modules: ${missing[*]}" >&2
  echo "  Raspberry Pi OS: sudo apt install python3-numpy python3-cffi python3-opencv" >&2
  echo "  elsewhere:       pip install numpy cffi opencv-python-headless" >&2
  exit 2
fi

if ! err=$("$PY" -c "from firmware_py import _native; _native.lib()" 2>&1); then
  if [ ! -x build.sh ]; then  # an unpacked dist tarball: its libraries are prebuilt
    echo "demo: the runtime library does not load here: ${err##*$'\n'}" >&2
    exit 2
  fi
  echo "demo: libbnn.so not found for this machine; building it (./build.sh)" >&2
  ./build.sh
fi

model_given=0
for a in "$@"; do [ "$a" = "--model" ] && model_given=1; done
if [ $model_given = 0 ] && [ ! -f models/zoo/person/binary.bnn ]; then
  echo "demo: the shipped detector models/zoo/person/binary.bnn does not exist yet;" >&2
  echo "      pass --model PATH (a .bnn or .onnx detector)." >&2
  exit 2
fi

out=$(mktemp -t bnn-demo-XXXXXX.jsonl)
echo "demo: python -m bnn_camera --source $CLIP --max-frames 300 --out $out $*" >&2
"$PY" -m bnn_camera --source "$CLIP" --max-frames 300 --out "$out" --format json --quiet "$@" \
  > "$out.summary"
"$PY" - "$out.summary" <<'PYEOF'
import json, sys
s = json.loads(open(sys.argv[1]).read().splitlines()[-1])
lat = s["latency_ms"]
print("frames          %d in %.1f s (dropped %d, bad %d)" % (
    s["frames_total"], s["duration_s"], s["dropped_total"], s["bad_frames_total"]))
print("inference fps   %.1f" % s["inference_fps"])
print("latency         p50 %s ms, p95 %s ms" % (lat["p50"], lat["p95"]))
print("detections      %d" % s["detections_total"])
if s.get("power") is not None:
    print("power           %.2f W (measured: %s)" % (s["power"], s["power_source"]))
    print("energy          %s mJ/frame" % s.get("energy_mj_per_frame"))
else:
    print("power           not measured: %s" % s.get("power_reason"))
PYEOF
rm -f "$out.summary"
echo "demo: events in $out" >&2
