"""Training throughput per strategy, side by side in one run: samples/s, the share of step time
spent waiting for data, and MFU where a GPU ran.

    python benchmarks/train_throughput.py                                 # CPU: dit-debug, 2 workers
    python benchmarks/train_throughput.py --preset dit-b --workers 8 --gpu --precision bf16 \
        --data s3://bucket/clips --strategies fsdp2,deepspeed --steps 200 --json out.json   # a GPU cluster

Each strategy trains the same preset on the same prepared clips for ``--steps`` steps; figures are
taken over the second half of the run (the first half covers worker start-up and the first decode).
Without ``--data`` a synthetic dataset is generated and prepared first.

``--trackers none,tensorboard,tensorboard+wandb`` instead trains the first strategy once per tracker
set (in that order, ``--repeats`` rounds), logging every step and writing samples four times, and
prints each set's throughput against no trackers (W&B runs offline without an API key):

    python benchmarks/train_throughput.py --strategies ddp --trackers none,tensorboard,tensorboard+wandb --repeats 2

``--buckets 8x32x32,16x32x32,16x24x32,8x24x32`` (the preset's own shape among them) instead trains the first strategy twice on the same synthetic videos:
prepared at the preset's one shape, and prepared into those buckets (``data.buckets``, one-shape batches sized
to the same pixels), and prints samples/s, tokens/s, the padded share and each bucket's step time side by side:

    python benchmarks/train_throughput.py --strategies ddp --buckets 8x32x32,16x32x32,16x24x32,8x24x32 --steps 40

``--latent-cache VAE_CHECKPOINT`` (or ``random:vae-debug``, a VAE preset with random weights at the clip shape:
timing does not depend on what it learned) instead trains the preset as a latent DiT on that VAE's latents twice
with the first strategy: encoding every batch live, and from latents precomputed by ``data encode`` (their
encode time printed beside), and prints step time and samples/s side by side:

    python benchmarks/train_throughput.py --strategies ddp --latent-cache random:vae-debug --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def prepared_synthetic(root: Path, frames: int, size: int, buckets: tuple = ()) -> str:
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.prepare import prepare
    from vidgen_ray.data.synth import generate

    if not (root / "synth" / "manifest.parquet").exists():
        generate(str(root / "synth"), videos=24, seed=0, broken=False)
    cfg = DataConfig(source=str(root / "synth"), buckets=buckets)
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width, cfg.clip.clips_per_video = frames, 8.0, size, size, 4
    out = root / ("clips_buckets" if buckets else "clips")
    prepare(cfg, str(out))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="dit-debug")
    parser.add_argument("--data", help="a prepared dataset matching the preset's clip shape")
    parser.add_argument("--strategies", default="ddp,fsdp2,deepspeed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="per worker")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--trackers", help="compare tracker sets on the first strategy, e.g. none,tensorboard,tensorboard+wandb")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the tracker comparison")
    parser.add_argument("--buckets", help="compare one shape with these buckets (FxHxW,...) on the first strategy")
    parser.add_argument("--latent-cache", help="compare live VAE encoding with precomputed latents: a VAE checkpoint, "
                                               "or random:<vae preset>")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from vidgen_ray.config import load_experiment
    from vidgen_ray.runtime import init_ray
    from vidgen_ray.checkpoints import read_meta
    from vidgen_ray.train.run import local_cpus_needed, train

    root = Path(tempfile.mkdtemp(prefix="vidgen-bench-"))
    probe_cfg = load_experiment(args.preset, sets=["data.source=/unused"])
    init_ray(num_cpus=local_cpus_needed(probe_cfg) + 2)
    data = args.data or prepared_synthetic(root, probe_cfg.model.frames, probe_cfg.model.height)
    figures: dict = {"preset": args.preset, "workers": args.workers, "batch_per_worker": args.batch, "steps": args.steps,
                     "precision": args.precision, "strategies": {}}

    def run(strategy: str, name: str, *extra: str) -> dict:
        cfg = load_experiment(args.preset, sets=[
            f"data.source={data}", f"storage_path={root / 'runs'}", f"name={name}", "data.clip.fps=8",
            f"parallel.strategy={strategy}", f"parallel.num_workers={args.workers}", f"parallel.use_gpu={args.gpu}",
            f"parallel.precision={args.precision}", f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
            f"train.log_every={args.steps // 2}", f"train.checkpoint_every={args.steps}", "train.num_samples=0",
            "parallel.max_failures=0", "train.trackers=[]", *args.sets, *extra,
        ])
        started = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - started
        m, state = result.metrics, read_meta(result.checkpoint.path)["state"]
        return {"samples_per_s": m["samples_per_s"], "data_wait_fraction": m["data_wait_fraction"],
                "tokens_per_s": m["tokens_per_s"], "padded_token_share": m["padded_token_share"],
                **{k: v for k, v in m.items() if k.startswith("step_time_s/")},
                "step_time_s": m["step_time_s"], **({"mfu": m["mfu"]} if args.gpu else {}),
                # the whole run as the user waits for it: start-up, steps, samples, their logging, uploads
                "run_samples_per_s": state["samples_seen"] / wall, "wall_s": wall,
                # the loop's steps alone (data wait, step, scalar logging; not start-up, samples, checkpoints)
                "loop_samples_per_s": state["samples_seen"] / state["train_seconds"]}

    if args.latent_cache:
        strategy = args.strategies.split(",")[0]
        figures["latent_cache"] = latent_cache(args, probe_cfg, data, root, strategy, run)
        return _write(args.json, figures)
    if args.buckets:
        strategy = args.strategies.split(",")[0]
        shapes = tuple(tuple(int(v) for v in b.split("x")) for b in args.buckets.split(","))
        bucket_data = prepared_synthetic(root, probe_cfg.model.frames, probe_cfg.model.height, shapes)
        run(strategy, "bench-warmup")  # the first run of a fresh Ray instance is slow (see the trackers' note)
        figures["buckets"] = {"shapes": args.buckets.split(","), "fixed": run(strategy, "bench-fixed"),
                              "bucketed": run(strategy, "bench-buckets", f"data.source={bucket_data}",
                                              f"data.buckets=[{args.buckets}]")}
        print(f"\n{args.preset} on {strategy}, one shape against buckets {args.buckets} (last {args.steps // 2} steps)")
        for name in ("fixed", "bucketed"):
            f = figures["buckets"][name]
            per = " ".join(f"{k.split('/', 1)[1]} {v:.2f}s" for k, v in f.items() if k.startswith("step_time_s/"))
            print(f"{name:<10}{f['samples_per_s']:>8.2f} samples/s {f['tokens_per_s']:>9.0f} tokens/s  padded "
                  f"{f['padded_token_share']:.3f}  {f['step_time_s']:.2f} s/step  {per}")
        return _write(args.json, figures)
    if args.trackers:
        strategy = args.strategies.split(",")[0]
        variants = args.trackers.split(",")
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        # One uncounted run first: the first training of a fresh Ray instance ran at a third of the
        # speed of the later ones (cold worker start, imports, page cache; 5.3 against 16.6 samples/s).
        run(strategy, "bench-trackers-warmup")
        for round_ in range(args.repeats):
            for variant in variants:
                names = [] if variant == "none" else variant.split("+")
                # Every step logged, samples four times: the trackers' busiest setting; throughput over
                # the whole run's wall time (start-up is the same in every variant: interleaved rounds).
                f = run(strategy, f"bench-trackers-{variant}-{round_}", f"train.trackers={json.dumps(names)}",
                        "train.log_every=1", f"train.sample_every={args.steps // 4}", "train.num_samples=4")
                runs[variant].append(f)

        def mean(variant: str, key: str) -> float:  # the median: one run of a busy VM can be 10% off
            return float(statistics.median(f[key] for f in runs[variant]))

        figures["trackers"] = {v: {"runs": runs[v], "run_samples_per_s": mean(v, "run_samples_per_s"),
                                   "loop_samples_per_s": mean(v, "loop_samples_per_s")} for v in variants}
        for v in variants:
            for key in ("run_samples_per_s", "loop_samples_per_s"):
                figures["trackers"][v][key.replace("samples_per_s", "ratio")] = mean(v, key) / mean(variants[0], key)
        print(f"\ntrackers on {strategy}, {args.preset}, {args.steps} steps x {args.repeats} round(s), medians; ratios vs {variants[0]}")
        print(f"{'trackers':<22}{'loop samples/s':>15}{'ratio':>7}{'run samples/s':>15}{'ratio':>7}")
        for v in variants:
            f = figures["trackers"][v]
            print(f"{v:<22}{f['loop_samples_per_s']:>15.2f}{f['loop_ratio']:>7.3f}{f['run_samples_per_s']:>15.2f}{f['run_ratio']:>7.3f}")
    else:
        for strategy in args.strategies.split(","):
            figures["strategies"][strategy] = run(strategy, f"bench-{strategy}")
    import torch

    figures["device"] = torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    if args.trackers:
        return _write(args.json, figures)
    base = figures["strategies"].get("ddp", next(iter(figures["strategies"].values())))["samples_per_s"]
    print(f"\n{args.preset}, {args.workers} workers x batch {args.batch}, {args.precision}, on {figures['device']}")
    print(f"{'strategy':<12}{'samples/s':>11}{'vs ddp':>8}{'data wait':>11}{'s/step':>8}" + ("{:>8}".format("MFU") if args.gpu else ""))
    for name, f in figures["strategies"].items():
        line = f"{name:<12}{f['samples_per_s']:>11.2f}{f['samples_per_s'] / base:>7.2f}x{f['data_wait_fraction'] * 100:>10.1f}%{f['step_time_s']:>8.2f}"
        print(line + (f"{f['mfu'] * 100:>7.1f}%" if args.gpu else ""))
    _write(args.json, figures)


def latent_cache(args, probe_cfg, data: str, root: Path, strategy: str, run) -> dict:
    """The preset as a latent DiT, live encoding against the cache, on the same prepared clips."""
    import torch

    from vidgen_ray.checkpoints import load_for_inference
    from vidgen_ray.config import load_experiment, to_dict
    from vidgen_ray.data import latents
    from vidgen_ray.data.normalize import Normalizer
    from vidgen_ray.models.registry import build_model

    vae_uri = args.latent_cache
    if vae_uri.startswith("random:"):
        m = probe_cfg.model
        experiment = load_experiment(vae_uri.split(":", 1)[1], sets=[f"model.frames={m.frames}", f"model.height={m.height}",
                                                                     f"model.width={m.width}"])
        vae = build_model(experiment.model)
        directory = root / "vae" / "checkpoint_000000000"
        directory.mkdir(parents=True)
        (directory / "meta.json").write_text(json.dumps({"experiment": to_dict(experiment), "state": {"step": 0}}))
        torch.save({"weights": {n: p.state_dict() for n, p in vae.parts().items()}, "ema": None, "ema_part": "model"},
                   directory / "model.pt")
        vae_uri = str(directory)
    vae_cfg = load_for_inference(vae_uri)[1].model
    started = time.perf_counter()
    encoded = latents.encode_prepared(data, latents.resolve_encoders([vae_uri]), Normalizer())["latents"]
    encode_s = time.perf_counter() - started
    patch = "1,2,2" if vae_cfg.spatial_compression >= 4 else "1,4,4"
    sets = [f"model.autoencoder={vae_uri}", f"model.latent_channels={vae_cfg.z_channels}",
            f"model.latent_spatial_compression={vae_cfg.spatial_compression}",
            f"model.latent_temporal_compression={vae_cfg.temporal_compression}", f"model.patch={patch}",
            "data.augment.temporal_shift=0"]
    run(strategy, "bench-latent-warmup", *sets, "data.latent_cache=live")
    out = {"vae": vae_uri, "vae_preset": vae_cfg.name, "encode_seconds": round(encode_s, 2), "clips_encoded": encoded["clips"],
           "live": run(strategy, "bench-latent-live", *sets, "data.latent_cache=live"),
           "cached": run(strategy, "bench-latent-cached", *sets, "data.latent_cache=require")}
    out["step_time_ratio"] = out["cached"]["step_time_s"] / out["live"]["step_time_s"]
    out["samples_per_s_ratio"] = out["cached"]["samples_per_s"] / out["live"]["samples_per_s"]
    print(f"\n{args.preset} on {vae_cfg.name} latents, {strategy}, {args.workers} workers x batch {args.batch} "
          f"(last {args.steps // 2} steps); the cache took {encode_s:.1f} s to write ({sum(encoded['clips'].values())} clips)")
    for name in ("live", "cached"):
        f = out[name]
        print(f"{name:<8}{f['samples_per_s']:>8.2f} samples/s  {f['step_time_s']:.3f} s/step  data wait "
              f"{f['data_wait_fraction'] * 100:.1f}%")
    print(f"cached / live: step time {out['step_time_ratio']:.3f}x, samples/s {out['samples_per_s_ratio']:.3f}x")
    return out


def _write(path: str | None, figures: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
