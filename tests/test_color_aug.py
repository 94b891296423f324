"""LEAD's colour augmentation: its six ops and rates, per-sample seeding, exact across a resume, off in eval."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import TINY

from lead_stream.model.random_batch import FixedBatchLoader, random_batch
from lead_stream.train import Trainer, pretrain_config, resolve_config, train
from lead_stream.train.augment import OP_FUNCTIONS, color_augment, sample_seeds


def _smooth_images(n: int, h: int = 96, w: int = 288) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, h // 16, w // 16, generator=g) * 200 + 20
    return F.interpolate(low, size=(h, w), mode="bilinear").round().to(torch.uint8)


def test_about_three_quarters_of_images_change_and_each_op_acts_11():
    images = _smooth_images(200)
    seeds = sample_seeds(0, 0, 0, [f"route/{i}" for i in range(200)])
    out = color_augment(images, seeds)
    changed = (out != images).flatten(1).any(1).float().mean()
    assert 0.62 < changed < 0.86  # LEAD: 1 - 0.8^6 = 0.74 with use_color_aug_prob = 0.2
    assert torch.equal(color_augment(images, seeds), out)  # a seed fixes the result
    assert torch.equal(color_augment(images, seeds, prob=0.0), images)
    x = images[0].float()
    g = torch.Generator().manual_seed(1)
    effects = {name: (op(x, g) - x).abs().mean().item() for name, op in OP_FUNCTIONS.items()}
    assert all(value > 0 for value in effects.values()), effects
    dropped = (OP_FUNCTIONS["dropout"](x, torch.Generator().manual_seed(2)) == 0).float().mean()
    assert 0.005 < dropped < 0.12  # Dropout of 1-10 % of the pixels


def test_seeds_depend_on_sample_identity_not_on_its_rank_or_position_11():
    ids = ["a/1/0", "b/2/1", "a/1/0"]
    seeds = sample_seeds(3, 1, 17, ids)
    assert len(set(seeds)) == 3  # the repeated sample gets a second slot
    assert sample_seeds(3, 1, 17, ids[1:2]) == seeds[1:2]  # the same on another rank's slice
    assert sample_seeds(3, 1, 18, ids) != seeds


def test_colour_augmentation_is_identical_across_a_resume_and_absent_in_eval_11(tmp_path):
    batches = [random_batch(4, seed=i) for i in range(2)]
    common = ["epochs=1", "batch_size=4", *TINY, "use_color_aug=true", "visualize_training=false"]
    reference = train(
        resolve_config(pretrain_config(), [f"logdir={tmp_path / 'a'}", *common]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    plain = train(
        resolve_config(pretrain_config(), [f"logdir={tmp_path / 'p'}", *common, "use_color_aug=false"]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    assert reference.losses[0][1] != plain.losses[0][1]  # the augmentation reached the model
    run = tmp_path / "b"
    train(
        resolve_config(pretrain_config(), [f"logdir={run}", *common, "max_steps=2"]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    resumed = train(
        resolve_config(pretrain_config(), [f"logdir={run}", "continue_failed_training=true", *common]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    assert [s for s, _ in resumed.losses] == [2, 3]
    assert [loss for _, loss in resumed.losses] == pytest.approx(
        [loss for _, loss in reference.losses[2:]], rel=1e-6
    )
    trainer = Trainer(
        resolve_config(pretrain_config(), [f"logdir={tmp_path / 'e'}", *common]),
        loader=FixedBatchLoader(batches, steps_per_epoch=4),
    )
    batch = random_batch(4, seed=0)
    original = batch.rgb.clone()
    assert not torch.equal(trainer.augment(random_batch(4, seed=0)).rgb, original)
    trainer.model.eval()
    assert torch.equal(trainer.augment(batch).rgb, original)
