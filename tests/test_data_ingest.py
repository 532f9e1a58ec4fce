"""rosbag2 ingestion: generated multi-rate bags (mcap + sqlite3) aligned exactly, bad inputs, the real recording."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from keystone_vla.datasets import EpisodeStore
from keystone_vla.datasets.align import align_streams
from keystone_vla.datasets.ingest import ingest_bag
from keystone_vla.datasets.topic_map import load_topic_map, parse_topic_map
from keystone_vla.errors import ConfigError, DatasetError

TS = get_typestore(Stores.ROS2_HUMBLE)
T0 = 1_700_000_000 * 10**9
H, W = 12, 16
GAP = (2.0e9, 2.6e9)  # joint states are silent in this window (relative ns)
JOINTS = ["j1", "j2", "j3"]


def _header(t_ns: int):
    Time = TS.types["builtin_interfaces/msg/Time"]
    return TS.types["std_msgs/msg/Header"](stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="base")


def _times(rng: np.random.Generator, start: float, hz: float, end: float, jitter: float) -> list[int]:
    n = int((end - start) * hz)
    t = start * 1e9 + np.arange(n) * 1e9 / hz + rng.uniform(-jitter, jitter, n) * 1e9
    return [int(v) for v in np.sort(t)]


def code_image(i: int) -> np.ndarray:
    """A frame whose pixels name the message that carried it."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = i % 256, i // 256, 77
    img[0, 0] = (1, 2, 3)  # channel order check
    return img


def make_bag(path: Path, storage: StoragePlugin, encoding: str = "rgb8") -> dict[str, list[int]]:
    """Cameras at 30 Hz (raw) and 15 Hz (png), joint states at 200 Hz with a gap, trajectory commands at 50 Hz."""
    rng = np.random.default_rng(0)
    stamps = {
        "front": _times(rng, 0.02, 30, 5.0, 0.004),
        "wrist": _times(rng, 0.10, 15, 5.0, 0.006),
        "state": [t for t in _times(rng, 0.0, 200, 5.0, 0.0005) if not GAP[0] <= t < GAP[1]],
        "action": _times(rng, 0.05, 50, 4.8, 0.002),
    }
    Image, CImage = TS.types["sensor_msgs/msg/Image"], TS.types["sensor_msgs/msg/CompressedImage"]
    JS, JT = TS.types["sensor_msgs/msg/JointState"], TS.types["trajectory_msgs/msg/JointTrajectory"]
    JTP, Dur = TS.types["trajectory_msgs/msg/JointTrajectoryPoint"], TS.types["builtin_interfaces/msg/Duration"]
    String = TS.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=storage) as w:
        conns = {
            "front": w.add_connection("/cam/front/image_raw", Image.__msgtype__, typestore=TS),
            "wrist": w.add_connection("/cam/wrist/compressed", CImage.__msgtype__, typestore=TS),
            "state": w.add_connection("/joint_states", JS.__msgtype__, typestore=TS),
            "action": w.add_connection("/arm/command", JT.__msgtype__, typestore=TS),
            "instr": w.add_connection("/instruction", String.__msgtype__, typestore=TS),
        }
        events = [(t, k, i) for k, ts in stamps.items() for i, t in enumerate(ts)] + [(int(0.03e9), "instr", 0)]
        for t, kind, i in sorted(events):
            stamp = T0 + t
            if kind == "front":
                img = code_image(i)
                data = {"rgb8": img, "bgr8": img[:, :, ::-1]}.get(encoding, img)
                msg = Image(header=_header(stamp), height=H, width=W, encoding=encoding, is_bigendian=0,
                            step=W * 3, data=np.ascontiguousarray(data).reshape(-1))
            elif kind == "wrist":
                png = cv2.imencode(".png", code_image(i)[:, :, ::-1])[1].reshape(-1)
                msg = CImage(header=_header(stamp), format="png", data=png)
            elif kind == "state":  # names in a different order than the map asks for
                msg = JS(header=_header(stamp), name=["j3", "j1", "j2"], position=np.array([3 * i + 2.0, 3 * i, 3 * i + 1.0]),
                         velocity=np.zeros(3), effort=np.zeros(0))
            elif kind == "action":
                pt = JTP(positions=np.array([-i, -i - 0.5, -i - 0.25], float), velocities=np.zeros(0),
                         accelerations=np.zeros(0), effort=np.zeros(0), time_from_start=Dur(sec=0, nanosec=0))
                msg = JT(header=_header(stamp), joint_names=JOINTS, points=[pt])
            else:
                msg = String(data="stack the red block on the blue block")
            # log time = stamp + 1 ms transport latency
            w.write(conns[kind], stamp + 1_000_000, TS.serialize_cdr(msg, msg.__msgtype__))
    return stamps


MAP = {
    "rate_hz": 10, "max_age_s": 0.1, "min_segment_s": 0.5, "task": "stack", "robot": "test_arm",
    "cameras": {"front": {"topic": "/cam/front/image_raw", "max_age_s": 0.04},
                "wrist": {"topic": "/cam/wrist/compressed", "max_age_s": 0.08}},
    "state": {"topic": "/joint_states", "joints": JOINTS, "max_age_s": 0.01},
    "action": {"topic": "/arm/command", "joints": JOINTS, "max_age_s": 0.03},
    "instruction": {"topic": "/instruction"},
}


def expected_alignment(stamps: dict[str, list[int]], ages: dict[str, float], rate: float, min_seg: float):
    """Brute-force reference: for every tick, scan each stream for its latest message at or before it."""
    period = round(1e9 / rate)
    start, end = max(v[0] for v in stamps.values()), min(v[-1] for v in stamps.values())
    frames, stale = [], dict.fromkeys(stamps, 0)
    t = start
    while t <= end:
        pick, ok = {}, True
        for k, ts in stamps.items():
            i = max(j for j, s in enumerate(ts) if s <= t)
            pick[k] = i
            if t - ts[i] > round(ages[k] * 1e9):
                stale[k] += 1
                ok = False
        frames.append((t, pick if ok else None))
        t += period
    runs, cur = [], []
    for f in frames:
        if f[1] is None:
            runs.append(cur)
            cur = []
        else:
            cur.append(f)
    runs.append(cur)
    min_ticks = int(np.ceil(min_seg * rate - 1e-9))
    return [r for r in runs if len(r) >= max(min_ticks, 1)], stale, len(frames)


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_generated_bag_aligned_exactly(tmp_path: Path, storage: StoragePlugin) -> None:
    stamps = make_bag(tmp_path / "bag", storage)
    summary = ingest_bag(tmp_path / "bag", parse_topic_map(MAP), tmp_path / "out.zarr", progress=False)
    ages = {"front": 0.04, "wrist": 0.08, "state": 0.01, "action": 0.03}
    runs, stale, ticks = expected_alignment(stamps, ages, 10, 0.5)
    assert summary["ticks"] == ticks and summary["stale"] == {
        "images/front": stale["front"], "images/wrist": stale["wrist"], "state": stale["state"], "action": stale["action"]}
    assert stale["state"] >= 5 and len(runs) >= 2  # the gap split the recording
    assert summary["episodes_written"] == len(runs)
    assert summary["frames_kept"] == sum(len(r) for r in runs)
    assert summary["frames_dropped"] == ticks - summary["frames_kept"]
    store = EpisodeStore(tmp_path / "out.zarr", mode="r")
    for name, run in zip(summary["episodes"], runs):
        ep = store.episode(name)
        assert ep.length == len(run) and ep.attrs["instruction"] == "stack the red block on the blue block"
        assert ep.attrs["source"]["kind"] == "bag" and ep.attrs["action_space"] == "joint_position"
        assert np.allclose(ep.array("timestamp"), [(t - run[0][0]) / 1e9 for t, _ in run], atol=1e-12)
        picks = [p for _, p in run]
        assert np.array_equal(ep.array("state"), [[3 * p["state"], 3 * p["state"] + 1, 3 * p["state"] + 2] for p in picks])
        assert np.array_equal(ep.array("action"), np.float32([[-p["action"], -p["action"] - 0.5, -p["action"] - 0.25]
                                                              for p in picks]))
        assert np.array_equal(ep.images("front"), np.stack([code_image(p["front"]) for p in picks]))
        assert np.array_equal(ep.images("wrist"), np.stack([code_image(p["wrist"]) for p in picks]))


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_raw_encodings(tmp_path: Path, encoding: str) -> None:
    make_bag(tmp_path / "bag", StoragePlugin.MCAP, encoding=encoding)
    summary = ingest_bag(tmp_path / "bag", parse_topic_map(MAP), tmp_path / "out.zarr", progress=False)
    frame = EpisodeStore(tmp_path / "out.zarr", mode="r").episode(summary["episodes"][0]).images("front")[0]
    if encoding == "bgr8":
        assert tuple(frame[0, 0]) == (1, 2, 3) and frame[5, 5, 2] == 77
    else:  # mono8 data is the first byte of each rgb8 pixel triple, replicated to 3 channels
        assert frame.shape == (H, W, 3) and np.array_equal(frame[..., 0], frame[..., 2])


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    make_bag(tmp_path / "bag", StoragePlugin.MCAP)
    out = tmp_path / "out.zarr"
    with pytest.raises(DatasetError, match=r"'/cam/top' \(mapped to images/top\) is not in bag"):
        ingest_bag(tmp_path / "bag", parse_topic_map({**MAP, "cameras": {"top": {"topic": "/cam/top"}}}), out)
    with pytest.raises(ConfigError, match="unknown key 'stat'"):
        parse_topic_map({**MAP, "stat": {"topic": "/joint_states"}})
    with pytest.raises(ConfigError, match="unknown key 'joint_names' in topic map: state"):
        parse_topic_map({**MAP, "state": {"topic": "/joint_states", "joint_names": JOINTS}})
    bad_joint = {**MAP, "state": {"topic": "/joint_states", "joints": ["j1", "elbow"]}}
    with pytest.raises(DatasetError, match=r"joints \['elbow'\] not in the message"):
        ingest_bag(tmp_path / "bag", parse_topic_map(bad_joint), out, progress=False)
    no_instruction = {k: v for k, v in MAP.items() if k != "instruction"}
    with pytest.raises(ConfigError, match="no instruction"):
        ingest_bag(tmp_path / "bag", parse_topic_map(no_instruction), out)
    with pytest.raises(ConfigError, match="unknown typestore 'ros3'"):
        ingest_bag(tmp_path / "bag", parse_topic_map(MAP), out, typestore="ros3")
    make_bag(tmp_path / "bayer", StoragePlugin.MCAP, encoding="bayer_rggb8")
    with pytest.raises(DatasetError, match="unsupported image encoding 'bayer_rggb8'"):
        ingest_bag(tmp_path / "bayer", parse_topic_map(MAP), out, progress=False)
    assert not out.exists() or len(EpisodeStore(out, mode="r")) == 0  # nothing half-written


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_truncated_bag(tmp_path: Path, storage: StoragePlugin) -> None:
    make_bag(tmp_path / "bag", storage)
    data = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot read bag .*truncated or corrupt"):
        ingest_bag(tmp_path / "bag", parse_topic_map(MAP), tmp_path / "out.zarr", progress=False)


def test_topic_map_file(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("rate_hz: 5\nstate: {topic: /a, joint_indices: [0, 2]}\naction: {topic: /b}\n")
    tm = load_topic_map(tmp_path / "m.yaml")
    assert tm.rate_hz == 5 and tm.state.joint_indices == (0, 2) and tm.action.field == "position"
    (tmp_path / "bad.yaml").write_text("state: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_topic_map(tmp_path / "bad.yaml")


def test_align_streams_edges() -> None:
    al = align_streams({"a": np.array([0, 100, 200, 300]), "b": np.array([50, 250])}, {"a": 0.9e-7, "b": 0.9e-7}, 1e7)
    # ticks 50, 150, 250 ns, limit 90 ns: b is 100 ns old at 150 -> stale; a is 50 ns old at every tick
    assert al.ticks_ns.tolist() == [50, 150, 250] and al.keep.tolist() == [True, False, True]
    assert al.stale == {"a": 0, "b": 1} and al.segments == [(0, 1), (2, 3)]
    with pytest.raises(DatasetError, match="never overlap"):
        align_streams({"a": np.array([0, 10]), "b": np.array([20, 30])}, {"a": 1.0, "b": 1.0}, 10)


REAL_BAG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bags" / "ats_static_inverror"


@pytest.mark.skipif(not REAL_BAG.is_dir(), reason=f"real recording not found at {REAL_BAG} (GPL data kept in ../shared)")
def test_real_bag(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    tm = parse_topic_map({"rate_hz": 10, "max_age_s": 0.1, "min_segment_s": 1.0, "task": "tactile_servo",
                          "robot": "ats_3dof",
                          "state": {"topic": "/servo/out/state", "joint_indices": [0, 1, 2]},
                          "action": {"topic": "/servo/in/references/joint_references", "joints": ["q1", "q2", "q3"]}})
    summary = ingest_bag(REAL_BAG, tm, tmp_path / "real.zarr", instruction="hold contact with the surface",
                         progress=False)
    # independent reference from the raw messages (header stamps)
    stamps: dict[str, list[int]] = {"state": [], "action": []}
    values: dict[str, list] = {"state": [], "action": []}
    with AnyReader([REAL_BAG], default_typestore=TS) as reader:
        topics = {"/servo/out/state": "state", "/servo/in/references/joint_references": "action"}
        for conn, _t, raw in reader.messages([c for c in reader.connections if c.topic in topics]):
            msg = reader.deserialize(raw, conn.msgtype)
            stamps[topics[conn.topic]].append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
            values[topics[conn.topic]].append(np.float32(msg.position[:3]))
    assert len(stamps["state"]) == 2151 and len(stamps["action"]) == 756  # counts from the bag's README
    runs, stale, ticks = expected_alignment(stamps, {"state": 0.1, "action": 0.1}, 10, 1.0)
    assert summary["ticks"] == ticks and summary["stale"] == stale
    assert stale["state"] == 0 and stale["action"] > 200  # the references pause; the 25 Hz state never does
    assert summary["episodes_written"] == len(runs) == 1
    assert summary["frames_kept"] == len(runs[0]) and 290 <= len(runs[0]) <= 310  # ~30 s of active references
    assert summary["frames_dropped"] == ticks - len(runs[0])
    ep = EpisodeStore(tmp_path / "real.zarr", mode="r").episode(summary["episodes"][0])
    ts = ep.array("timestamp")
    assert ep.length == len(runs[0]) and ts[0] == 0.0 and np.all(np.diff(ts) > 0)
    assert np.allclose(np.diff(ts), 0.1, atol=1e-9)
    assert np.array_equal(ep.array("state"), np.stack([values["state"][p["state"]] for _, p in runs[0]]))
    assert np.array_equal(ep.array("action"), np.stack([values["action"][p["action"]] for _, p in runs[0]]))
    assert Path(ep.attrs["source"]["bag"]).resolve() == REAL_BAG.resolve() and ep.attrs["robot"] == "ats_3dof" and ep.cameras == []
    assert not (tmp_path / "real.zarr" / REAL_BAG.name).exists()
    shutil.rmtree(tmp_path / "real.zarr")
