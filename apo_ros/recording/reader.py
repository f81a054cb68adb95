"""Reading episode bags back: bag directory -> Episode of steps with exact observation linkage.

Each executed action (`action/executed`) becomes one Step whose observation is the one whose
header stamp equals the action's header stamp (the stamp of the observation it was computed
from). Linkage is never by arrival order. Only the connections an episode needs are read, and
each message is decoded once.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_ros.errors import UserError
from apo_ros.observation import Observation
from apo_ros.recording import cdr, chunks, schema
from apo_ros.recording import messages as M
from apo_ros.recording.episode import OUTCOMES, Episode, Step
from apo_ros.recording.images import ImageProblem

REPAIR_HINT = "salvage it with `apo-ros bags repair {path}`"


class BagError(UserError):
    """A bag that cannot be read as an episode. The message names the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# Every MCAP file starts and ends with these bytes; a writer that was killed never wrote the end.
MCAP_MAGIC = b"\x89MCAP0\r\n"


def mcap_problem(file: str | os.PathLike) -> str | None:
    """Why the file at `file` is not a complete MCAP file, or None when both magics are there."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(len(MCAP_MAGIC))
        f.seek(max(size - len(MCAP_MAGIC), 0))
        tail = f.read(len(MCAP_MAGIC))
    if size == 0:
        return "an empty .mcap file (its writer stopped before writing anything: killed?)"
    if head != MCAP_MAGIC:
        return "not an MCAP file (it does not start with the MCAP magic bytes)"
    if size < 2 * len(MCAP_MAGIC) or tail != MCAP_MAGIC:
        return "a truncated or unfinished MCAP file (no footer)"
    return None


def resolve_bag(path: str | os.PathLike) -> Path:
    """The bag directory for `path` (a bag directory or the .mcap file inside one), or BagError."""
    p = Path(path)
    if not p.exists():
        raise BagError(str(path), "does not exist")
    if p.is_file():
        if p.suffix != ".mcap":
            raise BagError(str(path), "not a bag (a file; expected a rosbag2 directory with metadata.yaml)")
        if (p.parent / "metadata.yaml").is_file():
            return p.parent
        problem = mcap_problem(p)
        if problem and problem.startswith("not an MCAP"):
            raise BagError(str(path), problem)
        raise BagError(str(path), f"{problem or 'an MCAP file'} with no metadata.yaml beside it: its "
                       "writer did not close it (killed?); " + REPAIR_HINT.format(path=path))
    if not (p / "metadata.yaml").is_file():
        mcaps = sorted(p.glob("*.mcap"))
        if not mcaps:
            raise BagError(str(path), "not a bag (no metadata.yaml)")
        problems = [mcap_problem(f) for f in mcaps]
        if all(pr and pr.startswith("not an MCAP") for pr in problems):
            raise BagError(str(path), f"not a bag: {mcaps[0].name} is {problems[0]}")
        raise BagError(str(path), "truncated bag: no metadata.yaml, its writer did not close it "
                       "(killed or crashed?); " + REPAIR_HINT.format(path=path))
    return p


@dataclass
class FoundBags:
    """What `find_bags` found: bag directories to read, and what it skipped with why."""

    bags: list[str] = field(default_factory=list)  # directories holding metadata.yaml, deduplicated
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not a bag)


def find_bags(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> FoundBags:
    """Expand PATH arguments into bag directories. A PATH is a bag directory, the .mcap file inside
    one, or a folder searched recursively. Every directory holding metadata.yaml or .mcap files
    counts as one bag (its subfolders are not searched); the ones that cannot be read as a bag
    (a killed writer's folder with no metadata.yaml, a file that is not MCAP, a PATH that does not
    exist or holds no bag) are returned in `skipped` with the reason, never dropped silently.
    Bags under one PATH come in sorted order; a bag reached twice is listed once."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = FoundBags()
    seen: set[str] = set()

    def add(candidate: str | os.PathLike) -> None:
        try:
            bag = str(resolve_bag(candidate))
        except BagError as err:
            found.skipped.append((err.path, err.problem))
            return
        key = os.path.realpath(bag)
        if key not in seen:
            seen.add(key)
            found.bags.append(bag)

    for path in paths:
        p = Path(path)
        if not p.exists():
            found.skipped.append((str(path), "does not exist"))
        elif p.is_file() or (p / "metadata.yaml").is_file():
            add(p)
        else:
            candidates = []
            for root, dirs, files in os.walk(p):
                if "metadata.yaml" in files or any(f.endswith(".mcap") for f in files):
                    candidates.append(root)
                    dirs[:] = []  # a bag's subfolders are not separate bags
            if not candidates:
                found.skipped.append((str(path), "no bags found (no directory with metadata.yaml)"))
            for root in sorted(candidates):
                add(root)
    return found


def _open_reader(bag: Path):
    from rosbags.rosbag2 import Reader

    for mcap in sorted(bag.glob("*.mcap")):
        problem = mcap_problem(mcap)
        if problem is not None:
            hint = "" if problem.startswith("not an MCAP") else "; " + REPAIR_HINT.format(path=bag)
            raise BagError(str(bag), f"{mcap.name} is {problem}{hint}")
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as err:  # rosbags raises ReaderError, FileNotFoundError, KeyError-derived, ...
        text = str(err)
        if "magic" in text.lower() or "footer" in text.lower() or "summary" in text.lower():
            raise BagError(str(bag), f"truncated or unfinished MCAP file ({text}); "
                           + REPAIR_HINT.format(path=bag)) from None
        raise BagError(str(bag), f"unreadable bag ({type(err).__name__}: {text})") from None
    return reader


def read_custom_data(reader) -> dict[str, str]:
    """custom_data of an open rosbags Reader (metadata.yaml), as strings."""
    meta = getattr(getattr(reader, "storage", None), "metadata", None)
    return {str(k): str(v) for k, v in (getattr(meta, "custom", None) or {}).items()}


def _camera_topics(conns: dict, custom: dict, path: Path) -> dict[str, str]:
    """camera name -> topic, from custom_data `cameras` when present, else from the topics."""
    found: dict[str, str] = {}
    for topic in conns:
        if topic.startswith("camera/") and topic.endswith(("/image_raw", "/image_raw/compressed")):
            name = topic.split("/")[1]
            found.setdefault(name, topic)
    wanted = [c for c in (custom.get("cameras") or "").split(",") if c]
    for camera in wanted:
        if camera not in found:
            raise BagError(str(path), f"missing topic {schema.image_topic(camera)!r} (camera {camera!r} "
                           "listed in custom_data)")
    return {c: found[c] for c in (wanted or sorted(found))}


def _nearest(table: dict, keys: list[int] | None, stamp: int, tolerance_ns: int):
    """table[stamp] exactly, else (tolerance > 0) the latest entry at most tolerance_ns older."""
    value = table.get(stamp)
    if value is not None or tolerance_ns <= 0 or not keys:
        return value
    i = bisect.bisect_right(keys, stamp) - 1
    if i >= 0 and stamp - keys[i] <= tolerance_ns:
        return table[keys[i]]
    return None


def read_episode(path: str | os.PathLike, *, load_images: bool = True, tolerance_ns: int = 0) -> Episode:
    """Read one episode bag.

    load_images: decode camera images (False: observations carry no images; much faster).
    tolerance_ns: 0 = exact linkage (bags written by EpisodeWriter). For bags recorded from
        independent sensor streams, > 0 lets each observation part take the latest message whose
        header stamp is at most this much older than the action's observation stamp.
    """
    bag = resolve_bag(path)
    reader = _open_reader(bag)
    try:
        return _read(bag, reader, load_images, int(tolerance_ns))
    finally:
        reader.close()


def _read(bag: Path, reader, load_images: bool, tolerance_ns: int) -> Episode:
    store = M.get_typestore("humble")  # the standard types' layouts are the same in every distro
    conns = {c.topic: c for c in reader.connections}
    custom = read_custom_data(reader)

    for topic, msgtype in schema.FIXED_TOPIC_TYPES.items():
        spec_required = topic in (schema.ACTION_EXECUTED, schema.EE_POSE, schema.GRIPPER_STATE)
        conn = conns.get(topic)
        if conn is None:
            if spec_required:
                raise BagError(str(bag), f"missing topic {topic!r} (expected {msgtype})")
            continue
        if conn.msgtype != msgtype:
            raise BagError(str(bag), f"wrong message type on {topic!r}: {conn.msgtype}, expected {msgtype}")
    cameras = _camera_topics(conns, custom, bag)
    for topic in cameras.values():
        expected = schema.COMPRESSED_IMAGE if topic.endswith("/compressed") else schema.IMAGE
        if conns[topic].msgtype != expected:
            raise BagError(str(bag), f"wrong message type on {topic!r}: {conns[topic].msgtype}, "
                           f"expected {expected}")

    images: dict[str, dict[int, object]] = {c: {} for c in cameras}
    joints: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}
    poses: dict[int, np.ndarray] = {}
    object_poses: dict[int, np.ndarray] = {}
    grippers: dict[int, float] = {}
    # A chunked policy plans several actions from one observation, so one observation stamp can
    # carry several proposals: the k-th executed action of an observation pairs with its k-th
    # proposal (both are written in execution order).
    proposed: dict[int, list[np.ndarray]] = {}
    # the token ids of each proposal, paired the same way (k-th token message of an observation
    # = its k-th proposal's): (ids, token space)
    tokens: dict[int, list[tuple[np.ndarray, str]]] = {}
    human: dict[int, np.ndarray] = {}
    executed: list[tuple[int, int, np.ndarray, str, chunks.ChunkInfo | None]] = []
    instructions: list[tuple[int, str]] = []
    events: list[tuple[int, str]] = []
    info: dict = {}
    skipped_frames: dict[str, int] = {}  # images the stack does not take, by kind

    topic_camera = {t: c for c, t in cameras.items()}
    wanted = [schema.JOINT_STATES, schema.EE_POSE, schema.OBJECT_POSES, schema.GRIPPER_STATE,
              schema.ACTION_EXECUTED,
              schema.ACTION_PROPOSED, schema.ACTION_HUMAN, schema.ACTION_TOKENS, schema.INSTRUCTION,
              schema.EPISODE_EVENTS, schema.EPISODE_INFO]
    if load_images:
        wanted += list(cameras.values())
    selected = [conns[t] for t in wanted if t in conns]
    decode = store.deserialize_cdr  # the generic path, for anything the fast decoders refuse
    action_names = tuple(M.ACTION_NAMES)
    action_topics = (schema.ACTION_EXECUTED, schema.ACTION_PROPOSED, schema.ACTION_HUMAN)
    # per-topic [names bytes, names]: joint names are decoded once per topic, not per message
    name_cache: dict[str, list] = {t: [] for t in (*action_topics, schema.ACTION_TOKENS, schema.JOINT_STATES,
                                                   schema.GRIPPER_STATE)}

    try:
        for conn, bagtime, raw in reader.messages(connections=selected):
            topic = conn.topic
            if topic in action_topics:
                chunk_info = None
                try:
                    obs_stamp, source, names, action = cdr.joint_state(raw, name_cache[topic])
                    if names != action_names:
                        # chunk provenance appended after the action (recording/chunks.py)
                        if names[:len(action_names)] != action_names or len(action) != len(names):
                            raise cdr.CdrLayoutError("names")
                        chunk_info = chunks.split(names, action)
                        action = action[:len(action_names)]
                except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
                    msg = decode(raw, conn.msgtype)
                    action, source, obs_stamp = M.joint_state_to_action(msg)
                    chunk_info = chunks.split(*M.joint_state_arrays(msg))
                if topic == schema.ACTION_EXECUTED:
                    executed.append((bagtime, obs_stamp, action, source, chunk_info))
                elif topic == schema.ACTION_PROPOSED:
                    proposed.setdefault(obs_stamp, []).append(action)
                else:
                    human[obs_stamp] = action
            elif topic == schema.ACTION_TOKENS:
                try:
                    obs_stamp, space, _, values = cdr.joint_state(raw, name_cache[topic])
                    ids = np.rint(values).astype(np.int64)
                except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
                    ids, space, obs_stamp = M.joint_state_to_tokens(decode(raw, conn.msgtype))
                tokens.setdefault(obs_stamp, []).append((ids, space))
            elif topic in topic_camera:
                try:
                    stamp, img = _camera_frame(raw, conn.msgtype, decode)
                except ImageProblem as err:  # one bad frame costs its step, not the episode
                    skipped_frames[err.kind] = skipped_frames.get(err.kind, 0) + 1
                    continue
                images[topic_camera[topic]][stamp] = img
            elif topic == schema.JOINT_STATES or topic == schema.GRIPPER_STATE:
                try:
                    stamp, _, names, positions = cdr.joint_state(raw, name_cache[topic])
                except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
                    msg = decode(raw, conn.msgtype)
                    stamp, names = M.stamp_to_ns(msg.header), tuple(msg.name)
                    positions = np.asarray(msg.position, dtype=np.float64)
                if topic == schema.GRIPPER_STATE:
                    grippers[stamp] = float(positions[0]) if positions.shape[0] else float("nan")
                else:  # name_cache shares one names tuple across observations
                    joints[stamp] = (names, positions)
            elif topic == schema.EE_POSE:
                try:
                    stamp, pose = cdr.pose_stamped(raw)
                except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
                    msg = decode(raw, conn.msgtype)
                    stamp, pose = M.stamp_to_ns(msg.header), M.pose_stamped_to_array(msg)
                poses[stamp] = pose
            elif topic == schema.OBJECT_POSES:
                msg = decode(raw, conn.msgtype)
                object_poses[M.stamp_to_ns(msg.header)] = M.pose_array_to_array(msg)
            else:  # instruction, events, episode info: std_msgs/String
                try:
                    text = cdr.string(raw)
                except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
                    text = decode(raw, conn.msgtype).data
                if topic == schema.INSTRUCTION:
                    instructions.append((bagtime, text))
                elif topic == schema.EPISODE_EVENTS:
                    events.append((bagtime, text))
                elif topic == schema.EPISODE_INFO and not info:
                    try:
                        info = json.loads(text)
                    except ValueError:
                        info = {}
    except Exception as err:
        raise BagError(str(bag), f"corrupt data ({type(err).__name__}: {err})") from None

    for table in images.values():
        _drop_odd_shapes(table, skipped_frames)
    metadata = {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}
    metadata.update(custom)
    if skipped_frames:
        metadata["skipped_frames"] = json.dumps(skipped_frames, sort_keys=True)
    truncated = metadata.get("truncated", "false").lower() == "true"
    outcome = metadata.get("outcome", "unknown")
    if outcome not in OUTCOMES or outcome == "unknown":
        terminal = [k for _, k in events if k in schema.TERMINAL_EVENTS]
        outcome = terminal[-1] if terminal else "unknown"
    default_instruction = metadata.get("instruction", "")
    instr_times = [t for t, _ in instructions]

    keys: dict[str, list[int]] = {}  # sorted stamps per table, for the nearest-older lookup
    if tolerance_ns > 0:
        keys = {name: sorted(table) for name, table in
                [("joints", joints), ("poses", poses), ("grippers", grippers), ("objects", object_poses)]
                + [(f"img:{c}", images[c]) for c in images]}

    observations: dict[int, Observation | None] = {}
    steps: list[Step] = []
    dropped = 0
    empty = np.zeros(0)
    for bagtime, obs_stamp, action, source, chunk_info in executed:
        obs = observations.get(obs_stamp, False)
        if obs is False:
            obs = _observation(obs_stamp, images if load_images else {}, joints, poses, grippers,
                               object_poses, instructions, instr_times, default_instruction, keys,
                               tolerance_ns, empty)
            observations[obs_stamp] = obs
        proposal = _next_proposal(proposed, obs_stamp)
        ids, space = _next_proposal(tokens, obs_stamp, (None, "")) if proposal is not None else (None, "")
        if obs is None:
            dropped += 1
            continue
        steps.append(Step(observation=obs, action=action, source=source, stamp_ns=bagtime,
                          proposed=proposal, human=human.get(obs_stamp), tokens=ids,
                          token_space=space, chunk=chunk_info))
    return Episode(path=str(bag), steps=steps, metadata=metadata, outcome=outcome, truncated=truncated,
                   events=events, dropped_steps=dropped)


def _camera_frame(raw, msgtype: str, decode) -> tuple[int, np.ndarray]:
    """(stamp, RGB image) of a camera message; ImageProblem for a frame the stack does not take
    (apo_ros.recording.images: an unsupported encoding, an empty or oversized image, a bad step)."""
    if msgtype == schema.IMAGE:
        try:
            return cdr.image(raw)
        except (cdr.CdrLayoutError, struct.error, UnicodeDecodeError):
            pass  # not the layout the fast decoder reads: the generic one below
    msg = decode(raw, msgtype)
    try:
        return M.stamp_to_ns(msg.header), M.image_to_numpy(msg)
    except ImageProblem:
        raise
    except ValueError as err:  # a compressed frame that does not decode
        raise ImageProblem("decode", str(err)) from None


def _drop_odd_shapes(table: dict, skipped: dict[str, int]) -> None:
    """A camera's frames share one shape (training stacks them): frames of another shape than
    the camera's most common one are skipped (kind "shape"), not the episode."""
    shapes: dict[tuple, int] = {}
    for img in table.values():
        shapes[img.shape] = shapes.get(img.shape, 0) + 1
    if len(shapes) > 1:
        usual = max(shapes, key=lambda s: shapes[s])
        for stamp in [t for t, img in table.items() if img.shape != usual]:
            del table[stamp]
            skipped["shape"] = skipped.get("shape", 0) + 1


def _next_proposal(proposed: dict[int, list], obs_stamp: int, default=None):
    """The next unpaired proposal (or token message) of an observation, else `default`."""
    queue = proposed.get(obs_stamp)
    return queue.pop(0) if queue else default


def _observation(stamp, images, joints, poses, grippers, object_poses, instructions, instr_times,
                 default_instruction, keys, tolerance_ns, empty) -> Observation | None:
    pose = _nearest(poses, keys.get("poses"), stamp, tolerance_ns)
    gripper = _nearest(grippers, keys.get("grippers"), stamp, tolerance_ns)
    if pose is None or gripper is None:
        return None
    imgs = {}
    for camera, table in images.items():
        img = _nearest(table, keys.get(f"img:{camera}"), stamp, tolerance_ns)
        if img is None:
            return None
        imgs[camera] = img
    joint = _nearest(joints, keys.get("joints"), stamp, tolerance_ns)
    names, positions = joint if joint is not None else ((), empty)
    objects = _nearest(object_poses, keys.get("objects"), stamp, tolerance_ns)
    if instructions:
        i = bisect.bisect_right(instr_times, stamp) - 1
        instruction = instructions[max(i, 0)][1]
    else:
        instruction = default_instruction
    return Observation(images=imgs, joint_positions=positions, ee_pose=pose, gripper=gripper,
                       instruction=instruction, stamp_ns=stamp, joint_names=names,
                       **({} if objects is None else {"object_poses": objects}))


def read_episodes(paths, **kwargs) -> tuple[list[Episode], list[tuple[str, str]]]:
    """Read every bag in `paths` (bag directories, or directories searched recursively for bags).
    Good episodes are returned in path order; bad ones (and what find_bags skipped) as
    (path, problem), never raised."""
    found = find_bags(paths)
    episodes: list[Episode] = []
    bad: list[tuple[str, str]] = list(found.skipped)
    for bag in found.bags:
        try:
            episodes.append(read_episode(bag, **kwargs))
        except BagError as err:
            bad.append((err.path, err.problem))
    return episodes, bad
