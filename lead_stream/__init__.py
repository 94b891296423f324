"""lead-stream: LEAD driving routes → Parquet index → WebDataset shards → streaming DDP training.

Stage entry points are re-exported lazily so `import lead_stream` stays light (no torch for `index`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "write_synthetic_lead": "lead_stream.synthetic",
    "build_index": "lead_stream.index",
    "write_shards": "lead_stream.cache",
    "make_loader": "lead_stream.loader",
    "train": "lead_stream.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lead_stream' has no attribute {name!r}")
