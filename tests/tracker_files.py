"""Read back what the trackers wrote, as their own tools would: TensorBoard's event reader, and the
records of an offline W&B run (the file ``wandb sync`` would upload)."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tensorboard(folder: str | Path):
    """An EventAccumulator over every event file in ``folder`` (all sizes of images kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalar_steps(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def wandb_records(run_folder: str | Path) -> list:
    """Every protobuf record of an offline run's ``run-<id>.wandb`` (W&B's LevelDB-style log: 32 KiB
    blocks of records with a 7-byte header, split across blocks as FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_folder).glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    out = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def wandb_history(run_folder: str | Path) -> list[dict]:
    """The logged rows ({"_step": 3, "train/loss": 0.4, "samples": {...media...}}), in order."""
    rows = []
    for record in wandb_records(run_folder):
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def wandb_config(run_folder: str | Path) -> dict:
    """The run's config as W&B stores it ({key: value}), from the run and config records."""
    config: dict = {}
    for record in wandb_records(run_folder):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            key = item.key or "/".join(item.nested_key)
            config[key] = json.loads(item.value_json)
    return config
