"""Export a PyTorch module to ONNX or OpenVINO IR, checked against PyTorch before it is written.

The graph comes from PyTorch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``, the
``torch.export`` based one; opset 18), which handles any module made of standard PyTorch layers
(factorized conv and fc layers are plain ``nn.Conv2d`` / ``nn.Linear`` chains) and
torchvision's RoI pooling. OpenVINO IR is converted from that ONNX graph by OpenVINO's ONNX front
end, with float32 weights. Each export runs the new file in a runtime (ONNX Runtime for ONNX,
OpenVINO for IR) on sample inputs and is refused, with nothing written, when an output differs
from PyTorch's by more than the tolerance.

Reduced precisions (:mod:`.precision`): for ``int8`` the checked float32 ONNX graph is quantized
(:mod:`.quantize`, calibrated on the inputs given) and the int8 file written (ONNX, or converted to
IR); for ``bf16`` the float32 file is written as it is and the record says bf16. Either is then
run in its runtime (int8: ONNX Runtime for ONNX, OpenVINO for IR; bf16: OpenVINO with the bf16
hint) on the sample inputs, which are not calibration inputs, and refused, with nothing written,
when it disagrees with the float32 model beyond the bounds of :mod:`.agreement`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import AccelDetError
from ..utils.io import atomic_files, json_safe, refuse_existing, room_failure, write_failure
from . import agreement as agreements
from .precision import check_precision, slow_precision_note, warn_if_slow
from .quantize import quantize_onnx
from .record import export_record, files_digest, model_files, record_path
from .runtime import DISPLAY_NAMES, import_runtime, load_runtime, one_line

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
CHECK_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}
OPSET = 18
DEFAULT_TOLERANCE = 1e-3
AGREEMENT_IMAGES = 8  # a classifier's reduced-precision check: at least this many images


@dataclass
class Graph:
    """A module to export: its eval-mode ``module``, sample inputs (the first is traced, every one
    is checked), the names of inputs and outputs, and the dynamic dimensions of each input
    (``torch.export.Dim`` per axis; ``None``: all static)."""

    module: nn.Module
    samples: List[Tuple[torch.Tensor, ...]]
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_shapes: Optional[Tuple[Dict[int, object], ...]] = None
    description: str = ""
    # what the model was made from and expects: written to the record next to it (see .record)
    provenance: Dict[str, object] = field(default_factory=dict)


@dataclass
class ExportResult:
    path: str
    files: List[str]
    format: str
    runtime: str
    # per sample, per output name: max |runtime - torch| / max |torch|
    differences: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "fp32"
    # a reduced precision: its agreement with the float32 model (.agreement) and in which runtime
    agreement: Dict[str, float] = field(default_factory=dict)
    agreement_runtime: str = ""
    settings: Dict[str, object] = field(default_factory=dict)  # quantizer, calibration

    @property
    def max_difference(self) -> float:
        return max((d for sample in self.differences for d in sample.values()), default=0.0)


def output_files(path: str, fmt: str) -> List[str]:
    """The files an export writes: ``X.onnx``, or OpenVINO's ``X.xml`` and ``X.bin``, and the
    record of what the model was made from (``X.onnx.json``, :mod:`.record`)."""
    check_format(fmt)
    return model_files(path, fmt) + [record_path(path)]


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise AccelDetError(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")


def check_output(path: str, fmt: str, overwrite: bool = False) -> List[str]:
    """Refuse, before any work, an output whose suffix does not match ``fmt`` or that exists
    (unless ``overwrite``); returns the files the export will write."""
    check_format(fmt)
    if not path.endswith(FORMATS[fmt]):
        raise AccelDetError(f"an {fmt} output must end with {FORMATS[fmt]}, got {path}")
    files = output_files(path, fmt)
    refuse_existing(files, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise AccelDetError(f"output folder {folder} does not exist")
    return files


def dynamic_dim(name: str, minimum: int = 1, maximum: int = 1 << 16):
    """A dynamic axis for :class:`Graph` ``dynamic_shapes``."""
    return torch.export.Dim(name, min=minimum, max=maximum)


def to_onnx(graph: Graph, path: str) -> None:
    """Write ``graph`` as ONNX (opset 18) to ``path`` (not atomically: see
    :func:`export_graph`)."""
    module = graph.module.eval()
    with warnings.catch_warnings(), torch.no_grad(), quiet_loggers():
        warnings.simplefilter("ignore")  # torch.export's notes on its own internals
        try:
            program = torch.onnx.export(
                module,
                graph.samples[0],
                dynamo=True,
                opset_version=OPSET,
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                dynamic_shapes=graph.dynamic_shapes,
                custom_translation_table=custom_translations(),
                verbose=False,
            )
        except Exception as error:  # torch.export and the translation raise many types
            raise AccelDetError(
                f"PyTorch's ONNX exporter cannot export {graph.description or 'the model'}: "
                f"{one_line(error)} (--debug shows why)"
            ) from error
    program.save(path, external_data=False)


@contextlib.contextmanager
def quiet_loggers(names=("onnxscript", "onnx_ir", "torch.onnx", "torch.export")):
    """The exporter's INFO records (one per rewrite rule and folded constant) held back."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def custom_translations() -> dict:
    """ONNX translations of ops whose own translation is missing or wrong: torchvision's
    ``roi_pool`` (onnxscript 0.7's takes another signature) as ONNX ``MaxRoiPool``, whose
    rounding is Caffe's, as torchvision's is."""
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    from onnx import TensorProto
    from onnxscript import opset18 as op

    def roi_pool(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
        pooled = op.MaxRoiPool(
            input, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=spatial_scale
        )
        argmax = op.Cast(pooled, to=TensorProto.INT64)  # roi_pool's second output: unused
        return pooled, argmax

    return {torch.ops.torchvision.roi_pool.default: roi_pool}


def to_openvino(onnx_path: str, xml_path: str) -> None:
    """Convert an ONNX file to OpenVINO IR (``xml_path`` and the ``.bin`` next to it), keeping
    float32 weights. ``Core.read_model`` (OpenVINO's ONNX front end) rather than
    ``ov.convert_model``, which sends usage telemetry unless the user has opted out."""
    ov = import_runtime("openvino")
    ov.save_model(ov.Core().read_model(onnx_path), xml_path, compress_to_fp16=False)


def export_graph(
    graph: Graph,
    path: str,
    fmt: str = "onnx",
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int = 1,
    overwrite: bool = False,
    precision: str = "fp32",
    calibration: Optional[Sequence[tuple]] = None,
    calibration_record: Optional[Mapping] = None,
    bounds: Optional[agreements.Bounds] = None,
) -> ExportResult:
    """Export ``graph`` to ``path`` in ``fmt`` (``onnx`` or ``openvino``), run the result in ONNX
    Runtime (onnx) or OpenVINO (openvino) on every sample and compare with PyTorch; write it only
    when the largest relative difference is at most ``tolerance``, else raise
    :class:`AccelDetError` and leave ``path`` as it was.

    ``precision`` ``int8`` (quantized with ``calibration``, tuples of inputs; what they were is
    ``calibration_record``) or ``bf16``: the float32 graph is checked as above in ONNX Runtime,
    then the reduced-precision model must agree with PyTorch's float32 outputs within ``bounds``
    (module docstring)."""
    check_precision(precision)
    if precision == "int8" and not calibration:
        raise AccelDetError("an int8 export needs calibration inputs")
    files = check_output(path, fmt, overwrite)
    if precision != "fp32":
        warn_if_slow(precision)
    start = time.perf_counter()
    checked = CHECK_RUNTIME[fmt] if precision == "fp32" else "onnxruntime"
    result = ExportResult(path=path, files=files, format=fmt, runtime=checked, precision=precision)
    # published in the order X.bin, X.xml (OpenVINO's entry point), the record: the record completes
    # the set (atomic_files publishes its first path last)
    with atomic_files([files[-1], *files[:-1]], replace=overwrite) as staged:
        temporaries = [*staged[1:], staged[0]]
        expected = torch_outputs(graph)
        if precision == "fp32":
            write_export(graph, fmt, temporaries[:-1], files[:-1])
            check_float32(graph, temporaries[0], result, expected, threads, tolerance)
        else:
            scratch = os.path.dirname(temporaries[0])
            onnx_path = os.path.join(scratch, "graph.onnx")
            write_export(graph, "onnx", [onnx_path], files[:1])
            check_float32(graph, onnx_path, result, expected, threads, tolerance)
            settings = reduce_precision(
                graph, onnx_path, precision, fmt, temporaries[:-1], files[:-1], calibration
            )
            check_agreement(
                graph, temporaries[0], result, expected, threads, bounds or agreements.Bounds()
            )
            result.settings = (
                {
                    **settings,
                    "calibration": dict(calibration_record or {}, inputs=len(calibration or [])),
                }
                if precision == "int8"
                else settings
            )
        write_record(graph, result, temporaries, tolerance, bounds)
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def torch_outputs(
    graph: Graph, samples: Optional[Sequence[tuple]] = None
) -> List[List[np.ndarray]]:
    """PyTorch's (float32) outputs of ``graph.module`` on each of ``samples`` (default: the
    graph's)."""
    outputs = []
    for sample in graph.samples if samples is None else samples:
        got = graph.module(*sample)
        got = [got] if isinstance(got, torch.Tensor) else list(got)
        outputs.append([g.numpy() for g in got])
    return outputs


def check_float32(graph, model_path, result, expected, threads, tolerance) -> None:
    """Run the float32 file ``model_path`` in ``result.runtime`` on the samples and refuse it
    when it differs from PyTorch (``expected``) by more than ``tolerance``."""
    path = result.path
    runtime = load_runtime(model_path, result.runtime, threads, "fp32")
    runtime.path = path  # for messages: the file is still a temporary one
    try:
        result.differences = compare(graph, runtime, expected)
    except AccelDetError as error:
        raise AccelDetError(f"{error}: nothing written to {path}") from None
    worst = max(
        (d, i, name) for i, sample in enumerate(result.differences) for name, d in sample.items()
    )
    if not worst[0] <= tolerance:  # NaN fails too
        raise AccelDetError(
            f"the exported model differs from PyTorch in {DISPLAY_NAMES[result.runtime]} by "
            f"{worst[0]:.3g} (largest relative difference, output {worst[2]}, sample "
            f"{worst[1] + 1}), above the tolerance {tolerance:g}: nothing written to {path}"
        )


def reduce_precision(graph, onnx_path, precision, fmt, temporaries, files, calibration) -> dict:
    """Write the ``precision`` form of the checked float32 ``onnx_path`` to ``temporaries`` (for
    ``files``, in ``fmt``); returns the settings the record keeps."""
    if precision == "bf16":
        settings = {
            "applied": "at run time: OpenVINO INFERENCE_PRECISION_HINT=bf16 (the file keeps "
            "float32 weights)"
        }
        source = onnx_path
    else:
        source = temporaries[0] if fmt == "onnx" else onnx_path[: -len(".onnx")] + ".int8.onnx"
        names = list(graph.input_names)
        arrays = [tuple(as_numpy(x) for x in sample) for sample in calibration]
        settings = quantize_onnx(onnx_path, source, names, arrays)
    if fmt == "onnx":
        if source != temporaries[0]:
            os.replace(source, temporaries[0])
        return settings
    try:
        to_openvino(source, temporaries[0])
    except RuntimeError as error:
        failure = room_failure(list(zip(temporaries, files)))
        if failure is not None:
            raise failure from None
        raise AccelDetError(f"cannot write {' and '.join(files)}: OpenVINO: {one_line(error)}")
    return settings


def check_agreement(graph, model_path, result, expected, threads, bounds) -> None:
    """Run the reduced-precision file ``model_path`` (int8: in the runtime of its format; bf16:
    in OpenVINO) on the samples (and, for a classifier, more random images: see
    :func:`agreement_samples`), measure its agreement with PyTorch's float32 outputs and refuse it
    outside ``bounds``."""
    precision = result.precision
    name = CHECK_RUNTIME[result.format] if precision == "int8" else "openvino"
    runtime = load_runtime(model_path, name, threads, precision)
    runtime.path = result.path
    samples = agreement_samples(graph)
    if len(samples) > len(graph.samples):
        expected = expected + torch_outputs(graph, samples[len(graph.samples) :])
    got = [runtime(*sample) for sample in samples]
    result.agreement = agreements.agreement(graph.output_names, expected, got)
    result.agreement_runtime = name
    failed = agreements.violation(result.agreement, bounds)
    if failed:
        raise AccelDetError(
            f"the {precision} model disagrees with the float32 model in {DISPLAY_NAMES[name]}: "
            f"{failed}: nothing written to {result.path}"
        )


def agreement_samples(graph: Graph, images: int = AGREEMENT_IMAGES, seed: int = 1) -> List[tuple]:
    """The graph's samples, and for a classifier (one ``images`` input) random ones of its first
    sample's shape until there are at least ``images`` images (top-1 agreement of one image says
    little)."""
    samples = list(graph.samples)
    if list(graph.input_names) != ["images"]:
        return samples
    generator = torch.Generator().manual_seed(seed)
    shape = graph.samples[0][0].shape
    while sum(len(s[0]) for s in samples) < images:
        samples.append((torch.randn(*shape, generator=generator),))
    return samples


def as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def write_export(graph: Graph, fmt: str, temporaries: List[str], files: List[str]) -> None:
    """Write ``graph`` in ``fmt`` to ``temporaries`` (for ``files``); a write that runs out of room
    is one line naming the output file."""
    path = files[0]
    try:
        if fmt == "onnx":
            to_onnx(graph, temporaries[0])
            return
        onnx_path = os.path.join(os.path.dirname(temporaries[0]), "graph.onnx")
        to_onnx(graph, onnx_path)
        try:
            to_openvino(onnx_path, temporaries[0])
        except RuntimeError as error:  # OpenVINO's writer says "iostream error", not why
            failure = room_failure(list(zip(temporaries, files)))
            if failure is not None:
                raise failure from None
            raise AccelDetError(
                f"cannot write {' and '.join(files)}: OpenVINO: {one_line(error)}"
            ) from None
        os.remove(onnx_path)
    except OSError as error:
        failure = write_failure(path, error)
        if failure is None:
            raise
        raise failure from None


def write_record(
    graph: Graph,
    result: ExportResult,
    temporaries: List[str],
    tolerance: float,
    bounds: Optional[agreements.Bounds] = None,
):
    """Write the record (:mod:`.record`) of an export whose files are still ``temporaries``, the
    record's the last: input shapes (dynamic axes by name), outputs, ``graph.provenance``, the
    sha256 of the model's files and the check against PyTorch."""
    dims = graph.dynamic_shapes or [None] * len(graph.input_names)
    shapes = {}  # per input: its first sample's shape, a dynamic axis by its name
    for name, sample, axes in zip(graph.input_names, graph.samples[0], dims):
        axes = axes or {}
        shapes[name] = [
            getattr(axes[i], "__name__", size) if i in axes else size
            for i, size in enumerate(sample.shape)
        ]
    provenance = {"input_shapes": shapes, "outputs": list(graph.output_names), **graph.provenance}
    if result.precision != "fp32":
        provenance["reduced_precision"] = {
            **result.settings,
            "cpu_note": slow_precision_note(result.precision) or None,
            "agreement": {
                "with": "PyTorch float32 outputs on the sample inputs (no calibration input)",
                "runtime": result.agreement_runtime,
                "samples": len(agreement_samples(graph)),
                "measures": result.agreement,
                "bounds": (bounds or agreements.Bounds()).record(),
            },
        }
    record = export_record(
        provenance,
        description=graph.description,
        export_format=result.format,
        opset=OPSET,
        precision=result.precision,
        files=files_digest(temporaries[:-1], result.files[:-1]),
        check={
            "runtime": result.runtime,
            "max_relative_difference": result.max_difference,
            "tolerance": tolerance,
            "samples": len(result.differences),
        },
    )
    try:
        with open(temporaries[-1], "w", encoding="utf-8") as f:
            json.dump(json_safe(record), f, indent=2)
            f.write("\n")
    except OSError as error:
        failure = write_failure(result.files[-1], error)
        if failure is None:
            raise
        raise failure from None


def compare(graph: Graph, runtime, expected=None) -> List[Dict[str, float]]:
    """Per sample, per output: the largest relative difference of ``runtime``'s outputs to the
    module's (``expected``: :func:`torch_outputs`, computed when not given;
    :func:`relative_difference`)."""
    expected = torch_outputs(graph) if expected is None else expected
    differences = []
    for sample, wanted in zip(graph.samples, expected):
        got = runtime(*sample)
        differences.append(
            {name: relative_difference(g, e) for name, g, e in zip(graph.output_names, got, wanted)}
        )
    return differences


def relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected| (infinite for another shape): differences relative
    to the output's scale, not element by element (which small values would blow up)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return float("inf")
    if expected.size == 0:
        return 0.0
    scale = float(np.abs(expected).max())
    value = float(np.abs(got - expected).max() / (scale if scale > 0 else 1.0))
    return value if np.isfinite(value) else float("inf")
