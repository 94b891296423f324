"""Shared by the training tests: a tiny compact model's overrides and a TensorBoard scalar reader."""

from __future__ import annotations

from pathlib import Path

# A compact model small enough for a few CPU steps per test (real code paths, tiny widths and inputs).
TINY = [
    "model.preset=compact",
    "model.widths=8,16,32,32",
    "model.image_size=48,144",
    "model.bev_size=40,48",
    "model.bev_channels=16",
    "model.decoder_channels=16,8,8",
    "model.token_dim=32",
    "progress=false",
    "num_workers=0",
    "log_scalars_frequency=1",
    "use_color_aug=false",  # LEAD's colour ops cost ~0.1 s per full-size image on CPU; tests of them opt in
]


def tensorboard_scalars(logdir: Path, tag: str) -> dict[int, float]:
    """step → value of scalar `tag` in the TensorBoard event files of `logdir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}
