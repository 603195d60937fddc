#!/usr/bin/env bash
# Issue 26's study of the render input at `lh2face bench --scale cpu`, in one stored bench (OUT accumulates
# runs; a rerun reuses every finished one). Groups in order of what they decide:
#   core      cosface-s24, lh2face, lh2face + input, and both heads on compact-tiny-matched (the parameters
#             and GMACs of compact-tiny + the frozen reconstruction: the compute-matched baseline)
#   channels  cosface-s24 + input; lh2face + input with the depth channel only and the canonical face only
#   terms     lh2face + input with L_FR^canon and L_view (the module's earlier defaults)
# Usage: benchmarks/render_study.sh OUT [GROUP ...]   (default: core channels terms; seeds 0 1)
#        benchmarks/render_study.sh --save OUT         (keep OUT's finished runs in STORE, to be committed)
# Then: lh2face bench --report OUT; docs/results/render-study.md is generated from OUT/results.json.
# The study takes longer than one working session on a 2-core machine, and machines do not persist: STORE
# (default benchmarks/studies/render-cpu, committed) keeps the reconstruction checkpoint and every finished run
# (model.pt, train.json.gz); a run starts by copying into OUT what OUT lacks, so the bench reuses those runs by
# key (the data and evaluation set are made again from their seeds; a run whose key differs is trained again).
# The synthetic training set is bitwise the same only at the same thread count (checked: OMP_NUM_THREADS=2 gave
# the kept runs' data fingerprint and reused them; 1 thread changed a few records of train.rec, so every run
# would train again): the study runs with OMP_NUM_THREADS=2 unless told otherwise.
set -euo pipefail
STORE=${STUDY_STORE:-$(cd "$(dirname "$0")" && pwd)/studies/render-cpu}
if [ "${1:-}" = "--save" ]; then
    OUT=${2:?usage: benchmarks/render_study.sh --save OUT}
    [ -f "$OUT/render.pt" ] || { echo "render_study.sh: $OUT/render.pt: no such file (not a study folder)" >&2; exit 2; }
    mkdir -p "$STORE"
    cmp -s "$OUT/render.pt" "$STORE/render.pt" 2>/dev/null || cp "$OUT/render.pt" "$STORE/render.pt.part"
    [ ! -f "$STORE/render.pt.part" ] || mv "$STORE/render.pt.part" "$STORE/render.pt"
    saved=0
    for model in "$OUT"/*/seed*/model.pt; do
        [ -f "$model" ] || continue
        run=$(dirname "$model"); rel=${run#"$OUT"/}
        [ -f "$run/train.json" ] || continue
        mkdir -p "$STORE/$rel"
        cp "$model" "$STORE/$rel/model.pt.part" && mv "$STORE/$rel/model.pt.part" "$STORE/$rel/model.pt"
        gzip -9n -c "$run/train.json" > "$STORE/$rel/train.json.gz.part" && mv "$STORE/$rel/train.json.gz.part" "$STORE/$rel/train.json.gz"
        saved=$((saved + 1))
    done
    echo "kept $saved finished runs and render.pt in $STORE"
    exit 0
fi
OUT=${1:?usage: benchmarks/render_study.sh OUT [GROUP ...]}
shift
GROUPS_TO_RUN=("$@")
[ ${#GROUPS_TO_RUN[@]} -gt 0 ] || GROUPS_TO_RUN=(core channels terms)
for group in "${GROUPS_TO_RUN[@]}"; do
    case "$group" in core|channels|terms) ;; *) echo "render_study.sh: unknown group '$group' (core, channels, terms)" >&2; exit 2;; esac
done
LH2FACE=${LH2FACE:-lh2face}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
if [ -f "$STORE/render.pt" ] && [ ! -f "$OUT/render.pt" ]; then
    cp "$STORE/render.pt" "$OUT/render.pt"
    for model in "$STORE"/*/seed*/model.pt; do
        [ -f "$model" ] || continue
        run=$(dirname "$model"); rel=${run#"$STORE"/}
        [ ! -e "$OUT/$rel" ] || continue
        mkdir -p "$OUT/$rel"
        cp "$model" "$OUT/$rel/model.pt"
        gzip -dc "$run/train.json.gz" > "$OUT/$rel/train.json"
    done
    echo "started from the runs kept in $STORE"
fi
if [ ! -f "$OUT/render.pt" ]; then
    $LH2FACE render pretrain --data synthetic --steps 1000 --pool 2048 --out "$OUT/render.pt"
fi
R="checkpoint=$OUT/render.pt,mode=frozen"
COS="cosface:s=24,m=0.35"
core=(cosface-s24 lh2face "lh2face-render=lh2face@render:$R"
      "lh2face-matched=lh2face#compact-tiny-matched" "cosface-s24-matched=$COS#compact-tiny-matched")
channels=("cosface-s24-render=$COS@render:$R" "lh2face-render-depth=lh2face@render:$R,channels=depth"
          "lh2face-render-canon=lh2face@render:$R,channels=canonical")
terms=("lh2face-render-terms=lh2face@render:$R,lambda_canon=0.5,lambda_view=0.1")
for group in "${GROUPS_TO_RUN[@]}"; do
    declare -n heads="$group"
    for seed in 0 1; do  # every head of a group at seed 0 first: an interrupted study still compares them all
        echo "== $group, seed $seed: ${heads[*]}"
        /usr/bin/time -f "== $group, seed $seed: %e s wall" $LH2FACE bench --out "$OUT" --scale cpu \
            --reference cosface-s24 --seeds "$seed" --wait --quiet --heads "${heads[@]}"
    done
done
