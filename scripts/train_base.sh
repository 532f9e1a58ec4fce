#!/usr/bin/env bash
# Reproduce the `keystone-base` checkpoint from scratch on this machine (2 CPU cores, no GPU). Two recipes: RECIPE=fast
# (the default: stages s, h, i below, ~67 min, the shipped checkpoint since stop 25) and RECIPE=lineage (stages a-i,
# ~5.3 h, the checkpoint shipped from stop 10 to stop 24). Both:
#   1. collect scripted-oracle demonstrations of all five tasks (seen split, 128 px front camera, with the
#      per-step object poses the object token needs);
#   2. train the `base` preset (ViT 4x256 + 4-layer Llama 256, chunk head, H = 8) in stages; each stage's
#      train_info.json names the previous one (`data.init_from`):
#        a. 2,000 steps, all tasks, no object token                                  (stop 8)
#        b. 2,500 steps, pick_place + stack, warm start from a                        (stop 9)
#        c. 3,000 steps, pick_place + stack, warm start from b                        (stop 9)
#        d. 2,000 steps, all tasks, object token grown onto c                         (stop 10)
#        e. STEPS steps, all tasks, warm start from d                                 (stop 10)
#        f. DAgger round 1: the learner (the previous stage) drives about half of each of DAGGER_EPISODES
#           episodes per task (seed 1) while the oracle's actions are recorded (`keystone data collect --learner`),
#           appended to a clean store of DAGGER_EPISODES per task (seed 0); F_STEPS steps on both (stop 11)
#        g. DAgger round 2 on stack, insert, kit_assembly and build_tower (seed 2), same store; G_STEPS (stop 11)
#        h. a yaw head (object features + state -> the chunk's turn) fitted on MIX, every other weight unchanged
#           (`--fit-yaw-head --object-frame held_part`, 6,000 steps, ~1.5 min; stop 14)
#        i. a plan adapter (LoRA on the LM while it writes a plan, plus a MiniLM sentence token; word dropout,
#           colour/shape renaming, half of the stack/tower instructions re-described by the relation grammar,
#           MiniLM's vector of each word at its prompt position) fitted on the plans of MIX, every other weight
#           unchanged (`--fit-plan-adapter --relation-phrasing 0.5 --plan-word-features`, ADAPTER_STEPS; stops 15-21)
#        s. (RECIPE=fast) one stage from scratch with the object token on the clean store, S_STEPS steps, in place
#           of a-e: 16 image tokens (`--patch-size 32`) and 4 plan examples per step (`--plan-batch-size 4`),
#           ~0.9-1.2 s/step here instead of ~1.8
#   3. evaluate closed-loop in sim (2 episodes per task) and (SHIP=1) copy the checkpoint into
#      vla/pretrained/keystone-base/.
# The stop-21 checkpoint's lineage is a-i (stage i refitted at stop 21 on stop 16's store, which added a DAgger
# round with that checkpoint itself as learner that this script does not collect; stage d ran with an earlier object
# token layout): RECIPE=lineage reproduces the recipe, not the bits. Measured here: collection ~8 min (495 episodes,
# 2 workers), a-e ~3.5 h, f ~45 min, g ~32 min, h ~2 min, i ~30 min: ~5.3 h, over the 90-minute target.
#
# RECIPE=fast is the measured way under 90 minutes: STAGES=shi, EPISODES=60 (DATA data/fast.zarr), S_STEPS=2200,
# ADAPTER_STEPS=1100, ACTIONS=2, OUT runs/keystone-fast; h and i fit on DATA (there is no DAgger store).
# Measured at stop 25 on a 2-core AVX2 machine (reports/dev-stop25): s 34.1 min (0.93 s/step), h 1.3, i 21.6,
# check 0.9: 58.6 min after collection, plus 8.2 min collection (stop 24's measurement of the same command; the run
# reused that store): ~67 min in all (~81 min at stop 24's slower step times). The checkpoint records 2 actions per
# chunk. Closed loop at the agent's defaults (still-hand release on), 500 episodes (`keystone eval --episodes 50
# --seed 0`): 99.0 % (pick_place, stack and build_tower 100 % seen and unseen, insert 96 / 98 %, kit_assembly
# 98 / 98 %), every plan exact. That checkpoint is the shipped keystone-base since stop 25 (train_info.json), and
# RECIPE=fast is the default.
# Earlier fast variants and why they lost (a DAgger round that the learner's timeouts made slow and that taught
# the final model to need 4 actions per chunk; a patch-16 model that never let go of the peg): reports/dev-stop19,
# dev-stop22, dev-stop23, dev-stop24. The agent's still-hand release (policies/vla_agent.py, item 11) is what lets
# a model without DAgger run 2 actions per chunk: it runs a release the model keeps predicting a few actions ahead
# once the hand has stopped with the part set down.
# Knobs (environment; the defaults named are the lineage's, RECIPE=fast sets its own as above): RECIPE (fast |
# lineage), EPISODES (per task, default 100), STEPS (stage e, default 2500), STAGES (default abcdefghi),
# DAGGER_EPISODES (per task and kind, default 60), F_STEPS / G_STEPS (default 2000 / 1500), MIX (the store of stages
# f-i, default data/mix.zarr; DATA when STAGES has no f or g), OUT (default runs/keystone-base), DATA (default
# data/sim.zarr), WORKERS (collection processes, default 2), THREADS (torch threads, default 2), S_STEPS / S_FLAGS
# (stage s), PLAN_BATCH (plan examples per training step, default 16), ADAPTER_STEPS (stage i, default 1600), ACTIONS
# (actions per chunk stage i records in the checkpoint, default: none recorded, i.e. 2), CHECK_ACTIONS (actions per
# chunk in the final check, default: the recorded count), SHIP=1 to copy the checkpoint files (not the optimizer
# state) into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${RECIPE:-fast}"
case "$RECIPE" in
    lineage) ;;
    fast) STAGES="${STAGES:-shi}"; EPISODES="${EPISODES:-60}"; DATA="${DATA:-data/fast.zarr}"
          OUT="${OUT:-runs/keystone-fast}"; S_STEPS="${S_STEPS:-2200}"; ADAPTER_STEPS="${ADAPTER_STEPS:-1100}"
          S_FLAGS="${S_FLAGS:---patch-size 32 --plan-batch-size 4}"; PLAN_BATCH="${PLAN_BATCH:-4}"
          ACTIONS="${ACTIONS:-2}"
          # the DAgger variant (STAGES=sfhi, reports/dev-stop24): a smaller round than the lineage's
          DAGGER_EPISODES="${DAGGER_EPISODES:-40}"; F_STEPS="${F_STEPS:-1200}"
          case "$STAGES" in  # without a DAgger stage, the yaw head and the plan adapter fit on the clean store
              *f*|*g*) MIX="${MIX:-data/fast-mix.zarr}" ;;
              *) MIX="${MIX:-$DATA}" ;;
          esac ;;
    *) echo "RECIPE=${RECIPE}: use lineage (stages a-i, ~5.3 h) or fast (stages s, h, i, ~70 min)" >&2; exit 2 ;;
esac
S_STEPS="${S_STEPS:-2000}"
S_FLAGS="${S_FLAGS:-}"
PLAN_BATCH="${PLAN_BATCH:-16}"
ADAPTER_STEPS="${ADAPTER_STEPS:-1600}"
ACTIONS="${ACTIONS:-}"  # stage i records it in the checkpoint (config.json n_action_steps); empty: the default 2
CHECK_ACTIONS="${CHECK_ACTIONS:-}"  # empty: the count the checkpoint records
EPISODES="${EPISODES:-100}"
STEPS="${STEPS:-2500}"
STAGES="${STAGES:-abcdefghi}"
DAGGER_EPISODES="${DAGGER_EPISODES:-60}"
F_STEPS="${F_STEPS:-2000}"
G_STEPS="${G_STEPS:-1500}"
MIX="${MIX:-data/mix.zarr}"
DATA="${DATA:-data/sim.zarr}"
OUT="${OUT:-runs/keystone-base}"
WORKERS="${WORKERS:-2}"
SHIP="${SHIP:-0}"
PY="${PY:-.venv/bin/python}"
case "$RECIPE:$STAGES" in
    fast:*f*)  # stage f starts MIX as a copy of DATA; it must not replace a store that is already there
        if [ -e "$MIX" ]; then
            echo "MIX=${MIX} already exists; RECIPE=fast's stage f starts it as a copy of DATA=${DATA}: move it" \
                 "aside or name another MIX" >&2
            exit 2
        fi ;;
esac
THREADS="${THREADS:-2}"
# PASSIVE: idle OpenMP threads sleep instead of spinning. Measured here: with other jobs on the 2 cores, spinning
# threads made a 2-thread forward pass ~10x slower (600 ms vs 80 ms); with PASSIVE it stays near 1-thread speed.
export OMP_NUM_THREADS="$THREADS" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ ! -d "$DATA" ]; then
    echo "== 1/3 collect: ${EPISODES} oracle episodes per task -> ${DATA}" >&2
    "$PY" -m keystone_vla.cli data collect --tasks all --episodes-per-task "$EPISODES" --split seen \
        --workers "$WORKERS" --image-size 128 --cameras front --seed 0 --out "$DATA" --json | tail -n 1
fi

train() {  # train <out> <steps> [extra flags...]
    local out="$1" steps="$2"
    shift 2
    "$PY" -m keystone_vla.cli train --data "$DATA" --out "$out" --preset base --action-head chunk \
        --steps "$steps" --batch-size 32 --lr 3e-4 --seed 0 --val-every 250 --workers 1 --threads "$THREADS" \
        --plan-batch-size "$PLAN_BATCH" --json "$@" | tail -n 1
}
collect() {  # collect <seed> [extra flags...]: DAGGER_EPISODES per task into MIX
    local seed="$1"
    shift
    "$PY" -m keystone_vla.cli data collect --episodes-per-task "$DAGGER_EPISODES" --split seen \
        --workers "$WORKERS" --image-size 128 --cameras front --seed "$seed" --out "$MIX" --json "$@" | tail -n 1
}
echo "== 2/3 train stages ${STAGES} -> ${OUT}" >&2
prev=""
case "$STAGES" in *a*) train "${OUT}-a" 2000 --no-object-token; prev="${OUT}-a" ;; esac
case "$STAGES" in *b*) train "${OUT}-b" 2500 --no-object-token --tasks pick_place,stack ${prev:+--init-from "$prev"}; prev="${OUT}-b" ;; esac
case "$STAGES" in *c*) train "${OUT}-c" 3000 --no-object-token --tasks pick_place,stack ${prev:+--init-from "$prev"}; prev="${OUT}-c" ;; esac
case "$STAGES" in *d*) train "${OUT}-d" 2000 ${prev:+--init-from "$prev"}; prev="${OUT}-d" ;; esac
case "$STAGES" in *e*) train "${OUT}-e" "$STEPS" ${prev:+--init-from "$prev"}; prev="${OUT}-e" ;; esac
# shellcheck disable=SC2086  # S_FLAGS is a list of flags
case "$STAGES" in *s*) train "${OUT}-s" "$S_STEPS" $S_FLAGS; prev="${OUT}-s" ;; esac
need_learner() { [ -n "$prev" ] || { echo "stage $1 needs a learner: run the stage before it too" >&2; exit 2; }; }
case "$STAGES" in
    *f*)
        need_learner f
        echo "== 2f: clean + DAgger round 1 (learner ${prev}) -> ${MIX}" >&2
        if [ "$RECIPE" = fast ]; then  # the clean store is DATA itself: copy it rather than collect it again
            cp -r "$DATA" "$MIX"  # MIX did not exist (checked before any stage ran)
        else
            collect 0 --tasks all
        fi
        collect 1 --tasks all --learner "$prev"
        DATA="$MIX" train "${OUT}-f" "$F_STEPS" --init-from "$prev"
        prev="${OUT}-f" ;;
esac
case "$STAGES" in
    *g*)
        need_learner g
        echo "== 2g: DAgger round 2 (learner ${prev}) -> ${MIX}" >&2
        collect 2 --tasks stack,insert,kit_assembly,build_tower --learner "$prev"
        DATA="$MIX" train "${OUT}-g" "$G_STEPS" --init-from "$prev"
        prev="${OUT}-g" ;;
esac
case "$STAGES" in
    *h*)
        need_learner h
        echo "== 2h: yaw head on ${prev} (fit on ${MIX})" >&2
        "$PY" -m keystone_vla.cli train --data "$MIX" --out "${OUT}-h" --init-from "$prev" --fit-yaw-head \
            --object-frame held_part --steps 6000 --seed 0 --threads "$THREADS" --json | tail -n 1
        prev="${OUT}-h" ;;
esac
case "$STAGES" in
    *i*)
        need_learner i
        echo "== 2i: plan adapter on ${prev} (fit on the plans of ${MIX}, text only)" >&2
        "$PY" -m keystone_vla.cli train --data "$MIX" --out "${OUT}-i" --init-from "$prev" --fit-plan-adapter \
            --relation-phrasing 0.5 --plan-word-features --steps "$ADAPTER_STEPS" --seed 0 --threads "$THREADS" \
            ${ACTIONS:+--actions-per-chunk "$ACTIONS"} --json | tail -n 1
        prev="${OUT}-i" ;;
esac
[ -n "$prev" ] || { echo "STAGES=${STAGES} names no stage (a-i, s)" >&2; exit 2; }
rm -rf "$OUT" && cp -r "$prev" "$OUT"

echo "== 3/3 closed-loop check, checkpoint size and ship" >&2
"$PY" -m keystone_vla.cli eval --policy "$OUT" --tasks all --split seen --episodes 2 --workers "$WORKERS" \
    --seed 0 ${CHECK_ACTIONS:+--actions-per-chunk "$CHECK_ACTIONS"} --out "${OUT}-check" --json | tail -n 1
du -sh "$OUT" >&2
echo "train_base.sh (RECIPE=${RECIPE}, stages ${STAGES}): ${SECONDS} s wall" >&2
if [ "$SHIP" = "1" ]; then
    mkdir -p vla/pretrained/keystone-base
    cp "$OUT"/model.safetensors "$OUT"/config.json "$OUT"/normalization.json "$OUT"/tokenizer.json \
       "$OUT"/train_info.json vla/pretrained/keystone-base/
    echo "shipped to vla/pretrained/keystone-base/" >&2
fi
