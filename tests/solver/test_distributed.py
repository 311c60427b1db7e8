"""Two gloo processes, each with half of the images, give the plan and weights of one process."""

import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from accel_det.solver import apply_plan, compress
from tests.helpers import SHORT, image_batches, small_net

OPTIONS = dict(speedup=2.5, method="asym3d", schedule=SHORT, progress=False, seed=5)


def _shard(batches, rank, world):
    """Interleaved shards of single images, numbered globally, as a sampler would give them."""
    images = torch.cat(batches)
    mine = list(range(rank, len(images), world))
    return [{"images": images[i : i + 1], "indices": torch.tensor([i])} for i in mine]


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        result = compress(
            small_net(), _shard(image_batches(), rank, world), input_hw=(24, 24), **OPTIONS
        )
        torch.save(result.model.state_dict(), os.path.join(out_dir, f"weights{rank}.pth"))
        with open(os.path.join(out_dir, f"plan{rank}.json"), "w") as f:
            json.dump(result.plan, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = compress(small_net(), image_batches(), **OPTIONS)
    for rank in range(2):
        plan = json.loads((tmp_path / f"plan{rank}.json").read_text())
        weights = torch.load(tmp_path / f"weights{rank}.pth", weights_only=True)
        assert plan["num_images"] == single.plan["num_images"]
        # the same single image of the 12 (round(0.1 * 12)) held out in both processes
        assert plan["heldout"]["images"] == single.plan["heldout"]["images"] == 1
        assert abs(plan["heldout"]["output_error"] - single.plan["heldout"]["output_error"]) < 1e-3
        for name, entry in single.plan["layers"].items():
            assert plan["layers"][name]["rank"] == entry["rank"], name
            assert plan["layers"][name]["spatial_rank"] == entry["spatial_rank"], name
            assert abs(plan["layers"][name]["error"] - entry["error"]) < 1e-3, name
            held = plan["layers"][name]["heldout_error"], entry["heldout_error"]
            assert held[1] is not None and abs(held[0] - held[1]) < 1e-3, name
        # Float sums in another order (batches of 1 vs 4, pooled samples) move the 50 alternating
        # steps by float32 noise; compare what the networks compute, against an approximation
        # error that is itself around 10 %.
        model = apply_plan(small_net(), plan)
        model.load_state_dict(weights)
        with torch.no_grad():
            test = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(9))
            reference = single.model(test)
            assert float((model(test) - reference).norm() / reference.norm()) < 5e-3
    zero = torch.load(tmp_path / "weights0.pth", weights_only=True)
    one = torch.load(tmp_path / "weights1.pth", weights_only=True)
    assert all(torch.equal(zero[k], one[k]) for k in zero)
