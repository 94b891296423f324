"""Radar detections (B, 20, 4) [x, y, v, validity logit] + labels (B, 20, 4) [x, y, v, valid] → per-sample loss.

Both matchers give LEAD's per-sample loss `5 · mean L1 of matched valid labels (scaled by [96, 80, 25]) +
mean BCE of the 20 validity logits`. `radar_loss_hungarian` is LEAD's own (`RadarDetector.compute_loss`):
scipy's `linear_sum_assignment` on the square cost `5 · L1 · valid + BCE(logit, valid)`, every query matched
to one label slot, invalid slots included. `radar_loss_greedy` (presets full / compact) matches valid
labels only, cheapest pair first, on the device without a host round trip.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lead_stream.core.constants import MAX_SPEED_MPS, MAX_X_M, MAX_Y_M, MIN_X_M, MIN_Y_M

RADAR_SCALE = (MAX_X_M - MIN_X_M, MAX_Y_M - MIN_Y_M, MAX_SPEED_MPS)  # LEAD's [96, 80, 25]
RADAR_L1_WEIGHT = 5.0  # LEAD radar_regression_loss_weight
RADAR_BCE_WEIGHT = 1.0  # LEAD radar_classification_loss_weight


@torch.no_grad()
def greedy_match(cost: torch.Tensor) -> torch.Tensor:
    """(B, P, L) cost, inf for invalid labels → (B, P) matched label index or -1 (greedy, lowest first)."""
    B, P, L = cost.shape
    cost = cost.clone()
    match = torch.full((B, P), -1, dtype=torch.long, device=cost.device)
    batch_idx = torch.arange(B, device=cost.device)
    for _ in range(min(P, L)):
        flat = cost.view(B, -1)
        best, where = flat.min(dim=1)
        ok = torch.isfinite(best)
        pred_idx, label_idx = where // L, where % L
        match[batch_idx[ok], pred_idx[ok]] = label_idx[ok]
        cost[batch_idx[ok], pred_idx[ok], :] = float("inf")
        cost[batch_idx[ok], :, label_idx[ok]] = float("inf")
    return match


def radar_loss_greedy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, P, 4) predictions, (B, L, 4) labels → (B,) loss, greedy matching of the valid labels."""
    pred, labels = pred.float(), labels.float()
    scale = torch.tensor(RADAR_SCALE, device=pred.device)
    l1 = ((pred[:, :, None, :3] - labels[:, None, :, :3]).abs() / scale).sum(-1)  # (B, P, L)
    bce_pos = F.binary_cross_entropy_with_logits(
        pred[..., 3], torch.ones_like(pred[..., 3]), reduction="none"
    )
    cost = RADAR_L1_WEIGHT * l1 + bce_pos[:, :, None]
    cost = cost.masked_fill(labels[:, None, :, 3] < 0.5, float("inf"))
    match = greedy_match(cost.detach())  # (B, P)
    matched = match >= 0
    matched_labels = torch.gather(labels, 1, match.clamp(min=0)[..., None].expand(-1, -1, 4))
    l1_matched = ((pred[..., :3] - matched_labels[..., :3]).abs() / scale).sum(-1) * matched
    per_sample_l1 = l1_matched.sum(1) / matched.sum(1).clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(pred[..., 3], matched.float(), reduction="none").mean(1)
    return RADAR_L1_WEIGHT * per_sample_l1 + RADAR_BCE_WEIGHT * bce


def radar_loss_hungarian(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, Q, 4) predictions, (B, Q, 4) labels → (B,) loss with LEAD's Hungarian matching (scipy, on the host)."""
    from scipy.optimize import linear_sum_assignment

    pred, labels = pred.float(), labels.float()
    scale = torch.tensor(RADAR_SCALE, device=pred.device)
    valid = labels[..., 3]  # (B, Q) 0/1
    l1 = ((pred[:, :, None, :3] - labels[:, None, :, :3]) / scale).abs().sum(-1) * valid[:, None]  # (B, Q, Q)
    logits = pred[..., 3:4]
    bce = F.binary_cross_entropy_with_logits(
        logits[:, :, None].expand(-1, -1, labels.shape[1], -1),
        labels[:, None, :, 3:4].expand(-1, pred.shape[1], -1, -1),
        reduction="none",
    )[..., 0]  # (B, Q, Q)
    cost = (RADAR_L1_WEIGHT * l1 + RADAR_BCE_WEIGHT * bce).detach().cpu()
    matches = np.stack([np.stack(linear_sum_assignment(c.numpy())) for c in cost])  # (B, 2, Q)
    pred_idx = torch.from_numpy(matches[:, 0]).long().to(pred.device)  # (B, Q)
    label_idx = torch.from_numpy(matches[:, 1]).long().to(pred.device)
    batch_idx = torch.arange(pred.shape[0], device=pred.device)[:, None]
    matched_pred, matched_label = pred[batch_idx, pred_idx], labels[batch_idx, label_idx]
    mask = matched_label[..., 3]
    state = (((matched_pred[..., :3] - matched_label[..., :3]) / scale).abs().sum(-1) * mask).sum(-1)
    state = state / mask.sum(-1).clamp(min=1)
    cls = F.binary_cross_entropy_with_logits(matched_pred[..., 3], mask, reduction="none").mean(-1)
    return RADAR_L1_WEIGHT * state + RADAR_BCE_WEIGHT * cls
