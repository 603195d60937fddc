#!/usr/bin/env bash
# Issue 12's GPU checks in one go, under 8 minutes on one CUDA GPU, ending with one table:
#   1. step benchmark (benchmarks/step.py) at C_local 1M and 4M, fp16 and bf16, N=512, D=512, dense and
#      blockwise Partial FC against arcface_torch's PartialFC_V2, with the whole step through its r50;
#   2. every head under CUDA autocast against float32 (benchmarks/autocast_check.py);
#   3. 200 training steps of arcface_torch's train_v2 with lh2face and with its stock ArcFace on
#      synthetic images, samples/s side by side (benchmarks/train_throughput.py);
#   4. export of the lh2face r50 from step 3 with torch on the GPU vs onnxruntime (benchmarks/export_check.py).
# Each piece has a time limit (the limits add up to 8 minutes) and leaves NAME.log, NAME.rc and
# NAME.json in the output folder; benchmarks/gpu_report.py turns the JSON files into the table.
# PIECES=bench runs another piece instead, under 9 minutes:
#   5. lh2face bench --scale gpu --device cuda --control: the default head comparison (cosface-s24,
#      arcface, adaface, lh2face, the positive control; seeds 0 and 1) at the GPU scale, its results in the
#      table. Finished runs are kept in $GPU_BENCH_WORK/bench, so a rerun after a time-out goes on from them.
#
#   ARCFACE_TORCH_ROOT=~/insightface/recognition/arcface_torch bash benchmarks/gpu.sh [RESULTS_FOLDER]
#   PIECES=bench bash benchmarks/gpu.sh [RESULTS_FOLDER]
#
# RESULTS_FOLDER (default $TMPDIR/lh2face_gpu_bench) gets the logs and JSON files; images, training
# outputs and the ONNX file go to $GPU_BENCH_WORK (default $TMPDIR/lh2face_gpu_bench_work).
#
# Needs: torch with CUDA, this package installed (pip install -e ".[all]"), arcface_torch's checkout
# and its requirements (easydict, torchvision, tensorboard, scikit-learn). PYTHON picks the interpreter.
# Without CUDA it prints one line and runs nothing. SMOKE=1 runs the same pieces at tiny sizes on
# the CPU (a check of this script, minutes; the train piece then still needs torchvision).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${1:-${TMPDIR:-/tmp}/lh2face_gpu_bench}         # logs, JSON (small)
WORK=${GPU_BENCH_WORK:-${TMPDIR:-/tmp}/lh2face_gpu_bench_work}   # images, training runs, ONNX (large)

reason=""
if [ "${SMOKE:-0}" != 1 ]; then
  reason=$("$PY" -c "import torch; print('' if torch.cuda.is_available() else 'torch ' + torch.__version__ + ' sees no CUDA device')" 2>/dev/null) \
    || reason="$PY cannot import torch"
fi
if [ -n "$reason" ]; then
  echo "gpu.sh: no GPU run: $reason"
  exit 0
fi
if [ -z "${ARCFACE_TORCH_ROOT:-}" ]; then
  for d in shared/hosts/arcface_torch-* ../shared/hosts/arcface_torch-*; do
    [ -f "$d/partial_fc_v2.py" ] && ARCFACE_TORCH_ROOT=$(cd "$d" && pwd) && break
  done
fi
if [ -z "${ARCFACE_TORCH_ROOT:-}" ] || [ ! -f "$ARCFACE_TORCH_ROOT/partial_fc_v2.py" ]; then
  echo "gpu.sh: set ARCFACE_TORCH_ROOT to an arcface_torch checkout (a folder with partial_fc_v2.py)"
  exit 1
fi
export ARCFACE_TORCH_ROOT
mkdir -p "$RESULTS" "$WORK"
PIECES=${PIECES:-step autocast train export}
for piece in $PIECES; do   # the other pieces' results stay: the table gathers every piece run into RESULTS
  rm -f "$RESULTS/$piece".json "$RESULTS/$piece"_*.json "$RESULTS/$piece".rc "$RESULTS/$piece"_*.rc
done
"$PY" -c "import torch; print('gpu.sh:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', 'torch', torch.__version__, 'checkout', '$ARCFACE_TORCH_ROOT')"

wants() {  # wants PIECE: whether PIECES names it
  case " $PIECES " in *" $1 "*) return 0 ;; esac
  return 1
}

run() {  # run NAME SECONDS command...: only the pieces PIECES names (step_fp16 and step_bf16 are "step")
  local name=$1 limit=$2
  shift 2
  wants "${name%%_*}" || return 0
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$RESULTS/$name.rc"
  tail -n 25 "$RESULTS/$name.log"
  echo "-- $name: exit $rc, $((SECONDS - t0)) s"
}

if [ "${SMOKE:-0}" = 1 ]; then   # the script's own check on a CPU: tiny sizes, same pieces
  DEV=cpu; SCALE=3
  STEP=(--classes 2000 --rows 32 --dim 64 --backbone compact-tiny --backbone-rows 8 --repeats 1 --layers plugin blockwise
        --heads arcface lh2face "lh2face UAMF only" mv-softmax sv-softmax uss "uss negatives=batch")
  AUTOCAST=(--rows 32 --classes 500 --dim 64)
  TRAIN=(--network mbf --embedding-size 128 --batch-size 8 --steps 4 --classes 16 --per-class 2 --no-fp16 \
         --frequent 1 --workers 0 --timeout 200)
  EXPORT=(--network mbf)
  BENCH=(--scale toy --steps 3 --batch-size 8 --identities 6 --images-per-id 4 --families 2 --bootstrap 40
         --device cpu --workers 0)
else
  DEV=cuda; SCALE=1
  STEP=(--classes 1000000 4000000 --repeats 3 --backbone r50 --layers plugin blockwise
        --heads arcface lh2face "lh2face UAMF only" mv-softmax sv-softmax uss "uss negatives=batch")
  AUTOCAST=()
  TRAIN=(--steps 200 --classes 1000 --timeout 70)
  EXPORT=(--network r50)
  BENCH=(--scale gpu --device cuda --workers 12)
fi

run step_fp16 $((100 * SCALE)) "$PY" benchmarks/step.py --device $DEV --dtype fp16 "${STEP[@]}" \
  --json "$RESULTS/step_fp16.json"
run step_bf16 $((100 * SCALE)) "$PY" benchmarks/step.py --device $DEV --dtype bf16 "${STEP[@]}" \
  --json "$RESULTS/step_bf16.json"
run autocast $((40 * SCALE)) "$PY" benchmarks/autocast_check.py --device $DEV "${AUTOCAST[@]}" \
  --json "$RESULTS/autocast.json"
run train $((160 * SCALE)) "$PY" benchmarks/train_throughput.py --device $DEV "${TRAIN[@]}" \
  --data "$WORK/images" --out "$WORK/train" --json "$RESULTS/train.json"
run export $((80 * SCALE)) "$PY" benchmarks/export_check.py --device $DEV "${EXPORT[@]}" \
  --model "$WORK/train/lh2face/model.pt" --json "$RESULTS/export.json"
run bench 540 "$PY" -c 'import sys; from lh2face_plugin.cli import main; sys.exit(main(sys.argv[1:]))' \
  bench "${BENCH[@]}" --control --quiet --out "$WORK/bench"
if wants bench && [ -f "$WORK/bench/results.json" ]; then cp "$WORK/bench/results.json" "$RESULTS/bench.json"; fi

echo
"$PY" benchmarks/gpu_report.py "$RESULTS"
