#!/usr/bin/env bash
# Reproduce the shipped `keystone-base` checkpoint from scratch: `keystone train --recipe keystone-base`, whose
# stages are defined in vla/recipes.py (`keystone train --list-recipes` shows them):
#   collect  60 scripted-oracle episodes per task (seen split, 128 px front camera, seed 0, 2 workers)
#   s        2,200 steps of the base preset from scratch (chunk head, patch 32, 4 plan examples per step)
#   h        a yaw head fitted on the store (held-part object frame, 6,000 steps)
#   i        a plan adapter fitted on the store's plans (relation phrasing 0.5, word features, 1,100 steps);
#            records 2 actions per chunk in the checkpoint
#   check    a closed-loop evaluation, 2 episodes per task (report in OUT/check)
# Measured on a 2-core CPU machine: ~67 min in all (collection ~8 min, s ~34 min, h ~1.3 min, i ~22 min,
# check ~1 min). The final checkpoint is OUT/i; the store is OUT/data.zarr (collection is skipped when it exists).
#
# Environment: OUT (default runs/keystone-base), THREADS (torch threads, default 2), SHIP=1 to copy the final
# checkpoint's files (weights, configs, agent.json; not the optimizer state) into vla/pretrained/keystone-base/.
# Extra arguments go to `keystone train`, e.g. `--stages h,i` to refit the last two stages on an existing OUT, or `--data STORE`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/keystone-base}"
THREADS="${THREADS:-2}"
SHIP="${SHIP:-0}"
PY="${PY:-.venv/bin/python}"
# PASSIVE: idle OpenMP threads sleep instead of spinning. Measured here: with other jobs on the 2 cores, spinning
# threads made a 2-thread forward pass ~10x slower (600 ms vs 80 ms); with PASSIVE it stays near 1-thread speed.
export OMP_NUM_THREADS="$THREADS" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

summary="$("$PY" -m keystone_vla.cli train --recipe keystone-base --out "$OUT" --threads "$THREADS" --json "$@" \
    | tail -n 1)"
echo "$summary"
final="$(printf '%s' "$summary" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["final"] or "")')"
if [ -n "$final" ]; then du -sh "$final" >&2; fi
echo "train_base.sh: ${SECONDS} s wall" >&2
if [ "$SHIP" = "1" ]; then
    [ -n "$final" ] || { echo "SHIP=1: this run wrote no checkpoint to ship" >&2; exit 2; }
    mkdir -p vla/pretrained/keystone-base
    cp "$final"/model.safetensors "$final"/config.json "$final"/normalization.json "$final"/tokenizer.json \
       "$final"/train_info.json "$final"/agent.json vla/pretrained/keystone-base/
    echo "shipped ${final} to vla/pretrained/keystone-base/" >&2
fi
