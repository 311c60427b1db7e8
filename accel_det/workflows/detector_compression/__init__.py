"""Compressing a whole Fast R-CNN detector: conv layers and fc6/fc7 under one budget."""

from .compress import FC_METHODS, DetectorCompressOptions, compress_detector

__all__ = ["FC_METHODS", "DetectorCompressOptions", "compress_detector"]
