"""An ImageNet ResNet34 weight file (timm or torchvision, `.pth` / `.safetensors`) → the image encoder.

LEAD starts its image encoder from `timm.create_model("resnet34", pretrained=True)`. `model.image_pretrained`
says where ours starts: `imagenet` (timm's hub weights, when `timm` or `huggingface_hub` is installed and the
hub is reachable; otherwise a message names the file to download and the key to set), `none` (random, as
LEAD's LiDAR encoder), or the path of a weight file. timm and torchvision name a ResNet34 alike (conv1,
bn1, layer1.0.conv1, ..., downsample.0/1, fc), so either file maps 1:1 onto `backbone.image_encoder`;
`fc.*` is dropped and anything else missing or extra is an error naming the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from torch import nn

from lead_stream.core.errors import LeadFormatError

TIMM_HUB_ID = "timm/resnet34.a1_in1k"  # what timm.create_model("resnet34", pretrained=True) fetches
TIMM_HUB_FILE = "model.safetensors"
TORCHVISION_FILE = "resnet34-b627a593.pth"  # torchvision's ResNet34_Weights.IMAGENET1K_V1
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # training checkpoints that wrap the weights
PREFIXES = ("module.", "backbone.image_encoder.", "image_encoder.", "model.")
SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` file → {name: tensor} (the format: u64 header size, JSON header, raw little-endian data)."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise LeadFormatError(path, "not a safetensors file (shorter than its 8-byte header size)")
    (header_size,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + header_size])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LeadFormatError(path, f"not a safetensors file (bad JSON header: {error})") from None
    data = memoryview(raw)[8 + header_size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise LeadFormatError(path, f"tensor {name}: unsupported dtype {info.get('dtype')!r}")
        start, stop = info["data_offsets"]
        flat = (
            torch.frombuffer(bytearray(data[start:stop]), dtype=dtype)
            if stop > start
            else torch.empty(0, dtype=dtype)
        )
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a `.pth` / `.pt` / `.bin` (torch.load, weights only) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise LeadFormatError(path, "model.image_pretrained: no such weight file")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise LeadFormatError(path, f"not a torch weight file ({type(error).__name__}: {error})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LeadFormatError(path, "expected a state dict of tensors")
    return state


def encoder_state(
    weights: dict[str, torch.Tensor], encoder: nn.Module, path: Path
) -> dict[str, torch.Tensor]:
    """`weights` renamed onto `encoder`'s keys (prefixes stripped, `fc.*` dropped), shapes checked."""
    renamed = {}
    for name, tensor in weights.items():
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if not name.startswith("fc."):
            renamed[name] = tensor
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        raise LeadFormatError(
            path,
            f"not a ResNet34 in timm/torchvision naming: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
        )
    for name, tensor in renamed.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise LeadFormatError(
                path, f"{name}: shape {tuple(tensor.shape)}, ResNet34 has {tuple(expected[name].shape)}"
            )
    return {name: tensor.to(expected[name].dtype) for name, tensor in renamed.items()}


def hub_weights() -> tuple[dict[str, torch.Tensor] | None, str]:
    """timm's ImageNet ResNet34 from the model hub, or (None, why not)."""
    try:
        import timm  # type: ignore[import-not-found]
    except ImportError:
        timm = None
    try:
        if timm is not None:
            model = timm.create_model("resnet34", pretrained=True)
            return model.state_dict(), f"timm {TIMM_HUB_ID}"
        from huggingface_hub import hf_hub_download  # type: ignore[import-not-found]

        return read_safetensors(Path(hf_hub_download(TIMM_HUB_ID, TIMM_HUB_FILE))), f"hub {TIMM_HUB_ID}"
    except ImportError:
        return None, "neither timm nor huggingface_hub is installed"
    except Exception as error:  # offline, hub refused, ...
        return None, f"the model hub is not reachable ({type(error).__name__}: {error})"


def offline_message(reason: str) -> str:
    return (
        f"model.image_pretrained=imagenet: {reason}; the image encoder starts from RANDOM weights, unlike "
        f"LEAD. Download {TIMM_HUB_FILE} of {TIMM_HUB_ID} (or torchvision's {TORCHVISION_FILE}) and set "
        "model.image_pretrained=/path/to/that/file, or model.image_pretrained=none to start randomly on purpose"
    )


def load_image_pretrained(model: nn.Module, spec: str) -> tuple[bool, str]:
    """Initialise `model.backbone.image_encoder` as `spec` says; returns (loaded, message for the log).

    Raises:
        LeadFormatError: `spec` is a path that is not a ResNet34 weight file.
    """
    encoder = model.backbone.image_encoder
    if spec == "none":
        return False, "model.image_pretrained=none: the image encoder starts from random weights"
    if spec == "imagenet":
        weights, source = hub_weights()
        if weights is None:
            return False, offline_message(source)
        path = Path(source)
    else:
        path = Path(spec)
        weights, source = read_weight_file(path), str(path)
    encoder.load_state_dict(encoder_state(weights, encoder, path), strict=True)
    return True, f"image encoder initialised from {source}"
