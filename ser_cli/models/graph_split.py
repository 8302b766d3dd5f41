"""Cut a traced network into the five pre-activation blocks of the `Backbone` contract (torch.fx).

A torchvision CNN computes its stages in one `forward`; SER needs it run tap by tap, with the activation after each
tap replaceable by the modulation (Bellitto et al., NeurIPS 2024, section 3). This module traces the network with
torchvision's `NodePathTracer` (the tracer of `torchvision.models.feature_extraction`, whose node names
`get_graph_node_names` prints) and splits the graph at five named tap nodes: block i holds the nodes after the
activation of tap i-1 up to tap i, and the activation nodes themselves are dropped (the `Backbone` applies them,
out of place). Each block is an `fx.GraphModule` holding the very submodules of the network, so the parameters are
shared, not copied. A cut that more than one tensor crosses (a skip connection around a tap, a tap that feeds
something besides its activation) is refused: the blocks would not compute the network.

`create_feature_extractor` itself is not used because it always treats torchvision.ops modules as leaves, and
`Conv2dNormActivation` is one: the BN output before MobileNet's ReLU6 or EfficientNet's SiLU would not be a node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
import torchvision
from torch import Tensor, fx, nn
from torchvision.models.feature_extraction import NodePathTracer
from torchvision.ops import StochasticDepth

# Activation module -> its out-of-place function (the taps must keep their negative values).
ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {nn.ReLU: F.relu, nn.ReLU6: F.relu6, nn.SiLU: F.silu}


def trace(model: nn.Module) -> tuple[fx.Graph, dict[str, fx.Node]]:
    """The graph of `model`'s forward, through every module except StochasticDepth, and its nodes by name.

    Raises:
        ValueError: the train-mode and eval-mode graphs differ (a blocks' split would be right in one mode only).
    """
    was_training = model.training
    graphs = []
    for mode in (True, False):
        # StochasticDepth branches on `self.training`: as a leaf it decides at run time, as in torchvision.
        tracer = NodePathTracer(leaf_modules=[StochasticDepth], autowrap_modules=(math, torchvision.ops))
        graphs.append((tracer.trace(model.train(mode)), tracer.node_to_qualname))
    model.train(was_training)
    (train, _), (graph, names) = graphs
    if [(n.op, str(n.target)) for n in train.nodes] != [(n.op, str(n.target)) for n in graph.nodes]:
        raise ValueError(f"{type(model).__name__}: train and eval mode trace to different graphs")
    return graph, {name: node for node, name in names.items()}


def split_at_taps(model: nn.Module, taps: list[str]) -> tuple[list[fx.GraphModule], list[Callable[[Tensor], Tensor]]]:
    """Blocks computing the pre-activation `taps` of `model` one after the other, and the activation after each.

    Args:
        model: The network (its parameters end up shared with the blocks).
        taps: Node names (as `get_graph_node_names` gives them, through torchvision.ops modules), in forward order;
            each must feed exactly one node, an activation module (ReLU, ReLU6 or SiLU).

    Returns:
        Blocks where block 0 maps the input to tap 0 and block i maps act_{i-1}(tap i-1) to tap i, and the
        activation functions act_i.

    Raises:
        ValueError: an unknown node, a tap not followed by an activation alone, or a cut more than one tensor crosses.
    """
    graph, nodes = trace(model)
    unknown = [t for t in taps if t not in nodes]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no node {unknown[0]!r}")
    names = {node: name for name, node in nodes.items()}
    tap_nodes = [nodes[t] for t in taps]
    act_nodes = [_activation_node(model, t, names) for t in tap_nodes]
    (x,) = [n for n in graph.nodes if n.op == "placeholder"]
    order = {node: k for k, node in enumerate(graph.nodes)}
    starts = [x, *act_nodes[:-1]]
    blocks = [_block(model, start, tap, order, names) for start, tap in zip(starts, tap_nodes, strict=True)]
    acts = [ACTIVATIONS[type(model.get_submodule(a.target))] for a in act_nodes]
    return blocks, acts


def _activation_node(model: nn.Module, tap: fx.Node, names: dict[fx.Node, str]) -> fx.Node:
    """The single user of `tap`, checked to be an activation module."""
    users = list(tap.users)
    act = users[0] if len(users) == 1 else None
    if act is None or act.op != "call_module" or type(model.get_submodule(act.target)) not in ACTIVATIONS:
        kinds = ", ".join(a.__name__ for a in ACTIVATIONS)
        found = ", ".join(names.get(u, u.name) for u in users) or "nothing"
        raise ValueError(f"tap {names[tap]!r} must feed one activation module ({kinds}); it feeds {found}")
    return act


def _block(model: nn.Module, start: fx.Node, tap: fx.Node, order: dict[fx.Node, int],
           names: dict[fx.Node, str]) -> fx.GraphModule:
    """The nodes from `start` (exclusive, becomes the input) to `tap` (the output) as a module sharing `model`'s."""
    graph = fx.Graph()
    env = {start: graph.placeholder("x")}
    for node in sorted(_between(start, tap, order, names), key=order.__getitem__):
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(env[tap])
    return fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Block")


def _between(start: fx.Node, tap: fx.Node, order: dict[fx.Node, int], names: dict[fx.Node, str]) -> set[fx.Node]:
    """`tap` and its ancestors back to `start`; any other way in from before `start` is a second crossing tensor."""
    found, stack = set(), [tap]
    while stack:
        node = stack.pop()
        if node is start or node in found:
            continue
        if order[node] < order[start] and node.op != "get_attr":
            raise ValueError(f"{names[tap]!r} needs {names.get(node, node.name)!r} from before the cut at "
                             f"{names.get(start, start.name)!r}: more than one tensor would cross the cut")
        found.add(node)
        stack.extend(node.all_input_nodes)
    return found
