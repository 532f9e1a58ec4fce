"""The object token: what the current plan step acts on, as numbers the action head can use directly.

A plan step names its objects (``pick(red_block)``, ``place_on(red_block, blue_block)``); grounding has already
resolved them against the scene. Their poses enter the prefix as one token, so the action head learns motion
*relative to the named object* instead of having to bind a colour word to pixels (the failure of the
image-only model in reports/dev-stop9: right motion, wrong-coloured block). Same idea as object-centric
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


def gripper_yaw(quat: np.ndarray) -> np.ndarray:
    """Yaw of top-down gripper orientations (xyzw quaternions [..., 4]): the direction of the gripper's x axis."""
    x, y, z, w = np.moveaxis(np.asarray(quat, np.float64), -1, 0)
    r00 = 1 - 2 * (y * y + z * z)
    r10 = 2 * (x * y + w * z)
    return np.arctan2(r10, r00)


def with_step_start(objects: np.ndarray, ee_at_start: np.ndarray) -> np.ndarray:
    """[..., 14] recorded objects + [..., 7] end-effector pose when the step began -> [..., 21] step_objects."""
    return np.concatenate([np.asarray(objects, np.float32), np.asarray(ee_at_start, np.float32)], axis=-1)


def object_features(step_objects: np.ndarray, ee_pose: np.ndarray) -> np.ndarray:
    """[..., 21] step objects + [..., 7] end-effector poses now -> float32 [..., 24] (see module docstring)."""
    so = np.asarray(step_objects, np.float64)
    ee = np.asarray(ee_pose, np.float64)
    if so.shape[-1] != STEP_OBJECTS_DIM or ee.shape[-1] != 7 or so.shape[:-1] != ee.shape[:-1]:
        raise ModelError(f"step_objects must be [..., {STEP_OBJECTS_DIM}] and ee_pose [..., 7] with the same "
                         f"leading shape, got {list(so.shape)} and {list(ee.shape)}")
    if not (np.isfinite(so).all() and np.isfinite(ee).all()):
        raise ModelError("step_objects or ee_pose contains NaN or inf; check the scene graph and the arm's pose")
    start = so[..., 14:21]
    parts = []
    for k, ref in ((0, start), (7, ee)):
        obj = so[..., k:k + 7]
        parts.append((obj[..., :3] - ref[..., :3]) / POS_SCALE)
        d = obj[..., 3] - gripper_yaw(ref[..., 3:7])
        parts.append(np.stack([f(m * d) for m in (1, 2, 4) for f in (np.sin, np.cos)], axis=-1))
        parts.append(obj[..., 4:7] / SIZE_SCALE)
    return np.concatenate(parts, axis=-1).astype(np.float32)


def jitter(step_objects: np.ndarray, rng: np.random.Generator, pos_std: float = 0.002,
           yaw_std: float = 0.03) -> np.ndarray:
    """Training augmentation: perturb object positions and yaws by about the scene graph's measured error
    (0.86 mm mean, 3.15 mm max position error), so the policy does not rely on exact poses."""
    out = np.array(step_objects, np.float32, copy=True)
    for k in (0, 7):
        out[..., k:k + 3] += rng.normal(0.0, pos_std, out[..., k:k + 3].shape)
        out[..., k + 3] += rng.normal(0.0, yaw_std, out[..., k + 3].shape)
    return out
