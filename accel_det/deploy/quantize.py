"""Post-training static int8 quantization of an exported float32 ONNX graph.

The quantizer is ONNX Runtime's ``quantize_static`` writing QDQ ONNX (QuantizeLinear /
DequantizeLinear pairs around the float ops): int8 weights per output channel (symmetric), uint8
activations per tensor with ranges from min / max over real calibration inputs. Why this one:
it ships with ONNX Runtime (no other dependency), it works on any ONNX graph the exporter writes
(factorized layers are plain convs and fc layers), and its QDQ file is the int8 format both
runtimes read: ONNX Runtime runs it with its int8 kernels, OpenVINO maps the pairs to
FakeQuantize and runs int8 convs and fc layers (the fastest CPU form measured). NNCF would add a
dependency and an OpenVINO-only file for the same QDQ scheme.

Only the network's own compute is quantized (:data:`OP_TYPES`: convs, fc layers, pooling,
reshapes); the detector's softmax, box decoding and RoI pooling stay float32, so boxes are not
rounded to an int8 grid.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from ..errors import AccelDetError
from .runtime import import_runtime, one_line

OP_TYPES = ("Conv", "Gemm", "MatMul", "MaxPool", "Relu", "Flatten", "Reshape")
logger = logging.getLogger(__name__)


def quantizer_settings() -> Dict[str, object]:
    """What :func:`quantize_onnx` does, for the record next to the model."""
    ort = import_runtime("onnxruntime")
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "onnxruntime": ort.__version__,
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor",
        "calibration_method": "MinMax",
        "op_types": list(OP_TYPES),
        "reduce_range": False,
    }


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of input tuples."""

    def __init__(self, names: Sequence[str], inputs: Iterable[Tuple[np.ndarray, ...]]):
        self.feeds = iter([dict(zip(names, sample)) for sample in inputs])

    def get_next(self):
        return next(self.feeds, None)

    def __len__(self):  # pragma: no cover - read by some versions of the quantizer
        return 0


def quantize_onnx(
    source: str,
    target: str,
    input_names: Sequence[str],
    calibration: Sequence[Tuple[np.ndarray, ...]],
) -> Dict[str, object]:
    """Write the int8 QDQ form of the float32 ONNX file ``source`` to ``target``, its activation
    ranges measured on ``calibration`` (tuples of inputs in the order of ``input_names``); returns
    :func:`quantizer_settings`."""
    if not calibration:
        raise AccelDetError("int8 quantization needs calibration inputs (none given)")
    import_runtime("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    inputs = [tuple(np.ascontiguousarray(a, dtype=np.float32) for a in s) for s in calibration]
    try:
        with no_preprocessing_advice():
            quantize_static(
                source,
                target,
                _Reader(input_names, inputs),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
    except AccelDetError:
        raise
    except Exception as error:  # the quantizer raises many types
        raise AccelDetError(f"ONNX Runtime cannot quantize the model: {one_line(error)}") from None
    return quantizer_settings()


@contextlib.contextmanager
def no_preprocessing_advice():
    """The quantizer's advice (two root-logger warnings) to run its shape-inference pre-pass held
    back: the exporter's graph has its shapes and constants folded already."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
