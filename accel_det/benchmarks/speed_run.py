"""The speed benchmark of ``tools/benchmark_speed.py``: theoretical against measured speedup of
the accelerated VGG-16 backbone and Fast R-CNN detector (a grid of cases), the eager levers that
close the gap (memory format, rounded ranks, threads, fused bias/ReLU, the allocator) and a layer
profile. Prints Markdown tables, writes ``benchmark_speed.json``, ``.md`` and the timed plans."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from ..data.synthetic.shapes import make_task
from ..errors import AccelDetError
from ..nn.chain import conv_names
from ..plan import plan_fingerprint
from ..utils.dist import pick_device
from ..utils.io import atomic_write_json, atomic_write_text, check_writable_folder, json_safe
from ..utils.timing import device_name, machine, num_threads
from . import fast_rcnn, forms, layers, speed, speed_tables
from . import plans as bench_plans


@dataclass
class SpeedBenchmarkOptions:
    """What ``tools/benchmark_speed.py`` times (its options; None: the quick or full default)."""

    output: str = "output/benchmark_speed"
    quick: bool = False
    threads: int = 1
    lever_threads: List[int] = field(default_factory=lambda: [1, 2])
    device: str = "auto"
    speedup: float = 4.0
    round_ranks: int = 16
    methods: List[str] = field(default_factory=lambda: ["asym", "asym3d"])
    plans: List[str] = field(default_factory=list)  # [NAME=]PATH
    grid_plans: Optional[List[str]] = None
    cases: Optional[List[str]] = None
    lever_size: int = 224
    levers: bool = True
    table6: bool = True
    seconds: Optional[float] = None  # default 20, quick 8
    proposals: int = 300
    num_images: Optional[int] = None  # default 8, quick 4
    samples_per_image: Optional[int] = None  # default 100, quick 50
    fvcore: Optional[str] = None  # all, small, none; default all, quick small
    width: float = 1.0
    detector_opts: List[str] = field(default_factory=list)
    seed: int = 0
    command: str = ""


def benchmark_device(name: str) -> torch.device:
    """The grid's device (``auto``: CUDA when present), through the library's device parsing."""
    try:
        return pick_device(name)
    except AccelDetError as error:
        raise AccelDetError(f"--device {name}: {error}") from None


def check_options(options: SpeedBenchmarkOptions) -> torch.device:
    """A clear error for impossible settings; the grid's device."""
    if options.threads < 1 or any(t < 1 for t in options.lever_threads):
        raise AccelDetError("--threads and --lever-threads must be at least 1")
    if options.round_ranks < 1:
        raise AccelDetError("--round-ranks must be at least 1")
    if options.lever_size < speed.MIN_SIZE["backbone"]:
        raise AccelDetError(
            f"--lever-size must be at least "
            f"{speed.MIN_SIZE['backbone']} (VGG-16 halves it five times)"
        )
    return benchmark_device(options.device)


def run(options: SpeedBenchmarkOptions) -> dict:
    """The whole benchmark: plans, levers, grid, allocator lever; writes and returns the record."""
    return SpeedBenchmark(options).run()


class SpeedBenchmark:
    """One run of the speed benchmark: its settings, the original and accelerated models and the
    record the sections fill in."""

    def __init__(self, options: SpeedBenchmarkOptions):
        self.started = time.perf_counter()
        self.options = options
        self.device = check_options(options)
        self.quick = options.quick
        self.seconds = options.seconds or (8.0 if self.quick else 20.0)
        defaults = (
            speed.QUICK_CASES
            if self.quick
            else speed.GPU_CASES
            if self.device.type == "cuda"
            else speed.FULL_CASES
        )
        self.cases = [speed.Case.parse(c) for c in (options.cases or defaults)]
        self.fvcore = options.fvcore or ("small" if self.quick else "all")
        self.folder = check_writable_folder(options.output)
        self.size = (options.lever_size, options.lever_size)
        self.matrix = None
        self.detectors = None

    def run(self) -> dict:
        """Plans, levers, grid and allocator lever in turn; writes and returns the record."""
        options = self.options
        torch.set_num_threads(options.threads)
        env_threads = os.environ.get("OMP_NUM_THREADS", "unset")
        print(
            f"speed benchmark: {'quick' if self.quick else 'full'} run; grid on "
            f"{device_name(self.device)} with {options.threads} torch thread(s); levers at "
            f"{options.lever_threads} thread(s); OMP_NUM_THREADS={env_threads}",
            flush=True,
        )
        print(f"load average before: {load_average()}", flush=True)
        self.features = forms.random_features(options.width, options.seed)
        self.plans, self.files = self.make_plans()
        self.plan_files = self.write_plans()
        self.print_plans()
        self.models = {
            name: forms.accelerated_features(self.features, plan, options.seed)
            for name, plan in self.plans.items()
        }
        self.record = self.start_record(env_threads)
        self.families = [
            f
            for f in ([bench_plans.TABLE6_NAME] if bench_plans.TABLE6_NAME in self.plans else [])
            + list(options.methods)
            if f in self.plans
        ]
        if options.levers:
            self.lever_section()
        rows = self.grid_section()
        # The allocator lever last: it changes malloc for the rest of the process.
        self.allocator_section(rows)
        return self.write_outputs()

    def make_plans(self):
        """Plan files first (a bad one fails before any work), then Table 6 and the solver's
        plans."""
        options, features, size = self.options, self.features, self.size
        plans, files = bench_plans.read_plan_files(options.plans, features, size, options.width)
        if options.table6 and options.width == 1.0:
            plans[bench_plans.TABLE6_NAME] = bench_plans.table6_plan(features, size)
        count = options.num_images or (4 if self.quick else 8)
        images = make_task(count, size=size[0], seed=options.seed + 4000)[0]
        start = time.perf_counter()
        with num_threads(max(options.lever_threads)):
            eigenvalues = bench_plans.sampled_eigenvalues(
                features,
                images,
                samples_per_image=options.samples_per_image or (50 if self.quick else 100),
                seed=options.seed,
            )
        solved = bench_plans.solver_plans(
            features,
            eigenvalues,
            size,
            speedup=options.speedup,
            methods=options.methods,
            round_to=options.round_ranks,
        )
        clash = sorted(set(solved) & set(plans))
        if clash:
            raise AccelDetError(
                f"--plan names {clash} are the solver's plans' names: choose others "
                "(--plan NAME=PATH)"
            )
        plans.update(solved)
        say(f"solver plans from {len(images)} generated images: {time.perf_counter() - start:.0f}s")
        return plans, files

    def write_plans(self) -> Dict[str, str]:
        """Each plan's file: the one given, or ``plans/<name>.json`` written here."""
        plan_dir = os.path.join(self.folder, "plans")
        os.makedirs(plan_dir, exist_ok=True)
        plan_files = {}
        for name, plan in self.plans.items():
            plan_files[name] = self.files.get(name) or os.path.join(
                plan_dir, bench_plans.slug(name) + ".json"
            )
            if name not in self.files:
                atomic_write_json(plan, plan_files[name])
        return plan_files

    def print_plans(self) -> None:
        """d' and d'' of every plan, layer by layer."""
        print("\nplans (d' and d'' of conv1_1 ... conv5_3; '-': layer kept):")
        for name, plan in self.plans.items():
            layers = [
                plan["layers"].get(n) or {} for n in conv_names(self.features)
            ]  # a plan may list only some layers
            ranks = "/".join(str(e.get("rank") or "-") for e in layers)
            spatial = "/".join(str(e.get("spatial_rank") or "-") for e in layers)
            print(
                f"  {name}: theoretical {plan['theoretical_speedup']:.3f}x; d' {ranks}"
                + (f"; d'' {spatial}" if any(e.get("spatial_rank") for e in layers) else "")
            )

    def start_record(self, env_threads: str) -> dict:
        """The record's settings, machine and models, before anything is timed."""
        options = self.options
        return {
            "format": speed.SPEED_FORMAT,
            "command": options.command,
            "threads": options.threads,
            "lever_threads": options.lever_threads,
            "omp_num_threads": env_threads,
            "device": device_name(self.device),
            "machine": machine(self.device),
            "width": options.width,
            "speedup": options.speedup,
            "round_ranks_to": options.round_ranks,
            "quick": self.quick,
            "models": {
                speed.ORIGINAL_NAME: {
                    "fingerprint": plan_fingerprint(None),
                    "theoretical_speedup": 1.0,
                },
                **{
                    n: {**bench_plans.plan_summary(p), "plan_file": self.plan_files[n]}
                    for n, p in self.plans.items()
                },
            },
            "notes": speed.NOTES,
        }

    def lever_section(self) -> None:
        """Every model x memory format x thread count at the lever size, batch 1, interleaved;
        the lever table, then the layer profile."""
        options, size = self.options, self.size
        print(
            f"\nlevers: VGG-16 features at {size[0]}x{size[1]}, batch 1, every model x "
            f"{', '.join(forms.MODES)} x {options.lever_threads} thread(s), interleaved",
            flush=True,
        )
        rounded = [f"{f}, ranks x{options.round_ranks}" for f in self.families]
        lever_models = {n: m for n, m in self.models.items() if n in self.families or n in rounded}
        self.matrix = speed.lever_matrix(
            self.features,
            lever_models,
            input_hw=size,
            threads=options.lever_threads,
            seconds=self.seconds * (1.25 if not self.quick else 1.0),
            seed=options.seed,
            progress=say,
        )
        levers = speed.lever_rows(self.matrix, self.plans, self.families, options.round_ranks)
        self.record.update(lever_matrix=self.matrix, levers=levers)
        print("\n" + speed_tables.matrix_table(self.matrix))
        print("\n" + speed_tables.lever_table(levers, self.families))
        print(
            f"(largest relative output difference of a channels_last / fused form against its "
            f"contiguous model: {speed_tables.largest_error(self.matrix):.1e})"
        )
        print(speed_tables.paper_reference())
        self.profile_section([n for n in lever_models if n.endswith(f"x{options.round_ranks}")])

    def profile_section(self, rounded: Sequence[str]) -> None:
        """Conv against ReLU / max-pool time layer by layer, and the eager form's ceiling."""
        options = self.options
        x = torch.randn(1, 3, *self.size)
        profiles = {}
        for name in [speed.ORIGINAL_NAME] + list(rounded):
            model = self.features if name == speed.ORIGINAL_NAME else self.models[name]
            profiles[name] = layers.leaf_time_profile(
                forms.model_form(model, "channels_last", x), x, threads=min(options.lever_threads)
            )
        self.record["layer_profile"] = profiles
        base = profiles[speed.ORIGINAL_NAME]
        ceiling = base["total_ms"] / (base["conv_ms"] / options.speedup + base["other_ms"])
        print(
            f"layer by layer (channels_last, {min(options.lever_threads)} "
            f"thread(s), one layer after another): "
            + "; ".join(
                f"{n}: conv {p['conv_ms']:.1f} ms + ReLU/max-pool {p['other_ms']:.1f} ms"
                for n, p in profiles.items()
            )
        )
        print(
            f"ReLU and max-pool are not factorized: with conv time cut exactly "
            f"{options.speedup:g}x, the original would run {ceiling:.2f}x faster (actual / "
            f"theoretical at most {ceiling / options.speedup:.2f} in this eager form)"
        )
        self.record["eager_ceiling"] = {"speedup": ceiling, "ratio": ceiling / options.speedup}

    def grid_section(self) -> List[dict]:
        """Every case of the grid, the grid's plans against the original; prints the table."""
        options = self.options
        self.grid_names = bench_plans.grid_plan_names(
            options.grid_plans, self.plans, self.files, options.round_ranks
        )
        self.grid_plans = {n: self.plans[n] for n in self.grid_names}
        rows = []
        print(
            f"\ngrid: {', '.join(self.grid_names)} against the "
            f"original; channels_last; {options.threads} thread(s)"
            + (f" ({device_name(self.device)})" if self.device.type == "cuda" else ""),
            flush=True,
        )
        for case in self.cases:
            start = time.perf_counter()
            check = self.fvcore == "all" or (
                self.fvcore == "small" and case.hw[0] * case.hw[1] <= 224 * 224
            )
            reused = self.reused_rows(case, check)
            case_rows = reused if reused is not None else self.case_rows(case, check)
            rows += case_rows
            mismatched = [
                r["model"]
                for r in case_rows
                if r.get("fvcore_macs") is not None and r["fvcore_macs"] != r["macs"]
            ]
            say(
                f"{case.label}: {len(case_rows)} rows, "
                f"{case_rows[0]['latency']['repeats']} timed rounds"
                + (" (reused from the lever comparison)" if reused is not None else "")
                + f", {time.perf_counter() - start:.0f}s"
                + (f"; fvcore DISAGREES for {mismatched}" if mismatched else "")
            )
        self.record["grid"] = rows
        print("\n" + speed_tables.grid_table(rows))
        print(
            "theor. (conv): the paper's theoretical speedup, all conv layers; theor. (all MACs): "
            "also fc6/fc7 and the predictors of the detector; actual / theor. uses the latter; "
            "fvcore '=': the same count."
        )
        return rows

    def reused_rows(self, case, check: bool) -> Optional[List[dict]]:
        """The grid rows of the backbone at the lever size, batch 1, from the lever comparison's
        channels_last timings at the grid's thread count (the same measurement; not repeated);
        None where there are none."""
        threads, matrix = str(self.options.threads), self.matrix
        if not (
            case.part == "backbone"
            and case.batch == 1
            and case.hw == self.size
            and matrix is not None
            and self.device.type == "cpu"
            and threads in matrix["timings"]
            and set(self.grid_names) <= set(matrix["timings"][threads])
        ):
            return None
        timings = matrix["timings"][threads]
        all_models = {
            speed.ORIGINAL_NAME: self.features,
            **{n: self.models[n] for n in self.grid_plans},
        }
        timed = {n: timings[n]["channels_last"] for n in all_models}
        counts, checked = speed.backbone_counts(all_models, case, check)
        return speed.grid_rows(case, timed, counts, counts, checked, self.grid_plans, torch.float32)

    def case_rows(self, case, check: bool) -> List[dict]:
        """One case of the grid timed: the backbone (on a GPU in fp32, fp16 and bf16) or the
        detector."""
        options, device = self.options, self.device
        if case.part == "backbone":
            rows = []
            dtypes = (
                (torch.float32, torch.float16, torch.bfloat16)
                if device.type == "cuda"
                else (torch.float32,)
            )
            for dtype in dtypes:
                rows += speed.backbone_case(
                    case,
                    self.features,
                    {n: self.models[n] for n in self.grid_names},
                    self.grid_plans,
                    threads=options.threads,
                    seconds=self.seconds,
                    device=device,
                    dtype=dtype,
                    check_fvcore=check and dtype == torch.float32,
                    seed=options.seed,
                )
            return rows
        if self.detectors is None:
            self.detectors = fast_rcnn.build_detectors(
                self.grid_plans,
                self.plan_files,
                width=options.width,
                opts=options.detector_opts,
                device=device,
                seed=options.seed,
            )
        return speed.detector_case(
            case,
            self.detectors,
            self.grid_plans,
            threads=options.threads,
            seconds=self.seconds,
            proposals=options.proposals,
            device=device,
            check_fvcore=check,
            seed=options.seed,
            min_repeats=2 if self.quick else 3,
        )

    def allocator_section(self, rows: List[dict]) -> None:
        """The backbone cases whose conv1 activation is over glibc's largest mmap threshold
        (32 MB) again, with malloc keeping freed memory (it stays so for the rest of the
        process)."""
        options = self.options
        large = [
            c
            for c in self.cases
            if c.part == "backbone"
            and c.batch * 64 * c.hw[0] * c.hw[1] * 4 > 32 << 20
            and c.batch * c.hw[0] * c.hw[1] <= 1000 * 1000
        ]  # not batch 8 at 600x1000 again: minutes
        if not (
            large and self.device.type == "cpu" and options.levers and forms.keep_freed_memory()
        ):
            return
        print(
            "\nallocator lever: the same cases again with glibc malloc keeping freed memory in its "
            "heap (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1: no page faults on reused "
            "activations)",
            flush=True,
        )
        kept = []
        for case in large:
            start = time.perf_counter()
            case_rows = speed.backbone_case(
                case,
                self.features,
                {n: self.models[n] for n in self.grid_names},
                self.grid_plans,
                threads=options.threads,
                seconds=self.seconds,
                check_fvcore=False,
                seed=options.seed,
            )
            for row in case_rows:
                row["variant"] = "malloc keeps freed memory"
            kept += case_rows
            say(
                f"{case.label}: {case_rows[0]['latency']['repeats']} timed rounds, "
                f"{time.perf_counter() - start:.0f}s"
            )
        before = [r for r in rows if any(str(c) == r["case"] for c in large)]
        print("\n" + speed_tables.grid_table(before + kept))
        self.record["allocator"] = {
            "setting": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 2**31 - 1)",
            "rows": kept,
        }

    def write_outputs(self) -> dict:
        """``benchmark_speed.json`` and ``benchmark_speed.md``; the record."""
        record = self.record
        record["seconds"] = time.perf_counter() - self.started
        record["load_after"] = load_average()
        print(f"load average after: {record['load_after']}")
        path = os.path.join(self.folder, "benchmark_speed.json")
        atomic_write_json(json_safe(record), path)
        markdown = speed_tables.speed_markdown(record, self.families)
        atomic_write_text(markdown, os.path.join(self.folder, "benchmark_speed.md"))
        print(f"\nwrote {path}, benchmark_speed.md and plans/ ({record['seconds']:.0f}s in all)")
        return record


def say(text: str) -> None:
    """A progress line, indented under its section."""
    print(f"  {text}", flush=True)


def load_average() -> str:
    """The system's 1, 5 and 15 minute load averages (other jobs skew the timings)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"
