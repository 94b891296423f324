"""bench_loader's LEAD-style baseline (b): LEAD's persistent per-frame cache (§3.2) written and read back."""

from __future__ import annotations

import io
import lzma
import pickle
import time
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image
from torch.utils.data import default_collate

from lead_stream.cache import features
from lead_stream.loader.sample_layout import variant_member


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _savez(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array)
    return buffer.getvalue()


def write_lead_style(
    root: Path,
    loader,
    samples: list[tuple[int, bool]],
    members: list[tuple[dict[str, bytes], bool]],
    out_dir: Path,
) -> list[tuple[Path, Path]]:
    """LEAD's persistent cache (§3.2): one lzma pickle per served (frame, variant), plus the raw meta path.

    Same content as the shards: JPEG bytes as stored, LiDAR as 16-bit PNG, semantic/depth PNG, the
    256x256 HD map PNG and 1024x1024 occupancy PNG (our BEV raster placed where LEAD crops it), raw
    (90, 9) boxes, 4 savez_compressed radar blobs and the radar detections.
    """
    from lead_stream.core.layout import modality_path, route_path

    out_dir.mkdir(parents=True, exist_ok=True)
    cat = loader.catalog
    pairs = []
    for i, ((m, pert), (row, _)) in enumerate(zip(members, samples)):
        arrays = {
            k: np.ascontiguousarray(a)
            for k, a in features.decode_sample_arrays(m["arrays.lz4"])[
                "perturbated" if pert else "normal"
            ].items()
        }
        lidar16 = (arrays["lidar_bev"].astype(np.float32) / 5 * 65535).astype(np.uint16)
        bev = arrays["bev_semantic"]
        hdmap = np.zeros((256, 256), np.uint8)
        hdmap[48:208, 64:256] = np.minimum(bev[::2, ::2], 3)
        occupancy = np.zeros((1024, 1024), np.uint8)
        occupancy[352:672, 384:768] = np.where(bev > 3, bev - 3, 0)
        boxes = np.zeros((90, 9), np.float32)
        raw_boxes = arrays["boxes"]
        boxes[: len(raw_boxes)] = raw_boxes
        radar = arrays["radar"]
        record = {
            "image": m[variant_member("rgb.jpg", pert)],
            "lidar_bev": _png(lidar16),
            "semantic": _png(arrays["semantic"]),
            "depth": _png(arrays["depth"]),
            "bev_semantic": _png(hdmap),
            "bev_occupancy": _png(occupancy),
            "bboxes": boxes,
            "radars": tuple(_savez(radar[radar[:, 4] == s, :4].astype(np.float16)) for s in range(4)),
            "radar_detections": arrays["radar_detections"],
        }
        path = out_dir / f"{i:06d}.pkl"
        with lzma.open(path, "wb") as handle:
            pickle.dump(record, handle)
        route_id = cat.route_id(cat.sample_route[row])
        pairs.append((path, modality_path(route_path(root, route_id), "metas", int(cat.sample_frame[row]))))
    return pairs


def _lead_style_sample(paths: tuple[Path, Path]) -> dict:
    """LEAD's cache-hit path: meta lzma pickle + cache lzma pickle, PNG/JPEG/npz decode, BEV crop + merge."""
    cache_path, meta_path = paths
    with lzma.open(meta_path, "rb") as handle:
        meta = pickle.load(handle)
    with lzma.open(cache_path, "rb") as handle:
        record = pickle.load(handle)
    png = lambda payload: np.asarray(Image.open(io.BytesIO(payload)))
    hdmap = png(record["bev_semantic"])[48:208, 64:256].repeat(2, 0).repeat(2, 1)
    occupancy = png(record["bev_occupancy"])[352:672, 384:768]
    radar = np.zeros((300, 5), np.float32)
    for sensor, blob in enumerate(record["radars"]):
        points = np.load(io.BytesIO(blob))["arr_0"][:75]
        radar[75 * sensor : 75 * sensor + len(points), :4] = points
        radar[75 * sensor : 75 * sensor + len(points), 4] = sensor
    return {
        "rgb": simplejpeg.decode_jpeg(record["image"], colorspace="RGB").transpose(2, 0, 1),
        "rasterized_lidar": (png(record["lidar_bev"]).astype(np.float32) / 65535)[None],
        "semantic": png(record["semantic"]),
        "depth": png(record["depth"]).astype(np.float32) / 255 * 50,
        "bev_semantic": np.where(occupancy == 0, hdmap, occupancy + 3),
        "center_net_bounding_boxes": record["bboxes"],
        "radar": radar,
        "radar_detections": record["radar_detections"],
        "speed": float(meta.get("speed", 0.0)),
    }


def time_lead_style(pairs: list[tuple[Path, Path]], batch_size: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        default_collate([_lead_style_sample(p) for p in pairs[start : start + batch_size]])
    return len(pairs) / (time.perf_counter() - t0)
