"""The conv layers of any ``nn.Module`` and what follows each, as the solver needs to know it.

A conv layer is named by its qualified module name (``layer3.4.conv2``). What its output feeds is
read from the module's ``torch.fx`` graph where the module traces (any conv, batch norm and
factorized layer kept whole), else from a small table of known blocks (:data:`KNOWN_BLOCKS`:
torchvision's ``BasicBlock`` / ``Bottleneck``, Detectron2's ``BasicStem`` / ``BottleneckBlock`` /
``BasicBlock`` / ``LastLevelP6P7``; :data:`KNOWN_CONV_CHILDREN`: the lateral and output convs of
Detectron2's ``FPN``), else from its children the same way; a conv whose surroundings neither
tell is refused by name. A batch norm right after a conv (eval ``BatchNorm2d``,
``FrozenBatchNorm2d``, or the ``norm`` inside Detectron2's ``Conv2d``) is folded into it; then a
ReLU after it makes the layer a nonlinear target (eq. 5), a residual add, pooling, a
concatenation or the network's output a linear one (eq. 12 without r).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..errors import AccelDetError, first_line
from .factorized import FactorizedConv2d
from .linear import FactorizedLinear

# What may follow a target conv (after its batch norm): the ReLU of eq. (5), or what takes the
# response as it is (eq. 12 without r).
RELU = "relu"
ADD = "add"  # a residual add: a bottleneck's last 1x1, a downsample
OUTPUT = "output"  # the network's output
LINEAR = "linear"  # pooling, concatenation, resizing, dropout, identity
INTERNAL_NORM = "norm"  # the batch norm is the conv's own ``norm`` (Detectron2's Conv2d)

RELU_MODULES = (nn.ReLU,)
RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
RELU_METHODS = ("relu", "relu_")
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ("add", "add_")
LINEAR_MODULES = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    nn.Upsample,
)
LINEAR_FUNCTIONS = (
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.interpolate,
    F.dropout,
    torch.flatten,
    torch.cat,
)
SHAPE_FUNCTIONS = (getattr,)  # ``x.shape``: reads no values
SHAPE_METHODS = ("size", "dim")

# Known blocks, for the modules that do not trace: (module, class) -> conv -> (its batch norm,
# what follows it). A conv the block does not have (``downsample`` is often None) is passed over.
TORCHVISION, DETECTRON2 = "torchvision.models.resnet", "detectron2.modeling.backbone.resnet"
DETECTRON2_FPN = "detectron2.modeling.backbone.fpn"
KNOWN_BLOCKS: Dict[Tuple[str, str], Dict[str, Tuple[Optional[str], str]]] = {
    (TORCHVISION, "BasicBlock"): {
        "conv1": ("bn1", RELU),
        "conv2": ("bn2", ADD),
        "downsample.0": ("downsample.1", ADD),
    },
    (TORCHVISION, "Bottleneck"): {
        "conv1": ("bn1", RELU),
        "conv2": ("bn2", RELU),
        "conv3": ("bn3", ADD),
        "downsample.0": ("downsample.1", ADD),
    },
    (DETECTRON2, "BasicStem"): {"conv1": (INTERNAL_NORM, RELU)},
    (DETECTRON2, "BottleneckBlock"): {
        "conv1": (INTERNAL_NORM, RELU),
        "conv2": (INTERNAL_NORM, RELU),
        "conv3": (INTERNAL_NORM, ADD),
        "shortcut": (INTERNAL_NORM, ADD),
    },
    (DETECTRON2, "BasicBlock"): {
        "conv1": (INTERNAL_NORM, RELU),
        "conv2": (INTERNAL_NORM, ADD),
        "shortcut": (INTERNAL_NORM, ADD),
    },
    # RetinaNet's P6/P7: P6 is an output of the network and, through a ReLU, P7's input
    (DETECTRON2_FPN, "LastLevelP6P7"): {"p6": (None, OUTPUT), "p7": (None, OUTPUT)},
}
# Known modules that do not trace and hold convs of their own beside other parts: (module, class)
# -> the start of a conv child's name -> (its batch norm, what follows it). Detectron2's FPN: each
# lateral 1×1 conv is added to the upsampled coarser map (the coarsest one feeds the output conv
# and the upsampling as it is), each 3×3 output conv gives an output of the network (and the
# max-pooled P6).
KNOWN_CONV_CHILDREN: Dict[Tuple[str, str], Dict[str, Tuple[Optional[str], str]]] = {
    (DETECTRON2_FPN, "FPN"): {
        "fpn_lateral": (INTERNAL_NORM, ADD),
        "fpn_output": (INTERNAL_NORM, OUTPUT),
    },
}


@dataclass(frozen=True)
class ConvNode:
    """A conv of the module: its qualified name, the batch norm folded into it (a qualified name,
    :data:`INTERNAL_NORM`, or None) and what its output feeds (:data:`RELU`, :data:`ADD`,
    :data:`OUTPUT` or :data:`LINEAR`)."""

    path: str
    after: str
    norm: Optional[str] = None

    @property
    def relu(self) -> bool:
        return self.after == RELU


@dataclass
class LayerGraph:
    """What :func:`analyse` found: every conv it can tell about, in the order of the module's
    graph, and the module's ``fx`` graph when the whole module traces (None otherwise)."""

    convs: Dict[str, ConvNode]
    graph: Optional[fx.Graph] = None
    notes: Dict[str, str] = field(default_factory=dict)  # path -> why it was not followed


class LeafTracer(fx.Tracer):
    """``torch.fx``'s tracer that keeps every conv (Detectron2's ``Conv2d`` too), batch norm and
    factorized layer whole, so that they appear in the graph under their qualified names."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, (nn.Conv2d, FactorizedConv2d, FactorizedLinear)):
            return True
        return is_batch_norm(module) or super().is_leaf_module(module, qualified_name)


def is_batch_norm(module) -> bool:
    """An eval batch norm that can be folded: ``BatchNorm2d`` with running statistics, or a
    ``FrozenBatchNorm2d`` (torchvision's or Detectron2's)."""
    if isinstance(module, nn.BatchNorm2d):
        return module.track_running_stats and module.running_mean is not None
    return type(module).__name__ == "FrozenBatchNorm2d" and all(
        hasattr(module, n) for n in ("weight", "bias", "running_mean", "running_var", "eps")
    )


def trace(module: nn.Module) -> Tuple[Optional[fx.Graph], Optional[str]]:
    """The ``fx`` graph of ``module`` and None, or None and why it does not trace."""
    try:
        return LeafTracer().trace(module), None
    except Exception as error:  # any Python in a forward can refuse to trace
        return None, f"{type(error).__name__}: {first_line(error)}"


def analyse(model: nn.Module, use_fx: bool = True) -> LayerGraph:
    """Every conv of ``model`` with its batch norm and what follows it (see the module's
    docstring); ``use_fx=False`` reads known blocks by the table only (to check the table).
    Raises :class:`AccelDetError` naming the first conv it cannot tell about."""
    if isinstance(model, nn.Conv2d):
        raise AccelDetError(
            "the model is a single Conv2d: give the module that holds it (e.g. nn.Sequential(conv))"
        )
    graph, why = trace(model) if use_fx else (None, "torch.fx not used")
    if graph is not None:
        return LayerGraph(graph_convs(model, graph, "", root=True), graph)
    result = LayerGraph({})
    parts_convs(model, "", why, use_fx, result)
    return result


def parts_convs(module: nn.Module, prefix: str, why: str, use_fx: bool, result: LayerGraph):
    """The convs of the children of ``module``, which does not trace (``why``)."""
    known = KNOWN_CONV_CHILDREN.get((type(module).__module__, type(module).__name__), {})
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Conv2d) and left_alone(child) is not None:
            continue  # kept as it is (grouped, dilated, ...): nothing to follow
        role = next((r for start, r in known.items() if name.startswith(start)), None)
        if isinstance(child, nn.Conv2d) and role is not None:
            norm = role[0]
            if norm == INTERNAL_NORM and not is_batch_norm(getattr(child, "norm", None)):
                norm = None
            result.convs[path] = checked_node(child, path, role[1], norm)
            continue
        if isinstance(child, (nn.Conv2d, FactorizedConv2d)):
            what = type(module).__name__
            raise AccelDetError(
                f"cannot tell what follows layer {path}: {what} ({prefix or 'the model'}) does not "
                f"trace with torch.fx ({why}) and is not a known block"
            )
        if not any(isinstance(m, nn.Conv2d) for m in child.modules()):
            continue
        graph, child_why = trace(child) if use_fx else (None, why)
        block = KNOWN_BLOCKS.get((type(child).__module__, type(child).__name__))
        if graph is not None:
            try:
                result.convs.update(graph_convs(child, graph, path, root=False))
                continue
            except AccelDetError:  # an output used where this cannot see: the table may know
                if block is None:
                    raise
        if block is not None:
            result.convs.update(block_convs(child, block, path))
        else:
            parts_convs(child, path, child_why, use_fx, result)


def block_convs(block: nn.Module, table: Mapping, prefix: str) -> Dict[str, ConvNode]:
    """The convs of a known block, from :data:`KNOWN_BLOCKS`."""
    present = {
        name: m
        for name, m in block.named_modules()
        if isinstance(m, nn.Conv2d) and not in_factorized(block, name)
    }
    unknown = sorted(set(present) - set(table))
    if unknown:
        raise AccelDetError(
            f"layer {prefix}.{unknown[0]}: {type(block).__name__} has a conv its known layout "
            "does not (a changed block); make it trace with torch.fx"
        )
    result = {}
    for name, (norm, after) in table.items():
        if name not in present:
            continue
        conv = present[name]
        if norm == INTERNAL_NORM:
            norm = INTERNAL_NORM if is_batch_norm(getattr(conv, "norm", None)) else None
        elif norm is not None:
            norm = f"{prefix}.{norm}" if is_batch_norm(get_module(block, norm)) else None
        result[f"{prefix}.{name}"] = checked_node(conv, f"{prefix}.{name}", after, norm)
    return result


def graph_convs(module: nn.Module, graph: fx.Graph, prefix: str, root: bool) -> Dict[str, ConvNode]:
    """The convs of a traced ``module`` and what follows each; ``root``: the graph's output is the
    network's (else it leaves ``module`` for surroundings unknown here)."""
    modules = dict(module.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    result = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        conv = modules[node.target]
        path = f"{prefix}.{node.target}" if prefix else node.target
        value, norm = node, None
        users = list(node.users)
        if (
            len(users) == 1
            and users[0].op == "call_module"
            and is_batch_norm(modules[users[0].target])
            and calls[users[0].target] == 1
        ):
            value = users[0]
            norm = f"{prefix}.{value.target}" if prefix else value.target
        elif is_batch_norm(getattr(conv, "norm", None)):
            norm = INTERNAL_NORM
        if left_alone(conv) is None:
            after = follower(value, modules, path, root, type(module).__name__)
        else:  # kept as it is: what follows does not matter
            after = LINEAR
        result[path] = checked_node(conv, path, after, norm)
    return result


def follower(value: fx.Node, modules: Mapping, path: str, root: bool, owner: str) -> str:
    """What the users of a conv's output (``value``, after its batch norm) make of it."""
    kinds = []
    for user in value.users:
        kind = user_kind(user, modules, root)
        if kind is None:
            what = describe(user, modules)
            if user.op == "output":
                what = f"the output of {owner}, used where this cannot see"
            raise AccelDetError(
                f"layer {path} is followed by {what}: the solver takes a conv followed by a ReLU, "
                "a batch norm (folded), a residual add, pooling or the network's output"
            )
        if kind != "shape":
            kinds.append(kind)
    if kinds and all(k == RELU for k in kinds):
        return RELU
    for kind in (ADD, OUTPUT):
        if kind in kinds:
            return kind
    return LINEAR


def user_kind(node: fx.Node, modules: Mapping, root: bool) -> Optional[str]:
    """The kind of one user of a conv's output, or None for one the solver does not take."""
    if node.op == "output":
        return OUTPUT if root else None
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, RELU_MODULES):
            return RELU
        return LINEAR if isinstance(module, LINEAR_MODULES) else None
    if node.op == "call_function":
        if node.target in RELU_FUNCTIONS:
            return RELU
        if node.target in ADD_FUNCTIONS:
            return ADD
        if node.target in SHAPE_FUNCTIONS:
            return "shape"
        return LINEAR if node.target in LINEAR_FUNCTIONS else None
    if node.op == "call_method":
        if node.target in RELU_METHODS:
            return RELU
        if node.target in ADD_METHODS:
            return ADD
        return "shape" if node.target in SHAPE_METHODS else None
    return None


def describe(node: fx.Node, modules: Mapping) -> str:
    """A node as a person names it: ``GroupNorm (layer1.gn)``, ``torch.sigmoid``, ``.tanh()``."""
    if node.op == "call_module":
        module = modules[node.target]
        unfoldable = isinstance(module, nn.BatchNorm2d) and not is_batch_norm(module)
        extra = " without running statistics" if unfoldable else ""
        return f"{type(module).__name__} ({node.target}){extra}"
    if node.op == "call_method":
        return f".{node.target}()"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{getattr(node.target, '__module__', None) or 'torch'}.{name}"


def checked_node(conv: nn.Conv2d, path: str, after: str, norm: Optional[str]) -> ConvNode:
    """A :class:`ConvNode`, refusing a conv whose own ``norm`` or ``activation`` (Detectron2's
    ``Conv2d``) cannot be folded or kept."""
    inner = getattr(conv, "norm", None)
    if inner is not None and not is_batch_norm(inner):
        raise AccelDetError(
            f"layer {path} has a {type(inner).__name__} inside: only batch norms fold into a conv"
        )
    if getattr(conv, "activation", None) is not None:
        raise AccelDetError(
            f"layer {path} applies its activation inside the conv module: a factorized layer "
            "would drop it; apply it after the conv instead"
        )
    return ConvNode(path, after, norm)


def in_factorized(root: nn.Module, path: str) -> bool:
    """Whether ``path`` lies inside a factorized layer (its ``reduce``, ``expand``, ...)."""
    parts = path.split(".")
    return any(
        isinstance(get_module(root, ".".join(parts[:i])), (FactorizedConv2d, FactorizedLinear))
        for i in range(1, len(parts))
    )


def get_module(root: nn.Module, path: str) -> Optional[nn.Module]:
    """The submodule ``path`` of ``root`` (``root`` for ""), or None."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule ``path`` of ``root`` (an ``nn.Sequential`` index too). A plain list
    or tuple attribute of its parent that holds the old module holds the new one after it (the
    forward of Detectron2's ``FPN`` calls its convs from the lists ``lateral_convs`` and
    ``output_convs``, not by name)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path)
    old = getattr(parent, name)
    setattr(parent, name, module)
    for attribute, value in list(vars(parent).items()):
        if isinstance(value, (list, tuple)) and any(item is old for item in value):
            replaced = [module if item is old else item for item in value]
            object.__setattr__(parent, attribute, type(value)(replaced))


def left_alone(conv: nn.Conv2d) -> Optional[str]:
    """Why the solver leaves ``conv`` as it is, or None for a conv it factors."""
    if conv.groups != 1:
        return f"grouped ({conv.groups} groups)"
    if tuple(conv.dilation) != (1, 1):
        return f"dilated {tuple(conv.dilation)}"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    return None


def conv_paths(model: nn.Module) -> List[str]:
    """Qualified names of the plain convs of ``model`` (not those inside factorized layers)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not in_factorized(model, name)
    ]
