"""What a compression is asked to do: the method, the speedup and how ranks are chosen and solved,
in one checked object that the pipeline, the planner and the tools share."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from ..errors import AccelDetError
from .channel import DEFAULT_SCHEDULE
from .methods import METHODS, Method, get_method
from .ranks import RANK_COSTS

# The options a plan and its weights depend on (all but ``memory``; the latency table shows in the
# ranks): a resumed run must share them with its checkpoint.
PLAN_OPTIONS = (
    "method",
    "speedup",
    "rank_selection",
    "rank_cost",
    "round_ranks_to",
    "skip",
    "schedule",
    "seed",
    "samples_per_image",
    "heldout_fraction",
)


@dataclass(frozen=True)
class SolverOptions:
    """Settings of :func:`accel_det.solver.compress` (defaults: the paper's protocol).

    ``speedup``: whole-model theoretical speedup of the conv layers; ``method``: a name of
    :data:`~accel_det.solver.methods.METHODS`; ``rank_selection``: eqs. (13)-(14), else the same
    ratio for every layer; ``samples_per_image``: responses sampled per image and layer;
    ``skip``: layers left as they are (None: the first conv layer, as the paper keeps conv1_1 of
    VGG-16, :func:`skipped_layers`); ``seed``: sampled positions; ``schedule``: the λ steps of
    the nonlinear solver, (λ, iterations) pairs; ``rank_cost``: ΔC of rank selection
    (``with_1x1``, ``paper`` or ``latency`` with ``latency_table``); ``round_ranks_to``: every d'
    and d'' a multiple of it (beyond the paper; 16 by default, oneDNN's fp32 channel block on CPUs,
    8 suits fp16 GPU kernels, 1 gives the paper's ranks; thin layers get a smaller multiple,
    :func:`~.ranks.layer_multiples`); ``memory``: bytes of approximated activations
    carried from one layer to the next; ``heldout_fraction``: the seeded share of the images kept
    out of every solve, to measure the held-out error (0: none).
    """

    speedup: float
    method: str = "asym3d"
    rank_selection: bool = True
    samples_per_image: int = 10
    skip: Optional[Tuple[str, ...]] = None
    seed: int = 0
    schedule: Tuple[Tuple[float, int], ...] = DEFAULT_SCHEDULE
    rank_cost: str = "with_1x1"
    round_ranks_to: int = 16
    latency_table: Any = None
    memory: int = 4 << 30
    heldout_fraction: float = 0.1

    def __post_init__(self):
        if self.skip is not None:
            object.__setattr__(self, "skip", tuple(self.skip))
        object.__setattr__(self, "schedule", tuple(tuple(step) for step in self.schedule))
        self.check()

    @property
    def solver(self) -> Method:
        return METHODS[self.method]

    def replace(self, **changes) -> "SolverOptions":
        return dataclasses.replace(self, **changes)

    def record(self) -> dict:
        """The options as JSON (the latency table is recorded by the plan itself)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.pop("latency_table")
        data["skip"] = list(self.skip) if self.skip is not None else None
        data["schedule"] = [list(step) for step in self.schedule]
        return data

    def check(self) -> None:
        """Raise :class:`AccelDetError` for a setting the solver cannot follow."""
        method = get_method(self.method)
        speedup = self.speedup
        if not (isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup > 1):
            raise AccelDetError(f"speedup must be a number greater than 1, got {speedup!r}")
        if not (isinstance(self.samples_per_image, int) and self.samples_per_image >= 1):
            raise AccelDetError(
                f"samples_per_image must be a positive integer, got {self.samples_per_image!r}"
            )
        if self.rank_cost not in RANK_COSTS:
            raise AccelDetError(
                f"unknown rank cost {self.rank_cost!r}; expected one of {', '.join(RANK_COSTS)}"
            )
        for step in self.schedule:
            if len(step) != 2 or not step[0] > 0 or int(step[1]) < 0:
                raise AccelDetError(
                    f"schedule steps are (lambda > 0, iterations >= 0) pairs, got {step!r}"
                )
        if not (isinstance(self.heldout_fraction, (int, float)) and 0 <= self.heldout_fraction < 1):
            raise AccelDetError(
                f"heldout_fraction must be in [0, 1), got {self.heldout_fraction!r}"
            )
        if not (isinstance(self.round_ranks_to, int) and self.round_ranks_to >= 1):
            raise AccelDetError(
                f"round_ranks_to must be a positive integer, got {self.round_ranks_to!r}"
            )
        if self.rank_cost != "latency":
            return
        if method.spatial:
            channel_only = ", ".join(m.name for m in METHODS.values() if not m.spatial)
            raise AccelDetError(
                "rank_cost='latency' prices the channel structure only: use method "
                f"{channel_only}, not {self.method}"
            )
        if not self.rank_selection:
            raise AccelDetError(
                "rank_cost='latency' needs rank selection (uniform ranks do not use costs)"
            )
        if self.latency_table is None:
            raise AccelDetError(
                "rank_cost='latency' needs a latency_table "
                "(accel_det.solver.latency.measure_latency_table)"
            )


def paper_schedule(iterations: int = 25) -> Tuple[Tuple[float, int], ...]:
    """The paper's λ schedule (§3.2) with ``iterations`` per step: λ = 0.01, then λ = 1."""
    return tuple((lam, int(iterations)) for lam, _ in DEFAULT_SCHEDULE)


def skipped_layers(options: SolverOptions, names: Sequence[str]) -> Tuple[str, ...]:
    """The layers ``options`` leave as they are among ``names`` (the conv layers in the order they
    run): ``skip``, or by default the first one (the paper keeps VGG-16's conv1_1: its 3 input
    channels leave little to gain and much to lose; a ResNet's 7x7 stem alike)."""
    if options.skip is not None:
        return tuple(options.skip)
    return tuple(names[:1])


def check_names(skip: Sequence[str], names: Sequence[str]) -> None:
    """Refuse ``skip`` entries that name no layer of the network."""
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise AccelDetError(f"skip names layers the network does not have: {', '.join(unknown)}")


def options_or(options: Optional[SolverOptions], **settings) -> SolverOptions:
    """``options`` with ``settings`` changed, or new options from ``settings``."""
    return SolverOptions(**settings) if options is None else options.replace(**settings)
