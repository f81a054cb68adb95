"""Salvage a bag whose writer died (kill -9, power loss): the MCAP file has its chunks but no
summary / footer, and usually no metadata.yaml. The official `mcap` package's stream reader
yields every complete record up to the damage; those are rewritten into a new, valid bag next to
the original (which is never modified), marked truncated in custom_data.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from apo_ros.recording import schema
from apo_ros.recording.messages import get_typestore as apo_typestore
from apo_ros.recording.reader import BagError


@dataclass
class RepairReport:
    source: str  # the damaged bag (directory or .mcap file)
    output: str  # the new bag directory
    messages: int  # messages salvaged
    topics: dict[str, int] = field(default_factory=dict)  # per-topic salvaged counts
    steps: int = 0  # executed actions salvaged
    complete: bool = False  # the MCAP footer was reached (nothing lost; only the index was missing)
    stopped: str = ""  # why reading stopped (end of data, or the damage met)
    bytes_read: int = 0  # how far into the file complete records reached
    bytes_total: int = 0
    outcome: str = "unknown"
    truncated: bool = True
    skipped_topics: list[str] = field(default_factory=list)  # channels that could not be rewritten

    def summary(self) -> str:
        lost = self.bytes_total - self.bytes_read
        return (f"{self.source} -> {self.output}: {self.messages} messages, {self.steps} steps salvaged "
                f"({'complete' if self.complete else f'truncated, {lost} bytes at the end lost'}; "
                f"outcome {self.outcome})")


def _mcap_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(str(path), "not an MCAP file (repair handles MCAP bags)")
        return path
    if not path.is_dir():
        raise BagError(str(path), "does not exist")
    files = sorted(path.glob("*.mcap"))
    if not files:
        if any(path.glob("*.db3")):
            raise BagError(str(path), "a sqlite3 bag: a killed sqlite3 writer keeps nothing to salvage")
        raise BagError(str(path), "not a bag (no .mcap file)")
    if len(files) > 1:
        raise BagError(str(path), f"holds {len(files)} MCAP files; repair them one at a time")
    return files[0]


def _is_intact(bag_dir: Path) -> bool:
    if not (bag_dir / "metadata.yaml").is_file():
        return False
    from rosbags.rosbag2 import Reader

    try:
        with Reader(bag_dir):
            return True
    except Exception:
        return False


def _rihs01(msgtype: str, msgdef: str, known: dict[str, str]) -> str:
    if known.get(msgtype):
        return known[msgtype]
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = apo_typestore("humble")
    if msgtype in store.types:
        return store.hash_rihs01(msgtype)
    fresh = get_typestore(Stores.EMPTY)
    fresh.register(get_types_from_msg(msgdef, msgtype))
    return fresh.hash_rihs01(msgtype)


def _known_hashes(bag_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """type hashes and custom_data from an existing metadata.yaml, if any."""
    meta = bag_dir / "metadata.yaml"
    if not meta.is_file():
        return {}, {}
    import yaml

    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    except Exception:
        return {}, {}
    hashes = {t["topic_metadata"]["type"]: t["topic_metadata"].get("type_description_hash", "")
              for t in info.get("topics_with_message_count", [])}
    return hashes, {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}


def repair_bag(path: str | os.PathLike, out: str | os.PathLike | None = None, *,
               force: bool = False) -> RepairReport:
    """Rewrite every complete record of the bag at `path` into a new bag (default
    `<path>_repaired`). The original is only read. Raises BagError naming the problem (not an
    MCAP bag, intact bag without force, output exists, nothing salvageable)."""
    from mcap.records import Channel, Footer, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.rosbag2.metadata import parse_qos

    src = Path(path)
    mcap_path = _mcap_file(src)
    bag_dir = mcap_path.parent
    if not force and _is_intact(bag_dir):
        raise BagError(str(src), "the bag is intact (it reads without repair); nothing to do")
    dst = Path(out) if out is not None else Path(str(bag_dir).rstrip("/") + "_repaired")
    if dst.exists():
        raise BagError(str(dst), "output already exists; choose another with -o")
    known_hashes, custom = _known_hashes(bag_dir)

    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    report = RepairReport(source=str(src), output=str(dst), messages=0,
                          bytes_total=mcap_path.stat().st_size)
    store = apo_typestore("humble")
    info_json: str | None = None
    events: list[str] = []
    writer = Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    conns: dict[int, object] = {}
    skipped: set[int] = set()
    opened = False

    try:
        with open(mcap_path, "rb") as fh:
            reader = StreamReader(fh, skip_magic=False, emit_chunks=False)
            try:
                for record in reader.records:
                    if isinstance(record, Schema):
                        schemas.setdefault(record.id, record)
                    elif isinstance(record, Channel):
                        channels.setdefault(record.id, record)
                    elif isinstance(record, Message):
                        ch = channels.get(record.channel_id)
                        if ch is None or record.channel_id in skipped:
                            continue
                        conn = conns.get(record.channel_id)
                        if conn is None:
                            sch = schemas.get(ch.schema_id)
                            if sch is None:
                                skipped.add(record.channel_id)
                                report.skipped_topics.append(ch.topic)
                                continue
                            msgdef = sch.data.decode()
                            try:
                                rihs01 = _rihs01(sch.name, msgdef, known_hashes)
                            except Exception:
                                skipped.add(record.channel_id)
                                report.skipped_topics.append(ch.topic)
                                continue
                            if not opened:
                                writer.open()
                                opened = True
                            try:
                                qos = parse_qos(ch.metadata.get("offered_qos_profiles", ""))
                            except Exception:  # unreadable QoS: keep the data, drop the profile
                                qos = []
                            conn = writer.add_connection(ch.topic, sch.name, msgdef=msgdef, rihs01=rihs01,
                                                         serialization_format=ch.message_encoding,
                                                         offered_qos_profiles=qos)
                            conns[record.channel_id] = conn
                        writer.write(conn, record.log_time, record.data)
                        report.messages += 1
                        report.topics[ch.topic] = report.topics.get(ch.topic, 0) + 1
                        if ch.topic in (schema.EPISODE_INFO, schema.EPISODE_EVENTS):
                            text = _string_data(store, record.data)
                            if ch.topic == schema.EPISODE_INFO:
                                info_json = text
                            elif text is not None:
                                events.append(text)
                    elif isinstance(record, Metadata) and record.name == "rosbag2" and not custom:
                        custom = _custom_from_serialized_metadata(record.metadata)
                    elif isinstance(record, Footer):
                        report.complete = True
                    report.bytes_read = fh.tell()
                report.stopped = "end of file (footer reached)" if report.complete else "end of data"
            except Exception as err:  # the damaged tail: a partial record, a cut chunk
                report.stopped = f"damaged record at the end ({type(err).__name__}: {err})".strip()
        if not opened:
            raise BagError(str(src), "nothing to salvage: no complete message in the file "
                           f"({report.stopped or 'empty'})")

        if info_json and not custom:
            try:
                custom = {str(k): str(v) for k, v in json.loads(info_json).items()}
            except ValueError:
                custom = {}
        terminal = [e for e in events if e in schema.TERMINAL_EVENTS]
        report.outcome = terminal[-1] if terminal else (
            custom.get("outcome", "unknown") if report.complete else "unknown")
        report.truncated = not report.complete
        report.steps = report.topics.get(schema.ACTION_EXECUTED, 0)
        custom = dict(custom)
        custom.update({"outcome": report.outcome, "truncated": "true" if report.truncated else "false",
                       "repaired_from": str(src), "repair_stopped": report.stopped})
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        writer.close()
    except BaseException:
        if opened:
            writer.abort()
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return report


def _string_data(store, cdr: bytes) -> str | None:
    try:
        return store.deserialize_cdr(cdr, schema.STRING).data
    except Exception:  # a foreign bag may carry another type on that topic
        return None


def _custom_from_serialized_metadata(meta: dict) -> dict[str, str]:
    text = meta.get("serialized_metadata")
    if not text:
        return {}
    import yaml

    try:
        info = yaml.safe_load(text)
    except Exception:
        return {}
    if not isinstance(info, dict):
        return {}
    return {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
