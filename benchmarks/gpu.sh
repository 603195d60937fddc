#!/usr/bin/env bash
# Every open GPU question in one run of about 8.5 minutes on one CUDA GPU, ending with one table (issue 22).
# Pieces, in order of value; each has a time limit with about 30% to spare over its estimate (below), and
# writes NAME.json as its rows finish (a time-out keeps them), NAME.log and NAME.rc:
#   1. correct_precision: every head on both layers in fp32, bf16 and fp16 (the caller's autocast and the
#      plugin's half products) against float32 and float64, N=256 C=20k D=512 (benchmarks/precision.py;
#      12 heads x 2 layers x 6 calls, each ~16 GFLOP: seconds of compute, ~20 s of Python; limit 50 s);
#   2. correct_syncs: host syncs per step with 1 block and with 64, the dispatcher's count and CUDA's
#      sync debug mode (benchmarks/syncs.py; 88 small steps, ~15 s; limit 40 s);
#   3. step_n1024, step_n4096: the classification layer at a WebFace42M shard, 250k classes per rank,
#      sample rate 0.2, D=512, fp16 products: time and peak memory of PartialFC_V2, the dense and the
#      blockwise layer with arcface, lh2face, mv-softmax and uss (benchmarks/step.py; at N=4096 a step is
#      ~0.6 TFLOP and the dense [N, 50k] float32 cosines 0.8 GB: 9 variants x 4 steps in ~20 s plus start-up;
#      limits 45 s and 75 s): the table that decides the CUDA default;
#   4. train: 200 steps of arcface_torch's stock train_v2 with config.fp16=True, r50, batch 128, lh2face
#      against its CombinedMarginLoss: samples/s, GradScaler scale and its falls (benchmarks/train_throughput.py;
#      2 x 25.6k images at ~2.5k/s plus ~30 s start-up each; limit 140 s);
#   5. compile: torch.compile of a Partial FC step (lh2face, both layers, eager and inductor) against eager
#      (benchmarks/compile_check.py; two inductor compiles of ~30 s; limit 110 s);
#   6. export: the lh2face r50 of piece 4 with torch on the GPU vs onnxruntime (benchmarks/export_check.py;
#      limit 50 s).
# benchmarks/gpu_report.py turns the JSON files into the table. PIECES=bench runs another piece instead,
# under 9 minutes:
#   7. lh2face bench --scale gpu --device cuda --control: the default head comparison (cosface-s24,
#      arcface, adaface, lh2face, the positive control; seeds 0 and 1) at the GPU scale, its results in the
#      table. Finished runs are kept in $GPU_BENCH_WORK/bench, so a rerun after a time-out goes on from them.
#
#   ARCFACE_TORCH_ROOT=~/insightface/recognition/arcface_torch bash benchmarks/gpu.sh [RESULTS_FOLDER]
#   PIECES="correct step" bash benchmarks/gpu.sh [RESULTS_FOLDER]        # some pieces (name before the _)
#   PIECES=bench bash benchmarks/gpu.sh [RESULTS_FOLDER]
#
# RESULTS_FOLDER (default $TMPDIR/lh2face_gpu_bench) gets the logs and JSON files; images, training
# outputs and the ONNX file go to $GPU_BENCH_WORK (default $TMPDIR/lh2face_gpu_bench_work).
#
# Needs: torch with CUDA, this package installed (pip install -e ".[all]"), arcface_torch's checkout
# and its requirements (easydict, tensorboard, scikit-learn; torchvision or the plugin's stand-in).
# PYTHON picks the interpreter. Without CUDA it prints one line and runs nothing. SMOKE=1 runs the same
# pieces at tiny sizes on the CPU (a check of this script, a few minutes; CI runs it).
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
PIECES=${PIECES:-correct step train compile export}
for piece in $PIECES; do   # the other pieces' results stay: the table gathers every piece run into RESULTS
  rm -f "$RESULTS/$piece".json "$RESULTS/$piece"_*.json "$RESULTS/$piece".rc "$RESULTS/$piece"_*.rc
done
"$PY" -c "import torch; print('gpu.sh:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', 'torch', torch.__version__, 'checkout', '$ARCFACE_TORCH_ROOT')"

wants() {  # wants PIECE: whether PIECES names it
  case " $PIECES " in *" $1 "*) return 0 ;; esac
  return 1
}

run() {  # run NAME SECONDS command...: only the pieces PIECES names (step_n1024 and step_n4096 are "step")
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
  PRECISION=(--rows 16 --classes 120 --dim 16 --heads arcface lh2face mv-softmax uss)
  SYNCS=(--rows 16 --classes 200 --dim 16 --heads arcface lh2face mv-softmax uss)
  STEP=(--classes 5000 --sample-rate 0.2 --dim 64 --repeats 1 --backbone none --layers plugin blockwise
        --heads arcface lh2face mv-softmax uss)
  N1=32; N2=64
  TRAIN=(--network mbf --embedding-size 128 --batch-size 8 --steps 4 --classes 16 --per-class 2 --no-fp16 \
         --frequent 1 --workers 0 --timeout 200)
  COMPILE=(--rows 16 --classes 200 --dim 16 --heads lh2face --backends eager aot_eager --repeats 1)
  EXPORT=(--network mbf)
  BENCH=(--scale toy --steps 3 --batch-size 8 --identities 6 --images-per-id 4 --families 2 --bootstrap 40
         --device cpu --workers 0)
else
  DEV=cuda; SCALE=1
  PRECISION=(--rows 256 --classes 20000 --dim 512)
  SYNCS=(--rows 256 --classes 20000 --dim 512)
  STEP=(--classes 250000 --sample-rate 0.2 --dim 512 --repeats 3 --backbone none --layers plugin blockwise
        --heads arcface lh2face mv-softmax uss)
  N1=1024; N2=4096
  TRAIN=(--steps 200 --classes 1000 --timeout 65)
  COMPILE=(--rows 1024 --classes 50000 --dim 512 --heads lh2face --backends eager inductor)
  EXPORT=(--network r50)
  BENCH=(--scale gpu --device cuda --workers 12)
fi

run correct_precision $((50 * SCALE)) "$PY" benchmarks/precision.py --device $DEV "${PRECISION[@]}" \
  --json "$RESULTS/correct_precision.json"
run correct_syncs $((40 * SCALE)) "$PY" benchmarks/syncs.py --device $DEV "${SYNCS[@]}" \
  --json "$RESULTS/correct_syncs.json"
run step_n$N1 $((45 * SCALE)) "$PY" benchmarks/step.py --device $DEV --dtype fp16 --rows $N1 "${STEP[@]}" \
  --json "$RESULTS/step_n$N1.json"
run step_n$N2 $((75 * SCALE)) "$PY" benchmarks/step.py --device $DEV --dtype fp16 --rows $N2 "${STEP[@]}" \
  --json "$RESULTS/step_n$N2.json"
run train $((140 * SCALE)) "$PY" benchmarks/train_throughput.py --device $DEV "${TRAIN[@]}" \
  --data "$WORK/images" --out "$WORK/train" --json "$RESULTS/train.json"
run compile $((110 * SCALE)) "$PY" benchmarks/compile_check.py --device $DEV "${COMPILE[@]}" \
  --json "$RESULTS/compile.json"
run export $((50 * SCALE)) "$PY" benchmarks/export_check.py --device $DEV "${EXPORT[@]}" \
  --model "$WORK/train/lh2face/model.pt" --json "$RESULTS/export.json"
run bench 540 "$PY" -c 'import sys; from lh2face_plugin.cli import main; sys.exit(main(sys.argv[1:]))' \
  bench "${BENCH[@]}" --control --quiet --out "$WORK/bench"
if wants bench && [ -f "$WORK/bench/results.json" ]; then cp "$WORK/bench/results.json" "$RESULTS/bench.json"; fi

echo
"$PY" benchmarks/gpu_report.py "$RESULTS"
