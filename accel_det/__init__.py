"""accel-det: data-driven low-rank acceleration of very deep CNNs (Zhang et al., TPAMI 2016)."""

__version__ = "0.1.0"
