#!/usr/bin/env python3
"""The main job (``make demo``): Fast R-CNN AP50 against speedup, on synthetic data, on the CPU.

Generates the synthetic VOC-format set (not PASCAL VOC), makes selective-search proposals, trains
a baseline Fast R-CNN with a narrow VGG-16 (configs/demo/vgg16_synthetic.yaml), compresses it on
the training images (the conv layers at 2x, 3x, 4x with asym. (3d); conv layers and fc6/fc7 under
one budget for the whole detector; fc6/fc7 alone by truncated SVD and by the asymmetric solver),
fine-tunes each briefly (configs/demo/accel_vgg16_synthetic.yaml), evaluates AP50 with its 95 %
bootstrap interval over the test images, measures latency, exports to ONNX and evaluates the
exported files, and writes ``output/demo/report.md`` (with each comparison's paired ΔAP50 and
interval), ``output/demo/mAP_vs_speedup.png`` and ``output/demo/results.json``. Finished stages
are reused on a second run (``--force`` redoes them).

    .venv/bin/python tools/demo.py                      # run time: docs/benchmarks.md
    .venv/bin/python tools/demo.py --speedups 3 4 SOLVER.MAX_ITER 500
    .venv/bin/python tools/demo.py --finetune-seed 1    # fine-tuned again: <stage>_ftseed1/
    .venv/bin/python tools/demo.py --seed-spread 1 2 --train-seed-spread 1   # seeds.md
    .venv/bin/python tools/demo.py --model r18-fpn      # the second demo: output/demo_r18fpn

``--model r18-fpn`` (opt-in): a Faster R-CNN with a ResNet-18-FPN trained from scratch
(configs/demo/faster_rcnn_R_18_FPN_synthetic.yaml), compressed as a whole detector at 2x and 3x,
AP50 and paired ΔAP50 with intervals before and after a short fine-tuning, eager latency.
"""

import argparse
import os
import sys

import bootstrap  # noqa: F401  (accel_det from this checkout, in its .venv)

from accel_det.utils.cli import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    SPEEDUP,
    add_common_arguments,
    number,
    run_tool,
)


def build_parser() -> argparse.ArgumentParser:
    from accel_det.workflows.demo import DemoOptions
    from accel_det.workflows.demo.options import MODELS

    d = DemoOptions()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=list(MODELS), default=d.model,
                        help=f"which demo (default: {d.model}); the defaults below are vgg16's, "
                        "r18-fpn's are in accel_det/workflows/demo/options.py")  # fmt: skip
    parser.add_argument("--output", help=f"output folder (default: {d.output})")
    parser.add_argument("--config", help=f"baseline config (default: {d.config})")
    parser.add_argument("--accel-config", help=f"fine-tuning config (default: {d.accel_config})")
    parser.add_argument(
        "--speedups",
        type=SPEEDUP,
        nargs="*",
        help="theoretical speedups of the conv layers (the paper's rows; default: 2 3 4)",
    )
    parser.add_argument(
        "--detector-speedups",
        type=SPEEDUP,
        nargs="*",
        help="theoretical speedups of the whole detector, conv + fc6/fc7 (default: 2 3 4)",
    )
    parser.add_argument(
        "--fc-rank-fractions",
        type=number(float, above=0, maximum=1),
        nargs="*",
        help="fc6 and fc7 ranks of the truncated-SVD rows, as fractions of FC_DIM (default: Fast "
        "R-CNN's 0.25 0.0625; none: no such rows)",
    )
    parser.add_argument("--method", help=f"solver method (default: {d.method})")
    parser.add_argument(
        "--data-root",
        default=None,
        help=(
            "synthetic set folder (default: "
            "$DETECTRON2_DATASETS/synthetic_voc, i.e. datasets/synthetic_voc)"
        ),
    )
    parser.add_argument("--num-trainval", type=POSITIVE_INT, default=d.num_trainval)
    parser.add_argument("--num-test", type=POSITIVE_INT, default=d.num_test)
    parser.add_argument(
        "--classes", default=",".join(d.classes), help="synthetic shapes, comma-separated"
    )
    parser.add_argument(
        "--pretrain-iterations", type=NON_NEGATIVE_INT, help="crop-classifier iterations"
    )
    parser.add_argument(
        "--compress-images",
        type=POSITIVE_INT,
        default=d.compress_images,
        help="training images for the solver",
    )
    parser.add_argument("--samples-per-image", type=POSITIVE_INT, default=d.samples_per_image)
    parser.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=d.threads,
        help="torch threads for training and evaluation",
    )
    parser.add_argument(
        "--latency-threads",
        type=POSITIVE_INT,
        default=d.latency_threads,
        help="torch threads for the timings",
    )
    parser.add_argument("--latency-repeats", type=POSITIVE_INT, default=d.latency_repeats)
    parser.add_argument(
        "--full-width-repeats",
        type=NON_NEGATIVE_INT,
        help="timed runs of the plans' structures on a full-width VGG-16 at 224×224 (0: skip)",
    )
    parser.add_argument(
        "--workers",
        type=POSITIVE_INT,
        default=d.workers,
        help="processes for data generation and selective search",
    )
    parser.add_argument(
        "--seed",
        type=SEED,
        default=d.seed,
        help="seed of the data, pre-training and compression, and of training where not set below",
    )
    parser.add_argument(
        "--train-seed", type=SEED, help="seed of the baseline's training (default: --seed)"
    )
    parser.add_argument(
        "--finetune-seed",
        type=SEED,
        help="seed of the accelerated models' fine-tuning (default: --seed); the models go to "
        "<stage>_ftseed<n> folders",
    )
    parser.add_argument(
        "--seed-spread",
        type=SEED,
        nargs="+",
        metavar="SEED",
        help="instead of the demo: fine-tune every accelerated model again with each of these "
        "seeds (all else reused from --output) and write seeds.md / seeds.json: AP50 and paired "
        "ΔAP50 per seed",
    )
    parser.add_argument(
        "--train-seed-spread",
        type=SEED,
        nargs="*",
        default=[],
        metavar="SEED",
        help="with --seed-spread: also train the baseline again with each of these seeds",
    )
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument(
        "--finetune-opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides for the fine-tuning stages only (put last)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides for every stage, KEY VALUE ... (Detectron2 style)",
    )
    add_common_arguments(parser)
    return parser


def demo_options(args):
    """DemoOptions for ``--model`` from the arguments (those not given: the model's defaults)."""
    from accel_det.workflows.demo import DemoOptions

    opts = list(args.opts)
    finetune = list(args.finetune_opts)
    if "--finetune-opts" in opts:  # REMAINDER swallowed it
        at = opts.index("--finetune-opts")
        opts, finetune = opts[:at], opts[at + 1 :] + finetune
    given = dict(
        output=args.output,
        config=args.config,
        accel_config=args.accel_config,
        speedups=args.speedups,
        detector_speedups=args.detector_speedups,
        fc_rank_fractions=args.fc_rank_fractions,
        method=args.method,
        pretrain_iterations=args.pretrain_iterations,
        full_width_repeats=args.full_width_repeats,
    )
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    return DemoOptions.for_model(
        args.model,
        **given,
        data_root=args.data_root,
        num_trainval=args.num_trainval,
        num_test=args.num_test,
        classes=tuple(c for c in args.classes.split(",") if c),
        compress_images=args.compress_images,
        samples_per_image=args.samples_per_image,
        threads=args.threads,
        latency_threads=args.latency_threads,
        latency_repeats=args.latency_repeats,
        workers=args.workers,
        seed=args.seed,
        train_seed=args.train_seed,
        finetune_seed=args.finetune_seed,
        opts=opts,
        finetune_opts=finetune,
        force=args.force,
    )


def main(args) -> int:
    from accel_det.utils.io import sweep_temporaries
    from accel_det.workflows.demo import run_demo, run_fpn_demo

    options = demo_options(args)
    for folder, _, _ in os.walk(options.output):  # the temporaries of a killed run
        sweep_temporaries(folder)
    if args.seed_spread:
        from accel_det.workflows.demo.seeds import seed_spread, seeds_markdown

        print(seeds_markdown(seed_spread(options, args.seed_spread, args.train_seed_spread)))
        print("Written to", os.path.join(options.output, "seeds.md"))
        return 0
    summary = (run_fpn_demo if options.model == "r18-fpn" else run_demo)(options)
    from accel_det.workflows.demo.fpn_report import target_text
    from accel_det.workflows.report import comparison_text, results_table

    print()
    print(results_table(summary["rows"]))
    print()
    for comparison in summary["comparisons"]:
        print(comparison_text(comparison))
    for check in summary.get("targets", ()):
        print("Target:", target_text(check))
    print()
    print("SYNTHETIC data (not PASCAL VOC). Report:", summary["report"])
    print("Plot:", summary["plot"], f"| total {summary['timings']['total'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, build_parser()))
