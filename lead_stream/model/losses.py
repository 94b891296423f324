"""Model outputs + Batch labels + CenterNet targets → LEAD's named losses (§6.2), computed in fp32.

Every loss is `sum / count` (a mean over pixels, centres, samples...). Under DDP the counts are summed over
ranks first (`reduce_sum`) and each rank returns `local_sum / (global_count / world_size)`: DDP's gradient
average then equals the gradient of the global-batch loss, and the mean of the ranks' losses equals the
loss one process would compute on the whole global batch. Weights are LEAD's `detailed_loss_weights`,
normalised to sum to 1 over the losses that exist in the phase.

`per_sample=True` (preset lead) is LEAD's normalisation: CenterNet sums are divided per sample by that
sample's `avg_factor` (max(1, heatmap cells equal to 1), + fp32 eps) and then averaged over samples, the
heatmap focal loss uses LEAD's eps form, and the BEV cross-entropy is a mean over all pixels (ignored ones
count 0). The pooled default divides the batch's sums by the batch's counts. A loss whose head is not
built (its output is absent) is absent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lead_stream.core.constants import (
    TARGET_SPEED_CLASSES_MPS,
)
from lead_stream.model.radar_loss import radar_loss_greedy, radar_loss_hungarian
from lead_stream.model.targets import CenterNetTargets

PERCEPTION_LOSSES = (
    "loss_semantic",
    "loss_depth",
    "loss_bev_semantic",
    "loss_center_net_heatmap",
    "loss_center_net_wh",
    "loss_center_net_offset",
    "loss_center_net_yaw_class",
    "loss_center_net_yaw_res",
    "loss_center_net_velocity",
    "loss_center_net_brake",
)
RADAR_LOSSES = ("radar_loss",)
PLANNING_LOSSES = ("loss_spatio_temporal_waypoints", "loss_target_speed", "loss_spatial_route")
LOSS_NAMES = PERCEPTION_LOSSES + RADAR_LOSSES + PLANNING_LOSSES


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    # --- perception (LEAD detailed_loss_weights) ---
    loss_semantic: float = 1.0  # perspective semantic CE
    loss_depth: float = 1e-5  # perspective depth L1 (metres), LEAD's tiny weight
    loss_bev_semantic: float = 1.0  # BEV semantic CE
    loss_center_net_heatmap: float = 1.0  # Gaussian focal loss / avg_factor
    loss_center_net_wh: float = 1.0  # L1 of half extents at centres
    loss_center_net_offset: float = 1.0  # L1 of sub-cell offsets at centres
    loss_center_net_yaw_class: float = 1.0  # CE of the 12 yaw bins at centres
    loss_center_net_yaw_res: float = 1.0  # smooth L1 of the yaw residual at centres
    loss_center_net_velocity: float = 1.0  # L1 of box speed at centres
    loss_center_net_brake: float = 0.0  # CE of box brake at centres (not in LEAD: 0 = logged only)
    radar_loss: float = 1.0  # radar detections: 5·matched L1 + validity BCE
    # --- planning (post-training only) ---
    loss_spatio_temporal_waypoints: float = 1.0  # L1 over the 8 future waypoints
    loss_target_speed: float = 1.0  # CE against the two-hot target-speed label
    loss_spatial_route: float = 1.0  # L1 over the 10 route points + L1 on the last point

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")

    def normalized(self, names: tuple[str, ...] | list[str]) -> dict[str, float]:
        """Weights of `names` divided by their sum (LEAD divides by ≈9 pre-train, ≈12 post-train)."""
        raw = {name: float(getattr(self, name)) for name in names}
        total = sum(raw.values())
        if total <= 0:
            raise ValueError("loss weights of the active losses sum to 0")
        return {name: value / total for name, value in raw.items()}


HEAD_LOSSES = {
    "use_semantic": ("loss_semantic",),
    "use_depth": ("loss_depth",),
    "use_bev_semantic": ("loss_bev_semantic",),
    "detect_boxes": tuple(name for name in PERCEPTION_LOSSES if name.startswith("loss_center_net")),
}


def active_losses(
    *,
    use_radar_detection: bool,
    use_planning_decoder: bool,
    disabled: tuple[str, ...] = (),
    brake: bool = True,
) -> tuple[str, ...]:
    """The loss names a model with these heads produces.

    Args:
        use_radar_detection: the radar detector is built.
        use_planning_decoder: the planner is built (post-training).
        disabled: ModelConfig switches that are off (`use_semantic`, `use_depth`, `use_bev_semantic`,
            `detect_boxes`): their losses are absent.
        brake: the model predicts box brake (lead-stream's own heads; LEAD's CenterNet has none).
    """
    dropped = {name for switch in disabled for name in HEAD_LOSSES[switch]}
    if not brake:
        dropped.add("loss_center_net_brake")
    names = tuple(name for name in PERCEPTION_LOSSES if name not in dropped)
    return (
        names
        + (RADAR_LOSSES if use_radar_detection else ())
        + (PLANNING_LOSSES if use_planning_decoder else ())
    )


def model_losses(config: object, *, use_planning_decoder: bool) -> tuple[str, ...]:
    """`active_losses` of a `ModelConfig` (its head switches and preset)."""
    return active_losses(
        use_radar_detection=config.use_radar_detection,
        use_planning_decoder=use_planning_decoder,
        disabled=tuple(switch for switch in HEAD_LOSSES if not getattr(config, switch)),
        brake=config.preset != "lead",
    )


def gaussian_focal_loss(
    pred_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.0,
    gamma: float = 4.0,
    *,
    lead_eps: bool = False,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss per element (LEAD α=2, γ=4).

    lead_eps: LEAD's form (log(p + 1e-12), no clamping); else p is clamped to [1e-4, 1 - 1e-4].
    """
    pred = torch.sigmoid(pred_logits.float())
    eps = 1e-12 if lead_eps else 0.0
    if not lead_eps:
        pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(pred + eps) * (1 - pred) ** alpha * pos
    neg_loss = -torch.log(1 - pred + eps) * pred**alpha * (1 - target) ** gamma * (1 - pos)
    return pos_loss + neg_loss


def gaussian_focal_loss_sum(
    pred_logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0
) -> torch.Tensor:
    """`gaussian_focal_loss`, summed over every element."""
    return gaussian_focal_loss(pred_logits, target, alpha, gamma).sum()


def two_hot_target_speed(speed_mps: torch.Tensor, brake: torch.Tensor) -> torch.Tensor:
    """(B,) speeds → (B, 8) two-hot over TARGET_SPEED_CLASSES_MPS; brake → all mass on class 0."""
    classes = torch.tensor(TARGET_SPEED_CLASSES_MPS, device=speed_mps.device)
    speed = speed_mps.float().clamp(classes[0], classes[-1])
    upper = torch.searchsorted(classes, speed, right=False).clamp(1, len(classes) - 1)  # (B,)
    lower = upper - 1
    frac = ((speed - classes[lower]) / (classes[upper] - classes[lower])).clamp(0, 1)
    target = torch.zeros(speed.shape[0], len(classes), device=speed.device)
    target.scatter_(1, lower[:, None], (1 - frac)[:, None])
    target.scatter_add_(1, upper[:, None], frac[:, None])
    brake_row = F.one_hot(torch.zeros_like(lower), len(classes)).float()
    return torch.where(brake.bool()[:, None], brake_row, target)


def _resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer labels → nearest-neighbour at `size` (int64)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def _centernet_pooled(
    outputs: dict[str, torch.Tensor], targets: CenterNetTargets
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(sum, count) of the CenterNet losses, normalised by the batch's number of centres."""
    centres = targets.centre_mask  # (B, 80, 96)
    num_centres = targets.num_centres
    mask2 = centres[:, None].float()
    out = {
        "loss_center_net_heatmap": (
            gaussian_focal_loss_sum(outputs["center_net_heatmap"], targets.heatmap),
            num_centres,
        ),
        "loss_center_net_wh": (
            ((outputs["center_net_wh"].float() - targets.wh).abs() * mask2).sum(),
            2 * num_centres,
        ),
        "loss_center_net_offset": (
            ((outputs["center_net_offset"].float() - targets.offset).abs() * mask2).sum(),
            2 * num_centres,
        ),
    }
    yaw_ce = F.cross_entropy(outputs["center_net_yaw_class"].float(), targets.yaw_class, reduction="none")
    out["loss_center_net_yaw_class"] = ((yaw_ce * centres).sum(), num_centres)
    yaw_res = F.smooth_l1_loss(outputs["center_net_yaw_res"].float(), targets.yaw_res, reduction="none")
    out["loss_center_net_yaw_res"] = ((yaw_res * mask2).sum(), num_centres)
    if "center_net_velocity" in outputs:
        velocity = (outputs["center_net_velocity"].float() - targets.velocity).abs() * mask2
        out["loss_center_net_velocity"] = (velocity.sum(), num_centres)
    if "center_net_brake" in outputs:
        brake_ce = F.cross_entropy(outputs["center_net_brake"].float(), targets.brake, reduction="none")
        out["loss_center_net_brake"] = ((brake_ce * centres).sum(), num_centres)
    return out


def _centernet_per_sample(
    outputs: dict[str, torch.Tensor], targets: CenterNetTargets
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(sum over samples of per-sample losses, B): LEAD's `CenterNetDecoder.compute_loss`."""
    heatmap = targets.heatmap  # (B, 8, 80, 96)
    B = heatmap.shape[0]
    avg_factor = heatmap.eq(1).flatten(1).sum(1).clamp(min=1).float() + torch.finfo(torch.float32).eps  # (B,)
    weight = targets.centre_mask[:, None].float()  # (B, 1, 80, 96): LEAD's pixel_weight

    def per_sample(values: torch.Tensor, divisor: float = 1.0) -> tuple[torch.Tensor, int]:
        return (values.flatten(1).sum(1) / (avg_factor * divisor)).sum(), B

    out = {
        "loss_center_net_heatmap": per_sample(
            gaussian_focal_loss(outputs["center_net_heatmap"], heatmap, lead_eps=True)
        ),
        "loss_center_net_wh": per_sample((outputs["center_net_wh"].float() - targets.wh).abs() * weight, 2.0),
        "loss_center_net_offset": per_sample(
            (outputs["center_net_offset"].float() - targets.offset).abs() * weight, 2.0
        ),
        "loss_center_net_yaw_class": per_sample(
            F.cross_entropy(outputs["center_net_yaw_class"].float(), targets.yaw_class, reduction="none")
            * weight[:, 0]
        ),
        "loss_center_net_yaw_res": per_sample(
            F.smooth_l1_loss(outputs["center_net_yaw_res"].float(), targets.yaw_res, reduction="none")
            * weight
        ),
    }
    if "center_net_velocity" in outputs:
        out["loss_center_net_velocity"] = per_sample(
            (outputs["center_net_velocity"].float() - targets.velocity).abs() * weight
        )
    return out


def compute_losses(
    outputs: dict[str, torch.Tensor],
    batch: object,
    targets: CenterNetTargets,
    *,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    world_size: int = 1,
    per_sample: bool = False,
) -> dict[str, torch.Tensor]:
    """Unweighted losses by LEAD name (scalars, fp32); see the module docstring for the DDP normalisation.

    Args:
        outputs: `TFv6` outputs.
        batch: the rank's `Batch` (labels).
        targets: `centernet_targets(batch.boxes, batch.num_boxes)`.
        reduce_sum: sums a tensor over ranks (all_reduce); None for one process.
        world_size: number of ranks.
        per_sample: LEAD's per-sample normalisation (preset lead); see the module docstring.

    Returns:
        {loss name: scalar tensor} for the losses the outputs allow.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}

    def add(name: str, total: torch.Tensor, count: torch.Tensor | float) -> None:
        sums[name] = total.float()
        counts[name] = torch.as_tensor(count, dtype=torch.float32, device=total.device).detach()

    if "semantic" in outputs:
        semantic = outputs["semantic"].float()  # (B, 10, H, W)
        semantic_labels = _resize_labels(batch.semantic, semantic.shape[-2:])
        add(
            "loss_semantic",
            F.cross_entropy(semantic, semantic_labels, reduction="sum"),
            semantic_labels.numel(),
        )
    if "depth_m" in outputs:
        depth = outputs["depth_m"].float()  # (B, H, W)
        depth_labels = batch.depth_m  # (B, 96, 288) float32 metres from the uint8 labels, on the device
        if tuple(depth_labels.shape[-2:]) != tuple(depth.shape[-2:]):
            depth_labels = F.interpolate(
                depth_labels[:, None], size=depth.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
        if per_sample:
            depth_labels = (
                depth_labels.long().float()
            )  # LEAD reads its depth label as torch.long (whole metres)
        add("loss_depth", (depth - depth_labels).abs().sum(), depth_labels.numel())
    if "bev_semantic" in outputs:
        bev = outputs["bev_semantic"].float()  # (B, 13, X, Y)
        bev_labels = _resize_labels(batch.bev_semantic, bev.shape[-2:])
        bev_count = bev_labels.numel() if per_sample else (bev_labels >= 0).sum()
        add(
            "loss_bev_semantic", F.cross_entropy(bev, bev_labels, ignore_index=-1, reduction="sum"), bev_count
        )
    if "center_net_heatmap" in outputs:
        centernet = _centernet_per_sample if per_sample else _centernet_pooled
        for name, (total, count) in centernet(outputs, targets).items():
            add(name, total, count)
    # --- radar detections (per-sample loss, mean over samples) ---
    if "radar_detections" in outputs:
        radar_loss = radar_loss_hungarian if per_sample else radar_loss_greedy
        per_sample_radar = radar_loss(outputs["radar_detections"], batch.radar_detections)  # (B,)
        add("radar_loss", per_sample_radar.sum(), per_sample_radar.shape[0])
    # --- planning (post-training) ---
    if "waypoints" in outputs:
        valid = batch.planning_valid.bool()
        wp_err = (
            (outputs["waypoints"].float() - batch.future_waypoints.float()).abs().mean(dim=(1, 2))
        )  # (B,)
        add("loss_spatio_temporal_waypoints", (wp_err * valid).sum(), valid.sum())
        target = two_hot_target_speed(batch.target_speed_mps, batch.brake)
        speed_ce = -(target * F.log_softmax(outputs["target_speed_logits"].float(), dim=-1)).sum(-1)
        add("loss_target_speed", speed_ce.sum(), speed_ce.shape[0])
        route_err = (outputs["route"].float() - batch.route.float()).abs()  # (B, 10, 2)
        route_loss = route_err.mean(dim=(1, 2)) + route_err[:, -1].mean(-1)
        add("loss_spatial_route", route_loss.sum(), route_loss.shape[0])
    names = list(sums)
    global_counts = torch.stack([counts[n] for n in names])
    if reduce_sum is not None:
        global_counts = reduce_sum(global_counts.clone())
    normalizers = global_counts.clamp(min=1.0) / world_size
    return {name: sums[name] / normalizers[i] for i, name in enumerate(names)}


@torch.no_grad()
def planning_metrics(outputs: dict[str, torch.Tensor], batch: object) -> dict[str, float]:
    """waypoints_ade / fde, route_ade / fde (metres) and target_speed_error (m/s) of this rank's batch."""
    if "waypoints" not in outputs:
        return {}
    wp = (outputs["waypoints"].float() - batch.future_waypoints.float()).norm(dim=-1)  # (B, 8)
    route = (outputs["route"].float() - batch.route.float()).norm(dim=-1)  # (B, 10)
    return {
        "waypoints_ade": float(wp.mean()),
        "waypoints_fde": float(wp[:, -1].mean()),
        "route_ade": float(route.mean()),
        "route_fde": float(route[:, -1].mean()),
        "target_speed_error": float(
            (outputs["target_speed_mps"].float() - batch.target_speed_mps.float()).abs().mean()
        ),
    }
