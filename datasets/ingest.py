"""rosbag2 (sqlite3 and mcap) -> episodes, through a topic map and multi-rate alignment.

`ingest_bag` reads the mapped topics with `rosbags` (message definitions from the bag when it stores them,
otherwise from the named typestore, e.g. ``ros2_humble``), turns messages into vectors and frames, aligns the
streams onto the map's control rate (`keystone_vla.datasets.align`), and writes one episode per run of
fresh ticks. Everything the map asks for is checked before any episode is written: a missing topic, an
unsupported message type or image encoding, joints that cannot be found, or an unreadable (e.g. truncated)
bag each raise an error naming the problem.

Supported: sensor_msgs/Image (rgb8, bgr8, mono8), sensor_msgs/CompressedImage (jpeg, png),
sensor_msgs/JointState, trajectory_msgs/JointTrajectory (first point), geometry_msgs/Twist(Stamped),
std_msgs/Float{32,64}MultiArray, std_msgs/String (instruction).

This module must never modify the bag, and never writes a partial ingest into the store: the map and the
bag are validated first, and episodes are published one by one, atomically.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from keystone_vla.datasets.align import align_streams
from keystone_vla.datasets.store import EpisodeStore
from keystone_vla.datasets.topic_map import StreamMap, TopicMap
from keystone_vla.errors import ConfigError, DatasetError, unknown_choice
from keystone_vla.types import Plan

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
VECTOR_TYPES = ("sensor_msgs/msg/JointState", "trajectory_msgs/msg/JointTrajectory", "geometry_msgs/msg/Twist",
                "geometry_msgs/msg/TwistStamped", "std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray")
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
DEFAULT_SPACE = {"sensor_msgs/msg/JointState": "joint_{field}", "trajectory_msgs/msg/JointTrajectory": "joint_{field}",
                 "geometry_msgs/msg/Twist": "ee_twist", "geometry_msgs/msg/TwistStamped": "ee_twist"}


def get_typestore_by_name(name: str) -> Any:
    """`ros2_humble` -> the rosbags typestore (used for bags that store no message definitions)."""
    from rosbags.typesys import Stores, get_typestore

    valid = {s.name.lower(): s for s in Stores}
    if name.lower() not in valid:
        raise unknown_choice("typestore", name, valid)
    return get_typestore(valid[name.lower()])


def _stamp_ns(msg: Any, log_ns: int, mode: str) -> int:
    header = getattr(msg, "header", None)
    if mode == "header" and header is not None:
        ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if ns > 0:
            return ns
    return int(log_ns)


def _vector_reader(role: str, spec: StreamMap, msgtype: str) -> Callable[[Any], np.ndarray | None]:
    """A function message -> float32 vector of the selected joints/entries (None: message carries none)."""
    where = f"{role} ({spec.topic}, {msgtype.split('/')[-1]})"
    twist = msgtype.startswith("geometry_msgs/msg/Twist")
    if (twist or "MultiArray" in msgtype) and spec.joints is not None:
        raise ConfigError(f"{where} has no joint names; select entries with joint_indices instead of joints")

    def entries(msg: Any) -> tuple[np.ndarray, list[str]]:
        if msgtype == "sensor_msgs/msg/JointState":
            return np.asarray(getattr(msg, spec.field), np.float64), list(msg.name)
        if msgtype == "trajectory_msgs/msg/JointTrajectory":
            if not msg.points:
                return np.zeros(0), []
            attr = {"position": "positions", "velocity": "velocities", "effort": "effort"}[spec.field]
            return np.asarray(getattr(msg.points[0], attr), np.float64), list(msg.joint_names)
        if twist:
            t = msg.twist if msgtype.endswith("TwistStamped") else msg
            return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z]), []
        return np.asarray(msg.data, np.float64), []

    def read(msg: Any) -> np.ndarray | None:
        values, names = entries(msg)
        if values.size == 0:
            return None
        if spec.joints is not None:
            if not names:
                raise DatasetError(f"{where} publishes no joint names (name is empty); map joints by index with "
                                   f"joint_indices: [0, 1, ...] ({values.size} entries)")
            missing = [j for j in spec.joints if j not in names]
            if missing:
                raise DatasetError(f"{where}: joints {missing} not in the message; it has {names}")
            return values[[names.index(j) for j in spec.joints]].astype(np.float32)
        if spec.joint_indices is not None:
            bad = [i for i in spec.joint_indices if not -values.size <= i < values.size]
            if bad:
                raise DatasetError(f"{where}: joint_indices {bad} out of range for {values.size} entries")
            return values[list(spec.joint_indices)].astype(np.float32)
        return values.astype(np.float32)

    return read


def decode_image(msg: Any, msgtype: str, where: str) -> np.ndarray:
    """sensor_msgs Image / CompressedImage -> uint8 [H, W, 3] RGB."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        fmt = str(msg.format).lower()
        if not any(k in fmt for k in ("jpeg", "jpg", "png")):
            raise DatasetError(f"{where}: unsupported compressed image format {msg.format!r}; supported: jpeg, png")
        bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{where}: a {msg.format!r} image could not be decoded (corrupt data)")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    enc = str(msg.encoding)
    if enc not in RAW_ENCODINGS:
        raise DatasetError(f"{where}: unsupported image encoding {enc!r}; supported: {', '.join(RAW_ENCODINGS)}")
    ch, h, w, step = RAW_ENCODINGS[enc], int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if step < w * ch or data.size < h * step:
        raise DatasetError(f"{where}: image data has {data.size} bytes, {h}x{w} {enc} with step {step} needs {h * step}")
    img = data[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, ::-1] if enc == "bgr8" else img)


def _read_bag(bag: Path, tm: TopicMap, typestore: str, progress: bool) -> dict[str, Any]:
    """Read every mapped topic: {topic: {"type", "stamps" int64 [n], "values" list}} (images kept undecoded)."""
    from rosbags.highlevel import AnyReader
    from tqdm import tqdm

    ts = get_typestore_by_name(typestore)
    if not bag.exists():
        raise DatasetError(f"bag {bag} does not exist")
    wanted = tm.topics()
    try:
        with AnyReader([bag], default_typestore=ts) as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
            for field_name, topic in wanted.items():
                if topic not in present:
                    raise DatasetError(f"topic {topic!r} (mapped to {field_name}) is not in bag {bag.name}; "
                                       f"topics in the bag: {', '.join(sorted(present))}")
            readers: dict[str, Callable[[Any], Any]] = {}
            for field_name, topic in wanted.items():
                msgtype = present[topic]
                if field_name.startswith("images/"):
                    if msgtype not in IMAGE_TYPES:
                        raise DatasetError(f"{field_name} topic {topic} is {msgtype}; expected one of {IMAGE_TYPES}")
                    readers[topic] = lambda m: m
                elif field_name == "instruction":
                    if msgtype != "std_msgs/msg/String":
                        raise DatasetError(f"instruction topic {topic} is {msgtype}; expected std_msgs/msg/String")
                    readers[topic] = lambda m: str(m.data)
                else:
                    if msgtype not in VECTOR_TYPES:
                        raise DatasetError(f"{field_name} topic {topic} is {msgtype}; supported: {', '.join(VECTOR_TYPES)}")
                    readers[topic] = _vector_reader(field_name, getattr(tm, field_name), msgtype)
            conns = [c for c in reader.connections if c.topic in readers]
            out = {t: {"type": present[t], "stamps": [], "values": []} for t in readers}
            total = sum(c.msgcount for c in conns)
            bar = tqdm(total=total, desc=f"read {bag.name}", unit="msg", file=sys.stderr, disable=not progress)
            for conn, log_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                value = readers[conn.topic](msg)
                bar.update(1)
                if value is None:
                    continue
                out[conn.topic]["stamps"].append(_stamp_ns(msg, log_ns, tm.stamp))
                out[conn.topic]["values"].append(value)
            bar.close()
            storage = "mcap" if any(p.suffix == ".mcap" for p in ([bag] if bag.is_file() else bag.iterdir())) else "sqlite3"
    except (DatasetError, ConfigError):
        raise
    except Exception as exc:  # rosbags / sqlite3 / mcap raise many types for damaged files
        raise DatasetError(f"cannot read bag {bag}: {type(exc).__name__}: {exc} (the file may be truncated or "
                           "corrupt; check it with `ros2 bag info`)") from exc
    for data in out.values():
        order = np.argsort(np.asarray(data["stamps"], np.int64), kind="stable")
        data["stamps"] = np.asarray(data["stamps"], np.int64)[order]
        data["values"] = [data["values"][i] for i in order]
    out["_storage"] = storage
    return out


def ingest_bag(bag: str | Path, topic_map: TopicMap, out: str | Path, typestore: str = "ros2_humble",
               instruction: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Ingest one bag into the store at `out` (created or appended); returns a summary dict."""
    bag = Path(bag)
    tm = topic_map
    if not (instruction or tm.instruction_text or tm.instruction_topic):
        raise ConfigError("no instruction for these episodes: add `instruction: {topic: ...}` or "
                          "`instruction: {text: ...}` to the topic map, or pass --instruction")
    streams = _read_bag(bag, tm, typestore, progress)
    storage = streams.pop("_storage")
    fields = {"state": tm.state.topic, "action": tm.action.topic,
              **{f"images/{c}": m.topic for c, m in tm.cameras.items()}}
    ages = {"state": tm.state.max_age_s, "action": tm.action.max_age_s,
            **{f"images/{c}": m.max_age_s for c, m in tm.cameras.items()}}
    for f, topic in fields.items():
        if len(streams[topic]["stamps"]) == 0:
            raise DatasetError(f"topic {topic} ({f}) has no usable messages in {bag.name}")
    al = align_streams({f: streams[t]["stamps"] for f, t in fields.items()}, ages, tm.rate_hz, tm.min_segment_s)
    action_type = streams[tm.action.topic]["type"]
    space = tm.action.space or DEFAULT_SPACE.get(action_type, "vector").format(field=tm.action.field)
    from tqdm import tqdm

    store = EpisodeStore(out)
    written = []
    bar = tqdm(total=al.kept, desc="write episodes", unit="frame", file=sys.stderr, disable=not progress)
    decoded: dict[tuple[str, int], np.ndarray] = {}
    for seg_no, (a, b) in enumerate(al.segments):
        ticks = al.ticks_ns[a:b]
        text = instruction or _instruction_at(streams.get(tm.instruction_topic), int(ticks[0])) or tm.instruction_text or ""
        attrs = {"task": tm.task, "instruction": text, "plan": Plan(text, ()).to_json(), "split": tm.split,
                 "success": True, "seed": None, "robot": tm.robot, "fps": tm.rate_hz, "action_space": space,
                 "source": {"kind": "bag", "bag": str(bag.resolve()), "storage": storage, "typestore": typestore,
                            "topics": tm.topics(), "segment": seg_no, "start_time_ns": int(ticks[0]),
                            "stamp": tm.stamp}}
        with store.begin_episode(attrs) as w:
            for k in range(a, b):
                images = {}
                for cam, cm in tm.cameras.items():
                    i = int(al.index[f"images/{cam}"][k])
                    if (cam, i) not in decoded:
                        msg = streams[cm.topic]["values"][i]
                        img = decode_image(msg, streams[cm.topic]["type"], f"camera {cam!r} ({cm.topic})")
                        if cm.resize is not None and img.shape[:2] != cm.resize:
                            img = cv2.resize(img, (cm.resize[1], cm.resize[0]), interpolation=cv2.INTER_AREA)
                        decoded = {key: v for key, v in decoded.items() if key[0] != cam}  # keep one per camera
                        decoded[(cam, i)] = img
                    images[cam] = decoded[(cam, i)]
                state = streams[tm.state.topic]["values"][int(al.index["state"][k])]
                action = streams[tm.action.topic]["values"][int(al.index["action"][k])]
                w.add_step(images, state, action, (int(al.ticks_ns[k]) - int(ticks[0])) / 1e9)
                bar.update(1)
            written.append(w.commit())
    bar.close()
    return {
        "bag": str(bag), "out": str(out), "episodes_written": len(written), "episodes": written,
        "ticks": al.ticks, "frames_kept": al.kept, "frames_dropped": al.dropped, "stale": al.stale,
        "short_segment_frames": al.short_segment_ticks, "rate_hz": tm.rate_hz,
        "messages": {t: len(s["stamps"]) for t, s in streams.items()},
    }


def _instruction_at(stream: dict[str, Any] | None, t_ns: int) -> str | None:
    """The latest instruction published at or before t_ns (or the first one, if all come later)."""
    if not stream or len(stream["stamps"]) == 0:
        return None
    i = int(np.searchsorted(stream["stamps"], t_ns, side="right")) - 1
    return stream["values"][max(i, 0)]
