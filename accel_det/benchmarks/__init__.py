"""The benchmarks: an application leaf above :mod:`accel_det.workflows` (nothing in the library
imports it; ``tools/benchmark_*.py`` are their front ends).

Shared core: ``subjects`` (the random-weight models timed and their plans), ``forms`` (the eager
forms a model is timed in), ``fast_rcnn`` (random-weight Detectron2 detectors and their inputs),
``plans`` (plans from sampled eigenvalues, Table 6, the ``[NAME=]PATH`` plan arguments), ``macs``
(the solver's multiply-add count, per layer, fvcore's), ``layers`` (per-layer profiles, detector
stages), ``plots`` (the PNGs), ``memory`` (peak RSS).

On top, one run per benchmark: ``speed_run`` (eager levers and grid: ``speed``,
``speed_tables``), ``runtime_run`` (the deployed runtimes: ``runtimes``, ``runtime_axis``,
``runtime_tables``) and ``solver_run`` (solver quality: ``quality``, ``quality_report``,
``smallnet``, ``resnet_quality``, ``selection``) and ``rcnn`` (Detectron2's R50-FPN Faster
R-CNN against its accelerated backbones: ``rcnn_models``, ``rcnn_forms``, ``rcnn_report``)."""
