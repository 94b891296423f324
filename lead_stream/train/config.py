"""Every key of a training run (`TrainConfig`, LEAD's names and defaults), the two phase presets and the
strict `key=value` override resolution (posttrain starts from the pretrain run's config.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lead_stream.core.config import apply_overrides, from_dict
from lead_stream.core.errors import ConfigError
from lead_stream.model import LossWeights, ModelConfig
from lead_stream.model.lead_tfv6 import LEAD_MODEL_KEYS

Precision = Literal["auto", "bf16", "fp16", "fp32"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # --- data (LEAD: carla_root holds data/; we also need index/ and cache/ there) ---
    carla_root: Path = Path("data/carla_leaderboard2")  # data root with index/ and cache/<pipeline_id>/
    cache_dir: Path | None = (
        None  # one cache, or a cache root (its newest complete one); None = carla_root/cache
    )
    collection: str | None = None  # bucket collection; None = "pretrain" / "posttrain" by phase
    mixture: dict[str, float] | None = None  # bucket -> rate (LEAD meaning); None = the bucket table's rates
    epoch_size: int | None = None  # samples per epoch; None = the collection's size, 0 = LEAD's Σ len·rate
    sample_with_replacement: bool = False  # rate > 1: LEAD's draws with replacement (default: permutations)
    perturbation_prob: float = 0.5  # LEAD use_sensor_perburtation_prob: chance of the perturbated variant
    num_workers: int = 2  # loader worker processes per rank (0 = main process)
    num_threads: int = 0  # torch threads per rank; 0 = OMP_NUM_THREADS, else cores/ranks - num_workers (>= 1)
    on_bad_sample: Literal["raise", "skip"] = "raise"  # loader policy for unreadable samples
    use_color_aug: bool = True  # LEAD use_color_aug: its six colour ops on training images (train/augment.py)
    use_color_aug_prob: float = 0.2  # LEAD use_color_aug_prob: chance of each op (Leaderboard mode 0.2)
    # --- validation (held-out frames, open-loop metrics; README "Evaluation") ---
    val_collection: str | None = (
        None  # held-out bucket collection, e.g. town13_heldout_posttrain; None = none
    )
    val_buckets: tuple[str, ...] | None = None  # only these buckets of it (e.g. town13); None = all of them
    val_every_steps: int = 0  # also validate every N global steps; 0 = at epoch ends only
    val_max_samples: int | None = None  # evenly spaced subset of this many held-out frames; None = all
    val_batch_size: int | None = None  # global validation batch; None = batch_size
    val_overlap: Literal["exclude", "error", "allow"] = (
        "exclude"  # held-out frames in the training collection: leave out of training | fail | train on them
    )
    # --- run ---
    logdir: Path | None = None  # run directory: checkpoints, config.json, TensorBoard events (required)
    overwrite: bool = False  # a fresh run in a non-empty logdir: delete the old run's files (else an error)
    description: str = "TFv6"  # free text stored in config.json
    seed: int = 0  # model init, dropout and loader plan seed
    # --- schedule ---
    epochs: int = 31  # LEAD: 31 (cosine restarts after epochs 1, 3, 7, 15, 31)
    batch_size: int = 64  # GLOBAL batch over all ranks (per rank = batch_size / world_size)
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay (amsgrad=True, as LEAD)
    use_cosine_annealing_with_restarts: bool = True  # False: CosineAnnealingLR over the whole run
    grad_clip_norm: float = 0.0  # clip the global grad norm to this; 0 = off (LEAD has no clipping)
    max_steps: int = 0  # stop after this many global steps (tests, demos); 0 = unlimited
    # --- phase ---
    use_planning_decoder: bool = False  # False = pre-training (perception only), True = post-training
    load_file: Path | None = None  # model_EEEE.pth to start from (posttrain: the pretrain checkpoint)
    continue_failed_training: bool = False  # resume from the newest complete checkpoint set in logdir
    # --- model and losses ---
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture; model.preset=lead|full|compact
    loss_weights: LossWeights = field(default_factory=LossWeights)  # LEAD detailed_loss_weights (normalised)
    centernet_phantom_peak: bool = False  # True: LEAD's padding bug, a VEHICLE peak at BEV cell (0, 0)
    freeze_backbone: bool = (
        False  # LEAD freeze_backbone: no gradients into the backbone (BN stats still move)
    )
    # --- hardware ---
    sync_batchnorm: bool = False  # LEAD sync_batchnorm: SyncBatchNorm across ranks (needs CUDA; preset lead)
    compile: bool = False  # torch.compile the forward (LEAD's default True is a no-op there, §5.6)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda:<local_rank> if available, else cpu
    precision: Precision = "auto"  # auto: bf16 if the GPU supports it, else fp16 + GradScaler; fp32 on CPU
    check_memory: bool = True  # measure a step's memory before the first step; stop if it cannot fit
    # --- checkpoints ---
    checkpoint_every_steps: int = (
        0  # also save mid-epoch every N global steps (step-exact resume); 0 = epoch ends
    )
    # --- logging ---
    log_scalars_frequency: int = 10  # TensorBoard scalars every N steps (LEAD: 1 local, 50 on SLURM)
    log_images_frequency: int = 500  # training images every N steps (and at step 0)
    visualize_training: bool = True  # False: no training images
    log_wandb: bool = False  # also log to WandB (only if installed; else a warning)
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip_norm": self.grad_clip_norm >= 0,
            "max_steps": self.max_steps >= 0,
            "checkpoint_every_steps": self.checkpoint_every_steps >= 0,
            "log_scalars_frequency": self.log_scalars_frequency >= 1,
            "log_images_frequency": self.log_images_frequency >= 1,
            "num_workers": self.num_workers >= 0,
            "num_threads": self.num_threads >= 0,
            "perturbation_prob": 0.0 <= self.perturbation_prob <= 1.0,
            "use_color_aug_prob": 0.0 <= self.use_color_aug_prob <= 1.0,
            "val_every_steps": self.val_every_steps >= 0,
            "val_max_samples": self.val_max_samples is None or self.val_max_samples >= 1,
            "val_batch_size": self.val_batch_size is None or self.val_batch_size >= 1,
            "val_overlap": self.val_overlap in ("exclude", "error", "allow"),
            "val_buckets": self.val_buckets is None or len(self.val_buckets) > 0,
        }
        if self.overwrite and self.continue_failed_training:
            raise ConfigError(
                "overwrite=true deletes the run that continue_failed_training=true resumes; pick one"
            )
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {bad[0]}: {getattr(self, bad[0])!r}")

    @property
    def phase(self) -> str:
        return "posttrain" if self.use_planning_decoder else "pretrain"


def pretrain_config() -> TrainConfig:
    """LEAD's pre-training: perception heads only, 31 epochs, global batch 64."""
    return TrainConfig(logdir=Path("outputs/local_training/pretrain"), use_planning_decoder=False)


def posttrain_config(load_file: Path | None = None) -> TrainConfig:
    """LEAD's post-training: + planning decoder, starting from the pretrain checkpoint `load_file`."""
    return TrainConfig(
        logdir=Path("outputs/local_training/posttrain"), use_planning_decoder=True, load_file=load_file
    )


# LEAD TrainingConfig keys that lead-stream keeps under `model.` (given as LEAD spells them, they are renamed).
LEAD_KEY_ALIASES = {key: f"model.{field}" for key, field in LEAD_MODEL_KEYS.items()}


def lead_aliases(overrides: list[str] | None) -> list[str] | None:
    """`use_depth=false` → `model.use_depth=false` etc.; every other token is kept as given."""
    if overrides is None:
        return None
    renamed = []
    for token in overrides:
        key, sep, value = token.partition("=")
        renamed.append(f"{LEAD_KEY_ALIASES[key]}={value}" if sep and key in LEAD_KEY_ALIASES else token)
    return renamed


def lead_written_model_keys(data: dict) -> list[str]:
    """A config.json written by LEAD itself (no `model` section) → its model keys as `model.*` overrides.

    The key `compile` of such a file is dropped (LEAD never uses its compiled model; here compile is real).
    """
    if "model" in data:
        return []
    data.pop("compile", None)
    return [
        f"{LEAD_KEY_ALIASES[key]}={json.dumps(value)}"
        for key, value in data.items()
        if key in LEAD_KEY_ALIASES and key != "radar_detection"
    ]


def resolve_config(preset: TrainConfig, overrides: list[str] | None) -> TrainConfig:
    """Preset + `key=value` overrides, with LEAD's config inheritance (§5.4).

    With `load_file` set, the `config.json` next to it is the base (posttrain inherits batch size, epochs,
    model, ...); with `continue_failed_training`, `<logdir>/config.json` is. The preset's phase and the
    command-line overrides always win.

    Raises:
        ConfigError: unknown key, bad value, or an unreadable base config.json.
    """
    overrides = lead_aliases(overrides)
    cfg = apply_overrides(preset, overrides)
    base_file = None
    if (
        cfg.continue_failed_training
        and cfg.logdir is not None
        and (Path(cfg.logdir) / "config.json").exists()
    ):
        base_file = Path(cfg.logdir) / "config.json"
    elif cfg.load_file is not None and (Path(cfg.load_file).parent / "config.json").exists():
        base_file = Path(cfg.load_file).parent / "config.json"
    if base_file is None:
        return cfg
    try:
        data = json.loads(base_file.read_text())
        if not isinstance(data, dict):
            raise TypeError("not an object")
        lead_model = lead_written_model_keys(data)
        base = from_dict(TrainConfig, data)
        base = apply_overrides(base, lead_model)
    except (json.JSONDecodeError, TypeError) as error:
        raise ConfigError(f"{base_file}: not a TrainConfig JSON ({error})") from None
    base = dataclasses.replace(
        base,
        logdir=preset.logdir,
        use_planning_decoder=preset.use_planning_decoder,
        load_file=preset.load_file,
        continue_failed_training=False,
        overwrite=False,
        max_steps=preset.max_steps,
    )
    return apply_overrides(base, overrides)
