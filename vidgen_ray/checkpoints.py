"""The checkpoint format as readers see it: ``meta.json`` (the run's state and experiment config) and
``model.pt`` (consolidated weights + EMA) in a checkpoint directory, local or on object storage; a run's
newest checkpoint and the one Ray Train registered. Evaluation, Serve and the latent DiT's VAE load
through here without importing the trainer; ``train/checkpoint.py`` writes the format (and the
strategy-specific state that resumes training).

    python -c "from vidgen_ray.checkpoints import latest_checkpoint; print(latest_checkpoint('outputs/demo/runs/demo'))"
"""

from __future__ import annotations

import io
import json
import time

import torch

from vidgen_ray import storage

META = "meta.json"
WEIGHTS = "model.pt"
# Ray Train's record of the checkpoints it registered (a checkpoint counts once every rank reported
# it). Written by the Train controller beside the checkpoints; a private file of Ray 2.60.
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
def read_meta(directory: str) -> dict:
    """``meta.json`` of a checkpoint directory (local path or URI)."""
    return json.loads(storage.read_text(storage.join(str(directory), META)))


def load_for_inference(uri: str, use_ema: bool = True, device: str | torch.device = "cpu"):
    """A checkpoint (local path or object-store URI) -> (model in eval mode, experiment config dict)."""
    from vidgen_ray.config import experiment_from_dict
    from vidgen_ray.models.registry import build_model

    meta = read_meta(uri)
    blob = torch.load(io.BytesIO(storage.read_bytes(storage.join(uri, WEIGHTS))), map_location="cpu", weights_only=False)
    experiment = experiment_from_dict(meta["experiment"])
    model = build_model(experiment.model)
    for name, module in model.parts().items():
        module.load_state_dict(blob["weights"][name])
    if use_ema and blob.get("ema") is not None:
        part = model.parts()[blob["ema_part"]]
        missing, unexpected = part.load_state_dict(blob["ema"], strict=False)
        if unexpected:
            raise ValueError(f"EMA weights do not match the model: unexpected keys {unexpected[:3]}")
    model.to(device).eval()
    return model, experiment, meta


def initialise_from(model, uri: str, use_ema: bool = True) -> list[str]:
    """Fine-tuning's start: copy a checkpoint's weights (its EMA where it has one) into ``model``, a model
    of the same family whose config may add modules (a control branch, an image condition's input
    channels). The family adapts what it can (``VideoModel.adapt_weights``); anything else that differs is
    an error naming the tensor. Returns the keys the checkpoint did not have (new modules, left as built)."""
    meta = read_meta(uri)
    family = meta["experiment"]["model"].get("family")
    if family != model.family:
        raise ValueError(f"train.init_from {uri} holds a {family} model; this run trains a {model.family}: "
                         "start from a checkpoint of the same family")
    blob = torch.load(io.BytesIO(storage.read_bytes(storage.join(uri, WEIGHTS))), map_location="cpu", weights_only=False)
    missing: list[str] = []
    for name, module in model.parts().items():
        if name not in blob["weights"]:
            raise ValueError(f"train.init_from {uri} has no part {name!r} (it has {sorted(blob['weights'])})")
        weights = dict(blob["weights"][name])
        if use_ema and blob.get("ema") is not None and blob.get("ema_part") == name:
            weights.update(blob["ema"])
        own = module.state_dict()
        weights = model.adapt_weights(name, weights, own)
        for key, value in weights.items():
            if key not in own:
                raise ValueError(f"train.init_from {uri}: {name}.{key} does not exist in {model.config.name}; the "
                                 "checkpoint's model has a module this config lacks (compare their model sections)")
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(f"train.init_from {uri}: {name}.{key} is {tuple(value.shape)} there and "
                                 f"{tuple(own[key].shape)} here; make the model sections agree")
        result = module.load_state_dict(weights, strict=False)
        missing += [f"{name}.{key}" for key in result.missing_keys]
    model.after_init_from(missing)
    return missing


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest complete checkpoint (has ``meta.json``) under a run directory, by step."""
    if not storage.exists(run_dir):
        return None
    candidates = sorted({storage.dirname(e.uri) for e in storage.list_files(run_dir) if storage.basename(e.uri) == META})
    return candidates[-1] if candidates else None


def registered_checkpoint(run_dir: str) -> str | None:
    """The checkpoint Ray Train hands the workers on a (re)start (``ray.train.get_checkpoint()``),
    or None. Not the same as :func:`latest_checkpoint`: a node that dies while the ranks report
    leaves a directory on storage that Ray never registered, and the workers restart from the one
    before it. Whatever must agree with the workers (the data position of the train stream) reads
    this one."""
    snapshot = storage.join(run_dir, RAY_SNAPSHOT)
    if not storage.exists(snapshot):
        return None
    for attempt in range(5):  # Ray rewrites the file in place: a read may catch it half-written
        try:
            latest = json.loads(storage.read_text(snapshot)).get("latest_checkpoint_result") or {}
            break
        except json.JSONDecodeError:
            if attempt == 4:
                raise
            time.sleep(0.2)
    name = latest.get("checkpoint_dir_name")
    return storage.join(run_dir, name) if name else None
