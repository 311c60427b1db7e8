"""The applications built on the library: the ImageNet tools (``imagenet/``: compress, evaluate,
fine-tune), the demo (``demo/``), whole-detector compression (``detector_compression/``), the
proposal run, reports and plots. The tools in ``tools/`` are thin front ends over these; the
benchmarks sit above them in :mod:`accel_det.benchmarks`."""
