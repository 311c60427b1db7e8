"""The layers a compression works on, in any CNN: every conv the solver factors, by name, in the
order a forward pass runs them, with its shape at an input size, its cost and whether a ReLU
follows it (eq. 5) or it is solved in the linear form (eq. 12 without r). What a later
integration (a detector's backbone, FPN and heads under one budget) reuses: :func:`find_targets`
gives the layers, :func:`accel_det.nn.apply_plan` swaps them by qualified name.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import AccelDetError, first_line
from ..nn.factorized import FactorizedConv2d
from ..nn.graph import LayerGraph, conv_paths, left_alone
from ..nn.network import layer_names, prepare
from .complexity import ConvSpec, conv_macs, structure_macs
from .runner import make_runner

logger = logging.getLogger(__name__)

Call = Tuple[Tuple[int, int], Tuple[int, int]]  # (input H, W), (output H, W) of one call


@dataclass
class Targets:
    """The network prepared for the solver (an eval copy with its batch norms folded), its target
    layers (name -> qualified module name, in the order they run) and their shapes."""

    model: nn.Module
    names: "OrderedDict[str, str]"
    specs: List[ConvSpec]
    graph: LayerGraph
    left_alone: Dict[str, str]  # qualified name -> why the solver keeps it as it is

    def runner(self):
        """What runs :attr:`model` part of the way (:mod:`.runner`)."""
        return make_runner(self.graph.graph)

    def table(self) -> List[dict]:
        """One row per target: name, module, shape, multiply-adds, ReLU after it or not."""
        return [
            {
                "name": s.name,
                "module": s.module,
                "in_channels": s.in_channels,
                "out_channels": s.out_channels,
                "kernel_size": list(s.kernel_size),
                "stride": list(s.stride),
                "out_hw": list(s.out_hw),
                "macs": conv_macs(s),
                "after": s.after,
            }
            for s in self.specs
        ]


def find_targets(
    model: nn.Module, input_hw: Tuple[int, int], *, use_fx: bool = True, log: bool = False
) -> Targets:
    """The target layers of ``model`` at input size ``input_hw`` (see the module's docstring).
    ``model`` is left untouched. Raises :class:`AccelDetError` naming a layer the solver cannot
    take, or when the network has none."""
    prepared, graph = prepare(model, use_fx=use_fx)
    calls = trace_calls(prepared, input_hw)
    skipped: Dict[str, str] = {}
    for path in graph.convs:
        why = left_alone(prepared.get_submodule(path))
        if why is None and len(calls.get(path, ())) > 1:
            why = f"runs {len(calls[path])} times per forward pass (shared weights)"
        elif why is None and path not in calls:
            why = "not run by a forward pass"
        if why is not None:
            skipped[path] = why
    order = [p for p in calls if p in graph.convs and p not in skipped]
    if not order:
        raise AccelDetError("the network has no conv layer the solver can factor")
    names = layer_names(prepared, order)
    specs = [
        spec_of(name, path, prepared.get_submodule(path), calls[path][0], graph.convs[path].after)
        for name, path in names.items()
    ]
    if log:
        for path, why in skipped.items():
            logger.info("%s is left as it is: %s", path, why)
    return Targets(prepared, names, specs, graph, skipped)


def spec_of(name: str, path: str, conv: nn.Conv2d, call: Call, after: str) -> ConvSpec:
    in_hw, out_hw = call
    return ConvSpec(
        name=name,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=tuple(conv.kernel_size),
        stride=tuple(conv.stride),
        padding=tuple(conv.padding),
        out_hw=out_hw,
        relu=after == "relu",
        in_hw=in_hw,
        module=path,
        after=after,
    )


def trace_calls(
    model: nn.Module,
    input_hw: Tuple[int, int],
    paths: Optional[Sequence[str]] = None,
    in_channels: Optional[int] = None,
) -> "OrderedDict[str, List[Call]]":
    """Every call of the modules ``paths`` (default: the plain convs) of ``model`` in one forward
    pass at ``input_hw`` (qualified name -> its input and output map sizes per call, in the order
    they run). The pass runs on the meta device (no arithmetic); a network whose forward needs
    values runs on zeros."""
    paths = conv_paths(model) if paths is None else list(paths)
    if not paths:
        raise AccelDetError("the network has no Conv2d layer")
    channels = in_channels or input_channels(model, paths, input_hw)
    calls: "OrderedDict[str, List[Call]]" = OrderedDict()

    def hook_for(path: str):
        def hook(module, args, output):
            hw = lambda t: (int(t.shape[-2]), int(t.shape[-1]))  # noqa: E731
            calls.setdefault(path, []).append((hw(args[0]), hw(output)))

        return hook

    handles = [model.get_submodule(p).register_forward_hook(hook_for(p)) for p in paths]
    try:
        try:
            meta_forward(model, torch.empty(1, channels, *input_hw, device="meta"))
        except Exception:  # a forward that reads values (``.item()``, data-dependent shapes)
            calls.clear()
            with torch.inference_mode():
                device = next(iter(model.parameters())).device
                model(torch.zeros(1, channels, *input_hw, device=device))
    except AccelDetError:
        raise
    except Exception as error:
        raise AccelDetError(
            f"the network does not run on a {channels}x{input_hw[0]}x{input_hw[1]} input: "
            f"{first_line(error)}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return calls


def meta_forward(model: nn.Module, x: torch.Tensor):
    """``model(x)`` with every parameter and buffer replaced by an empty meta tensor."""
    state = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    with torch.inference_mode():
        return torch.func.functional_call(model, state, (x,), strict=False)


def input_channels(model: nn.Module, paths: Sequence[str], input_hw: Tuple[int, int]) -> int:
    """The input channels of the network: those of the first of its convs ``paths`` whose input
    channels make it run on the meta device. The first conv in module order need not be the first
    to run (Detectron2's FPN registers its own convs before the ResNet it runs first)."""
    candidates = list(dict.fromkeys(model.get_submodule(p).in_channels for p in paths))
    for channels in candidates if len(candidates) > 1 else ():
        try:
            meta_forward(model, torch.empty(1, channels, *input_hw, device="meta"))
            return channels
        except Exception:  # another count of channels, or a forward that reads values
            continue
    return candidates[0]


def network_macs(model: nn.Module, input_hw: Tuple[int, int]) -> int:
    """Multiply-adds of every conv of ``model`` (plain, grouped or factorized) for one image of
    ``input_hw``, counted as :mod:`.complexity` counts them (the theoretical speedup's count)."""
    factorized = [n for n, m in model.named_modules() if isinstance(m, FactorizedConv2d)]
    paths = conv_paths(model) + factorized
    total = 0
    for path, runs in trace_calls(model, input_hw, paths).items():
        module = model.get_submodule(path)
        for in_hw, out_hw in runs:
            if isinstance(module, FactorizedConv2d):
                spec = spec_of(path, path, module, (in_hw, out_hw), "linear")
                total += structure_macs(spec, module.structure, module.rank, module.spatial_rank)
            else:  # d · k²c/groups per output position
                total += module.weight.numel() * out_hw[0] * out_hw[1]
    return total
