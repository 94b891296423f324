"""The README's examples run as written (issue 13, "Done when"): the user bucket collection (Python and CLI,
and the junction variant the README says is refused on synthetic data), the Polars queries, the loader with
`set_mixture`, and plain WebDataset over the brace range of shard names.

Each example is cut out of README.md at test time, so an example that changes and stops working fails here.
They run in a folder holding `data/carla_leaderboard2`, the path the README's examples use, with the demo's
data (`lead-stream demo`'s synth, index and shard steps, `DemoConfig`'s defaults): the shared test tree has no
red-light frame, so the README's collection would be refused there. The README's figures for the demo data
(frames per bucket, number of shards) are checked against what the examples give.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lead_stream.cache.manifest import read_manifest, resolve_cache_dir
from lead_stream.core.errors import ConfigError
from lead_stream.index import read_bucket_members, table_path

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_ROOT = Path("data/carla_leaderboard2")  # the data root every README example names


def _python_block(marker: str) -> str:
    """The README's ```python block that contains `marker` (exactly one must)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"README: {len(found)} python blocks contain {marker!r}"
    return found[0]


def _inline_command(prefix: str) -> str:
    """The README's inline `...` code span that starts with `prefix` (the first one)."""
    spans = re.findall(r"`(" + re.escape(prefix) + r"[^`]*)`", README.read_text(encoding="utf-8"))
    assert spans, f"README: no command starting with {prefix!r}"
    return spans[0]


def _cli(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a README `lead-stream ...` command line in `cwd` (through `python -m lead_stream.cli.main`)."""
    args = shlex.split(command)
    assert args[0] == "lead-stream"
    return subprocess.run(
        [sys.executable, "-m", "lead_stream.cli.main", *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's data root: its synthetic routes, index and cache, as `run_demo` builds them."""
    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.index import IndexConfig, build_index
    from lead_stream.pipeline import DemoConfig
    from lead_stream.synthetic import write_synthetic_lead

    demo = DemoConfig()
    root = tmp_path_factory.mktemp("readme") / DEMO_ROOT
    write_synthetic_lead(root, num_routes=demo.num_routes, num_frames=demo.num_frames, seed=demo.seed)
    build_index(root, config=IndexConfig(progress=False))
    write_shards(root, config=ShardConfig(progress=False, max_samples_per_shard=demo.samples_per_shard))
    return root


@pytest.fixture()
def demo_dir(demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a copy of the demo data at `data/carla_leaderboard2`; the cwd of the test."""
    shutil.copytree(demo_data, tmp_path / DEMO_ROOT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _frames_by_bucket(root: Path, collection: str) -> dict[str, int]:
    members = read_bucket_members(root, collection)
    return dict(members.group_by("bucket").len().iter_rows())


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # the README's 6 workers
def test_readme_collection_polars_loader_and_mixture_examples_run_as_written_13(demo_dir: Path) -> None:
    root = demo_dir / DEMO_ROOT
    # the expected buckets, from the index with Polars: pretrain frames, light_hazard first (first match wins)
    frames = pl.read_parquet(root / "index" / "frames.parquet")
    pretrain = read_bucket_members(root, "pretrain").select("route_id", "frame_idx")
    hazard = pretrain.join(frames, on=["route_id", "frame_idx"])["light_hazard"].fill_null(False)
    expected = {"red_light": int(hazard.sum()), "other": int((~hazard).sum())}
    assert expected["red_light"] > 0 and expected["other"] > 0

    # the Python form
    _run(_python_block("write_bucket_collection("))
    assert _frames_by_bucket(root, "red_light_x3") == expected
    figures = re.search(r"on the demo data: `red_light (\d+)`, `other (\d+)` frames", README.read_text())
    assert figures, "README: the demo figures of the collection example moved"
    assert expected == {"red_light": int(figures.group(1)), "other": int(figures.group(2))}
    python_members = read_bucket_members(root, "red_light_x3")
    assert set(python_members["rate"].to_list()) == {3.0, 1.0}

    # the same collection from the CLI line next to it: the same table
    command = _inline_command("lead-stream buckets --define red_light_x3")
    done = _cli(command, demo_dir)
    assert done.returncode == 0, done.stderr
    assert "red_light" in done.stdout and str(expected["red_light"]) in done.stdout
    assert read_bucket_members(root, "red_light_x3").equals(python_members)

    # the junction variant: refused when the bucket is empty (the synthetic routes never enter a junction)
    junction = command.replace('"red_light=light_hazard"', '"junction=is_junction"').replace(
        "red_light=3", "junction=3"
    )
    junction = junction.replace("red_light_x3", "junction_x3")
    assert "is_junction" in _inline_command('--bucket "junction=')
    in_junction = int(
        pretrain.join(frames, on=["route_id", "frame_idx"])["is_junction"].fill_null(False).sum()
    )
    done = _cli(junction, demo_dir)
    if in_junction == 0:
        assert done.returncode == 2 and "junction" in done.stderr and "Traceback" not in done.stderr
        assert not table_path(root, "junction_x3").exists()
    else:
        assert done.returncode == 0, done.stderr
        assert _frames_by_bucket(root, "junction_x3")["junction"] == in_junction

    # the Polars queries
    polars_ns = _run(_python_block('pl.scan_parquet(f"{idx}/frames.parquet")'))
    assert Path(polars_ns["idx"]) == DEMO_ROOT / "index"
    by_town = polars_ns["post"].join(polars_ns["frames"], on=["route_id", "frame_idx"]).group_by("town").len()
    assert by_town.collect()["len"].sum() == read_bucket_members(root, "posttrain").height > 0

    # the loader, trained on the collection: the loop body ("...") records the batches
    loader_code = _python_block("make_loader(")
    body = re.search(r"^( +)\.\.\.$", loader_code, flags=re.M)
    assert body, "README loader example: no `...` loop body"
    loader_code = loader_code.replace(body.group(0), f"{body.group(1)}seen.append(batch)", 1)
    ns = _run(f"rank, world_size, epochs, checkpoint, seen = 0, 1, 1, {{}}, []\n{loader_code}")
    loader = ns["loader"]
    assert loader.config.collection == "red_light_x3" and len(ns["seen"]) == len(loader) > 0
    assert sum(len(b.speed_mps) for b in ns["seen"]) >= len(loader.plan)
    assert ns["checkpoint"]["loader"]["epoch"] == 0
    served = {loader.catalog.bucket_names[i] for b in ns["seen"] for i in b.bucket_idx.tolist()}
    assert served == {"red_light", "other"}

    # set_mixture as the comment writes it: both buckets in the new plan, and the plan changed
    mixture_call = re.search(r"loader\.set_mixture\(\{[^)]*\}\)", loader_code)
    assert mixture_call, "README loader example: no set_mixture call"
    before = loader.plan.fingerprint
    ns["loader"] = loader
    exec(mixture_call.group(0), ns)
    loader.set_epoch(1)
    names = loader.catalog.bucket_names
    assert {names[i] for i in set(loader.plan.bucket_idx.tolist())} == {"red_light", "other"}
    assert loader.plan.fingerprint != before
    with pytest.raises(ConfigError, match="red_light"):  # an unknown bucket: named error listing the buckets
        loader.set_mixture({"red_lights": 2.0})


def test_readme_plain_webdataset_brace_range_reads_every_shard_13(demo_dir: Path) -> None:
    root = demo_dir / DEMO_ROOT
    cache_dir = resolve_cache_dir(root)
    samples = read_manifest(cache_dir).samples

    # the last shard number, by the README's own query
    done = _cli(
        _inline_command('lead-stream query "SELECT max(shard) FROM shards"') + " --format csv", demo_dir
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.split()[-1]
    assert last == max(samples["shard"].to_list())
    last_number = re.fullmatch(r"shard-(\d+)\.tar", last)
    assert last_number, last

    code = _python_block("wds.WebDataset(")
    urls = re.search(r'^urls = "(.*)"$', code, flags=re.M)
    assert urls and "<pipeline_id>" in urls.group(1), "README: the urls line changed"
    brace = re.search(r"\{(\d+)\.\.(\d+)\}", urls.group(1))
    assert brace and len(brace.group(2)) == len(last_number.group(1))
    assert brace.group(2) == last_number.group(1)  # the README's range is the demo cache's
    count = re.search(r"the demo's cache has (\d+) shards \((\d+)\.\.(\d+)\)", code)
    assert count and int(count.group(1)) == samples["shard"].n_unique() == int(count.group(3)) + 1
    url = urls.group(1).replace("<pipeline_id>", cache_dir.name)
    url = url.replace(brace.group(0), "{" + brace.group(1) + ".." + last_number.group(1) + "}")
    code = code.replace(urls.group(0), f'urls = "{url}"')
    loop = re.search(r"^(for sample in .*:\n)((?: {4}.*\n)+)", code, flags=re.M)
    assert loop, "README: the WebDataset loop changed"
    code = code.replace(loop.group(0), loop.group(0) + "    seen.append((sample['__key__'], rgb.shape))\n")
    ns = _run("seen = []\n" + code)

    seen = ns["seen"]
    assert sorted(key for key, _ in seen) == sorted(samples["key"].to_list())  # every sample, once
    assert {shape for _, shape in seen} == {(384, 1152, 3)}
    assert set(ns["arrays"]) >= {"normal", "perturbated", "targets"}
    assert ns["semantic"].shape == (384, 1152) and ns["boxes"].shape[1:] == (9,)
    assert isinstance(ns["targets"], dict) and {"brake", "command"} <= set(ns["targets"])
    past_the_end = url.replace(last_number.group(1) + "}", f"{int(last_number.group(1)) + 1:06d}" + "}")
    with pytest.raises(Exception, match="shard-"):  # the README: a range past the last shard fails
        for _ in __import__("webdataset").WebDataset(past_the_end, shardshuffle=False):
            pass
