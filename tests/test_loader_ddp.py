"""Two real gloo ranks cover the epoch once with equal batch counts; a 2 → 1 rank resume repeats nothing."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lead_stream.loader import LoaderConfig, build_epoch, make_loader

CONFIG = LoaderConfig(batch_size=6, num_workers=1, epoch_size=27, seed=11)  # 5 global batches, 3 pads
RESUME_AFTER = 2  # batches of epoch 1 before "preemption"


def _served(loader, batch) -> list[int]:
    cat = loader.catalog
    row_of = {
        (cat.route_id(c), int(f)): i for i, (c, f) in enumerate(zip(cat.sample_route, cat.sample_frame))
    }
    return [row_of[(r, int(f))] for r, f in zip(batch.route_id, batch.frame_idx)]


def _rank_main(rank: int, world_size: int, port: int, data_root: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    loader = make_loader(Path(data_root), config=CONFIG, rank=rank, world_size=world_size)
    loader.set_epoch(0)
    epoch0 = [_served(loader, batch) for batch in loader]
    counts = [torch.tensor([len(epoch0)]) for _ in range(world_size)]
    dist.all_gather(counts, torch.tensor([len(epoch0)]))  # would hang if counts differed per collective
    loader.set_epoch(1)
    epoch1, state = [], None
    for step, batch in enumerate(loader):
        epoch1.append(_served(loader, batch))
        if step + 1 == RESUME_AFTER:
            state = loader.state_dict()
            break
    dist.barrier()
    result = {"epoch0": epoch0, "epoch1": epoch1, "state": state, "counts": [int(c) for c in counts]}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_cover_the_epoch_then_one_rank_resumes_without_repeats(
    sharded_root: Path, tmp_path: Path
) -> None:
    mp.start_processes(
        _rank_main,
        args=(2, _free_port(), str(sharded_root), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    reference = make_loader(sharded_root, config=dataclasses.replace(CONFIG, num_workers=0))
    plan0 = build_epoch(reference.catalog, CONFIG, epoch=0, mixture=None)
    # equal batch counts on both ranks, and together exactly the padded plan, each slot once
    assert ranks[0]["counts"] == ranks[1]["counts"] == [plan0.num_batches] * 2
    interleaved = [row for g in range(plan0.num_batches) for r in range(2) for row in ranks[r]["epoch0"][g]]
    assert interleaved == plan0.slot_rows.tolist()
    assert sorted(set(interleaved)) == sorted(set(plan0.plan.rows.tolist()))
    # elastic resume: the 2-rank state continues on 1 rank with the rest of epoch 1, nothing repeated
    state = ranks[0]["state"]
    assert state == ranks[1]["state"] and state["global_batches_done"] == RESUME_AFTER
    single = make_loader(sharded_root, config=CONFIG, rank=0, world_size=1)
    single.load_state_dict(state)
    rest = [row for batch in single for row in _served(single, batch)]
    done = [row for g in range(RESUME_AFTER) for r in range(2) for row in ranks[r]["epoch1"][g]]
    plan1 = build_epoch(reference.catalog, CONFIG, epoch=1, mixture=None)
    assert done + rest == plan1.slot_rows.tolist()
