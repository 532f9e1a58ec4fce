"""(Runs at commit eb9823c, where `plan_adapter_loss` had `length_groups`; reverted after this measurement.)
Side by side in one process: one plan-adapter training step (batch 32, relation phrasing 0.5, word features)
with the batch run as one padded block vs in 2 length groups (`plan_adapter_loss(length_groups=...)`). Same
batches for both, alternating, median of N steps each. Run from the repository root:

    python reports/dev-stop23/adapter_step_cost.py CKPT STORE [N]
"""
import random
import statistics
import sys
import time

import torch

from keystone_vla.datasets.store import EpisodeStore
from keystone_vla.sim.tasks import TASKS
from keystone_vla.vla.checkpoint import load_pretrained, transfer_weights
from keystone_vla.vla.data import plan_examples_from_store
from keystone_vla.vla.plan_adapter import ORDER_WORDS, PlanAdapterCollator, plan_adapter_loss
from keystone_vla.vla.text_encoder import MiniLMEncoder
from keystone_vla.vocab import COLOURS, SEEN_SHAPES, UNSEEN_SHAPES


def main(ckpt: str, store: str, n: int = 15) -> None:
    torch.set_num_threads(2)
    warm = load_pretrained(ckpt)
    words = tuple(sorted(w for w in ORDER_WORDS if warm.tokenizer.token_id(w) == warm.tokenizer.unk_id))
    config = warm.config.replace(plan_adapter_rank=8, plan_adapter_words=words, plan_word_features=True)
    model = transfer_weights(warm.model.state_dict(), config, ckpt, fresh=("plan_adapter.",))
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.plan_adapter.parameters())
    for p in params:
        p.requires_grad_(True)
    model.eval()
    examples = plan_examples_from_store(EpisodeStore(store, mode="r"))
    held = tuple(t.text for task in TASKS.values() for t in task.templates if t.split == "unseen")
    coll = PlanAdapterCollator(config, warm.tokenizer, MiniLMEncoder(), examples, tuple(COLOURS), seed=0,
                               shapes=SEEN_SHAPES + UNSEEN_SHAPES, relation_phrasing=0.5, held_out=held)
    rng = random.Random(0)
    times: dict[int, list[float]] = {1: [], 2: []}
    for i in range(2 * n + 2):
        batch = coll.plan_batch([rng.choice(examples) for _ in range(32)])
        for groups in ((1, 2) if i % 2 else (2, 1)):
            t = time.perf_counter()
            loss = plan_adapter_loss(model, batch, length_groups=groups)
            loss.backward()
            dt = time.perf_counter() - t
            for p in params:
                p.grad = None
            if i >= 2:  # warm-up
                times[groups].append(dt)
    med = {g: statistics.median(v) for g, v in times.items()}
    print(f"loss+backward per step, median of {len(times[1])}: one block {med[1]:.3f} s, 2 length groups "
          f"{med[2]:.3f} s, ratio {med[1] / med[2]:.2f}x")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], *(int(x) for x in a[2:3]))
