#!/usr/bin/env bash
# Reproduce the `keystone-base` checkpoint from scratch on this machine (2 CPU cores, no GPU):
#   1. collect scripted-oracle demonstrations of all five tasks (seen split, 128 px front camera, with the
#      per-step object poses the object token needs);
#   2. train the `base` preset (ViT 4x256 + 4-layer Llama 256, chunk head, H = 8) in the stages the shipped
#      checkpoint went through (see train_info.json of each stage: `data.init_from` names the previous one):
#        a. 2,000 steps, all tasks, no object token            (the stop-8 all-task model)
#        b. 2,500 steps, pick_place + stack, warm start from a  (stop 9)
#        c. 3,000 steps, pick_place + stack, warm start from b  (stop 9)
#        d. 2,000 steps, all tasks, object token grown onto c   (stop 10, runs/kb-obj-2000)
#        e. STEPS steps, all tasks, warm start from d           (stop 10, runs/kb-obj2)
#        f. DAgger round 1: e drives about half of each of DAGGER_EPISODES episodes per task (seed 1) while the
#           oracle's actions are recorded (`keystone data collect --learner`), appended to a fresh clean store
#           (seed 0, DAGGER_EPISODES per task); F_STEPS steps on both, warm start from e (stop 11, runs/kb-dagger)
#        g. DAgger round 2: f drives DAGGER_EPISODES episodes of stack, insert, kit_assembly and build_tower
#           (seed 2), appended to the same store; G_STEPS steps on all of it, warm start from f (stop 11, runs/
#           kb-dagger2)
#        h. a yaw head (object features + state -> the chunk's turn, squared error) fitted on the MIX store onto
#           g, every other weight unchanged (`keystone train --fit-yaw-head`, 6,000 steps, ~1.5 min): g's own yaw
#           output had collapsed to no turn. The copy measures its object token in the held_part frame
#           (`--object-frame held_part`: a placing step's target from the part in the hand, so an off-centre
#           grasp is placed by the part; stop 14, runs/kb-yh-held)
#        i. a plan adapter (LoRA on the LM, on only while it writes a plan, plus a MiniLM sentence token; word
#           dropout and colour/shape renaming while fitting) fitted on the plans of the MIX store onto h, every
#           other weight unchanged (`keystone train --fit-plan-adapter`): h's plan head gave unseen-template
#           instructions another task's plan (stop 15, runs/kb-plan2). Since stop 21 the fit also re-describes
#           half of the stack/tower instructions with the relation grammar (`--relation-phrasing 0.5`,
#           vla/plan_phrasing.py) and adds MiniLM's vector of each instruction word at that word's prompt
#           position (`--plan-word-features`); 1,600 steps, ~27-36 min here. The shipped adapter is this stage
#           fitted at stop 21 on data/mix16.zarr (stop 16's store: 60 clean oracle episodes per task + DAgger
#           round 4 with keystone-base as learner, which this script does not collect): unseen build_tower plans
#           40/40 right vs 22/40 for the stop-18 adapter; the same settings with --seed 1 gave 32/40, so
#           expect that cell to vary from fit to fit (reports/dev-stop21)
#        (A third DAgger round on insert, kit_assembly and build_tower only, 1,000 steps from i, then the adapter
#        refitted, lost ground: 51.0 % vs 59.2 % on the same 500 episodes, stack 90 -> 58 %; reports/dev-stop15.)
#        s. (RECIPE=fast only) one stage from scratch with the object token on the clean store, S_STEPS steps,
#           in place of a-e, with 16 image tokens (`--patch-size 32`) and 4 plan examples per step
#           (`--plan-batch-size 4`): about 1.05 s/step here instead of ~1.8; then f with one DAgger round
#           (DAGGER_EPISODES=40 per task, learner s, appended to a copy of the clean store; F_STEPS=1200), h, and i
#           with ADAPTER_STEPS=800. Measured at stop 22 on a 2-core AVX2 machine (reports/dev-stop22): s 36.1 min,
#           DAgger collection 12.3, f 22.3, h ~2, i 14.7, check ~1: 90.1 min, plus 6.9 min collection (stop 19's
#           measurement of the same command; the run reused that store): ~97 min in all. Its checkpoint fails
#           at the agent's default 2 actions per chunk (it keeps predicting the gripper close 2 ticks ahead, so a
#           replan every 2 ticks never reaches it) and succeeds on 89.4 % of the 500 evaluation episodes with
#           `keystone eval --actions-per-chunk 4` (keystone-base: 96.2 %), short of the issue's goals on insert
#           seen (78 %), kit_assembly seen (72 %) and unseen-template tower plans (74 % exact). Stop 19's version
#           (1,500 steps at patch 16, no DAgger, the stop-18 adapter, 75 min) failed all 100 episodes of seeds 0-9
#           at 2 actions per chunk and succeeds on 87 at 4 (insert and kit 20/20 each; build_tower 7/20: motion
#           on seen, plans on unseen). Stop 23 ran STAGES=shi with S_FLAGS="--plan-batch-size 4" (patch 16, 2,000
#           steps, no DAgger; ADAPTER_STEPS=1000; MIX=DATA): s 64.4 min, h 1.6, i ~22, check 0.7: 89.6 min after
#           collection, ~96.5 min in all, and worse: 72 of 100 on seeds 0-9 at 4 actions per chunk, insert 0 of 20
#           (it holds the peg in the hole and never lets go: the release stays 4+ ticks ahead, even at 8 actions
#           per chunk), build_tower 13 of 20 (reports/dev-stop23). The fast recipe's final checkpoint records 4
#           actions per chunk (ACTIONS, passed to stage i as `keystone train --actions-per-chunk`), so `keystone
#           eval` and the demo run it right without a flag. Since stop 24 the oracle grasps and releases on
#           what the state shows (arrived or stalled), not after a count of still ticks. Stop 24 ran this recipe
#           on that oracle with S_STEPS=1700 DAGGER_EPISODES=32 F_STEPS=1000 ADAPTER_STEPS=900: 92 of 100 on seeds
#           0-9 at 4 actions per chunk (insert 16/20, unseen tower plans 7/10 exact), 33 at 2, and ~102 min on a
#           VM running 10-40 % slower than stop 22's; the DAgger collection alone took 14 min, dropping the 37 of
#           160 learner episodes that ran out of steps (reports/dev-stop24).
#   3. evaluate closed-loop in sim and (SHIP=1) copy the checkpoint into vla/pretrained/keystone-base/.
# Measured wall time on this machine: collection ~8 min (495 episodes, 2 workers), training ~1.05 s/step with
# 2 threads: stages a-e are 12,000 steps, ~3.5 h; stage f ~45 min (clean 5 min + DAgger 9.5 min collection,
# 30 min training), stage g ~32 min (10 min + 21 min), stage h ~2 min, stage i ~30 min: ~5.3 h in all. That is over the 90-minute target. RECIPE=fast
# (stage s above) is the measured alternative: ~97 min, 89.4 % of 500 episodes at 4 actions per chunk (stop 22).
# Stage d of the shipped lineage ran with an earlier object-token layout (both objects relative to the current
# gripper pose); this script trains every stage with the current layout, so it reproduces the recipe, not the bits.
# RECIPE=fast: STAGES=sfhi, EPISODES=60, S_STEPS=2000, S_FLAGS="--patch-size 32 --plan-batch-size 4",
# PLAN_BATCH=4, DAGGER_EPISODES=40, F_STEPS=1200, ADAPTER_STEPS=800, ACTIONS=4, DATA data/fast.zarr, MIX
# data/fast-mix.zarr (DATA itself when STAGES has no f or g), OUT runs/keystone-fast.
# Knobs (environment): EPISODES (per task, default 100), STEPS (stage e, default 2500), STAGES (default abcdefghi),
# DAGGER_EPISODES (per task and kind, default 60), F_STEPS / G_STEPS (stages f / g, default 2000 / 1500), MIX (the
# store of stages f and g, default data/mix.zarr),
# OUT (default runs/keystone-base), DATA (default data/sim.zarr), WORKERS (collection processes, default 2),
# THREADS (torch threads, default 2), S_STEPS / S_FLAGS (stage s), PLAN_BATCH (plan examples per training step,
# default 16), ADAPTER_STEPS (stage i, default 1600), ACTIONS (actions per chunk stage i records in the checkpoint,
# default: none recorded, i.e. 2), CHECK_ACTIONS (actions per chunk in the final check, default: the recorded count),
# SHIP=1 to copy the checkpoint files (not the optimizer state) into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${RECIPE:-lineage}"
case "$RECIPE" in
    lineage) ;;
    fast) STAGES="${STAGES:-sfhi}"; EPISODES="${EPISODES:-60}"; DATA="${DATA:-data/fast.zarr}"
          OUT="${OUT:-runs/keystone-fast}"; DAGGER_EPISODES="${DAGGER_EPISODES:-40}"
          F_STEPS="${F_STEPS:-1200}"; ADAPTER_STEPS="${ADAPTER_STEPS:-800}"
          S_FLAGS="${S_FLAGS:---patch-size 32 --plan-batch-size 4}"; PLAN_BATCH="${PLAN_BATCH:-4}"
          ACTIONS="${ACTIONS:-4}"
          case "$STAGES" in  # without a DAgger stage, the yaw head and the plan adapter fit on the clean store
              *f*|*g*) MIX="${MIX:-data/fast-mix.zarr}" ;;
              *) MIX="${MIX:-$DATA}" ;;
          esac ;;
    *) echo "RECIPE=${RECIPE}: use lineage (stages a-i, ~5 h) or fast (stages s, f, h, i)" >&2; exit 2 ;;
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
