#!/usr/bin/env bash
# Issue 26's study of the render input at `lh2face bench --scale cpu`, in one stored bench (OUT accumulates
# runs; a rerun reuses every finished one). Groups in order of what they decide:
#   core      cosface-s24, lh2face, lh2face + input, and both heads on compact-tiny-matched (the parameters
#             and GMACs of compact-tiny + the frozen reconstruction: the compute-matched baseline)
#   channels  cosface-s24 + input; lh2face + input with the depth channel only and the canonical face only
#   terms     lh2face + input with L_FR^canon and L_view (the module's earlier defaults)
# Usage: benchmarks/render_study.sh OUT [GROUP ...]   (default: core channels terms; seeds 0 1)
# Then: lh2face bench --report OUT; docs/results/render-study.md is generated from OUT/results.json.
set -euo pipefail
OUT=${1:?usage: benchmarks/render_study.sh OUT [GROUP ...]}
shift
GROUPS_TO_RUN=("$@")
[ ${#GROUPS_TO_RUN[@]} -gt 0 ] || GROUPS_TO_RUN=(core channels terms)
for group in "${GROUPS_TO_RUN[@]}"; do
    case "$group" in core|channels|terms) ;; *) echo "render_study.sh: unknown group '$group' (core, channels, terms)" >&2; exit 2;; esac
done
LH2FACE=${LH2FACE:-lh2face}
mkdir -p "$OUT"
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
