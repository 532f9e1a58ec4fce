"""The object token: what the current plan step acts on, as numbers the action head can use directly.

A plan step names its objects (``pick(red_block)``, ``place_on(red_block, blue_block)``); grounding has already
resolved them against the scene. Their poses enter the prefix as one token, so the action head learns motion
*relative to the named object* instead of having to bind a colour word to pixels (an image-only model was
measured failing exactly there: right motion, wrong-coloured block). Same idea as object-centric
policies that condition on detected object poses.

Input, per sample: ``step_objects`` float32 [21] = the step's first and last object (the same one for
``pick``), each x, y, z, yaw, size x/y/z in the robot base frame, taken when the step began (sim rollouts record
these 14 numbers as ``step_objects``; on a robot the scene graph gives them), then the end-effector pose when the
step began (xyz + quaternion xyzw; stores derive it from ``ee_pose`` and ``plan_step``), and ``ee_pose`` [7] now.
Output: `N_FEATURES` = 24 numbers, 12 per object: its position minus the gripper's (in 10 cm units), the yaw
difference to the gripper as sin/cos of 1x, 2x and 4x the angle (so 2- and 4-fold symmetric parts look the
same at every equivalent grasp), and its size (in 5 cm units). The last object (the one to reach) is taken
relative to the gripper *now*; the first one relative to the gripper *when the step began*, which for a
placing step is where the held part sits in the hand (a peg grasped 1 cm off-centre must be inserted 1 cm
off-centre: measured, the insert task failed that way when this offset was missing).

``frame="held_part"`` (a model config's ``object_frame``) measures a placing step's target from the *held part*
instead of the gripper: the part's pose in the hand when the step began (x/y offset, turned with the gripper
since, and yaw) is added to the gripper's pose now. Driving that reference onto the target puts the part, not
the gripper, over the slot whatever the grasp offset, and the target's yaw features then say directly how far
the part must turn (in the gripper frame a part grasped a half turn round flips them). The x/y offsets of clean
demonstrations are about zero, so there both frames agree on position. A step is "placing" when its two objects differ and the
first sat within `MAX_HELD_OFFSET` of the gripper when it began (a part actually in the hand); picks and parts
not held keep the gripper frame.

This module must never import the simulator.
"""

from __future__ import annotations

import numpy as np

from keystone_vla.errors import ModelError

N_FEATURES = 24
RECORDED_DIM = 14  # what rollouts record per tick: the two objects
STEP_OBJECTS_DIM = 21  # what the model takes: the two objects + the end-effector pose when the step began
POS_SCALE = 0.1
SIZE_SCALE = 0.05
FRAMES = ("gripper", "held_part")
#: a placing step's first object counts as held when it began this close to the gripper (x/y and z, metres)
MAX_HELD_OFFSET = (0.04, 0.06)


def gripper_yaw(quat: np.ndarray) -> np.ndarray:
    """Yaw of top-down gripper orientations (xyzw quaternions [..., 4]): the direction of the gripper's x axis."""
    x, y, z, w = np.moveaxis(np.asarray(quat, np.float64), -1, 0)
    r00 = 1 - 2 * (y * y + z * z)
    r10 = 2 * (x * y + w * z)
    return np.arctan2(r10, r00)


def with_step_start(objects: np.ndarray, ee_at_start: np.ndarray) -> np.ndarray:
    """[..., 14] recorded objects + [..., 7] end-effector pose when the step began -> [..., 21] step_objects."""
    return np.concatenate([np.asarray(objects, np.float32), np.asarray(ee_at_start, np.float32)], axis=-1)


def object_features(step_objects: np.ndarray, ee_pose: np.ndarray, frame: str = "gripper") -> np.ndarray:
    """[..., 21] step objects + [..., 7] end-effector poses now -> float32 [..., 24] (see module docstring)."""
    so = np.asarray(step_objects, np.float64)
    ee = np.asarray(ee_pose, np.float64)
    if so.shape[-1] != STEP_OBJECTS_DIM or ee.shape[-1] != 7 or so.shape[:-1] != ee.shape[:-1]:
        raise ModelError(f"step_objects must be [..., {STEP_OBJECTS_DIM}] and ee_pose [..., 7] with the same "
                         f"leading shape, got {list(so.shape)} and {list(ee.shape)}")
    if not (np.isfinite(so).all() and np.isfinite(ee).all()):
        raise ModelError("step_objects or ee_pose contains NaN or inf; check the scene graph and the arm's pose")
    if frame not in FRAMES:
        raise ModelError(f"unknown object frame {frame!r}; valid: {', '.join(FRAMES)}")
    start = so[..., 14:21]
    start_yaw = gripper_yaw(start[..., 3:7])
    now_pos, now_yaw = ee[..., :3].copy(), gripper_yaw(ee[..., 3:7])
    if frame == "held_part":
        offset, yaw_err, held = held_offset(so)
        turn = now_yaw - start_yaw
        c, s = np.cos(turn), np.sin(turn)
        now_pos[..., 0] += held * (c * offset[..., 0] - s * offset[..., 1])
        now_pos[..., 1] += held * (s * offset[..., 0] + c * offset[..., 1])
        now_yaw = now_yaw + held * yaw_err
    parts = []
    for k, ref_pos, ref_yaw in ((0, start[..., :3], start_yaw), (7, now_pos, now_yaw)):
        obj = so[..., k:k + 7]
        parts.append((obj[..., :3] - ref_pos) / POS_SCALE)
        d = obj[..., 3] - ref_yaw
        parts.append(np.stack([f(m * d) for m in (1, 2, 4) for f in (np.sin, np.cos)], axis=-1))
        parts.append(obj[..., 4:7] / SIZE_SCALE)
    return np.concatenate(parts, axis=-1).astype(np.float32)


def held_offset(step_objects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[..., 21] step objects -> (x/y offset of the first object from the gripper when the step began [..., 2],
    its yaw relative to the gripper's then, wrapped to [-pi, pi) [...], 1.0 where it is a held part being placed
    else 0.0 [...])."""
    so = np.asarray(step_objects, np.float64)
    first, last, start = so[..., 0:7], so[..., 7:14], so[..., 14:21]
    offset = first[..., :2] - start[..., :2]
    dz = first[..., 2] - start[..., 2]
    yaw_err = np.mod(first[..., 3] - gripper_yaw(start[..., 3:7]) + np.pi, 2 * np.pi) - np.pi
    placing = np.any(first != last, axis=-1)
    near = (np.linalg.norm(offset, axis=-1) < MAX_HELD_OFFSET[0]) & (np.abs(dz) < MAX_HELD_OFFSET[1])
    return offset, yaw_err, (placing & near).astype(np.float64)


def jitter(step_objects: np.ndarray, rng: np.random.Generator, pos_std: float = 0.002,
           yaw_std: float = 0.03) -> np.ndarray:
    """Training augmentation: perturb object positions and yaws by about the scene graph's measured error
    (0.86 mm mean, 3.15 mm max position error), so the policy does not rely on exact poses. A step whose two
    objects are one (a pick) gets one perturbation, so it stays recognisably a pick."""
    out = np.array(step_objects, np.float32, copy=True)
    same = np.all(out[..., 0:7] == out[..., 7:14], axis=-1)  # a pick: one object, so one pose error
    for k in (0, 7):
        out[..., k:k + 3] += rng.normal(0.0, pos_std, out[..., k:k + 3].shape)
        out[..., k + 3] += rng.normal(0.0, yaw_std, out[..., k + 3].shape)
    out[..., 7:11] = np.where(same[..., None], out[..., 0:4], out[..., 7:11])
    return out
