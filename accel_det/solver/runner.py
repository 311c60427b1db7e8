"""Running a network part of the way: the outputs of its target layers, or the input of one layer in
the network approximated so far (§3.3: the x̂ of eq. 12).

:class:`GraphRunner` runs the module's ``torch.fx`` graph node by node, so a pass can stop at a
layer and the values alive there can be kept for the next layer's pass to start from (in a chain,
one tensor; in a residual block, the branch and the shortcut). :class:`HookRunner`, for modules
that do not trace, runs the module's own forward with hooks and stops it at the layer; each of
its passes starts from the images. Both look modules up by qualified name at call time, so the
approximated network's replaced layers are the ones that run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

Values = Dict[str, object]  # node name -> value (tensors on the CPU when kept)


@dataclass
class LayerInputs:
    """What the pass of layer ``start`` started from, per local batch (the values alive at that
    layer in the network approximated so far, on the CPU), so that the next layer's pass starts
    there instead of at the images."""

    start: str
    values: List[Values]
    indices: List[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(values_nbytes(v) for v in self.values)


def values_nbytes(values: Values) -> int:
    return sum(t.numel() * t.element_size() for t in values.values() if isinstance(t, torch.Tensor))


class StopForward(Exception):
    """Raised by a hook to end a forward pass at the layer it waited for."""


class GraphRunner:
    """Runs the nodes of ``graph`` (the traced graph of the network) on a module with the same
    qualified names (the original network or an approximated copy)."""

    def __init__(self, graph: fx.Graph):
        self.nodes = list(graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"the network takes {len(placeholders)} inputs; one image batch is")
        self.position = {
            n.target: i for i, n in enumerate(self.nodes) if n.op == "call_module"
        }  # a module called more than once is never a target: its last call is kept
        self.last_use = {}
        for index, node in enumerate(self.nodes):
            for source in node.all_input_nodes:
                self.last_use[source] = index

    def outputs(
        self, model: nn.Module, images: torch.Tensor, paths: Sequence[str], visit: Callable
    ) -> None:
        """Run ``model`` on ``images`` until the last of ``paths`` has run; ``visit(path, output)``
        sees each one's output as soon as it is computed (before a ReLU in place changes it)."""
        wanted = set(paths)
        stop = max(self.position[p] for p in paths)
        env: Values = {}
        for index in range(stop + 1):
            node = self.nodes[index]
            env[node.name] = self.run_node(model, node, env, images)
            if node.op == "call_module" and node.target in wanted:
                visit(node.target, env[node.name])
            self.forget(env, index)

    def inputs(
        self,
        model: nn.Module,
        path: str,
        images: Optional[torch.Tensor] = None,
        start: Optional[Tuple[str, Values]] = None,
        keep: bool = False,
    ) -> Tuple[torch.Tensor, Optional[Values]]:
        """The input of layer ``path`` in ``model``, from ``images`` or from the values kept at the
        layer ``start`` names; with ``keep``, also the values alive at ``path`` (to start a later
        pass from)."""
        stop = self.position[path]
        if start is None:
            first, env = 0, {}
        else:
            first = self.position[start[0]]
            env = {name: clone(value) for name, value in start[1].items()}
            for node in self.nodes[:first]:  # parameters and buffers the rest reads
                if node.op == "get_attr":
                    env[node.name] = self.run_node(model, node, env, images)
        for index in range(first, stop):
            node = self.nodes[index]
            env[node.name] = self.run_node(model, node, env, images)
            self.forget(env, index)
        node = self.nodes[stop]
        result = env[node.args[0].name]
        kept = None
        if keep:
            kept = {
                n.name: env[n.name]
                for n in self.nodes[:stop]
                if n.op != "get_attr" and self.last_use.get(n, -1) >= stop
            }
        return result, kept

    def run_node(self, model: nn.Module, node: fx.Node, env: Values, images) -> object:
        def value(source: fx.Node):
            return env[source.name]

        args = fx.node.map_arg(node.args, value)
        kwargs = fx.node.map_arg(node.kwargs, value)
        if node.op == "placeholder":
            return images
        if node.op == "get_attr":
            return attribute(model, node.target)
        if node.op == "call_module":
            return model.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return args[0]  # output

    def forget(self, env: Values, index: int) -> None:
        """Drop the values no node after ``index`` reads."""
        for source in self.nodes[index].all_input_nodes:
            if self.last_use.get(source) == index:
                env.pop(source.name, None)


class HookRunner:
    """Runs the module's own forward, with hooks that see the target layers and stop the pass."""

    def outputs(
        self, model: nn.Module, images: torch.Tensor, paths: Sequence[str], visit: Callable
    ) -> None:
        last = paths[-1]
        handles = []

        def hook_for(path):
            def hook(module, args, output):
                visit(path, output)
                if path == last:
                    raise StopForward

            return hook

        try:
            for path in paths:
                handles.append(model.get_submodule(path).register_forward_hook(hook_for(path)))
            model(images)
        except StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()

    def inputs(self, model: nn.Module, path: str, images=None, start=None, keep=False):
        """The input of layer ``path`` in ``model`` for ``images`` (never kept: every pass starts
        from the images)."""
        seen = []

        def hook(module, args):
            seen.append(args[0])
            raise StopForward

        handle = model.get_submodule(path).register_forward_pre_hook(hook)
        try:
            model(images)
        except StopForward:
            pass
        finally:
            handle.remove()
        return seen[0], None


def attribute(model: nn.Module, target: str):
    value = model
    for atom in target.split("."):
        value = getattr(value, atom)
    return value


def clone(value):
    """A copy of a kept tensor (the pass may change its inputs in place); other values as they
    are."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def make_runner(graph: Optional[fx.Graph]):
    """A :class:`GraphRunner` for a traced network, else a :class:`HookRunner`."""
    return GraphRunner(graph) if graph is not None else HookRunner()
