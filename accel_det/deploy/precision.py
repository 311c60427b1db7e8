"""The precision an exported model runs in: ``fp32``, ``bf16`` or ``int8``.

* ``fp32``: float32 weights and arithmetic (the file as exported).
* ``bf16``: a *runtime setting*, not another file. The ONNX / IR file keeps float32 weights; the
  record next to it says ``bf16`` and :func:`~accel_det.deploy.runtime.load_runtime` compiles it
  in OpenVINO with ``INFERENCE_PRECISION_HINT=bf16`` (bfloat16 arithmetic where the CPU has it,
  float32 accumulation). OpenVINO's ``compress_to_fp16`` is another thing (float16 *storage* of
  the weights, decompressed at load) and is not used. ONNX Runtime's CPU provider has no bfloat16
  arithmetic on x86, so a bf16 model runs in OpenVINO; in eager PyTorch the same setting is
  ``torch.autocast("cpu", torch.bfloat16)``.
* ``int8``: a quantized file (:mod:`.quantize`: QDQ ONNX from ONNX Runtime's ``quantize_static``,
  calibrated on real inputs), run as it is by ONNX Runtime and by OpenVINO (which turns its
  QuantizeLinear / DequantizeLinear pairs into int8 kernels).
"""

from __future__ import annotations

import functools
import logging
from typing import FrozenSet

from ..errors import AccelDetError

PRECISIONS = ("fp32", "bf16", "int8")
# OpenVINO's INFERENCE_PRECISION_HINT per precision (an int8 file's other ops in float32)
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# CPU flags (Linux /proc/cpuinfo names) of fast int8 dot products and of bfloat16 arithmetic
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
logger = logging.getLogger(__name__)


def check_precision(precision: str) -> str:
    """``precision``, or one line naming the known ones."""
    if precision not in PRECISIONS:
        raise AccelDetError(
            f"unknown precision {precision!r}: choose {', '.join(PRECISIONS[:-1])} or "
            f"{PRECISIONS[-1]}"
        )
    return precision


@functools.lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not readable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def slow_precision_note(precision: str, flags=None) -> str:
    """A sentence when this CPU lacks the instructions that make ``precision`` fast (no VNNI / AMX
    for int8, no AVX-512 BF16 / AMX for bf16), else ``""``; nothing is said where the flags cannot
    be read."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return ""
    if precision == "int8" and not flags.intersection(INT8_FLAGS):
        return (
            "this CPU has no VNNI (AVX-512 VNNI, AVX-VNNI or AMX): int8 may run no faster, or "
            "slower, than float32"
        )
    if precision == "bf16" and not flags.intersection(BF16_FLAGS):
        return (
            "this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX): OpenVINO runs a bf16 "
            "model in float32"
        )
    return ""


def warn_if_slow(precision: str) -> None:
    """One warning line when :func:`slow_precision_note` has something to say."""
    note = slow_precision_note(precision)
    if note:
        logger.warning(note)
