"""Random `Batch` tensors with the loader's shapes and dtypes (model-only benchmarks, unit tests)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch

from lead_stream.core.batch import Batch
from lead_stream.core.constants import (
    BEV_HEIGHT_PX,
    BEV_WIDTH_PX,
    DEPTH_HEIGHT_PX,
    DEPTH_WIDTH_PX,
    MAX_NUM_BBOXES,
    MAX_RADAR_POINTS_PER_SENSOR,
    NUM_BEV_SEMANTIC_CLASSES,
    NUM_BOX_CLASSES,
    NUM_BOX_FIELDS,
    NUM_COMMANDS,
    NUM_RADAR_QUERIES,
    NUM_RADAR_SENSORS,
    NUM_ROUTE_POINTS,
    NUM_SEMANTIC_CLASSES,
    NUM_WAYPOINTS,
    RGB_HEIGHT_PX,
    RGB_WIDTH_PX,
    BoxField,
)


def random_batch(batch_size: int, *, seed: int = 0, max_boxes: int = 12) -> Batch:
    """A Batch of `batch_size` random samples (seeded, CPU); rows >= num_boxes of `boxes` are zero."""
    g = torch.Generator().manual_seed(seed)
    B = batch_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    def randint(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=g)

    num_boxes = randint(max_boxes + 1, B)
    boxes = torch.zeros(B, MAX_NUM_BBOXES, NUM_BOX_FIELDS)
    n = max_boxes
    boxes[:, :n, BoxField.X] = 8 + rand(B, n) * (BEV_WIDTH_PX - 16)
    boxes[:, :n, BoxField.Y] = 8 + rand(B, n) * (BEV_HEIGHT_PX - 16)
    boxes[:, :n, BoxField.W] = 2 + rand(B, n) * 8
    boxes[:, :n, BoxField.H] = 4 + rand(B, n) * 12
    boxes[:, :n, BoxField.YAW] = (rand(B, n) * 2 - 1) * math.pi
    boxes[:, :n, BoxField.VELOCITY] = rand(B, n) * 10
    boxes[:, :n, BoxField.BRAKE] = randint(2, B, n).float()
    boxes[:, :n, BoxField.CLASS] = randint(NUM_BOX_CLASSES, B, n).float()
    boxes[torch.arange(MAX_NUM_BBOXES)[None, :].expand(B, -1) >= num_boxes[:, None]] = 0
    radar = torch.zeros(B, NUM_RADAR_SENSORS * MAX_RADAR_POINTS_PER_SENSOR, 5)
    radar[:, :40, 0] = rand(B, 40) * 60
    radar[:, :40, 1] = (rand(B, 40) * 2 - 1) * 30
    radar[:, :40, 3] = rand(B, 40) * 10
    radar[:, :40, 4] = randint(NUM_RADAR_SENSORS, B, 40).float()
    detections = torch.zeros(B, NUM_RADAR_QUERIES, 4)
    detections[:, :5, 0] = rand(B, 5) * 60
    detections[:, :5, 1] = (rand(B, 5) * 2 - 1) * 30
    detections[:, :5, 2] = rand(B, 5) * 10
    detections[:, :5, 3] = 1.0
    command = torch.nn.functional.one_hot(randint(NUM_COMMANDS, B), NUM_COMMANDS).float()
    steps = torch.arange(1, NUM_WAYPOINTS + 1).float()
    speed = rand(B) * 10
    return Batch(
        rgb=randint(256, B, 3, RGB_HEIGHT_PX, RGB_WIDTH_PX).to(torch.uint8),
        lidar_bev=randint(6, B, 1, BEV_HEIGHT_PX, BEV_WIDTH_PX).to(torch.uint8),
        radar=radar,
        speed_mps=speed,
        semantic=randint(NUM_SEMANTIC_CLASSES, B, RGB_HEIGHT_PX, RGB_WIDTH_PX).to(torch.uint8),
        depth_u8=randint(256, B, DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX).to(torch.uint8),
        bev_semantic=randint(NUM_BEV_SEMANTIC_CLASSES, B, BEV_HEIGHT_PX, BEV_WIDTH_PX).to(torch.uint8),
        boxes=boxes,
        num_boxes=num_boxes.long(),
        radar_detections=detections,
        target_point=torch.stack([10 + rand(B) * 20, (rand(B) * 2 - 1) * 5], dim=-1),
        target_point_previous=torch.stack([-rand(B) * 5, (rand(B) * 2 - 1)], dim=-1),
        target_point_next=torch.stack([30 + rand(B) * 20, (rand(B) * 2 - 1) * 10], dim=-1),
        command=command,
        next_command=command.clone(),
        future_waypoints=torch.stack(
            [speed[:, None] * 0.25 * steps, 0.05 * steps**2 * (rand(B, 1) - 0.5)], dim=-1
        ),
        future_yaws_rad=(rand(B, NUM_WAYPOINTS) - 0.5) * 0.2,
        route=torch.stack(
            [
                2.5 + torch.arange(NUM_ROUTE_POINTS).float().expand(B, -1),
                0.02 * (rand(B, NUM_ROUTE_POINTS) - 0.5),
            ],
            dim=-1,
        ),
        target_speed_mps=rand(B) * 20,
        brake=rand(B) < 0.2,
        planning_valid=torch.ones(B, dtype=torch.bool),
        perturbated=rand(B) < 0.5,
        frame_idx=randint(100, B).long(),
        bucket_idx=torch.zeros(B, dtype=torch.long),
        route_id=[f"Synthetic/route_{i:02d}" for i in range(B)],
    )


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    """Samples [start, stop) of `batch` (run-coded rasters are expanded first)."""
    batch = batch.dense()
    fields = {f.name: getattr(batch, f.name)[start:stop] for f in dataclasses.fields(batch)}
    return Batch(**fields)


class FixedBatchLoader:
    """A loader over fixed global batches held in memory (model-only benchmarks, overfitting and DDP tests).

    Each epoch serves `steps_per_epoch` batches cycling through `batches`; under DDP rank r gets rows
    [r·B/W, (r+1)·B/W) of every global batch, as the streaming loader would slice a global batch.
    """

    def __init__(
        self, batches: list[Batch], *, steps_per_epoch: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.batches, self.steps_per_epoch = batches, steps_per_epoch
        self.rank, self.world_size = rank, world_size
        self._epoch, self._done = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._done = int(epoch), 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        while self._done < self.steps_per_epoch:
            batch = self.batches[(self._epoch * self.steps_per_epoch + self._done) % len(self.batches)]
            per_rank = batch.size // self.world_size
            self._done += 1
            yield slice_batch(batch, self.rank * per_rank, (self.rank + 1) * per_rank)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches_done": self._done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch, self._done = int(state["epoch"]), int(state["batches_done"])

    def telemetry(self) -> dict[str, float]:
        return {"pads": 0, "skipped": 0}
