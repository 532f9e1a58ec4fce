"""Robot specs: one record per supported arm, the only place arm-specific numbers live.

The simulator, the safety shield and the ROS nodes read arms through `RobotSpec`; a policy never knows which
arm it drives (actions are end-effector deltas, turned into joint targets by IK on the spec's URDF).

Keystone works in one cell frame: the table top is the plane z = 0 and the default arm's (Panda's) base sits at
the origin, so for it the cell frame is the robot base frame. Other arms are mounted at `base_position` in that
frame (their base frames are parallel to it, translated only). Actions, `ee_pose` and object poses are cell-frame.

This module must stay free of heavy imports (no pybullet): ROS nodes and the CLI read it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from keystone_vla.errors import unknown_choice


@dataclass(frozen=True)
class GripperSpec:
    """A parallel gripper driven by two prismatic finger joints (opening per finger, metres)."""

    joint_names: tuple[str, ...]
    open_position: float
    closed_position: float
    max_force: float


@dataclass(frozen=True)
class RobotSpec:
    """Kinematic and limit data for one arm.

    `urdf` is either a path relative to `pybullet_data` or ``keystone:<name>`` for a URDF that the simulator
    composes (an arm from pybullet_data with Keystone's parallel gripper attached).
    """

    name: str
    urdf: str
    joint_names: tuple[str, ...]
    lower_limits: tuple[float, ...]
    upper_limits: tuple[float, ...]
    velocity_limits: tuple[float, ...]  # rad/s
    home: tuple[float, ...]
    ee_link: str
    gripper: GripperSpec
    max_joint_force: tuple[float, ...]
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # axis-aligned box the tool centre point must stay in (base frame, metres): (xmin, ymin, zmin), (xmax, ymax, zmax)
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.2, -0.45, 0.0), (0.8, 0.45, 0.55))

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def state_dim(self) -> int:
        """Length of `Observation.state`: arm joints + one gripper opening value."""
        return self.dof + 1


PANDA = RobotSpec(
    name="panda",
    urdf="franka_panda/panda.urdf",
    joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
    lower_limits=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    upper_limits=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    velocity_limits=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
    home=(0.0, -0.4, 0.0, -2.4, 0.0, 2.0, 0.785),
    ee_link="panda_grasptarget",
    gripper=GripperSpec(("panda_finger_joint1", "panda_finger_joint2"), 0.04, 0.0, 40.0),
    max_joint_force=(87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0),
)

IIWA = RobotSpec(
    name="iiwa",
    urdf="keystone:iiwa_gripper",
    joint_names=tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8)),
    lower_limits=(-2.967, -2.094, -2.967, -2.094, -2.967, -2.094, -3.054),
    upper_limits=(2.967, 2.094, 2.967, 2.094, 2.967, 2.094, 3.054),
    velocity_limits=(1.48, 1.48, 1.75, 1.31, 2.27, 2.36, 2.36),
    home=(0.0, 0.45, 0.0, -1.6, 0.0, 1.1, 0.0),
    ee_link="keystone_grasptarget",
    gripper=GripperSpec(("keystone_finger_left_joint", "keystone_finger_right_joint"), 0.04, 0.0, 40.0),
    max_joint_force=(300.0,) * 7,
    # the iiwa cannot fold tightly enough (joint 4 is limited to +-120 deg) to reach the near edge of the table
    # pointing down, so it is mounted 10 cm further back than the Panda
    base_position=(-0.10, 0.0, 0.0),
)

ROBOTS: dict[str, RobotSpec] = {r.name: r for r in (PANDA, IIWA)}


def get_robot(name: str) -> RobotSpec:
    """Look up an arm by name; an unknown name raises an error listing the valid arms."""
    try:
        return ROBOTS[name]
    except KeyError:
        raise unknown_choice("arm", name, ROBOTS) from None


_IIWA_GRIPPER = """
  <!-- Keystone parallel gripper (box primitives) on the iiwa flange. Fingers slide along the grasp frame's y axis;
       the grasp frame's z axis is the approach direction, as for the Panda's panda_grasptarget. -->
  <joint name="keystone_gripper_mount" type="fixed">
    <parent link="lbr_iiwa_link_7"/><child link="keystone_palm"/><origin xyz="0 0 0.060" rpy="0 0 0"/>
  </joint>
  <link name="keystone_palm">
    <inertial><mass value="0.4"/><origin xyz="0 0 0"/><inertia ixx="0.0005" iyy="0.0005" izz="0.0005" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><geometry><box size="0.04 0.13 0.03"/></geometry><material name="keystone_grey"><color rgba="0.35 0.35 0.38 1"/></material></visual>
    <collision><geometry><box size="0.04 0.13 0.03"/></geometry></collision>
  </link>
  <joint name="keystone_finger_left_joint" type="prismatic">
    <parent link="keystone_palm"/><child link="keystone_finger_left"/><origin xyz="0 0 0.015" rpy="0 0 0"/>
    <axis xyz="0 1 0"/><limit lower="0" upper="0.04" effort="40" velocity="0.2"/>
  </joint>
  <link name="keystone_finger_left">
    <inertial><mass value="0.05"/><origin xyz="0 0.006 0.03"/><inertia ixx="1e-5" iyy="1e-5" izz="1e-5" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><origin xyz="0 0.006 0.03"/><geometry><box size="0.02 0.012 0.06"/></geometry><material name="keystone_dark"><color rgba="0.15 0.15 0.15 1"/></material></visual>
    <collision><origin xyz="0 0.006 0.03"/><geometry><box size="0.02 0.012 0.06"/></geometry></collision>
  </link>
  <joint name="keystone_finger_right_joint" type="prismatic">
    <parent link="keystone_palm"/><child link="keystone_finger_right"/><origin xyz="0 0 0.015" rpy="0 0 0"/>
    <axis xyz="0 -1 0"/><limit lower="0" upper="0.04" effort="40" velocity="0.2"/>
  </joint>
  <link name="keystone_finger_right">
    <inertial><mass value="0.05"/><origin xyz="0 -0.006 0.03"/><inertia ixx="1e-5" iyy="1e-5" izz="1e-5" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><origin xyz="0 -0.006 0.03"/><geometry><box size="0.02 0.012 0.06"/></geometry><material name="keystone_dark"/></visual>
    <collision><origin xyz="0 -0.006 0.03"/><geometry><box size="0.02 0.012 0.06"/></geometry></collision>
  </link>
  <joint name="keystone_grasptarget_joint" type="fixed">
    <parent link="keystone_palm"/><child link="keystone_grasptarget"/><origin xyz="0 0 0.070" rpy="0 0 0"/>
  </joint>
  <link name="keystone_grasptarget"><inertial><mass value="0.001"/><inertia ixx="1e-7" iyy="1e-7" izz="1e-7" ixy="0" ixz="0" iyz="0"/></inertial></link>
"""


def resolve_urdf(spec: RobotSpec) -> str:
    """Absolute path of the arm's URDF; composes ``keystone:`` URDFs once into a cache folder.

    Only imports `pybullet_data` (a path, no simulator), so the safety shield and ROS nodes can use it too.
    """
    import hashlib
    import os
    import tempfile

    import pybullet_data

    data = pybullet_data.getDataPath()
    if not spec.urdf.startswith("keystone:"):
        return os.path.join(data, spec.urdf)
    name = spec.urdf.split(":", 1)[1]
    if name != "iiwa_gripper":
        raise unknown_choice("composed URDF", name, ["iiwa_gripper"])
    src_path = os.path.join(data, "kuka_iiwa", "model.urdf")
    with open(src_path, encoding="utf-8") as fh:
        text = fh.read()
    mesh_dir = os.path.join(data, "kuka_iiwa", "meshes")
    text = text.replace('filename="meshes/', f'filename="{mesh_dir}/')
    text = text.replace("</robot>", _IIWA_GRIPPER + "</robot>")
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    out_dir = os.path.join(tempfile.gettempdir(), "keystone_vla_urdf")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{name}_{digest}.urdf")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    return out
