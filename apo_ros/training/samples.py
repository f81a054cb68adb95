"""Labeled training samples: every executed step of the bags as columns, with its labels.

One sample = one executed step: the observation it was computed from (camera images, 8-D
proprio, object poses, instruction), the raw executed action and what the policy proposed (chunks
are cut on the fly from the following steps of the same segment), who produced it, and its labels
(APO desirable / undesirable, Sirius class). Demo bags (`--demos`) are desirable and Sirius class
"demo" whatever their steps' sources; interaction bags (`--data`) are labeled by the recording
area's labeler (`apo_ros.recording.labels.label_sources`, what `label_episode` runs) after
loading, with the policy's action statistics (the no-op filter tests normalized actions) - labels
are cheap and are not cached, so K or the statistics can change without re-reading bags.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from apo_ros.actions.space import ACTION_DIM
from apo_ros.training.cache import (
    SOURCE_CODE,
    SOURCE_NAMES,
    DataError,
    default_cache_dir,
    find_bags,
    load_bag,
)
from apo_ros.training.objectives import SIRIUS_CLASSES

SIRIUS_CODE = {name: i for i, name in enumerate(SIRIUS_CLASSES)}
log = logging.getLogger(__name__)
_WARNED_BAGS: set[str] = set()  # bags already reported as lacking the policy's own token ids
# Balanced-sampler groups: desirable robot / expert steps, the operator's corrections, the
# undesirable steps before each intervention.
GROUPS: tuple[str, ...] = ("desirable", "human", "undesirable")

__all__ = ["DataError", "GROUPS", "LabelConfig", "SOURCE_CODE", "SOURCE_NAMES", "SampleSet",
           "assemble_samples", "encode_targets", "load_samples"]


@dataclass
class LabelConfig:
    k: int = 10  # policy steps before each intervention labeled undesirable (APO's K)
    noop_filter: bool = False  # drop no-op policy actions before counting K (released code)
    noop_threshold: float = 0.05  # sum |a[:6]| below this (recording.labels.noop_units) is a no-op
    sirius_window: int = 15  # steps before an intervention that form Sirius' pre-intervention class


def _continues_chunk(obs_stamp_ns: np.ndarray) -> np.ndarray:
    """bool [n]: the step was executed from the same observation as the step before it."""
    out = np.zeros(obs_stamp_ns.shape[0], bool)
    out[1:] = obs_stamp_ns[1:] == obs_stamp_ns[:-1]
    return out


def _segment_ends(source: np.ndarray) -> np.ndarray:
    """int64 [n]: for each step of one episode, the index just past the run of same-source steps
    it belongs to."""
    n = source.shape[0]
    out = np.empty(n, np.int64)
    end = n
    for i in range(n - 1, -1, -1):
        if i < n - 1 and source[i] != source[i + 1]:
            end = i + 1
        out[i] = end
    return out


# ---------------------------------------------------------------------------------------------
# The sample set
# ---------------------------------------------------------------------------------------------
@dataclass
class SampleSet:
    """All samples of a training run as columns (N rows). Images stay per bag (memory-mapped
    from the cache) and are gathered per batch. Labels are filled in by `label(...)`."""

    cameras: tuple[str, ...]  # cameras present in every bag
    image_parts: list[dict[str, np.ndarray]]  # per bag: camera -> uint8 [n_b, H, W, 3]
    offsets: np.ndarray  # int64 [n_bags + 1]: rows of bag b are offsets[b]:offsets[b+1]
    proprio: np.ndarray  # float32 [N, 8]
    object_state: np.ndarray  # float32 [N, 7 M] object poses (Observation.object_state()); M = 0 when
    #                           the bags have none (recorded before object poses were, or on a robot
    #                           without a pose source)
    actions: np.ndarray  # float32 [N, 7] raw executed actions
    proposed: np.ndarray  # float32 [N, 7] what the policy proposed at the step (NaN: not recorded)
    source: np.ndarray  # int8 [N] index into SOURCE_NAMES
    is_demo: np.ndarray  # bool [N] from a --demos bag
    episode: np.ndarray  # int32 [N] bag index
    step: np.ndarray  # int32 [N] step index within its episode
    instruction: np.ndarray  # int32 [N] index into `instructions`
    continues_chunk: np.ndarray  # bool [N] executed from the previous step's observation (see label)
    segment_end: np.ndarray  # int64 [N] first row after the sample's segment (the run of steps of
    #                          one source it belongs to: a take-over or hand-back ends a segment)
    instructions: list[str]
    bags: list[str]
    # the token ids the policy produced for its proposal at each step (-1 = none), their token
    # space (index into token_spaces, -1 = none): what the trainer scores for the policy's steps
    tokens: np.ndarray | None = None  # int64 [N, W]
    token_space: np.ndarray | None = None  # int16 [N]
    token_spaces: list[str] = field(default_factory=list)
    desirable: np.ndarray | None = None  # bool [N] (after label())
    undesirable: np.ndarray | None = None  # bool [N]
    sirius: np.ndarray | None = None  # int8 [N] index into SIRIUS_CLASSES
    dropped: np.ndarray | None = None  # bool [N] no-op steps left out (noop_filter)
    object_dims: list[int] = field(default_factory=list)  # per bag: object-state values recorded
    held_out: np.ndarray | None = None  # bool [N] validation episodes (split_episodes), never trained on
    unused: np.ndarray | None = None  # bool [N] demo episodes left out by a demo mix (select_demos)
    errors: list[str] = field(default_factory=list)  # bags that could not be used, with why
    load_stats: dict = field(default_factory=dict)  # timing / cache hits

    def __len__(self) -> int:
        return int(self.proprio.shape[0])

    @property
    def episode_end(self) -> np.ndarray:
        return self.offsets[self.episode + 1]

    # ---- labels -------------------------------------------------------------------------------
    def label(self, config: LabelConfig, stats=None) -> SampleSet:
        """Label every episode with the recording area's labeler (APO's K steps, Sirius' classes). `stats`:
        the policy's ActionStatistics (the no-op filter tests normalized actions). Demo bags are
        all desirable, Sirius class "demo". With `noop_filter`, no-op steps are marked `dropped`
        (the released code removes them from the data set)."""
        from apo_ros.recording.labels import SIRIUS_CLASSES as RECORDING_CLASSES
        from apo_ros.recording.labels import label_sources

        if tuple(RECORDING_CLASSES) != tuple(SIRIUS_CLASSES):
            raise RuntimeError("Sirius class order differs between recording and training")
        n = len(self)
        self.desirable = np.ones(n, bool)
        self.undesirable = np.zeros(n, bool)
        self.sirius = np.full(n, SIRIUS_CODE["demo"], np.int8)
        self.dropped = np.zeros(n, bool)
        for b in range(len(self.offsets) - 1):
            lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
            if self.is_demo[lo]:
                continue
            lab = label_sources([SOURCE_NAMES[c] for c in self.source[lo:hi]], self.actions[lo:hi],
                                k=config.k, noop_filter=config.noop_filter,
                                noop_threshold=config.noop_threshold,
                                sirius_window=config.sirius_window, stats=stats)
            self.desirable[lo:hi] = lab.desirable
            self.undesirable[lo:hi] = lab.undesirable
            self.sirius[lo:hi] = lab.sirius_class
            # Only policy steps are dropped as no-ops: a still operator is still a correction.
            self.dropped[lo:hi] = lab.noop & (self.source[lo:hi] == SOURCE_CODE["policy"])
            # A chunked policy executes actions 2..T of a chunk from the observation the chunk was
            # planned on, and the bag links them to it (exactly). As samples they would pair that
            # old observation with a target chunk that starts T-1 steps later: left out of
            # training (they still count as executed steps for the labels above).
            self.dropped[lo:hi] |= self.continues_chunk[lo:hi]
        self.desirable &= ~self.dropped
        self.undesirable &= ~self.dropped
        return self

    def object_state_problem(self, dim: int) -> str | None:
        """Why these samples cannot feed a policy that reads `dim` object-state values, or None."""
        if self.object_state.shape[1] == dim:
            return None
        lacking = [b for b, d in zip(self.bags, self.object_dims) if d != dim]
        return (f"the policy reads {dim // 7} object poses ({dim} values) but {len(lacking)} of "
                f"{len(self.bags)} bags do not record them (object_poses), e.g. {lacking[:3]}; "
                "record them again with a recorder that writes object poses, or train an image policy")

    def _labels(self) -> None:
        if self.desirable is None:
            raise RuntimeError("SampleSet.label(...) has not been called")

    # ---- batches ------------------------------------------------------------------------------
    def images(self, index: np.ndarray, cameras: Sequence[str]) -> np.ndarray:
        """uint8 [B, K, H, W, 3] for rows `index`, cameras in the given order."""
        index = np.asarray(index, dtype=np.int64)
        missing = [c for c in cameras if c not in self.cameras]
        if missing:
            raise DataError(f"the policy reads cameras {missing} that the bags do not all have "
                            f"(cameras common to every bag: {list(self.cameras) or 'none'})")
        first = self.image_parts[0][cameras[0]]
        out = np.empty((len(index), len(cameras)) + first.shape[1:], dtype=np.uint8)
        part = np.searchsorted(self.offsets, index, side="right") - 1
        for b in np.unique(part):
            rows = np.nonzero(part == b)[0]
            local = index[rows] - self.offsets[b]
            order = np.argsort(local, kind="stable")  # memory-mapped reads in file order
            for k, cam in enumerate(cameras):
                out[rows[order], k] = self.image_parts[b][cam][local[order]]
        return out

    def chunk_index(self, index: np.ndarray, chunk: int) -> np.ndarray:
        """int64 [B, chunk]: rows of the next `chunk` actions of each sample's SEGMENT (its run of
        steps of one source), repeating the segment's last action past its end: a target chunk
        never mixes the policy's and the operator's actions across a take-over or hand-back.
        `chunk_valid` says which entries are real (the trainer masks the others' tokens)."""
        index = np.asarray(index, dtype=np.int64)
        rows = index[:, None] + np.arange(chunk)[None, :]
        return np.minimum(rows, self.segment_end[index][:, None] - 1)

    def chunk_valid(self, index: np.ndarray, chunk: int) -> np.ndarray:
        """bool [B, chunk]: the chunk step lies inside the sample's segment. Past the episode's
        end the last action repeats as LeRobot pads (valid: the episode ended, the arm holds);
        past a take-over or hand-back it is not (those actions came from the other source)."""
        index = np.asarray(index, dtype=np.int64)
        rows = index[:, None] + np.arange(chunk)[None, :]
        inside = rows < self.segment_end[index][:, None]
        ends_episode = (self.segment_end[index] == self.episode_end[index])[:, None]
        return inside | ends_episode

    def target_actions(self) -> np.ndarray:
        """float32 [N, 7]: the action each step's target uses. Policy steps of interaction bags
        use what the policy PROPOSED (when recorded) rather than what was executed after the
        safety filter: a preference objective must score the policy's own output."""
        policy = (self.source == SOURCE_CODE["policy"]) & ~self.is_demo
        use = policy & np.isfinite(self.proposed).all(-1)
        return np.where(use[:, None], self.proposed, self.actions)

    def recorded_tokens(self, index: np.ndarray, chunk: int, space: str | None,
                        per_step: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [B, chunk, per_step], usable bool [B, chunk]): the token ids the policy
        produced for each target chunk step (rows as `chunk_index`), usable where the step is a
        policy step of an interaction bag whose ids were recorded in `space` (the training
        policy's: same tokenizer, same statistics) with `per_step` ids."""
        index = np.asarray(index, dtype=np.int64)
        rows = self.chunk_index(index, chunk)
        b = len(index)
        if (self.tokens is None or self.token_space is None or space is None
                or space not in self.token_spaces or self.tokens.shape[1] < per_step):
            return np.zeros((b, chunk, per_step), np.int64), np.zeros((b, chunk), bool)
        code = self.token_spaces.index(space)
        ids = np.asarray(self.tokens)[rows][..., :per_step]
        usable = ((np.asarray(self.token_space)[rows] == code) & (ids >= 0).all(-1)
                  & (self.source[rows] == SOURCE_CODE["policy"]) & ~self.is_demo[rows]
                  & np.isfinite(self.proposed[rows]).all(-1))
        return ids, usable

    def policy_token_report(self, space: str | None) -> dict[str, int]:
        """Per bag: how many of its policy steps (with a recorded proposal) lack ids in `space`
        (their targets are re-tokenized from the proposal). Only bags with such steps."""
        policy = (self.source == SOURCE_CODE["policy"]) & ~self.is_demo & np.isfinite(self.proposed).all(-1)
        have = np.zeros(len(self), bool)
        if space is not None and space in self.token_spaces and self.token_space is not None:
            have = np.asarray(self.token_space) == self.token_spaces.index(space)
        lacking = policy & ~have
        return {self.bags[e]: int(n) for e, n in zip(*np.unique(self.episode[lacking], return_counts=True))}

    def action_targets(self, index: np.ndarray, chunk: int) -> np.ndarray:
        """float32 raw targets: [B, 7] when chunk == 1 else [B, chunk, 7] (see chunk_index and
        target_actions)."""
        actions = self.target_actions()
        if chunk == 1:
            return actions[np.asarray(index, dtype=np.int64)]
        return actions[self.chunk_index(index, chunk)]

    def instruction_texts(self, index: np.ndarray) -> list[str]:
        return [self.instructions[i] for i in self.instruction[np.asarray(index, dtype=np.int64)]]

    # ---- pools and groups ---------------------------------------------------------------------
    def trainable_rows(self) -> np.ndarray:
        """bool [N]: rows of episodes a run may train on (not held out, not left out of a demo mix)."""
        out = np.ones(len(self), bool)
        for column in (self.held_out, self.unused):
            if column is not None:
                out &= ~column
        return out

    def split_episodes(self, fraction: float, seed: int) -> SampleSet:
        """Hold out `fraction` of the demo bags and of the interaction bags (each rounded, at least
        one of a kind when it has two or more bags and fraction > 0), chosen from the seed. One bag
        is one episode, so no held-out step shares an episode with a training step."""
        held = np.zeros(len(self.bags), bool)
        bag_is_demo = np.array([bool(self.is_demo[o]) for o in self.offsets[:-1]])
        rng = np.random.default_rng([int(seed), 41])
        if fraction > 0:
            for kind in (True, False):
                members = np.nonzero(bag_is_demo == kind)[0]
                if len(members) < 2:
                    continue
                n = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
                held[rng.choice(members, size=n, replace=False)] = True
        self.held_out = held[self.episode]
        return self

    def select_demos(self, mix: str, seed: int) -> SampleSet:
        """Which training demo episodes a run uses: "all"; "equal" (as many as there are
        training interaction episodes, drawn from the seed: the paper's fine-tuning mix of
        intervened trajectories and expert demos in equal numbers); or a number of episodes."""
        bag_is_demo = np.array([bool(self.is_demo[o]) for o in self.offsets[:-1]])
        held = np.zeros(len(self.bags), bool) if self.held_out is None else \
            np.array([bool(self.held_out[o]) for o in self.offsets[:-1]])
        demos = np.nonzero(bag_is_demo & ~held)[0]
        if mix == "all":
            want = len(demos)
        elif mix == "equal":
            want = int((~bag_is_demo & ~held).sum())
        else:
            try:
                want = int(mix)
            except ValueError:
                raise ValueError(f"demo_mix must be 'all', 'equal' or a number of episodes, "
                                 f"got {mix!r}") from None
        want = max(0, min(want, len(demos)))
        rng = np.random.default_rng([int(seed), 43])
        keep = rng.choice(demos, size=want, replace=False) if want < len(demos) else demos
        unused = np.zeros(len(self.bags), bool)
        unused[np.setdiff1d(demos, keep)] = True
        self.unused = unused[self.episode]
        return self

    def validation_rows(self, kind: str) -> np.ndarray:
        """Rows whose token NLL measures generalization, in held-out episodes: "demos" = demo
        steps; "data" = the operator's corrections (human steps) of interaction bags. Chunk
        continuations and no-ops are left out as in training."""
        self._labels()
        if self.held_out is None:
            return np.zeros(0, np.int64)
        rows = self.held_out & ~self.dropped
        rows &= self.is_demo if kind == "demos" else self.human_mask()
        return np.nonzero(rows)[0]

    def human_mask(self) -> np.ndarray:
        """Operator-executed steps of interaction bags (the corrections)."""
        return (self.source == SOURCE_CODE["human"]) & ~self.is_demo

    def has_interaction_data(self) -> bool:
        return bool((~self.is_demo).any())

    def groups(self) -> dict[str, np.ndarray]:
        """Balanced-sampler groups: desirable robot/expert steps (demos included), human steps of
        interaction bags, undesirable steps."""
        self._labels()
        train = self.trainable_rows()
        human = self.human_mask() & self.desirable & train
        return {"desirable": np.nonzero(self.desirable & ~human & train)[0],
                "human": np.nonzero(human)[0],
                "undesirable": np.nonzero(self.undesirable & train)[0]}

    def intervention_starts(self) -> np.ndarray:
        """Rows where an intervention begins (first human step of a run, interaction bags)."""
        human = self.human_mask()
        prev = np.concatenate([[False], human[:-1]])
        first = np.zeros(len(self), bool)
        first[self.offsets[:-1]] = True
        return np.nonzero(human & (~prev | first))[0]

    def tpo_windows(self, window: int = 8) -> np.ndarray:
        """int64 [M, 3] (rejected_start, chosen_start, length): for each intervention, the policy
        steps just before it (rejected) paired with the human correction that follows (chosen),
        of equal length = min(window, policy steps right before, human steps of the
        intervention). Interventions with no policy step right before are skipped."""
        out = []
        policy = self.source == SOURCE_CODE["policy"]
        human = self.human_mask()
        train = self.trainable_rows()
        for start in self.intervention_starts():
            if not train[start]:
                continue
            lo = int(self.offsets[self.episode[start]])
            hi = int(self.offsets[self.episode[start] + 1])
            end = start
            while end < hi and human[end]:
                end += 1
            before = 0
            while start - before - 1 >= lo and policy[start - before - 1] and before < window:
                before += 1
            length = min(window, before, end - start)
            if length > 0:
                out.append((start - length, start, length))
        return np.asarray(out, dtype=np.int64).reshape(-1, 3)

    def summary(self) -> dict:
        out = {"samples": len(self), "bags": len(self.bags), "bad_bags": len(self.errors),
               "demo_samples": int(self.is_demo.sum()),
               "interaction_samples": int((~self.is_demo).sum()),
               "human_samples": int(self.human_mask().sum()),
               "interventions": int(self.intervention_starts().size)}
        if self.held_out is not None:
            out["held_out_bags"] = int(len(np.unique(self.episode[self.held_out])))
        if self.unused is not None:
            out["unused_demo_bags"] = int(len(np.unique(self.episode[self.unused])))
        if self.desirable is not None:
            out["undesirable_samples"] = int(self.undesirable.sum())
            out["dropped_noop_samples"] = int(self.dropped.sum())
            out.update({f"sirius_{c}": int((self.sirius[~self.dropped] == i).sum())
                        for i, c in enumerate(SIRIUS_CLASSES)})
        return out


def load_samples(demos: Sequence[str], data: Sequence[str], *, cache_dir: str | None = None,
                 progress=None) -> SampleSet:
    """Read demo bags and interaction bags into one (unlabeled) SampleSet. Bags that cannot be
    read are listed in `.errors` (each "path: why") and left out; raises DataError when nothing
    usable remains. cache_dir None disables the cache; "" means the default
    (~/.cache/apo_ros/samples). `progress(bag, from_cache)` is called after each bag."""
    if cache_dir == "":
        cache_dir = default_cache_dir()
    demo_bags, errors = find_bags(demos)
    data_bags, data_errors = find_bags(data)
    errors += data_errors
    work = [(b, True) for b in demo_bags] + [(b, False) for b in data_bags if b not in demo_bags]
    parts, used, hits = [], [], 0
    t0 = time.perf_counter()
    for bag, is_demo in work:
        try:
            decoded, cached = load_bag(bag, cache_dir)
        except Exception as err:  # a bad bag is reported and skipped, the good ones are used
            msg = str(err)
            errors.append(msg if bag in msg else f"{bag}: {msg}")
            continue
        hits += int(cached)
        parts.append((decoded, is_demo))
        used.append(bag)
        if progress is not None:
            progress(bag, cached)
    if not parts:
        raise DataError("no usable bags" + (": " + "; ".join(errors) if errors else ""))
    samples = assemble_samples(parts, used)
    samples.errors = errors
    samples.load_stats = {"seconds": time.perf_counter() - t0, "cache_hits": hits,
                          "bags_read": len(parts) - hits, "cache_dir": cache_dir}
    return samples


def assemble_samples(parts: Sequence[tuple[dict, bool]], bags: Sequence[str]) -> SampleSet:
    """Join decoded bags ((decoded columns, is_demo) per bag, see `episode_columns`)."""
    used = list(bags)
    # cameras every bag has (none for bags recorded without images, e.g. for a state policy: an
    # image policy is then refused by `images` naming the camera it misses)
    cameras = sorted(set.intersection(*[set(d["meta"]["cameras"]) for d, _ in parts]))
    shapes: dict = {}
    for (d, _), bag in zip(parts, used):
        for cam in cameras:
            shape = d["columns"][f"image_{cam}"].shape[1:]
            if shapes.setdefault(cam, shape) != shape:
                raise DataError(f"{bag}: camera {cam!r} images are {shape}, other bags have "
                                f"{shapes[cam]}; record all bags at one resolution")
    instructions = sorted({t for d, _ in parts for t in d["meta"]["instructions"]})
    object_dims = [int(np.asarray(d["columns"]["object_state"]).shape[1]) if "object_state" in d["columns"]
                   else 0 for d, _ in parts]
    names = ("proprio", "object_state", "actions", "proposed", "source", "is_demo", "episode", "step",
             "instruction", "continues_chunk", "segment_end", "tokens", "token_space")
    token_spaces = sorted({t for d, _ in parts for t in d["meta"].get("token_spaces", [])})
    token_width = max((int(np.asarray(d["columns"]["tokens"]).shape[1]) for d, _ in parts
                       if "tokens" in d["columns"]), default=0)
    cols: dict[str, list] = {k: [] for k in names}
    offsets = [0]
    for b, (d, is_demo) in enumerate(parts):
        c, n = d["columns"], int(d["meta"]["n"])
        cols["proprio"].append(np.asarray(c["proprio"]))
        # object poses only when every bag has the same number (else none: a state policy then
        # says which bags lack them, see object_state_problem)
        width = object_dims[0] if len(set(object_dims)) == 1 else 0
        cols["object_state"].append(np.asarray(c["object_state"], dtype=np.float32)[:, :width] if width
                                    else np.zeros((n, 0), np.float32))
        cols["actions"].append(np.asarray(c["actions"]))
        cols["proposed"].append(np.asarray(c["proposed"]) if "proposed" in c
                                else np.full((n, ACTION_DIM), np.nan, np.float32))
        cols["segment_end"].append(offsets[-1] + _segment_ends(np.asarray(c["source"])))
        cols["source"].append(np.asarray(c["source"]))
        cols["is_demo"].append(np.full(n, is_demo, bool))
        cols["episode"].append(np.full(n, b, np.int32))
        cols["step"].append(np.arange(n, dtype=np.int32))
        remap = np.array([instructions.index(t) for t in d["meta"]["instructions"]], dtype=np.int32)
        cols["instruction"].append(remap[np.asarray(c["instruction"])])
        cols["continues_chunk"].append(_continues_chunk(np.asarray(c["obs_stamp_ns"])))
        ids = np.full((n, token_width), -1, np.int64)
        space = np.full(n, -1, np.int16)
        if "tokens" in c and "token_space" in c:  # bags cached before tokens were have neither
            recorded = np.asarray(c["tokens"])
            ids[:, :recorded.shape[1]] = recorded
            local = np.asarray(c["token_space"])
            spaces = np.array([token_spaces.index(t) for t in d["meta"].get("token_spaces", [])] + [-1],
                              dtype=np.int16)
            space = spaces[local]  # -1 indexes the trailing -1
        cols["tokens"].append(ids)
        cols["token_space"].append(space)
        offsets.append(offsets[-1] + n)
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    finite = (np.isfinite(merged["actions"]).all(-1) & np.isfinite(merged["proprio"]).all(-1)
              & np.isfinite(merged["object_state"]).all(-1))
    if not finite.all():
        bad = sorted({used[e] for e in merged["episode"][~finite]})
        raise DataError(f"non-finite actions, proprio or object poses in {bad}")
    return SampleSet(object_dims=object_dims,
        cameras=tuple(cameras),
        image_parts=[{cam: d["columns"][f"image_{cam}"] for cam in cameras} for d, _ in parts],
        offsets=np.asarray(offsets, dtype=np.int64), instructions=instructions, bags=used,
        token_spaces=token_spaces, **merged)

# ---------------------------------------------------------------------------------------------
# Target tokens
# ---------------------------------------------------------------------------------------------
def encode_targets(policy, samples: SampleSet, rows: np.ndarray | None = None,
                   block: int = 4096) -> tuple:
    """(tokens long [R, L], mask bool [R, L]) on the CPU: each row's target chunk, padded to one
    width. A chunk step the policy made whose bag recorded the token ids the policy produced
    (in this policy's token space: same tokenizer and statistics) has exactly those ids: the
    trainer scores the policy's own output, not a re-tokenization of the action it decoded to
    (with expected-value decoding that is often a token the policy never predicts). Every other
    step (the operator's, the expert's, and policy steps of bags without ids, for which a
    warning names the bag once) is tokenized from its action (`SampleSet.action_targets`).
    For policies whose token p belongs to chunk step p // tokens_per_step (bin tokens), the
    tokens of chunk steps outside the sample's own segment (past a take-over or hand-back,
    `chunk_valid`) are masked: they are not this sample's targets and are left out of every later
    position's context. rows None = every sample."""
    import torch

    rows = np.arange(len(samples)) if rows is None else np.asarray(rows, dtype=np.int64)
    chunk = int(policy.chunk_size)
    per_step = policy.tokens_per_step
    space = policy.action_token_space() if per_step else None
    _warn_missing_tokens(samples, space, rows)
    toks, masks = [], []
    for lo in range(0, len(rows), block):
        part = rows[lo:lo + block]
        t, m = policy.encode_actions(samples.action_targets(part, chunk))
        t, m = t.cpu(), m.cpu()
        if space is not None:
            ids, usable = samples.recorded_tokens(part, chunk, space, per_step)
            for step in range(chunk):
                use = torch.from_numpy(usable[:, step])
                if bool(use.any()):
                    cols = slice(step * per_step, (step + 1) * per_step)
                    t[use, cols] = torch.from_numpy(ids[usable[:, step], step]).to(t.dtype)
        if per_step and chunk > 1:
            valid = torch.from_numpy(samples.chunk_valid(part, chunk))
            step_of = torch.arange(m.shape[1]) // per_step
            inside = step_of < chunk  # e.g. a VLA's stop token comes after the chunk
            keep = torch.ones_like(m, dtype=torch.bool)
            keep[:, inside] = valid[:, step_of[inside]]
            m = m & keep
        toks.append(t)
        masks.append(m)
    width = max(t.shape[1] for t in toks)
    tokens = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in toks])
    mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks])
    return tokens, mask


def _warn_missing_tokens(samples: SampleSet, space: str | None, rows: np.ndarray) -> None:
    """Once per bag and process: its policy steps carry no token ids this policy can score."""
    used = set(np.unique(samples.episode[rows]).tolist()) if len(rows) else set()
    for bag, n in samples.policy_token_report(space).items():
        if bag in _WARNED_BAGS or samples.bags.index(bag) not in used:
            continue
        _WARNED_BAGS.add(bag)
        why = ("the policy names no per-step token ids" if space is None else
               f"none in this policy's token space {space!r}"
               + (f" (recorded: {samples.token_spaces})" if samples.token_spaces else
                  " (recorded before token ids were)"))
        log.warning("%s: %d policy steps without the token ids the policy produced (%s); their "
                    "targets are re-tokenized from the proposed actions", bag, n, why)
