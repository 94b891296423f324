"""Print LEAD's own TFv6 state-dict layout (name, shape, dtype) as JSON: the facts tests/assets/ holds.

Run it inside a LEAD checkout's environment (LEAD importable, timm installed; CARLA-only modules may be
stubbed, the model never touches them), e.g.

    PYTHONPATH=/path/to/lead python tests/assets/dump_lead_state_dict.py --commit 4489176 > lead_tfv6_state_dict.json

Weights are not downloaded (timm's pretrained=True is turned off): only names, shapes and dtypes are read.
lead-stream itself never imports LEAD; `tests/test_lead_model.py` compares `LeadTFv6` against this file.
"""

from __future__ import annotations

import argparse
import json
import sys

TOKEN_DIM = 256  # upstream's intended transfuser_token_dim (its HEAD briefly defaulted to 64; PR #71)


def lead_layout(use_planning_decoder: bool) -> list[list[object]]:
    """[[name, shape, dtype], ...] of LEAD's TFv6 at its default config (+ the phase switch)."""
    import timm
    import torch

    create_model = timm.create_model

    def offline_create_model(*args: object, **kwargs: object) -> object:
        kwargs["pretrained"] = False
        return create_model(*args, **kwargs)

    timm.create_model = offline_create_model
    try:
        from lead.tfv6.tfv6 import TFv6
    except ModuleNotFoundError:  # before the 2026 move (autonomousvision/lead 8bb1118): lead/training/tfv6
        from lead.training.tfv6.tfv6 import TFv6
    from lead.training.config_training import TrainingConfig

    config = TrainingConfig({"transfuser_token_dim": TOKEN_DIM, "use_planning_decoder": use_planning_decoder})
    model = TFv6(torch.device("cpu"), config)
    return [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--commit", required=True, help="the LEAD commit of the checkout (recorded in the JSON)"
    )
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # LEAD's config parses the command line itself
    layout = {
        "lead_commit": args.commit,
        "config": {"transfuser_token_dim": TOKEN_DIM, "image_architecture": "resnet34", "used_cameras": 3},
        "pretrain": lead_layout(False),
        "posttrain": lead_layout(True),
    }
    sys.stdout.write(format_layout(layout))


def format_layout(layout: dict[str, object]) -> str:
    """JSON with one state-dict entry per line (diffs stay readable)."""
    lines = ["{"]
    for key, value in layout.items():
        if isinstance(value, list):
            rows = ",\n".join("  " + json.dumps(row) for row in value)
            lines.append(f"{json.dumps(key)}: [\n{rows}\n],")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)},")
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    main()
