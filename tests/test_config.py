"""Typed configs: coercion, dotted overrides, unknown-field suggestions, validation messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from vidgen_ray.config import load_experiment
from vidgen_ray.configs import ConfigError, coerce, from_dict, parse_set_args, set_dotted, to_dict, validate_all
from vidgen_ray.data.config import DataConfig


@dataclass
class Inner:
    size: tuple[int, ...] = (16, 64, 64)
    mode: Literal["a", "b"] = "a"
    path: str | None = None


@dataclass
class Outer:
    lr: float = 1e-3
    steps: int = 10
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_coerce_from_strings():
    assert coerce("3e-4", float, "x") == pytest.approx(3e-4)
    assert coerce("1e3", int, "x") == 1000
    assert coerce("yes", bool, "x") is True
    assert coerce("16x32x32", tuple[int, ...], "x") == (16, 32, 32)
    assert coerce("none", str | None, "x") is None
    with pytest.raises(ConfigError, match="expected an integer"):
        coerce("1.5", int, "x")
    with pytest.raises(ConfigError, match="not one of"):
        coerce("c", Literal["a", "b"], "x")


def test_dotted_overrides_and_round_trip():
    cfg = Outer()
    for key, value in parse_set_args(["lr=3e-4", "inner.size=8,32,32", "inner.mode=b", "flag=true"]):
        set_dotted(cfg, key, value)
    assert cfg.lr == pytest.approx(3e-4) and cfg.inner.size == (8, 32, 32) and cfg.inner.mode == "b" and cfg.flag
    again = from_dict(Outer, to_dict(cfg))
    assert again == cfg


def test_unknown_field_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        set_dotted(Outer(), "stepz", 3)
    with pytest.raises(ConfigError, match="did you mean 'inner'"):
        set_dotted(Outer(), "iner.mode", "a")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_args(["lr"])


def test_validation_names_the_field_and_fix():
    cfg = DataConfig(source="x")
    cfg.split.train = 0.9  # sums to 1.1
    with pytest.raises(ConfigError, match="data.split fractions"):
        validate_all(cfg)
    cfg = DataConfig(source="x")
    cfg.augment.hflip = 1.5
    with pytest.raises(ConfigError, match=r"data.augment.hflip is a probability"):
        validate_all(cfg)


def test_a_relative_autoencoder_path_is_made_absolute_for_the_workers(tmp_path, monkeypatch):
    # Ray Train runs its workers in a directory of their own: a relative VAE checkpoint path failed there
    # (FileNotFoundError under .../artifacts/<run>/outputs/...), after the driver had done its work.
    monkeypatch.chdir(tmp_path)
    cfg = load_experiment("dit-debug", sets=["model.latent_channels=4", "model.latent_spatial_compression=4",
                                             "model.patch=1,2,2", "model.autoencoder=runs/vae/checkpoint_000000700"])
    assert cfg.model.autoencoder == str(tmp_path / "runs/vae/checkpoint_000000700")
    s3 = load_experiment("dit-debug", sets=["model.latent_channels=4", "model.latent_spatial_compression=4",
                                            "model.patch=1,2,2", "model.autoencoder=s3://b/vae/ckpt"])
    assert s3.model.autoencoder == "s3://b/vae/ckpt"


@pytest.mark.parametrize("spelling", ["2-4", "[2, 4]"])
def test_an_elastic_worker_range_maps_to_ray_trains_min_max(spelling):
    from vidgen_ray.config import experiment_from_dict
    from vidgen_ray.train.run import scaling_config

    cfg = load_experiment("vae-debug", sets=[f"parallel.num_workers={spelling}"])
    p = cfg.parallel
    assert (p.min_workers, p.num_workers, p.elastic, p.fewest_workers) == (2, 4, True, 2)
    assert "2-4 (elastic)" in cfg.summary()
    scaling = scaling_config(p, {"CPU": 1})
    assert scaling.num_workers == (2, 4) and scaling.elastic_resize_monitor_interval_s == p.elastic_resize_interval_s
    assert experiment_from_dict(to_dict(cfg)).parallel.min_workers == 2  # a dumped config keeps the range
    fixed = load_experiment("vae-debug", sets=["parallel.num_workers=3"]).parallel
    assert (fixed.elastic, fixed.fewest_workers, scaling_config(fixed, {"CPU": 1}).num_workers) == (False, 3, 3)
    # One number over an elastic range makes a fixed group again (a --workers override, a Tune trial).
    over = load_experiment("vae-debug", sets=[f"parallel.num_workers={spelling}", "parallel.num_workers=1"]).parallel
    assert (over.elastic, over.min_workers, over.num_workers) == (False, 0, 1)


def test_elastic_ranges_refuse_deepspeed_and_bad_spellings():
    with pytest.raises(ConfigError, match="DeepSpeed's engine fixes its accumulation"):
        load_experiment("vae-debug", sets=["parallel.num_workers=2-4", "parallel.strategy=deepspeed"])
    with pytest.raises(ConfigError, match="expected N, MIN-MAX"):
        load_experiment("vae-debug", sets=["parallel.num_workers=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="min_workers 5 must be in"):
        load_experiment("vae-debug", sets=["parallel.num_workers=5-4"])


def test_every_world_size_shares_out_the_same_micro_batches():
    from vidgen_ray.train.batches import micro_batches

    for total in (3, 16, 32):
        for world in range(1, total + 1):
            shares = [[micro_batches(total, world, r, s) for r in range(world)] for s in range(2 * world)]
            assert all(sum(step) == total for step in shares)  # the global batch, at every step
            assert all(max(step) - min(step) <= 1 for step in shares)
            per_rank = [sum(step[r] for step in shares[:world]) for r in range(world)]
            assert len(set(per_rank)) == 1  # over `world` steps every rank has read the same amount
    assert [micro_batches(3, 2, r, 0) for r in range(2)] == [2, 1] and [micro_batches(3, 2, r, 1) for r in range(2)] == [1, 2]


def test_sequence_parallel_is_checked_against_workers_family_strategy_and_elasticity():
    ok = load_experiment("dit-debug", sets=["parallel.num_workers=4", "parallel.sequence_parallel=2"]).parallel
    assert ok.sequence_parallel == 2
    with pytest.raises(ConfigError, match="must be >= 1 and divide parallel.num_workers=3"):
        load_experiment("dit-debug", sets=["parallel.num_workers=3", "parallel.sequence_parallel=2"])
    with pytest.raises(ConfigError, match="the vae family has none"):
        load_experiment("vae-debug", sets=["parallel.sequence_parallel=2"])
    with pytest.raises(ConfigError, match="strategy=none, ddp or fsdp2"):
        load_experiment("dit-debug", sets=["parallel.sequence_parallel=2", "parallel.strategy=deepspeed"])
    with pytest.raises(ConfigError, match="needs a fixed group"):
        load_experiment("dit-debug", sets=["parallel.num_workers=2-4", "parallel.sequence_parallel=2"])
