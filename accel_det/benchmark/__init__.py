"""Speed measurement (latency of backbones and detectors); no detectron2 import."""

from .latency import measure_latency, measure_many, num_threads

__all__ = ["measure_latency", "measure_many", "num_threads"]
