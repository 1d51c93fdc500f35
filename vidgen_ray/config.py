"""The experiment config: one typed object built from a model preset, an optional YAML file and
``--set key=value`` overrides, validated before anything starts.

    python -c "from vidgen_ray.config import load_experiment; \
print(load_experiment('gan-debug', sets=['train.max_steps=20', 'data.source=./outputs/synth']).summary())"

Precedence: preset < YAML file < ``--set``. The model preset fixes the clip shape: ``data.clip``'s
frames, height and width follow the model (pixel space) unless set explicitly to the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidgen_ray.configs import ConfigError, coerce, load_yaml, parse_set_args, set_dotted, to_dict, update, validate_all
from vidgen_ray.data.config import DataConfig
from vidgen_ray.models.base import ModelConfig
from vidgen_ray.train.config import ParallelConfig, TrainConfig


@dataclass
class ExperimentConfig:
    name: str = "vidgen-run"
    storage_path: str = "./outputs/runs"  # local folder or s3:// / gs:// / abfs:// prefix
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def validate(self) -> None:
        m, c = self.model, self.data.clip
        if not m.family:
            raise ValueError("no model chosen: pass a preset (e.g. --preset dit-debug) or model: {preset: ...} in YAML")
        pixel = pixel_shape(m)
        if (c.frames, c.height, c.width) != pixel:
            raise ValueError(
                f"data.clip is {c.frames}x{c.height}x{c.width} but model {m.name} takes {pixel[0]}x{pixel[1]}x{pixel[2]} "
                f"(frames x height x width); drop the data.clip overrides or set model.frames/height/width to match"
            )
        p = self.parallel
        pictures = [f for f in ("image_condition", "control") if getattr(m, f, False)]
        if pictures and self.data.normalize != "minus_one_one":
            raise ValueError(f"model.{pictures[0]} conditions on frames in [-1, 1] (a user's picture is read so at "
                             f"sampling); data.normalize={self.data.normalize} would train on another scale: set "
                             "data.normalize=minus_one_one")
        self._validate_buckets()
        if p.sequence_parallel > 1 and m.family != "dit":
            raise ValueError(f"parallel.sequence_parallel={p.sequence_parallel} splits a transformer's tokens; the "
                             f"{m.family} family has none: set parallel.sequence_parallel=1 or use a dit preset")
        if self.train.ema_decay > 0 and p.strategy == "deepspeed" and p.zero_stage == 3:
            raise ValueError("train.ema_decay with DeepSpeed ZeRO-3 is not supported (partitioned weights); "
                             "use parallel.strategy=fsdp2, parallel.zero_stage=2, or train.ema_decay=0")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be non-empty and contain no '/'")

    def _validate_buckets(self) -> None:
        """Bucketed data needs a model that runs at every bucket's shape: the DiT with sin-cos positions."""
        buckets, m = self.data.bucket_shapes, self.model
        if not buckets:
            return
        if m.family != "dit":
            raise ValueError(f"data.buckets trains one model at several clip shapes; the {m.family} family has one "
                             "fixed shape: use a dit preset or drop data.buckets")
        reference = (self.data.clip.frames, self.data.clip.height, self.data.clip.width)
        if reference not in [(b.frames, b.height, b.width) for b in buckets]:
            raise ValueError(f"data.buckets must include data.clip's shape {'x'.join(map(str, reference))} (the model's "
                             "own: its samples during training, its default when served, its evaluation); add it")
        if m.pos_embed != "sincos":
            raise ValueError("data.buckets needs model.pos_embed=sincos (learned positions exist for one grid only)")
        if self.parallel.sequence_parallel > 1:
            raise ValueError("data.buckets with parallel.sequence_parallel > 1 is not supported yet (an SP group's "
                             "ranks would gather batches of different shapes); use one or the other")
        steps = (m.patch[0] * m.latent_temporal_compression, m.patch[1] * m.latent_spatial_compression,
                 m.patch[2] * m.latent_spatial_compression)
        for b in buckets:
            if b.frames % steps[0] or b.height % steps[1] or b.width % steps[2]:
                raise ValueError(f"bucket {b} (frames x height x width) is not a multiple of the model's token size "
                                 f"{steps[0]}x{steps[1]}x{steps[2]} (patch x VAE compression); round the bucket to it")

    def summary(self) -> str:
        m, t, p = self.model, self.train, self.parallel
        steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
        workers = f"{p.min_workers}-{p.num_workers} (elastic)" if p.elastic else str(p.num_workers)
        return (
            f"{self.name}: {m.name} ({m.family}) on {self.data.source or '<no data>'}; {steps}, batch {t.batch_size}x"
            f"{workers} workers x{t.grad_accum} accum; {p.strategy} {p.precision}; -> {self.storage_path}"
        )


def pixel_shape(model: ModelConfig) -> tuple[int, int, int]:
    """(frames, height, width) of the *videos* a model trains on (latent models say so themselves)."""
    shape = getattr(model, "pixel_shape", None)
    if shape is not None:
        return tuple(shape)  # type: ignore[return-value]
    return (model.frames, model.height, model.width)


def _apply_model(cfg: ExperimentConfig, spec: Any) -> None:
    """``model:`` from YAML / ``--set``: a preset name, or a mapping with ``preset`` (or, in a dumped
    config, ``name`` and ``family``) plus field overrides."""
    from vidgen_ray.models.registry import PRESETS, get_preset

    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"model: expected a preset name or a mapping with 'preset', got {spec!r}")
    spec = dict(spec)
    preset = spec.pop("preset", None)
    family = spec.pop("family", None)
    if preset is None and spec.get("name") in PRESETS:
        preset = spec["name"]  # a dumped config names its preset in `name`
    if preset is None and family is not None:
        # A renamed custom model: start from any preset of its family; the dump sets every field.
        preset = next((n for n, c in PRESETS.items() if c.family == family), None)
        if preset is None:
            raise ConfigError(f"model.family {family!r} is unknown; choose from {sorted({c.family for c in PRESETS.values()})}")
    if preset is not None:
        try:
            cfg.model = get_preset(str(preset))
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from exc
    elif not cfg.model.family:
        raise ConfigError("model: name a preset first (model: {preset: dit-debug, ...})")
    update(cfg.model, spec, "model")


def load_experiment(
    preset: str | None = None,
    config_file: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> ExperimentConfig:
    """Build and validate an experiment. ``fields`` are dotted overrides too (``data__source=...``)."""
    cfg = ExperimentConfig()
    if preset:
        _apply_model(cfg, preset)
    if config_file:
        data = load_yaml(config_file)
        if "model" in data:
            _apply_model(cfg, data.pop("model"))
        update(cfg, data)
    overrides = parse_set_args(sets) + [(k.replace("__", "."), v) for k, v in fields.items() if v is not None]
    for key, value in overrides:
        if key in ("model", "model.preset"):
            _apply_model(cfg, {"preset": value})
    clip_set = {k for k, _ in overrides if k.startswith("data.clip.")}
    for key, value in overrides:
        if key not in ("model", "model.preset"):
            set_dotted(cfg, key, value)
    # The model fixes the clip shape unless the user set it (then validate() checks they agree).
    if cfg.model.family:
        frames, height, width = pixel_shape(cfg.model)
        for name, value in (("frames", frames), ("height", height), ("width", width)):
            if f"data.clip.{name}" not in clip_set:
                setattr(cfg.data.clip, name, value)
    _absolute_local_paths(cfg)
    validate_all(cfg)
    return cfg


def _absolute_local_paths(cfg: ExperimentConfig) -> None:
    """Local paths the training workers open themselves, made absolute here: Ray Train runs its workers
    in a directory of their own, where ``outputs/...`` does not exist."""
    import os

    from vidgen_ray import storage

    path = getattr(cfg.model, "autoencoder", None)
    local = storage.local_path(path) if path else None  # absolute, for a local path or file:// URI
    if local is not None and not os.path.isabs(path):
        cfg.model.autoencoder = local
    encoder = getattr(cfg.model, "text_encoder_path", None)
    local = storage.local_path(encoder) if encoder else None
    if local is not None and not os.path.isabs(encoder):
        cfg.model.text_encoder_path = local
    start = cfg.train.init_from
    local = storage.local_path(start) if start else None
    if local is not None and not os.path.isabs(start):
        cfg.train.init_from = local


# DiT fields added after checkpoints were saved, with the value every DiT had before each existed. A
# dump starts from its preset, and dit-debug's preset has since changed both (data prediction, shift 4):
# an older dump must not pick those up.
_DIT_FIELDS_BEFORE_THEY_EXISTED = {"prediction": "velocity", "timestep_shift": 1.0}


def experiment_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Inverse of ``to_dict`` (used for preset files written by Tune and for checkpoints)."""
    data = dict(data)
    cfg = ExperimentConfig()
    model = data.pop("model", None)
    if isinstance(model, dict) and model.get("family") == "dit":
        model = {**_DIT_FIELDS_BEFORE_THEY_EXISTED, **model}
    if model is not None:
        _apply_model(cfg, model)
    update(cfg, data)
    validate_all(cfg)
    return cfg


__all__ = ["ExperimentConfig", "ConfigError", "load_experiment", "experiment_from_dict", "to_dict", "pixel_shape", "coerce"]
