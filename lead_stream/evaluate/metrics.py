"""`Predictions` + `Labels` of many batches → open-loop metrics, as sums that merge over DDP ranks.

Every metric is kept as float64 sums and counts (`OpenLoopMetrics.state()`), so `reduce(all_reduce_sum)`
gives the same result whatever the split of samples over ranks. Metrics (units in the key names):
  planning: waypoint displacement per horizon step, ADE up to each horizon, ADE / FDE (samples with all 8
    waypoints real), route L1 (mean |Δ| per coordinate) and route ADE; target-speed class accuracy and the
    8 x 8 confusion (rows = expert class, cols = predicted);
  perception: BEV and perspective semantic IoU per class and mIoU (prediction argmax, nearest-upsampled to
    the label raster), depth AbsRel / RMSE / δ<1.25 over pixels with depth, box AP per class at nuScenes'
    centre-distance thresholds and mAP, class-agnostic radar detection AP (`detection`).
A class without label and prediction pixels (IoU) or without labels (AP) is NaN and left out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lead_stream.core.constants import (
    NUM_BEV_SEMANTIC_CLASSES,
    NUM_BOX_CLASSES,
    NUM_SEMANTIC_CLASSES,
    NUM_WAYPOINTS,
    TARGET_SPEED_CLASSES_MPS,
    BevSemanticClass,
    BoxClass,
    SemanticClass,
)
from lead_stream.evaluate.adapter import Labels, Predictions
from lead_stream.evaluate.detection import CENTRE_THRESHOLDS_M, DetectionCounts

WAYPOINT_DT_S = 0.25  # waypoints are 0.25 s apart
DEPTH_DELTA = 1.25  # δ accuracy threshold: max(pred/gt, gt/pred) < 1.25


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _upsampled_classes(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) class scores → (B, H, W) int64 argmax at `size` (nearest)."""
    classes = scores.argmax(dim=1)
    if tuple(classes.shape[-2:]) != tuple(size):
        classes = F.interpolate(classes[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return classes


class Confusion:
    """A (C, C) confusion matrix (rows = label, cols = prediction) of class maps or class labels."""

    def __init__(self, num_classes: int, device: torch.device | str) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)

    def update(self, label: torch.Tensor, pred: torch.Tensor) -> None:
        C = self.num_classes
        label, pred = label.reshape(-1).long(), pred.reshape(-1).long()
        keep = (label >= 0) & (label < C)
        flat = label[keep] * C + pred[keep].clamp(0, C - 1)
        self.matrix += torch.bincount(flat, minlength=C * C).reshape(C, C).double()

    def iou(self) -> np.ndarray:
        """(C,) intersection over union per class; NaN where the class is in neither label nor prediction."""
        m = self.matrix.cpu().numpy()
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)


class OpenLoopMetrics:
    """Accumulates every metric the predictions allow; `compute()` gives the results dict."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        d = device
        self.num_samples = torch.zeros(1, dtype=torch.float64, device=d)
        # planning: [Σ displacement per step (8), count of valid samples]
        self.waypoint_sum = torch.zeros(NUM_WAYPOINTS, dtype=torch.float64, device=d)
        self.waypoint_count = torch.zeros(1, dtype=torch.float64, device=d)
        self.route_sum = torch.zeros(
            3, dtype=torch.float64, device=d
        )  # Σ|Δ| per coord, Σ L2 per point, points
        self.speed = Confusion(len(TARGET_SPEED_CLASSES_MPS), d)
        self.bev = Confusion(NUM_BEV_SEMANTIC_CLASSES, d)
        self.semantic = Confusion(NUM_SEMANTIC_CLASSES, d)
        self.depth_sum = torch.zeros(4, dtype=torch.float64, device=d)  # Σ abs rel, Σ sq err, Σ δ1, pixels
        self.boxes = DetectionCounts(NUM_BOX_CLASSES, d)
        self.radar = DetectionCounts(1, d)
        self.seen = {"planning": False, "bev": False, "semantic": False, "depth": False}
        self.seen |= {"boxes": False, "radar": False, "speed": False}

    # --- accumulation ---
    @torch.no_grad()
    def update(self, pred: Predictions, label: Labels) -> None:
        """Add one batch (padding rows already removed)."""
        self.num_samples += label.waypoints.shape[0]
        if pred.waypoints is not None:
            self.seen["planning"] = True
            valid = label.planning_valid
            err = (pred.waypoints.float() - label.waypoints.float()).norm(dim=-1)[valid]  # (V, 8)
            self.waypoint_sum += err.sum(0).double()
            self.waypoint_count += valid.sum().double()
        if pred.route is not None:
            self.seen["planning"] = True
            diff = pred.route.float() - label.route.float()  # (B, 10, 2)
            self.route_sum += torch.stack(
                [diff.abs().sum(), diff.norm(dim=-1).sum(), diff.new_tensor(float(diff[..., 0].numel()))]
            ).double()
        if pred.target_speed_logits is not None:
            self.seen["speed"] = True
            self.speed.update(label.target_speed_class, pred.target_speed_logits.argmax(-1))
        if pred.bev_semantic is not None:
            self.seen["bev"] = True
            self.bev.update(
                label.bev_semantic, _upsampled_classes(pred.bev_semantic, label.bev_semantic.shape[-2:])
            )
        if pred.semantic is not None:
            self.seen["semantic"] = True
            self.semantic.update(label.semantic, _upsampled_classes(pred.semantic, label.semantic.shape[-2:]))
        if pred.depth_m is not None:
            self.seen["depth"] = True
            self._update_depth(pred.depth_m.float(), label.depth_m.float())
        if pred.boxes is not None:
            self.seen["boxes"] = True
            self.boxes.update(pred.boxes, label.boxes, label.box_valid)
        if pred.radar is not None:
            self.seen["radar"] = True
            class0 = torch.zeros_like(pred.radar[..., :1])  # radar detections are class-agnostic
            labels = torch.cat([label.radar, torch.zeros_like(label.radar[..., :1])], dim=-1)
            self.radar.update(torch.cat([pred.radar, class0], dim=-1), labels, label.radar_valid)

    def _update_depth(self, depth: torch.Tensor, gt: torch.Tensor) -> None:
        if tuple(depth.shape[-2:]) != tuple(gt.shape[-2:]):
            depth = F.interpolate(depth[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[
                :, 0
            ]
        valid = gt > 0
        p, g = depth[valid].double(), gt[valid].double()
        ratio = torch.maximum(p / g, g / p.clamp(min=1e-6))
        self.depth_sum += torch.stack(
            [
                ((p - g).abs() / g).sum(),
                ((p - g) ** 2).sum(),
                (ratio < DEPTH_DELTA).double().sum(),
                p.new_tensor(float(p.numel())),
            ]
        )

    # --- DDP ---
    def state(self) -> list[torch.Tensor]:
        """Every sum and count, in a fixed order."""
        return [
            self.num_samples,
            self.waypoint_sum,
            self.waypoint_count,
            self.route_sum,
            self.speed.matrix,
            self.bev.matrix,
            self.semantic.matrix,
            self.depth_sum,
            *self.boxes.state(),
            *self.radar.state(),
        ]

    def reduce(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum every state over ranks with one all-reduce (then each rank holds the global sums)."""
        parts = self.state()
        flat = reduce_sum(torch.cat([p.reshape(-1) for p in parts]))
        offset = 0
        for p in parts:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    # --- results ---
    def compute(self) -> dict:
        """The results dict (JSON-able; NaN where undefined); sections only for heads that predicted."""
        out: dict = {"num_samples": int(self.num_samples.item())}
        if self.seen["planning"]:
            count = float(self.waypoint_count.item())
            per_step = (self.waypoint_sum.cpu().numpy() / count) if count else np.full(NUM_WAYPOINTS, np.nan)
            horizons = [WAYPOINT_DT_S * (i + 1) for i in range(NUM_WAYPOINTS)]
            route = self.route_sum.cpu().numpy()
            out["planning"] = {
                "num_samples": int(count),
                "ade_m": float(per_step.mean()),
                "fde_m": float(per_step[-1]),
                "horizons_s": horizons,
                "displacement_by_step_m": per_step.tolist(),
                "ade_by_horizon_m": (np.cumsum(per_step) / np.arange(1, NUM_WAYPOINTS + 1)).tolist(),
                "route_l1_m": float(route[0] / (2 * route[2])) if route[2] else float("nan"),
                "route_ade_m": float(route[1] / route[2]) if route[2] else float("nan"),
            }
        if self.seen["speed"]:
            m = self.speed.matrix.cpu().numpy()
            out["target_speed"] = {
                "accuracy": float(np.trace(m) / m.sum()) if m.sum() else float("nan"),
                "classes_mps": list(TARGET_SPEED_CLASSES_MPS),
                "confusion": m.astype(np.int64).tolist(),
            }
        for key, confusion, classes in (
            ("bev_semantic", self.bev, BevSemanticClass),
            ("semantic", self.semantic, SemanticClass),
        ):
            if self.seen["bev" if key == "bev_semantic" else "semantic"]:
                iou = confusion.iou()
                out[key] = {"miou": _nanmean(iou), "iou": {c.name: float(iou[c]) for c in classes}}
        if self.seen["depth"]:
            abs_rel, sq, delta, n = self.depth_sum.cpu().numpy()
            out["depth"] = {
                "abs_rel": float(abs_rel / n) if n else float("nan"),
                "rmse_m": float(np.sqrt(sq / n)) if n else float("nan"),
                "delta1": float(delta / n) if n else float("nan"),
            }
        if self.seen["boxes"]:
            ap = self.boxes.average_precision()  # (T, C)
            out["boxes"] = {
                "thresholds_m": list(CENTRE_THRESHOLDS_M),
                "map": _nanmean(ap.mean(axis=0)) if np.isfinite(ap).any() else float("nan"),
                "map_by_threshold": {f"{t:g}": _nanmean(ap[i]) for i, t in enumerate(CENTRE_THRESHOLDS_M)},
                "ap": {c.name: float(np.mean(ap[:, c])) for c in BoxClass},
                "ap_by_threshold": {c.name: [float(v) for v in ap[:, c]] for c in BoxClass},
                "num_labels": {c.name: int(self.boxes.num_labels[c].item()) for c in BoxClass},
            }
        if self.seen["radar"]:
            ap = self.radar.average_precision()[:, 0]
            out["radar"] = {
                "thresholds_m": list(CENTRE_THRESHOLDS_M),
                "map": _nanmean(ap),
                "ap_by_threshold": {f"{t:g}": float(v) for t, v in zip(CENTRE_THRESHOLDS_M, ap)},
                "num_labels": int(self.radar.num_labels[0].item()),
            }
        return out


@torch.no_grad()
def sample_errors(pred: Predictions, label: Labels) -> tuple[torch.Tensor, str]:
    """(B,) per-sample error for ranking the worst frames, and its name.

    With a planner: waypoint ADE in metres (NaN where the frame has no 8 real waypoints); else the share of
    wrongly classified BEV pixels.
    """
    if pred.waypoints is not None:
        ade = (pred.waypoints.float() - label.waypoints.float()).norm(dim=-1).mean(-1)
        return torch.where(label.planning_valid, ade, torch.full_like(ade, float("nan"))), "waypoint ADE (m)"
    classes = _upsampled_classes(pred.bev_semantic, label.bev_semantic.shape[-2:])
    return (classes != label.bev_semantic).float().mean(dim=(1, 2)), "BEV pixel error"


def flat_scalars(results: dict) -> dict[str, float]:
    """The results dict → {"planning/ade_m": ..., "bev_semantic/iou/ROAD": ...}; lists and NaN left out."""
    scalars: dict[str, float] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            scalars[prefix] = float(value)

    walk("", {k: v for k, v in results.items() if k != "ap_by_threshold"})
    return {k: v for k, v in scalars.items() if "/ap_by_threshold/" not in k and "/num_labels" not in k}


def json_safe(value: object) -> object:
    """The results dict with NaN / inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


HEADLINE = (
    ("planning", "ade_m", "ADE {:.2f} m"),
    ("planning", "fde_m", "FDE {:.2f} m"),
    ("target_speed", "accuracy", "speed acc {:.1%}"),
    ("bev_semantic", "miou", "BEV mIoU {:.3f}"),
    ("semantic", "miou", "sem mIoU {:.3f}"),
    ("depth", "abs_rel", "depth AbsRel {:.3f}"),
    ("boxes", "map", "box mAP {:.3f}"),
    ("radar", "map", "radar mAP {:.3f}"),
)


def headline(results: dict) -> str:
    """The few numbers a summary line shows: "ADE 1.23 m, FDE 2.50 m, ..., box mAP 0.412" (n/a when NaN)."""
    parts = []
    for section, key, fmt in HEADLINE:
        if section in results:
            value = results[section].get(key)
            ok = isinstance(value, (int, float)) and np.isfinite(value)
            parts.append(fmt.format(value) if ok else fmt.split(" {")[0] + " n/a")
    return ", ".join(parts)
