"""Arrays and dicts → LEAD's file bytes: JPEG, PNG, LAZ, NPZ and xz-compressed pickles.

Every encoder is deterministic: no wall clock enters a file (the NPZ zip timestamp is fixed, the LAZ
creation date is passed in). Pickles name numpy globals by their numpy 1.x module paths, so LEAD's pinned
numpy 1.26 loads them whatever numpy wrote them.
"""

from __future__ import annotations

import datetime as dt
import io
import lzma
import pickle
import pickletools
import zipfile
from typing import Any

import numpy as np

# --- generator settings (fixed; LEAD's values where LEAD has one) ---------------------------------
LIDAR_SCALE_M = 0.1
LZMA_PRESET = 1  # xz container like LEAD's lzma.open (LEAD uses preset 6; 1 is ~5x faster)
PNG_COMPRESS_LEVEL = 1  # LEAD writes level 6; any level decodes the same


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _jpeg(rgbx: np.ndarray, quality: int) -> bytes:
    """(H, W, 4) RGBX uint8 → an ordinary 3-channel JPEG (4:2:0, like cv2.imwrite)."""
    import simplejpeg

    return simplejpeg.encode_jpeg(rgbx, quality=quality, colorspace="RGBX", colorsubsampling="420")


_NUMPY2_MODULE_PREFIX = "numpy._core"


def _numpy1_globals(payload: bytes) -> bytes:
    """Rename numpy 2's pickle globals `numpy._core.*` to numpy 1.x's `numpy.core.*` (unframed result).

    LEAD pins numpy 1.26.0, which has no `numpy._core` package, so a pickle written under numpy 2
    (`numpy._core.numeric._frombuffer`, `numpy._core.multiarray.scalar` / `_reconstruct`) fails there with
    ModuleNotFoundError. LEAD's real files, written under numpy 1.26, reference `numpy.core.*`, which numpy 2
    still resolves (through its `numpy.core` shim). Only SHORT_BINUNICODE/BINUNICODE strings that start
    with `numpy._core` are rewritten: in our metas and boxes those are always the module names that
    STACK_GLOBAL consumes. FRAME opcodes are dropped (their lengths change); the caller re-frames.
    """
    if _NUMPY2_MODULE_PREFIX.encode() not in payload:
        return payload
    out: list[bytes] = []
    ops = list(pickletools.genops(payload))
    for (op, arg, pos), nxt in zip(ops, [o[2] for o in ops[1:]] + [len(payload)]):
        if op.name == "FRAME":
            continue
        if (
            op.name in ("SHORT_BINUNICODE", "BINUNICODE")
            and isinstance(arg, str)
            and arg.startswith(_NUMPY2_MODULE_PREFIX)
        ):
            text = ("numpy.core" + arg[len(_NUMPY2_MODULE_PREFIX) :]).encode("utf-8")
            out.append(
                b"\x8c" + bytes([len(text)]) + text
                if len(text) < 256
                else b"X" + len(text).to_bytes(4, "little") + text
            )
            continue
        out.append(payload[pos:nxt])
    return b"".join(out)


def _lzma_pickle(obj: Any) -> bytes:
    """LEAD's write_pickle: protocol 5, pickletools.optimize, xz container; loadable under numpy 1.26.

    Numpy globals are written with numpy 1.x names (`_numpy1_globals`) whatever numpy runs the generator,
    and `pickletools.optimize` (as LEAD does) drops unused memo puts and re-frames the stream.
    """
    payload = pickletools.optimize(_numpy1_globals(pickle.dumps(obj, protocol=5)))
    return lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=LZMA_PRESET)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed layout with a fixed zip timestamp (numpy stamps the wall clock)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _laz(points: np.ndarray, creation_date: dt.date) -> bytes:
    """LEAD's LiDAR file: point format 0, scale 0.1 m, offset = min xyz, extra uint8 dimension `time`."""
    import laspy

    header = laspy.LasHeader(point_format=0)
    header.offsets = np.min(points[:, :3], axis=0) if len(points) else np.zeros(3)
    header.scales = np.array([LIDAR_SCALE_M] * 3)
    header.add_extra_dim(laspy.ExtraBytesParams(name="time", type=np.uint8))
    header.creation_date = creation_date
    buffer = io.BytesIO()
    with laspy.open(
        buffer, mode="w", header=header, do_compress=True, closefd=False, laz_backend=laspy.LazBackend.Lazrs
    ) as writer:
        record = laspy.ScaleAwarePointRecord.zeros(points.shape[0], header=header)
        record.x = points[:, 0]
        record.y = points[:, 1]
        record.z = points[:, 2]
        record["time"] = points[:, 3].astype(np.uint8)
        writer.write_points(record)
    return buffer.getvalue()
