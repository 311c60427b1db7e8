"""The plan: the per-layer structure of an accelerated network (ranks d', d''; which layers are
left as they are) and how it was obtained, as plain JSON that people can read, diff and edit.

Every reader and writer of a plan goes through this module: :meth:`Plan.read` checks the format
and the layer entries, :meth:`Plan.write` writes atomically, :func:`plan_fingerprint` names the
architecture a plan builds. The solver makes plans (:mod:`accel_det.solver.planning`); tools
extend them with records of their run (options, inputs, timings), which stay plans.

A plan's top level holds ``format``, ``method``, ``speedup``, ``theoretical_speedup``,
``original_macs``, ``approximated_macs`` and ``layers``: per conv layer (named ``conv1_1`` … in a
VGG chain, by its qualified module name ``layer3.4.conv2`` elsewhere) the ``module`` it replaces,
its shape (``in_channels``, ``out_channels``, ``kernel_size``, …), what follows it (``relu``,
``after``), ``structure`` (one of
:data:`accel_det.nn.STRUCTURES`), ``rank`` (d'), ``spatial_rank`` (d''), ``macs``, ``pca_energy``
and ``error``; fc layers (``fc6``, ``fc7``) have ``in_features``, ``out_features`` and ``rois``
instead of the conv shape, and the structure ``original`` or ``channel``. In a detector, the
entries of layers outside its backbone name their ``part`` (``proposal_generator.rpn_head``,
``roi_heads.box_head``): their ``module`` is within that part, their name ``part.module``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping, Optional

from .errors import AccelDetError
from .nn.factorized import (
    CHANNEL,
    ORIGINAL,
    SPATIAL,
    SPATIAL_CHANNEL,
    STRUCTURES,
    is_rank,
    rank_limits,
)
from .nn.linear import LINEAR_STRUCTURES, is_linear_entry
from .utils.io import atomic_write_json, load_json

PLAN_FORMAT = "accel-det-plan/2"
# Format 1 named every conv by its VGG name (``conv1_1``); format 2 adds each entry's ``module``,
# the qualified name of the module it replaces, and names layers of other networks by it.
READABLE_FORMATS = ("accel-det-plan/1", PLAN_FORMAT)
MAX_PLAN_BYTES = 16 << 20  # a plan of every layer of a deep network is some 100 kB

# which ranks each structure needs
NEEDS_RANK = (CHANNEL, SPATIAL_CHANNEL)
NEEDS_SPATIAL_RANK = (SPATIAL, SPATIAL_CHANNEL)


class Plan(dict):
    """A plan dict (JSON-serialisable as it is) with its checks, reader, writer and fingerprint."""

    @classmethod
    def read(cls, path: str, what: str = "plan") -> "Plan":
        """The plan in the JSON file ``path`` (``what`` names the file in errors), checked."""
        return cls.from_dict(load_json(path, what, max_bytes=MAX_PLAN_BYTES), source=path)

    @classmethod
    def from_dict(cls, data, source: str = "the plan") -> "Plan":
        """``data`` as a :class:`Plan`, after :func:`check_plan`."""
        check_plan(data, source)
        return cls(data)

    @property
    def layers(self) -> dict:
        return self["layers"]

    def write(self, path: str, replace: bool = True) -> None:
        """Write the plan to ``path`` atomically (never a half-written file; without ``replace``,
        refused if ``path`` exists by then)."""
        atomic_write_json(dict(self), path, replace)

    def fingerprint(self) -> str:
        return plan_fingerprint(self)


def check_plan(data, source: str = "the plan") -> None:
    """Raise :class:`AccelDetError` unless ``data`` is a plan of this format whose layer entries
    name known structures with the ranks they need: positive integers, no larger than the full
    ranks of the layer shape the entry records (:func:`~accel_det.nn.factorized.rank_limits`)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("layers"), Mapping):
        raise AccelDetError(f"{source} is not a plan: it has no 'layers' entry")
    if data.get("format", PLAN_FORMAT) not in READABLE_FORMATS:
        raise AccelDetError(
            f"{source}: unsupported plan format {data.get('format')!r}, expected one of "
            f"{', '.join(READABLE_FORMATS)}"
        )
    for name, entry in data["layers"].items():
        if not isinstance(entry, Mapping):
            raise AccelDetError(f"{source} has a malformed layer entry: {name} is not an object")
        if not isinstance(entry.get("module", ""), str):
            raise AccelDetError(
                f"{source} has a malformed layer entry: {name} has module "
                f"{entry.get('module')!r}, expected a qualified module name"
            )
        structure = entry.get("structure", ORIGINAL)
        allowed = LINEAR_STRUCTURES if is_linear_entry(entry) else STRUCTURES
        if structure not in allowed:
            raise AccelDetError(
                f"{source} has a malformed layer entry: {name} has structure {structure!r}, "
                f"expected one of {', '.join(allowed)}"
            )
        limits = entry_rank_limits(entry, f"{source} has a malformed layer entry: {name}")
        for key, needed, limit in zip(
            ("rank", "spatial_rank"), (NEEDS_RANK, NEEDS_SPATIAL_RANK), limits
        ):
            value = entry.get(key)
            if value is None and structure in needed:
                raise AccelDetError(
                    f"{source} has a malformed layer entry: {name} is {structure} but has no {key}"
                )
            if value is not None and not is_rank(value):
                raise AccelDetError(
                    f"{source} has a malformed layer entry: {name} has {key}={value!r}, "
                    "expected a positive integer"
                )
            if value is not None and limit is not None and value > limit:
                raise AccelDetError(
                    f"{source} has a malformed layer entry: {name} has {key}={value}, larger "
                    f"than the full rank {limit} of its {entry_shape(entry)} layer"
                )


SHAPE_KEYS = ("in_channels", "out_channels", "in_features", "out_features")


def entry_rank_limits(entry: Mapping, where: str):
    """The full ranks (d', d'') of the layer shape a plan entry records (None for what it does
    not record: d'' needs a conv's kernel size); a recorded shape that is not positive integers is
    refused."""
    for key in SHAPE_KEYS:
        if key in entry and not is_rank(entry[key]):
            raise AccelDetError(f"{where} has {key}={entry[key]!r}, expected a positive integer")
    kernel = entry.get("kernel_size")
    if kernel is not None and not (
        is_rank(kernel)
        or (isinstance(kernel, (list, tuple)) and len(kernel) == 2 and all(map(is_rank, kernel)))
    ):
        raise AccelDetError(f"{where} has kernel_size={kernel!r}, expected two positive integers")
    c = entry.get("in_channels", entry.get("in_features"))
    d = entry.get("out_channels", entry.get("out_features"))
    if c is None or d is None:
        return None, None
    if kernel is None and not is_linear_entry(entry):  # d'' depends on the kernel: not known
        return d, None
    return rank_limits(c, d, kernel or 1)


def entry_shape(entry: Mapping) -> str:
    kernel = entry.get("kernel_size", 1)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    c = entry.get("in_channels", entry.get("in_features"))
    d = entry.get("out_channels", entry.get("out_features"))
    return f"{kh}×{kw}, {c}→{d}"


def plan_fingerprint(plan: Optional[Mapping]) -> str:
    """A short digest of a plan's architecture (structure, d', d'' and channels of each layer):
    equal for plans that build the same network, whatever else they record. ``None`` or a plan
    whose layers are all original gives the fingerprint of the original network."""
    layers = (plan or {}).get("layers") or {}
    key = []
    for name in sorted(layers):
        entry = layers[name]
        structure = entry.get("structure", ORIGINAL)
        if structure != ORIGINAL:
            key.append(
                [
                    name,
                    structure,
                    entry.get("rank"),
                    entry.get("spatial_rank"),
                    entry.get("in_channels", entry.get("in_features")),
                    entry.get("out_channels", entry.get("out_features")),
                ]
            )
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:12]


def conv_entries(plan: Mapping) -> dict:
    """The plan's conv layer entries (name → entry), in order."""
    return {n: e for n, e in plan["layers"].items() if not is_linear_entry(e)}


def linear_entries(plan: Mapping) -> dict:
    """The plan's fc layer entries (name → entry), in order."""
    return {n: e for n, e in plan["layers"].items() if is_linear_entry(e)}


def part_plan(plan: Mapping, part: Optional[str] = None) -> dict:
    """The plan of one part of a network: the entries whose ``part`` is ``part`` (None: those that
    name none, a backbone's), keyed by their ``module`` within it (by name when ``part`` is None);
    the rest of the plan as it is."""
    layers = {
        (entry.get("module") or name) if part else name: entry
        for name, entry in plan["layers"].items()
        if entry.get("part") == part
    }
    return {**plan, "layers": layers}
