"""CenterNet heatmaps → box centres in metres; centres + labels → per-class AP at BEV centre distances.

Matching follows nuScenes: per sample, predictions in descending score order each take the nearest
still-unmatched label of their class whose centre lies within the distance threshold (a true positive),
else they are false positives. AP is nuScenes' `calc_ap`: precision interpolated at 101 recall points, the
recall points up to 0.1 dropped and precision above 0.1 rescaled to [0, 1]. To be exact under DDP (a sum of
counts, whatever the split of samples over ranks), scores are quantised into `SCORE_BINS` bins and the TP /
FP counts kept per (threshold, class, bin): predictions of one bin share one operating point.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CENTRE_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)  # nuScenes' BEV centre-distance thresholds
SCORE_BINS = 1000  # score quantisation of the mergeable AP counts (1/1000)
MIN_RECALL = 0.1  # nuScenes calc_ap: recall points up to this are dropped...
MIN_PRECISION = 0.1  # ...and precision is counted above this
RECALL_POINTS = 101  # nuScenes' interpolation grid 0, 0.01, ..., 1


@torch.no_grad()
def decode_box_centres(
    heatmap: torch.Tensor,
    offset: torch.Tensor,
    *,
    area_m: tuple[float, float, float, float],
    top_k: int,
    kernel: int,
) -> torch.Tensor:
    """CenterNet outputs → the top-k box centres over all classes and cells.

    Args:
        heatmap: (B, C, H, W) float32 scores in [0, 1]; rows = y, cols = x.
        offset: (B, 2, H, W) float32 sub-cell centre offset (x, y) in cells.
        area_m: (min_x, max_x, min_y, max_y) metres covered by the grid.
        top_k: centres kept per sample (fewer when the grid has fewer cells).
        kernel: a cell is a centre candidate only if it is the maximum of its kernel x kernel neighbourhood.

    Returns:
        (B, K, 4) float32 [x_m, y_m, score, class], by descending score.
    """
    B, C, H, W = heatmap.shape
    min_x, max_x, min_y, max_y = area_m
    peaks = F.max_pool2d(heatmap, kernel, stride=1, padding=kernel // 2)
    heat = torch.where(peaks == heatmap, heatmap, torch.zeros((), device=heatmap.device))
    k = min(top_k, C * H * W)
    score, flat = heat.reshape(B, -1).topk(k, dim=1)  # (B, K), sorted descending
    cls, cell = flat // (H * W), flat % (H * W)
    row, col = cell // W, cell % W
    off = offset.reshape(B, 2, H * W)
    off_x = torch.gather(off[:, 0], 1, cell)
    off_y = torch.gather(off[:, 1], 1, cell)
    x_m = (col.float() + off_x) * ((max_x - min_x) / W) + min_x
    y_m = (row.float() + off_y) * ((max_y - min_y) / H) + min_y
    return torch.stack([x_m, y_m, score, cls.float()], dim=-1)


@torch.no_grad()
def match_centres(
    predictions: torch.Tensor,
    labels: torch.Tensor,
    label_valid: torch.Tensor,
    thresholds_m: tuple[float, ...] = CENTRE_THRESHOLDS_M,
) -> torch.Tensor:
    """Greedy nuScenes matching of every prediction, at every threshold.

    Args:
        predictions: (B, K, 4) float32 [x_m, y_m, score, class].
        labels: (B, N, 3) float32 [x_m, y_m, class].
        label_valid: (B, N) bool.
        thresholds_m: centre-distance thresholds.

    Returns:
        (B, T, K) bool: prediction k is a true positive at threshold t.
    """
    B, K, _ = predictions.shape
    N = labels.shape[1]
    T = len(thresholds_m)
    device = predictions.device
    tp = torch.zeros(B, T, K, dtype=torch.bool, device=device)
    if N == 0 or K == 0:
        return tp
    order = predictions[..., 2].argsort(dim=1, descending=True, stable=True)  # (B, K)
    pred = torch.gather(predictions, 1, order[..., None].expand(-1, -1, 4))
    dist = torch.cdist(pred[..., :2], labels[..., :2])  # (B, K, N)
    same = (pred[..., 3, None].round() == labels[:, None, :, 2].round()) & label_valid[:, None, :]
    dist = dist.masked_fill(~same, float("inf"))
    thr = torch.tensor(thresholds_m, device=device, dtype=dist.dtype)[None, :]  # (1, T)
    taken = torch.zeros(B, T, N, dtype=torch.bool, device=device)
    tp_sorted = torch.zeros(B, T, K, dtype=torch.bool, device=device)
    batch_idx = torch.arange(B, device=device)[:, None].expand(B, T)
    thr_idx = torch.arange(T, device=device)[None, :].expand(B, T)
    for k in range(K):
        d = dist[:, None, k, :].expand(B, T, N).masked_fill(taken, float("inf"))  # (B, T, N)
        best, where = d.min(dim=2)  # (B, T)
        hit = best < thr
        tp_sorted[:, :, k] = hit
        taken[batch_idx[hit], thr_idx[hit], where[hit]] = True
    tp.scatter_(2, order[:, None, :].expand(B, T, K), tp_sorted)
    return tp


def score_bin(score: torch.Tensor) -> torch.Tensor:
    """Scores in [0, 1] → bin index 0..SCORE_BINS-1 (int64)."""
    return (score.float().clamp(0, 1) * SCORE_BINS).long().clamp(max=SCORE_BINS - 1)


class DetectionCounts:
    """Mergeable AP counts: TP / FP per (threshold, class, score bin) and labels per class."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        T = len(CENTRE_THRESHOLDS_M)
        self.tp = torch.zeros(T, num_classes * SCORE_BINS, dtype=torch.float64, device=device)
        self.fp = torch.zeros_like(self.tp)
        self.num_labels = torch.zeros(num_classes, dtype=torch.float64, device=device)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, label_valid: torch.Tensor) -> None:
        """Count one batch; shapes as in `match_centres` (predictions of classes >= num_classes dropped)."""
        C = self.num_classes
        cls = predictions[..., 3].round().long()  # (B, K)
        keep = (cls >= 0) & (cls < C)
        tp = match_centres(predictions, labels, label_valid)  # (B, T, K)
        index = (cls.clamp(0, C - 1) * SCORE_BINS + score_bin(predictions[..., 2]))[keep]  # (P,)
        for t in range(tp.shape[1]):
            hit = tp[:, t][keep].double()
            self.tp[t].index_add_(0, index, hit)
            self.fp[t].index_add_(0, index, 1.0 - hit)
        label_cls = labels[..., 2].round().long()
        valid = label_valid & (label_cls >= 0) & (label_cls < C)
        self.num_labels += torch.bincount(label_cls[valid], minlength=C)[:C].double()

    def state(self) -> list[torch.Tensor]:
        """The tensors to sum over ranks (in place)."""
        return [self.tp, self.fp, self.num_labels]

    def average_precision(self) -> np.ndarray:
        """(T, C) nuScenes AP; NaN for a class without labels."""
        T, C = self.tp.shape[0], self.num_classes
        tp = self.tp.cpu().numpy().reshape(T, C, SCORE_BINS)
        fp = self.fp.cpu().numpy().reshape(T, C, SCORE_BINS)
        num_labels = self.num_labels.cpu().numpy()
        ap = np.full((T, C), np.nan)
        for t in range(T):
            for c in range(C):
                if num_labels[c] > 0:
                    ap[t, c] = nuscenes_ap(tp[t, c], fp[t, c], num_labels[c])
        return ap


def nuscenes_ap(tp_per_bin: np.ndarray, fp_per_bin: np.ndarray, num_labels: float) -> float:
    """AP from TP / FP counts per ascending score bin and the number of labels (> 0).

    Each bin with predictions is one operating point (all predictions of that bin or higher); per recall
    value the first (most precise) point is kept, precision is interpolated at 101 recall points (0 past
    the highest recall reached), then nuScenes' `calc_ap`.
    """
    tp = tp_per_bin[::-1].cumsum()
    fp = fp_per_bin[::-1].cumsum()
    used = (tp_per_bin + fp_per_bin)[::-1] > 0
    if not used.any():
        return 0.0
    tp, fp = tp[used], fp[used]
    precision = tp / (tp + fp)
    recall = tp / num_labels
    recall, first = np.unique(recall, return_index=True)  # a recall reached again later has lower precision
    precision = precision[first]
    grid = np.linspace(0.0, 1.0, RECALL_POINTS)
    interpolated = np.interp(grid, recall, precision, right=0.0)
    kept = interpolated[round(100 * MIN_RECALL) + 1 :] - MIN_PRECISION
    return float(np.clip(kept, 0.0, None).mean() / (1.0 - MIN_PRECISION))
