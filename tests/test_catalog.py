"""Catalog: listing, manifest joins (parquet / CSV / JSONL, relative or absolute paths), stable
splits by source video, and the probe's reasons for every broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from vidgen_ray.data.catalog import build_catalog, split_of
from vidgen_ray.data.config import CleanRules, DataConfig, SplitConfig
from vidgen_ray.data.probe import probe
from vidgen_ray.data.synth import generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    generate(str(out), videos=8, seed=3)
    return out


def test_manifest_labels_and_captions_join(tiny: Path):
    cat = build_catalog(DataConfig(source=str(tiny)))
    assert len(cat.rows) == 8 + 5
    assert cat.label_names == ["bouncing_shape", "moving_digit", "rotating_bar", "zooming_texture"]
    row = next(r for r in cat.rows if r["rel_path"].startswith("rotating_bar/"))
    assert row["label"] == 2 and "bar rotating" in row["caption"] and row["size"] > 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet-absolute"])
def test_other_manifest_formats(tiny: Path, tmp_path: Path, fmt: str):
    table = pq.read_table(tiny / "manifest.parquet").select(["path", "label_name", "caption"]).rename_columns(["path", "label", "caption"])
    if fmt == "csv":
        target = tmp_path / "m.csv"
        pacsv.write_csv(table, target)
    elif fmt == "jsonl":
        target = tmp_path / "m.jsonl"
        target.write_text("\n".join(json.dumps(r) for r in table.to_pylist()))
    else:
        absolute = pa.array([str(tiny / p) for p in table.column("path").to_pylist()])
        table = table.set_column(0, "path", absolute)
        target = tmp_path / "m.parquet"
        pq.write_table(table, target)
    cat = build_catalog(DataConfig(source=str(tiny), manifest=str(target)))
    named = {r["rel_path"]: r for r in cat.rows}
    assert cat.label_names == ["bouncing_shape", "moving_digit", "rotating_bar", "zooming_texture"]
    assert named["zooming_texture/00003.mp4"]["label"] == 3  # string labels map to sorted class ids
    assert not cat.manifest_unmatched


def test_manifest_rows_without_files_are_reported(tiny: Path, tmp_path: Path):
    target = tmp_path / "m.jsonl"
    target.write_text(json.dumps({"path": "nope/missing.mp4", "label": 1, "caption": "x"}))
    cat = build_catalog(DataConfig(source=str(tiny), manifest=str(target)))
    assert cat.manifest_unmatched == ["nope/missing.mp4"]
    assert all(r["label"] == -1 for r in cat.rows)  # nothing matched: unlabeled, but still listed


def test_split_is_stable_and_follows_fractions():
    cfg = SplitConfig()
    ids = [f"video_{i}" for i in range(5000)]
    splits = [split_of(i, cfg) for i in ids]
    assert splits == [split_of(i, cfg) for i in ids]  # stable
    share = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02 and abs(share["test"] - 0.1) < 0.02
    assert [split_of(i, SplitConfig(salt="b")) for i in ids] != splits


def test_files_of_one_source_share_a_split(tiny: Path, tmp_path: Path):
    paths = pq.read_table(tiny / "manifest.parquet").column("path").to_pylist()
    rows = [{"path": p, "label": 0, "caption": "", "source": f"group{i % 3}"} for i, p in enumerate(paths)]
    target = tmp_path / "m.jsonl"
    target.write_text("\n".join(json.dumps(r) for r in rows))
    cat = build_catalog(DataConfig(source=str(tiny), manifest=str(target)))
    by_source: dict[str, set] = {}
    for r in cat.rows:
        by_source.setdefault(r["source_id"], set()).add(r["split"])
    assert len(by_source) == 3 and all(len(s) == 1 for s in by_source.values())


def test_every_broken_file_gets_its_reason(tiny: Path):
    reasons = {name: probe(str(tiny / "broken" / f"{name}.mp4"), CleanRules(), 1.0) for name in
               ("truncated", "zero_bytes", "not_a_video", "too_short", "too_small")}
    assert {k: v["reason"] for k, v in reasons.items()} == {
        "truncated": "unreadable", "zero_bytes": "zero_bytes", "not_a_video": "unreadable",
        "too_short": "too_short", "too_small": "resolution_too_low",
    }
    assert all(v["status"] == "dropped" and v["error"] for v in reasons.values())


def test_codec_rule_and_probe_fields(shared_videos: Path):
    webm = probe(str(shared_videos / "mb_trim-buck-bunny.webm"), CleanRules(allowed_codecs=("h264",)), 1.0)
    assert webm["reason"] == "codec_not_allowed" and webm["codec"] == "vp9"
    ts = probe(str(shared_videos / "mb_0.ts"), CleanRules(), 1.0)
    assert ts["container"] == "mpegts" and abs(ts["fps"] - 60) < 0.5 and ts["has_audio"] and ts["status"] == "kept"
    fire = probe(str(shared_videos / "moviepy_fire2.mp4"), CleanRules(), 1.0)
    assert fire["vfr"] and fire["rotation"] == 180
