"""ONNX files as differentiable models: ``--model path/to/model.onnx``.

The graph is converted to a torch module by onnx2torch (onnx's own tools and onnxruntime only run
inference; preimage needs gradients with respect to the input). Before conversion the graph is
repaired where files from other exporters trip the converter:

- initializers listed as graph inputs (IR version 3) are no longer inputs;
- old opsets (below :data:`MIN_OPSET`) are upgraded with ``onnx.version_converter`` to
  :data:`TARGET_OPSET`;
- weights made by ``ConstantOfShape`` nodes (from a constant shape) become initializers, and so do
  ``Constant`` nodes (onnx2torch reads Clip bounds, pads and shapes only from initializers);
- ``Dropout`` (inference: the identity) becomes ``Identity`` when its mask output is unused, which
  also covers the old opsets onnx2torch has no Dropout converter for;
- ``AveragePool`` with asymmetric padding becomes ``Pad`` + ``AveragePool`` divided by the count of
  real (not padded) pixels in each window, which is the same function;
- a ``Reshape`` to a constant shape that starts with the batch size 1 copies the batch size instead
  (``0``), so batches of several images run;
- a final ``Softmax`` is removed: class scores are the logits, as for every other model; scores
  shaped ``N x K x 1 x 1`` (1x1-convolution classifiers such as SqueezeNet) are flattened to ``N x K``.

Any operator onnx2torch cannot convert ends in one line naming it, its node and opset.

Layers are the converted graph's nodes (one module per ONNX node, named after the node with ``.``
replaced by ``/``); the ONNX node names and output names are aliases, so ``--layer`` takes either.

Preprocessing comes from keyword arguments (the CLI's ``--mean``, ``--std``, ``--input-size``,
``--channels``, ``--classes``), then from a sidecar file ``NAME.json`` next to ``NAME.onnx``::

    {"mean": [0.2860], "std": [0.3530], "input_size": 28, "channels": 1, "classes": "classes.txt"}

(``classes`` is a list of names or a text file, one name per line, relative to the sidecar), then
from the graph's input shape ``N x C x H x W`` (channels, input size), then from the defaults of
:mod:`preimage.models.module` (ImageNet mean/std for 3 channels, 0 and 1 otherwise; 224 pixels).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PreimageError, did_you_mean

__all__ = ["load_onnx", "read_sidecar", "prepare", "convert", "MIN_OPSET", "TARGET_OPSET",
           "SIDECAR_KEYS"]

#: graphs with an older default-domain opset are upgraded (onnx2torch lacks converters for some
#: operators of opsets 7-10, e.g. Dropout)
MIN_OPSET = 11
#: the opset old graphs are upgraded to
TARGET_OPSET = 13
#: the newest opset onnx2torch 1.5 converts in full (it lacks Constant v19, ReduceMean v18, ...)
MAX_OPSET = 17
SIDECAR_KEYS = ("mean", "std", "input_size", "channels", "classes")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The preprocessing stored next to ``NAME.onnx`` in ``NAME.json`` ({} when there is none)."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreimageError(f"cannot read the sidecar {side}: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise PreimageError(f"the sidecar {side} must hold a JSON object with keys {', '.join(SIDECAR_KEYS)}")
    for key in data:
        if key not in SIDECAR_KEYS:
            raise PreimageError(f"unknown key {key!r} in {side}" + did_you_mean(key, SIDECAR_KEYS)
                                + f"; keys: {', '.join(SIDECAR_KEYS)}")
    if isinstance(data.get("classes"), str):
        data["classes"] = str(side.parent / data["classes"])
    return data


def _read(path: str | os.PathLike):
    import onnx

    p = Path(path).expanduser()
    if not p.exists():
        raise PreimageError(f"no such ONNX file: {path}")
    if p.is_dir():
        raise PreimageError(f"{path} is a directory, not an ONNX file")
    try:
        proto = onnx.load(str(p))
    except Exception as exc:  # DecodeError, missing external data, permission
        raise PreimageError(f"{path} is not a readable ONNX file ({_first_line(exc)})") from None
    if not proto.graph.node:
        raise PreimageError(f"{path} is not an ONNX model (no graph nodes)")
    return proto


def _opset(proto) -> int:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _image_input(proto):
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise PreimageError(f"the ONNX graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                            "preimage feeds one image batch")
    return inputs[0]


def input_shape(proto) -> tuple[int | None, ...]:
    """The image input's dimensions (None where symbolic)."""
    dims = _image_input(proto).type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)


def prepare(proto) -> tuple[Any, list[str]]:
    """Repair a graph for conversion (see the module docstring); returns it and a note per repair."""
    import onnx
    from onnx import helper, numpy_helper

    notes: list[str] = []
    g = proto.graph
    image = _image_input(proto)
    inits = {i.name for i in g.initializer}
    if len(g.input) > 1:
        kept = [i for i in g.input if i.name not in inits]
        del g.input[:]
        g.input.extend(kept)
        proto.ir_version = max(proto.ir_version, 4)  # IR >= 4: initializers need not be inputs
    # a final Softmax gives probabilities; preimage works on logits (removed before an opset upgrade,
    # which would wrap an old 4-D Softmax in reshapes)
    producer = [n for n in g.node if len(g.output) == 1 and g.output[0].name in n.output]
    if producer and producer[0].op_type == "Softmax":
        soft = producer[0]
        g.node.remove(soft)
        del g.output[:]
        g.output.append(helper.make_empty_tensor_value_info(soft.input[0]))
        notes.append("the final Softmax is removed (class scores are logits)")
    opset = _opset(proto)
    renamed = opset < MIN_OPSET and not any(n.name for n in g.node)  # the converter names nodes n0, n1, ...
    if opset < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, TARGET_OPSET)
        except Exception as exc:
            raise PreimageError(f"cannot upgrade the ONNX graph from opset {opset} to {TARGET_OPSET}: "
                                f"{_first_line(exc)}") from None
        notes.append(f"opset {opset} upgraded to {TARGET_OPSET}")
        g = proto.graph
    elif opset > TARGET_OPSET and _unsupported(proto) is not None:
        # newer opsets than onnx2torch knows for some operator (Constant v19 in torch's opset-20
        # exports): the same graph written in an older opset, when onnx can convert it down
        op = _unsupported(proto)
        try:
            down = onnx.version_converter.convert_version(proto, TARGET_OPSET)
        except Exception:
            down = None
        if down is not None and _unsupported(down) is None:
            proto, g = down, down.graph
            notes.append(f"opset {opset} converted down to {TARGET_OPSET} (onnx2torch has no {op[0]} v{op[1]})")
    for i, node in enumerate(g.node):  # unnamed nodes take their first output's name
        if not node.name or (renamed and node.name == f"n{i}"):
            node.name = node.output[0] if node.output and node.output[0] else f"{node.op_type}_{i}"
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
        g = proto.graph
    except Exception:  # shapes are a help for the repairs below, not a requirement
        pass
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*g.value_info, *g.input, *g.output]}
    arrays = {i.name: i for i in g.initializer}
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    batch = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim][:1]
    counts = {"ConstantOfShape": 0, "Constant": 0, "Dropout": 0, "Reshape": 0, "AveragePool": 0}
    nodes = []
    for node in g.node:
        op = node.op_type
        if op == "Dropout" and all(o not in used for o in node.output[1:]):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
            counts[op] += 1
            continue
        if (op == "Reshape" and batch in ([1], [None]) and len(node.input) > 1 and node.input[1] in arrays
                and node.input[0] not in arrays and _attr(node, "allowzero", 0) == 0):
            target = numpy_helper.to_array(arrays[node.input[1]]).reshape(-1)
            src = shapes.get(node.input[0])
            if target.size > 1 and target[0] == 1 and src and src[0] == 1:
                name = f"{node.input[1]}__batch"
                if name not in arrays:
                    new = target.copy()
                    new[0] = 0
                    arrays[name] = numpy_helper.from_array(new.astype(np.int64), name)
                    g.initializer.append(arrays[name])
                node.input[1] = name
                counts[op] += 1
        if op == "AveragePool":
            pads = list(_attr(node, "pads", []) or [])
            half = len(pads) // 2
            if pads and pads[:half] != pads[half:]:
                nodes.extend(_asymmetric_average_pool(node, pads, arrays, g))
                counts[op] += 1
                continue
        nodes.append(node)
    final = shapes.get(g.output[0].name) if len(g.output) == 1 else None
    if final and len(final) == 4 and final[2:] == [1, 1]:  # N x K x 1 x 1 scores (1x1-conv classifiers)
        name = g.output[0].name
        nodes.append(helper.make_node("Flatten", [name], [f"{name}__flat"], name=f"{name}__flat", axis=1))
        del g.output[:]
        g.output.append(helper.make_empty_tensor_value_info(f"{name}__flat"))
        notes.append("N x K x 1 x 1 scores flattened to N x K")
    del g.node[:]
    g.node.extend(nodes)
    try:  # shapes of the rewritten graph, while its weights are still small (onnx2torch needs them)
        proto = onnx.shape_inference.infer_shapes(proto)
        g = proto.graph
    except Exception:
        pass
    # weights made by ConstantOfShape from a constant shape become initializers
    arrays = {i.name: i for i in g.initializer}
    nodes = []
    for node in g.node:
        while node.input and node.input[-1] == "":  # trailing empty optional inputs (Clip max) trip onnx2torch
            node.input.pop()
        value = _attr(node, "value") if node.op_type == "Constant" else None
        if value is not None and len(node.attribute) == 1:  # onnx2torch wants Clip bounds etc. as initializers
            tensor = numpy_helper.from_array(numpy_helper.to_array(value), node.output[0])
            g.initializer.append(tensor)
            arrays[node.output[0]] = tensor
            counts["Constant"] += 1
        elif node.op_type == "ConstantOfShape" and node.input and node.input[0] in arrays:
            shape = tuple(int(s) for s in numpy_helper.to_array(arrays[node.input[0]]).reshape(-1))
            value = _attr(node, "value")
            fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
            g.initializer.append(numpy_helper.from_array(np.full(shape, fill[0], dtype=fill.dtype), node.output[0]))
            counts["ConstantOfShape"] += 1
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    labels = {"ConstantOfShape": "ConstantOfShape weights folded into initializers",
              "Constant": "Constant nodes made initializers",
              "Dropout": "Dropout nodes made Identity", "Reshape": "batch-1 Reshapes made batch-free",
              "AveragePool": "asymmetric AveragePool paddings made explicit"}
    notes += [f"{n} {labels[k]}" for k, n in counts.items() if n]
    return proto, notes


def _asymmetric_average_pool(node, pads: list[int], arrays: dict, g) -> list:
    """``AveragePool`` with begin != end pads as Pad + AveragePool (+ a division by the window's real
    pixel count when ``count_include_pad`` is 0, ONNX's default): the same numbers, in operators
    onnx2torch converts."""
    from onnx import helper, numpy_helper

    x, y = node.input[0], node.output[0]
    n = len(pads) // 2
    full = [0, 0, *pads[:n], 0, 0, *pads[n:]]
    pname, base = f"{node.name}__pads", node.name
    g.initializer.append(numpy_helper.from_array(np.asarray(full, np.int64), pname))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
             if a.name not in ("pads", "count_include_pad")}
    out = [helper.make_node("Pad", [x, pname], [f"{base}__padded"], name=f"{base}__pad", mode="constant")]
    if _attr(node, "count_include_pad", 0):
        out.append(helper.make_node("AveragePool", [f"{base}__padded"], [y], name=base, **attrs))
        return out
    one = f"{base}__one"
    g.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
    zero = f"{base}__zero"
    g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    out += [
        helper.make_node("AveragePool", [f"{base}__padded"], [f"{base}__sum"], name=f"{base}__sum", **attrs),
        helper.make_node("Mul", [x, zero], [f"{base}__zeros"], name=f"{base}__zeros"),
        helper.make_node("Add", [f"{base}__zeros", one], [f"{base}__ones"], name=f"{base}__ones"),
        helper.make_node("Pad", [f"{base}__ones", pname], [f"{base}__mask"], name=f"{base}__mask", mode="constant"),
        helper.make_node("AveragePool", [f"{base}__mask"], [f"{base}__count"], name=f"{base}__count", **attrs),
        helper.make_node("Div", [f"{base}__sum", f"{base}__count"], [y], name=base),
    ]
    return out


def _o2t_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx2torch")
    except PackageNotFoundError:
        return "?"


def _unsupported(proto) -> tuple[str, int, str] | None:
    """The first node onnx2torch has no converter for: (operator, opset, node name), or None."""
    from onnx2torch.node_converters.registry import get_converter

    versions = {o.domain or "": int(o.version) for o in proto.opset_import}
    for node in proto.graph.node:
        domain = node.domain or ""
        try:
            get_converter(operation_type=node.op_type, version=versions.get(domain, 1), domain=domain)
        except NotImplementedError:
            return (f"{domain}." if domain else "") + node.op_type, versions.get(domain, 1), node.name
    return None


def _check_supported(proto) -> None:
    bad = _unsupported(proto)
    if bad is not None:
        op, opset, node = bad
        hint = ""
        if _opset(proto) > MAX_OPSET:
            hint = (f"; graphs of opset <= {MAX_OPSET} import (from PyTorch: torch.onnx.export(..., dynamo=False, "
                    f"opset_version={MAX_OPSET}))")
        raise PreimageError(f"unsupported ONNX operator {op} (opset {opset}) in node {node!r}: "
                            f"onnx2torch {_o2t_version()} cannot convert it{hint}")


def _index_slices_with_tuples() -> None:
    """onnx2torch's Slice indexes a tensor with a list of slices, which torch deprecates: a warning on
    every forward pass, and another meaning in a later torch. Its modules look the helper up at call
    time, so one that indexes with a tuple (the same result) replaces it."""
    from onnx2torch.node_converters import slice as o2t_slice

    def do_slice(x: torch.Tensor, flip_dims: list, pos_axes_slices: list, neg_axes_slices: list) -> torch.Tensor:
        if flip_dims:
            x = torch.flip(x, dims=flip_dims)
        if pos_axes_slices:
            x = x[tuple(pos_axes_slices)]
        if neg_axes_slices:
            x = x[tuple(neg_axes_slices)]
        return x

    if getattr(o2t_slice, "_do_slice", None) is not None:
        o2t_slice._do_slice = do_slice


def convert(proto) -> tuple[torch.nn.Module, dict[str, str]]:
    """A prepared graph as a torch ``fx.GraphModule``, and aliases (ONNX node and output names ->
    module names)."""
    from unittest import mock

    import onnx2torch
    import onnx2torch.converter as o2t

    _check_supported(proto)
    _index_slices_with_tuples()
    try:
        # shapes were inferred in prepare(), before ConstantOfShape weights were materialized;
        # inferring them again on the full-size graph would only serialize every weight twice
        with mock.patch.object(o2t, "safe_shape_inference", lambda model, **_: model):
            net = onnx2torch.convert(proto, attach_onnx_mapping=True)
    except PreimageError:
        raise
    except Exception as exc:  # a converter that supports the operator but not these attributes
        raise PreimageError(f"onnx2torch cannot convert the graph: {_first_line(exc)}") from None
    modules = {n for n, _ in net.named_modules() if n}
    aliases: dict[str, str] = {}
    for node in proto.graph.node:
        path = (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")
        if path not in modules:
            continue
        for key in (node.name, *node.output):
            if key and key != path and key not in modules:
                aliases.setdefault(key, path)
    return net, aliases


def load_onnx(
    path: str | os.PathLike,
    *,
    weights: str = "default",
    mean: Any = None,
    std: Any = None,
    input_size: int | None = None,
    channels: int | None = None,
    classes: Any = None,
):
    """Load ``path`` as a :class:`~preimage.models.Model` (see the module docstring)."""
    from .module import wrap_module

    if weights != "default":
        raise PreimageError("an ONNX file carries its own weights; weights= (--weights) applies to zoo models")
    proto = _read(path)
    side = read_sidecar(path)
    dims = input_shape(proto)
    graph_c = dims[1] if len(dims) == 4 else None
    graph_size = None
    if len(dims) == 4 and dims[2] and dims[3]:
        if dims[2] != dims[3] and input_size is None and "input_size" not in side:
            raise PreimageError(f"{path} takes {dims[2]}x{dims[3]} images; preimage works on square inputs "
                                "(give --input-size if the graph accepts other sizes)")
        graph_size = dims[2]
    elif len(dims) not in (0, 4):
        raise PreimageError(f"{path} takes a {len(dims)}-D input; preimage feeds N x C x H x W images")
    proto, notes = prepare(proto)
    net, aliases = convert(proto)
    pick = lambda key, given: given if given is not None else side.get(key)  # noqa: E731
    return wrap_module(
        net, name=str(path), mean=pick("mean", mean), std=pick("std", std),
        input_size=pick("input_size", input_size), channels=pick("channels", channels),
        classes=pick("classes", classes), default_channels=graph_c, default_size=graph_size,
        normalization_note="; ".join(notes), aliases=aliases,
    )
