#!/usr/bin/env bash
# Issue 26's study of the render input at `lh2face bench --scale cpu`, in one stored bench (OUT accumulates
# runs; a rerun reuses every finished one). Groups in order of what they decide:
#   core      cosface-s24, lh2face, lh2face + input, and both heads on compact-tiny-matched (the parameters
#             and GMACs of compact-tiny + the frozen reconstruction: the compute-matched baseline)
#   channels  cosface-s24 + input; lh2face + input with the depth channel only and the canonical face only
#   terms     lh2face + input with L_FR^canon and L_view (the module's earlier defaults)
# Usage: benchmarks/render_study.sh OUT [GROUP ...]   (default: core channels terms; seeds 0 1)
#        benchmarks/render_study.sh --save OUT         (keep OUT's data and finished runs in STORE, to commit)
# Then: lh2face bench --report OUT; docs/results/render-study.md is generated from OUT/results.json.
# The study takes longer than one working session on a 2-core machine, and machines do not persist: STORE
# (default benchmarks/studies/render-cpu, committed) keeps what the runs were trained and evaluated on and the
# runs themselves: the reconstruction checkpoint, the training set (data/), the evaluation set (evalset/) and
# every finished run (model.pt, train.json.gz). A study into a fresh OUT starts by copying them in, so the bench
# reuses the data by its manifest and the runs by key; a run whose key differs is trained again.
# The data is kept, not made again from its seeds, because the synthetic set is bitwise the same only on the same
# kind of CPU at the same thread count: numpy's AVX-512 kernels round differently from its AVX2 ones (checked:
# NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" changes the data fingerprint), 1 thread differs from 2,
# and a machine of another CPU made another training set from the same seeds, so every kept run trained again.
# The study runs with OMP_NUM_THREADS=2 unless told otherwise. --save replaces STORE whole with OUT's: a run
# trained on other data is not kept, its key can never match.
set -euo pipefail
STORE=${STUDY_STORE:-$(cd "$(dirname "$0")" && pwd)/studies/render-cpu}
if [ "${1:-}" = "--save" ]; then
    OUT=${2:?usage: benchmarks/render_study.sh --save OUT}
    for need in render.pt data/.lh2face-manifest.json evalset/evalset.npz; do
        [ -f "$OUT/$need" ] || { echo "render_study.sh: $OUT/$need: no such file (not a study folder)" >&2; exit 2; }
    done
    NEW="$STORE.part"
    rm -rf "$NEW"
    mkdir -p "$NEW/evalset"
    cp "$OUT/render.pt" "$NEW/render.pt"
    cp -a "$OUT/data" "$NEW/data"
    cp "$OUT/evalset/meta.json" "$OUT/evalset/evalset.npz" "$NEW/evalset/"
    saved=0
    for model in "$OUT"/*/seed*/model.pt; do
        [ -f "$model" ] || continue
        run=$(dirname "$model"); rel=${run#"$OUT"/}
        [ -f "$run/train.json" ] || continue
        mkdir -p "$NEW/$rel"
        cp "$model" "$NEW/$rel/model.pt"
        gzip -9n -c "$run/train.json" > "$NEW/$rel/train.json.gz"
        saved=$((saved + 1))
    done
    rm -rf "$STORE.old"
    [ ! -e "$STORE" ] || mv "$STORE" "$STORE.old"
    mv "$NEW" "$STORE"
    rm -rf "$STORE.old"
    echo "kept render.pt, data/, evalset/ and $saved finished runs in $STORE"
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
    for part in data evalset; do
        [ ! -d "$STORE/$part" ] || [ -e "$OUT/$part" ] || cp -a "$STORE/$part" "$OUT/$part"
    done
    for model in "$STORE"/*/seed*/model.pt; do
        [ -f "$model" ] || continue
        run=$(dirname "$model"); rel=${run#"$STORE"/}
        [ ! -e "$OUT/$rel" ] || continue
        mkdir -p "$OUT/$rel"
        cp "$model" "$OUT/$rel/model.pt"
        gzip -dc "$run/train.json.gz" > "$OUT/$rel/train.json"
    done
    cp "$STORE/render.pt" "$OUT/render.pt"
    echo "started from the data and runs kept in $STORE"
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
