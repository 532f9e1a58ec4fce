"""Inference API of a trained VLA: `VLAPolicy.from_pretrained(folder)` -> `plan(...)` and `predict_chunk(...)`.

- `plan(instruction, observation=None, objects=None) -> Plan`: grammar-constrained plan over `objects` (the
  scene's object ids; default: the object ids seen in training), each step with its imperative text.
- `predict_chunk(observation, step_instruction, step_objects=None) -> ActionChunk`: H x 7 actions in physical
  units (the normalisation saved in the checkpoint is undone here), plus the step-done probability.
  `step_objects` (float [21], see `keystone_vla.vla.object_token`) is required by models with an object token:
  the current step's first and last object as the step began (from the scene graph, or the simulator's poses in
  sim), then the end-effector pose when the step began.

Every input is validated before the model runs (empty/overlong instruction, missing camera, wrong image
shape or dtype, wrong state size, NaN/inf state) and rejected with a `ModelError` saying what to fix. Runs
under `torch.inference_mode`, optionally in bfloat16, after a one-time warm-up forward pass. This module must
never train, write files, or reach the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from keystone_vla.errors import GroundingError, ModelError
from keystone_vla.perception.language import unnamed_parts
from keystone_vla.types import ActionChunk, Observation, Plan, PlanStep
from keystone_vla.vla.checkpoint import VLABundle, load_pretrained
from keystone_vla.vla.object_token import STEP_OBJECTS_DIM, object_features
from keystone_vla.vla.plan_adapter import lm_vocab_size, plan_prompt_ids, plan_text_features
from keystone_vla.vla.plan_grammar import PlanGrammar, render_step_text
from keystone_vla.vocab import MOVABLE_KINDS, object_kind

MAX_INSTRUCTION_CHARS = 300

if TYPE_CHECKING:
    from keystone_vla.text_encoder import MiniLMEncoder


class VLAPolicy:
    """A loaded checkpoint ready for batch-1 inference on CPU (or wherever its tensors live)."""

    def __init__(self, bundle: VLABundle, *, warmup: bool = True, text_encoder: object | None = None) -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.tokenizer = bundle.tokenizer
        self.normalizer = bundle.normalizer
        self.config = bundle.model.config
        self.text_encoder = text_encoder
        if self.config.text_encoder == "minilm" and text_encoder is None:
            from keystone_vla.text_encoder import MiniLMEncoder

            self.text_encoder = MiniLMEncoder()
        self.last_plan_confidence = 1.0  # target confidence of the latest plan (see `plan`)
        #: the plan adapter's MiniLM (the action prefix's own when it has one, else loaded on first use)
        self._plan_text_encoder = self.text_encoder
        if warmup and self.config.plan_adapter_rank:
            self._plan_encoder()  # a one-time cost, paid here rather than at the first plan
        if warmup:
            self._warmup()

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, bf16: bool = False, warmup: bool = True) -> VLAPolicy:
        """Load a checkpoint folder (see `keystone_vla.vla.checkpoint`); `bf16` runs the model in bfloat16."""
        return cls(load_pretrained(folder, torch.bfloat16 if bf16 else torch.float32), warmup=warmup)

    # ---- validation ----------------------------------------------------------------------------------------
    def check_instruction(self, text: object, what: str = "instruction") -> str:
        if not isinstance(text, str):
            raise ModelError(f"{what} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ModelError(f"{what} is empty; say what the robot should do, e.g. 'put the red block in the bowl'")
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise ModelError(f"{what} is too long ({len(text)} characters, at most {MAX_INSTRUCTION_CHARS}); shorten it")
        n_words = len(self.tokenizer.encode(text))
        limit = self.config.max_instruction_tokens - 1
        if n_words > limit:
            raise ModelError(f"{what} is too long ({n_words} words, the model takes at most {limit}); shorten it")
        if n_words == 0:
            raise ModelError(f"{what} {text!r} has no words; use letters or digits")
        return text

    def check_observation(self, obs: Observation) -> None:
        if not isinstance(obs, Observation):
            raise ModelError(f"observation must be a keystone_vla.types.Observation, got {type(obs).__name__}")
        size = self.config.image_size
        for cam in self.config.cameras:
            if cam not in obs.images:
                raise ModelError(f"observation lacks camera {cam!r}; the model was trained on cameras "
                                 f"{list(self.config.cameras)} (has {sorted(obs.images)})")
            img = obs.images[cam]
            if img.dtype != np.uint8:
                raise ModelError(f"images[{cam!r}] must be uint8, got {img.dtype}")
            if img.shape != (size, size, 3):
                raise ModelError(f"images[{cam!r}] has shape {list(img.shape)}, the model takes [{size}, {size}, 3]; "
                                 "render or resize the camera to the checkpoint's image size")
        state = np.asarray(obs.state)
        if state.shape != (self.config.state_dim,):
            raise ModelError(f"state has shape {list(state.shape)}, the model takes [{self.config.state_dim}] "
                             "(arm joint positions + gripper opening)")
        if not np.isfinite(state).all():
            raise ModelError(f"state contains NaN or inf at index {int(np.flatnonzero(~np.isfinite(state))[0])}; "
                             "check the joint-state source")

    # ---- inference ---------------------------------------------------------------------------------------
    def check_step_objects(self, step_objects: object, obs: Observation) -> np.ndarray | None:
        if not self.config.object_token:
            return None
        if step_objects is None:
            raise ModelError("this model conditions on the step's objects: pass step_objects (float [21]: the "
                             "step's first and last object, x y z yaw size_xyz each, from the scene graph, then "
                             "the end-effector pose when the step began)")
        so = np.asarray(step_objects, dtype=np.float32)
        if so.shape != (STEP_OBJECTS_DIM,):
            raise ModelError(f"step_objects has shape {list(so.shape)}, the model takes [{STEP_OBJECTS_DIM}]")
        if obs.ee_pose is None or np.asarray(obs.ee_pose).shape != (7,):
            raise ModelError("this model needs observation.ee_pose [7] (xyz + quaternion xyzw) for its object token")
        return object_features(so, np.asarray(obs.ee_pose, np.float32), self.config.object_frame)

    def _tensors(self, obs: Observation, step_instruction: str,
                 features: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        device = self.model.camera_embed.device
        images = np.stack([obs.images[c] for c in self.config.cameras])[None]
        state = self.normalizer.normalize_state(obs.state)[None]
        ids = self.tokenizer.encode_fixed(step_instruction, self.config.max_instruction_tokens)
        out = {
            "images": torch.from_numpy(np.ascontiguousarray(images)).to(device),
            "state": torch.from_numpy(state).to(device),
            "instruction_ids": torch.tensor([ids], device=device),
        }
        if self.text_encoder is not None:
            out["text_features"] = self.text_encoder.encode([step_instruction]).to(device)
        if features is not None:
            out["object_features"] = torch.from_numpy(features[None]).to(device)
        return out

    def predict_chunk(self, observation: Observation, step_instruction: str | None = None,
                      step_objects: np.ndarray | None = None) -> ActionChunk:
        """H x 7 actions (physical units: m, rad, gripper 0..1 closed) for the current plan step."""
        text = self.check_instruction(step_instruction if step_instruction is not None else observation.instruction,
                                      "step_instruction")
        self.check_observation(observation)
        features = self.check_step_objects(step_objects, observation)
        with torch.inference_mode():
            t = self._tensors(observation, text, features)
            prefix = self.model.action_prefix(t["images"], t["instruction_ids"], t["state"], t.get("text_features"),
                                              t.get("object_features"))
            if self.config.action_head == "chunk":
                z, done = self.model.chunk_forward(prefix, t.get("object_features"), t["state"])
            else:
                z, done = self.model.token_generate(prefix)
        actions = self.normalizer.unnormalize_action(z[0].float().cpu().numpy())
        actions[:, -1] = np.clip(actions[:, -1], 0.0, 1.0)
        return ActionChunk(actions.astype(np.float32), step_done=float(torch.sigmoid(done[0].float())))

    def plan(self, instruction: str, observation: Observation | None = None,
             objects: Sequence[str] | None = None, min_confidence: float = 0.0, expect: Plan | None = None) -> Plan:
        """Grammar-constrained plan for `instruction` over `objects` (default: objects seen in training). When the
        instruction names colours, parts of other colours are not offered to the decoder
        (`keystone_vla.perception.language.unnamed_parts`): measured without this filter on unseen build_tower
        episodes, 6 of 39 wrong plans moved a block the instruction never named.

        `min_confidence` (0 = off; `VLAAgent` passes its `AgentConfig.min_plan_confidence`): the plan is refused with a
        `GroundingError` when the decoder gave a chosen target token (where a part goes) less probability than
        this among the tokens allowed there; `last_plan_confidence` keeps the value of the latest plan. Measured
        on a keystone-base checkpoint: the lowest of 410 right plans was 0.93, wrong plans had a median of
        0.88.

        `expect` (a plan over `objects`, e.g. the grounded reading of the instruction) changes only the speed, never
        the result: one forward pass over the prompt followed by `expect`'s tokens checks whether greedy decoding
        would write exactly those tokens (at every step the expected token is the most probable of those the
        grammar allows); if so that is the plan, with the same confidence, without decoding token by token. If
        not, the plan is decoded as without `expect`."""
        if not 0.0 <= min_confidence < 1.0:
            raise ModelError(f"min_confidence must be in [0, 1) (0 = off), got {min_confidence}")
        self.check_instruction(instruction)
        if observation is not None:
            self.check_observation(observation)
        objs = list(objects) if objects is not None else list(self.config.known_objects)
        if objects is not None and any(not isinstance(o, str) or not o.strip() for o in objs):
            raise ModelError(f"objects must be non-empty object id strings, got {objs!r}")
        # the plan may move only parts the instruction names, when it names parts by colour (the prompt still
        # lists the whole scene, as in training)
        unnamed = unnamed_parts(instruction, objs)
        if unnamed and all(o in unnamed for o in objs if object_kind(o) in MOVABLE_KINDS):
            raise GroundingError(f"{instruction!r} names parts by colour, but no part of a named colour is in the "
                                 f"scene (parts seen: {', '.join(sorted(unnamed))}); name one of those")
        grammar = PlanGrammar(self.tokenizer, [o for o in objs if o not in unnamed], self.config.max_plan_steps)
        prompt = plan_prompt_ids(self.tokenizer, instruction, objs, self.config.plan_adapter_words,
                                 lm_vocab_size(self.config))
        features = None
        if self.config.plan_adapter_rank:
            features = plan_text_features(self._plan_encoder(), self.tokenizer, [instruction],
                                          self.config.plan_word_features)
        verified = None
        if expect is not None:  # on a grammar of its own: a failed check leaves `grammar` untouched for decoding
            fresh = PlanGrammar(self.tokenizer, [o for o in objs if o not in unnamed], self.config.max_plan_steps)
            verified = self._verify_plan(prompt, fresh, features, expect)
        if verified is not None:
            grammar = verified
        else:
            grammar = self.model.generate_plan(prompt, grammar, self.config.max_plan_tokens, features)
        steps = tuple(PlanStep(s, a, render_step_text(s, a, self.config.step_templates)) for s, a in grammar.steps)
        self.last_plan_confidence = grammar.target_confidence
        if grammar.target_confidence < min_confidence:
            calls = "; ".join(s.call for s in steps)
            raise GroundingError(
                f"I am not sure where the parts go for {instruction!r} (plan confidence "
                f"{grammar.target_confidence:.2f}, below {min_confidence:.2f}; my best guess was {calls}), so I will "
                "not move; say it step by step, e.g. 'build a tower: red at the bottom, then blue, then green' or "
                "'put the red block on the blue block'")
        return Plan(instruction, steps)

    def _verify_plan(self, prompt: list[int], grammar: PlanGrammar, features: torch.Tensor | None,
                     expect: Plan) -> PlanGrammar | None:
        """`grammar` advanced through `expect` when greedy constrained decoding would produce exactly it (one
        teacher-forced forward pass), else None. See `plan`."""
        try:
            target = self.tokenizer.plan_target([(s.skill, tuple(s.args)) for s in expect.steps])
        except Exception:  # a skill or object the tokenizer cannot write: decode instead
            return None
        if not expect.steps or len(target) > self.config.max_plan_tokens:
            return None
        model = self.model
        device = model.camera_embed.device
        ids = torch.tensor([prompt], device=device)
        cont = torch.tensor([target[:-1]], device=device)
        with torch.inference_mode():
            if self.config.plan_adapter_rank:
                if features is None:
                    return None
                with model.plan_adapter.active():
                    head = model.plan_adapter.prompt_embeds(model.lm, ids, features.to(device))
                    tail = model.lm.get_input_embeddings()(cont).to(head.dtype)
                    logits = model.lm(inputs_embeds=torch.cat([head, tail], 1), use_cache=False).logits[0]
                first = head.shape[1] - 1
            else:
                logits = model.lm(input_ids=torch.cat([ids, cont], 1), use_cache=False).logits[0]
                first = ids.shape[1] - 1
        for k, tok in enumerate(target):
            allowed = grammar.allowed()
            if tok not in allowed:
                return None
            row = logits[first + k].float()[allowed]
            best = int(torch.argmax(row))
            if allowed[best] != tok:
                return None
            if len(allowed) > 1 and grammar.in_target:
                grammar.target_confidence = min(grammar.target_confidence, float(torch.softmax(row, -1)[best]))
            grammar.advance(tok)
            if grammar.done:
                return grammar if k == len(target) - 1 else None
        return None

    def _plan_encoder(self) -> MiniLMEncoder:
        """The plan adapter's MiniLM, loaded on first use."""
        if self._plan_text_encoder is None:
            from keystone_vla.text_encoder import MiniLMEncoder

            self._plan_text_encoder = MiniLMEncoder()
        return self._plan_text_encoder

    def _warmup(self) -> None:
        size = self.config.image_size
        obs = Observation(images={c: np.zeros((size, size, 3), np.uint8) for c in self.config.cameras},
                          state=np.zeros(self.config.state_dim, np.float32),
                          ee_pose=np.array([0, 0, 0, 1, 0, 0, 0], np.float32))
        word = next(iter(self.tokenizer.tokenizer.get_vocab()))
        self.predict_chunk(obs, "pick" if self.tokenizer.tokenizer.token_to_id("pick") is not None else word,
                           np.zeros(STEP_OBJECTS_DIM, np.float32) if self.config.object_token else None)
