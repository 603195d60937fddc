#!/usr/bin/env bash
# Issue 26's study of the render input at `lh2face bench --scale cpu`, in one stored bench (OUT accumulates
# runs; a rerun reuses every finished one). Groups in order of what they decide:
#   core      cosface-s24, lh2face, lh2face + input, and both heads on compact-tiny-matched (the parameters
#             and GMACs of compact-tiny + the frozen reconstruction: the compute-matched baseline), and the
#             bench's positive control (--control)
#   channels  cosface-s24 + input; lh2face + input with the depth channel only and the canonical face only
#   terms     lh2face + input with L_FR^canon and L_view (the module's earlier defaults)
# Usage: benchmarks/render_study.sh OUT [GROUP ...]   (default: core channels terms; seeds 0 1)
#        benchmarks/render_study.sh --save OUT         (keep OUT's finished runs in STORE, to be committed)
#        benchmarks/render_study.sh --record OUT       (the study's pages: docs/results/render-study*.md)
# --record reports the runs OUT's benches recorded (OUT/runs.json): run every group into OUT first (kept runs are
# reused, a few minutes per group). It reports a copy of OUT (its runs and cached features; OUT itself is not
# touched) against cosface-s24, against lh2face on the compute-matched backbone and against lh2face + input,
# records each report with
# docs/gen_results.py (render-study, render-study-vs-matched, render-study-vs-input) and regenerates the pages,
# render-decision included.
# The study takes longer than one working session on a 2-core machine, and machines do not persist: STORE
# (default benchmarks/studies/render-cpu, committed) keeps the reconstruction checkpoint, every finished run
# (model.pt, train.json.gz) and data.txt, the fingerprints of the data they were trained and evaluated on. A study
# into a fresh OUT starts by copying them in, so the bench reuses the runs by key (a run whose key differs is
# trained again). The training and evaluation sets are made again from their seeds by benchmarks/pinned_data.py,
# which pins the numeric libraries' kernels so that any x86-64 CPU makes the same bytes (unpinned, an Intel Xeon
# with AVX-512 made another training set than the AMD EPYC the first runs were trained on, and every kept run
# would have trained again); the study stops if they are not the data in data.txt. Generating at OMP_NUM_THREADS=2
# unless told otherwise (the sets were checked to be the same at 2 threads; 1 thread changed a few records).
set -euo pipefail
STORE=${STUDY_STORE:-$(cd "$(dirname "$0")" && pwd)/studies/render-cpu}
other_data() { [ -f "$STORE/data.txt" ] && ! cmp -s "$1/data.txt" "$STORE/data.txt"; }  # OUT's data is not the kept runs'
# the heads of each group, as bench head specs (LABEL=SPEC); OUT names the reconstruction checkpoint
define_groups() {
    local R="checkpoint=$1/render.pt,mode=frozen" COS="cosface:s=24,m=0.35"
    core=(cosface-s24 lh2face "lh2face-render=lh2face@render:$R"
          "lh2face-matched=lh2face#compact-tiny-matched" "cosface-s24-matched=$COS#compact-tiny-matched")
    channels=("cosface-s24-render=$COS@render:$R" "lh2face-render-depth=lh2face@render:$R,channels=depth"
              "lh2face-render-canon=lh2face@render:$R,channels=canonical")
    terms=("lh2face-render-terms=lh2face@render:$R,lambda_canon=0.5,lambda_view=0.1")
}
if [ "${1:-}" = "--save" ]; then
    OUT=${2:?usage: benchmarks/render_study.sh --save OUT}
    for need in render.pt data.txt; do
        [ -f "$OUT/$need" ] || { echo "render_study.sh: $OUT/$need: no such file (not a study folder)" >&2; exit 2; }
    done
    if other_data "$OUT"; then
        echo "render_study.sh: $OUT was made from other data than the runs kept in $STORE (data.txt differs); not saved" >&2
        exit 2
    fi
    mkdir -p "$STORE"
    for name in render.pt data.txt; do
        cmp -s "$OUT/$name" "$STORE/$name" 2>/dev/null || { cp "$OUT/$name" "$STORE/$name.part" && mv "$STORE/$name.part" "$STORE/$name"; }
    done
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
    echo "kept render.pt, data.txt and $saved finished runs in $STORE"
    exit 0
fi
if [ "${1:-}" = "--record" ]; then
    OUT=${2:?usage: benchmarks/render_study.sh --record OUT}
    for need in render.pt data.txt cosface-s24 lh2face-matched lh2face-render; do
        [ -e "$OUT/$need" ] || { echo "render_study.sh: $OUT/$need: no such file (not a study folder with the core group)" >&2; exit 2; }
    done
    DOCS=$(cd "$(dirname "$0")/.." && pwd)/docs
    define_groups "$OUT"
    ran=core
    for group in terms channels; do  # the groups of which OUT holds a head
        declare -n heads="$group"
        for head in "${heads[@]}"; do
            [ ! -d "$OUT/${head%%=*}" ] || { ran="$ran $group"; break; }
        done
    done
    COPY=$(mktemp -d "${TMPDIR:-/tmp}/render-study.XXXXXX")
    trap 'rm -rf "$COPY"' EXIT
    (cd "$OUT" && tar --exclude=./data -cf - .) | (cd "$COPY" && tar -xf -)
    summary="Issue 26's study of the render input at --scale cpu (compact-tiny, 1500 steps x 64 images, 600 identities, \
120 look-alike families; benchmarks/render_study.sh, groups: $ran). lh2face-render is LH2Face behind the frozen render \
input (checkpoint of lh2face render pretrain --data synthetic --steps 1000 --pool 2048; no canonical terms, all \
channels: the module's defaults); -terms adds L_FR^canon and L_view (lambda_canon=0.5, lambda_view=0.1); -depth and \
-canon give the backbone only the depth or only the canonical face beside the RGB image; the -matched rows train on \
compact-tiny-matched, a backbone with the parameters and GMACs of compact-tiny + the render input (0.502 M, 0.122 \
GMACs; render-study-sizes), for the same steps. Every run trained on the same bytes (training set \
$(awk '$1 == "data" {print $2}' "$OUT/data.txt"), evaluation set $(awk '$1 == "evalset" {print substr($2, 1, 8)}' \
"$OUT/data.txt"), made by benchmarks/pinned_data.py), on 2-core machines (an AMD EPYC and Intel Xeons), often while \
other jobs shared the cores: each run's train s is an upper bound. The decision these runs support: render-decision."
    for page in "render-study cosface-s24 differences to cosface-s24" \
                "render-study-vs-matched lh2face-matched differences to lh2face on the compute-matched backbone" \
                "render-study-vs-input lh2face-render differences to lh2face + input (its defaults)"; do
        read -r name reference what <<< "$page"
        ${LH2FACE:-lh2face} bench --report "$COPY" --reference "$reference" --quiet
        ${PYTHON:-python3} "$DOCS/gen_results.py" record "$name" "$COPY/results.json" "$COPY/runs.json" \
            --command "benchmarks/render_study.sh OUT $ran; lh2face bench --report OUT --reference $reference" \
            --title "The render input at --scale cpu: $what" --summary "$summary"
    done
    ${PYTHON:-python3} "$DOCS/gen_results.py"
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
    for model in "$STORE"/*/seed*/model.pt; do
        [ -f "$model" ] || continue
        run=$(dirname "$model"); rel=${run#"$STORE"/}
        [ ! -e "$OUT/$rel" ] || continue
        mkdir -p "$OUT/$rel"
        cp "$model" "$OUT/$rel/model.pt"
        gzip -dc "$run/train.json.gz" > "$OUT/$rel/train.json"
    done
    cp "$STORE/render.pt" "$OUT/render.pt"
    echo "started from the runs kept in $STORE"
fi
${PYTHON:-python3} "$(dirname "$0")/pinned_data.py" "$OUT" --scale cpu > "$OUT/data.txt.part"
mv "$OUT/data.txt.part" "$OUT/data.txt"
if other_data "$OUT"; then
    echo "render_study.sh: the data made here ($(tr '\n' ' ' < "$OUT/data.txt")) is not the data the kept runs were trained on ($(tr '\n' ' ' < "$STORE/data.txt")); see benchmarks/pinned_data.py" >&2
    exit 3
fi
if [ ! -f "$OUT/render.pt" ]; then
    $LH2FACE render pretrain --data synthetic --steps 1000 --pool 2048 --out "$OUT/render.pt"
fi
define_groups "$OUT"
for group in "${GROUPS_TO_RUN[@]}"; do
    declare -n heads="$group"
    with_reference=("${heads[@]}")
    # a study started from the store has no run in OUT/runs.json yet, and the bench takes as reference only a head it
    # is given or a run recorded there: every group names cosface-s24 (a kept run, reused)
    [ "$group" = core ] || with_reference=(cosface-s24 "${heads[@]}")
    control=()  # the core group trains the positive control (a known handicap): the pages show the bench can tell
    [ "$group" != core ] || control=(--control)
    for seed in 0 1; do  # every head of a group at seed 0 first: an interrupted study still compares them all
        echo "== $group, seed $seed: ${with_reference[*]}"
        /usr/bin/time -f "== $group, seed $seed: %e s wall" $LH2FACE bench --out "$OUT" --scale cpu \
            --reference cosface-s24 --seeds "$seed" --wait --quiet "${control[@]}" --heads "${with_reference[@]}"
    done
done
