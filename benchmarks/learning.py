"""Does each family, trained by this system, learn to generate? Curves of FVD / FID against a real-vs-real
floor, class accuracy, and the family's own PSNR/SSIM, at checkpoints along a fixed budget.

    python benchmarks/learning.py --json outputs/bench/learning.json --png outputs/bench/learning.png
    python benchmarks/learning.py --families dit,gan          # some families
    python benchmarks/learning.py --quick                     # a smoke run (minutes): tiny budgets, small N
    make bench-learning

What runs, all through the real pipeline on a local Ray instance:

1. ``--videos`` synthetic labelled videos (4 motion classes) -> ``prepare`` (Ray Data: probe, clean,
   decode 16 frames of 32x32 at 10 fps, parquet shards), split by source video (train / val / test).
2. Real sets: one clip per test video, shuffled, cut into two disjoint halves A and B of ``--n`` clips
   (so A and B share no source video). ``fvd_floor`` / ``fid_floor`` = FVD / FID(A, B): what a perfect
   generator would score at this N. Every generated figure is against A at the same N.
3. A motion classifier (``vidgen_ray/evaluate/classifier.py``) trained on the real train clips;
   ``real_accuracy`` is its accuracy on A + B (the ceiling of ``class_accuracy``).
4. Per family: Ray Train (1 worker, 2 threads) for the family's steps, checkpoints at ``--points``
   evenly spaced steps; then each checkpoint (and the untrained model, step 0) is sampled N times,
   conditioned like A (its labels; the predictor its first context frames), and scored:
   FVD, FID, ``high_frequency_ratio`` (the samples' high-frequency energy over A's: speckle > 1 > blur),
   class_accuracy (where a class was asked for), ``first_frame_psnr`` for ``dit-i2v`` (sampled from
   A's first frames: frame 0 against the frame it was given), and
   VAE: reconstruction PSNR/SSIM of A (and PSNR per class); predictor: PSNR/SSIM of the predicted frames against the truth
   and against copying the last context frame (``psnr_vs_copy_db``).
   ``dit-latent`` trains on the latents of the ``vae`` family's final checkpoint (trained first).
``seconds`` in a curve is the run's training wall time at that step (data wait + steps; not sampling,
checkpoints or evaluation). Everything is seeded; the floor and the classifier are computed once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CLIP = {"frames": 16, "height": 32, "width": 32, "fps": 10.0}


@dataclass
class Family:
    """One benchmarked family: a preset, the overrides that make it a 16x32x32 model of the motion set,
    and a step budget that fits ~15 minutes of the 2 CPU cores here (``quick_steps`` for --quick)."""

    name: str
    preset: str
    sets: list[str]
    steps: int
    quick_steps: int = 6
    needs: str | None = None  # a family whose final checkpoint this one builds on
    conditioned: bool = True  # class labels condition the samples: class_accuracy is measured
    buckets: tuple[str, ...] = ()  # trains on the same videos prepared into these shapes (data.buckets)
    image: bool = False  # image-to-video: sampled from each real clip's first frame; first_frame_psnr is measured


FAMILIES: dict[str, Family] = {
    "vae": Family("vae", "vae-debug", [
        "train.batch_size=8", "train.optim.lr=1e-3", "model.kl_weight=1e-5"], steps=700, conditioned=False),
    "dit": Family("dit", "dit-debug", [
        "model.num_classes=4", "model.caption=false", "train.batch_size=16", "train.optim.lr=3e-3", "train.optim.beta2=0.99",
        "model.guidance=2.0", "train.ema_decay=0.995"], steps=1300),
    "dit-latent": Family("dit-latent", "dit-debug", [
        "model.num_classes=4", "model.caption=false", "train.batch_size=16", "train.optim.lr=3e-3", "train.optim.beta2=0.99",
        "model.latent_channels=4", "model.latent_spatial_compression=4", "model.patch=1,2,2",
        "model.guidance=2.0", "train.ema_decay=0.995"], steps=1000, needs="vae"),
    # The pixel DiT on the same videos at their own sizes and lengths: square ones at 32x32, 4:3 ones at
    # 24x32, 16 or 24 frames by duration (data.buckets); sampled and judged at 16x32x32 like the others.
    "dit-buckets": Family("dit-buckets", "dit-debug", [
        "model.num_classes=4", "model.caption=false", "train.batch_size=16", "train.optim.lr=3e-3", "train.optim.beta2=0.99",
        "model.guidance=2.0", "train.ema_decay=0.995"], steps=1300,
        buckets=("16x32x32", "24x32x32", "16x24x32", "24x24x32")),
    # Image-to-video: the pixel DiT given each clip's first frame (10 % of the time none, for guidance); sampled
    # from the held-out clips' first frames, frame 0 of each sample is compared with its condition.
    "dit-i2v": Family("dit-i2v", "dit-i2v-debug", [
        "model.num_classes=4", "model.caption=false", "train.batch_size=16", "train.optim.lr=3e-3", "train.optim.beta2=0.99",
        "model.guidance=2.0", "train.ema_decay=0.995"], steps=1300, image=True),
    "gan": Family("gan", "gan-debug", [
        "model.num_classes=4", "model.base_frames=2", "train.batch_size=16", "train.optim.lr=2e-4",
        "train.optim.beta1=0.0", "train.optim.beta2=0.99", "train.optim.discriminator_lr_mult=2.0",
        "train.ema_decay=0.999", "train.grad_clip=0"], steps=500),  # 1.6-1.8 s a step here: 700 took 21 min
    # Frames patchified 2x (16x16 cells): a quarter of the FLOPs of the full-resolution debug preset.
    # Its clips begin with 4 real context frames, which a classifier would see: no class accuracy.
    "rnn": Family("rnn", "rnn-debug", [
        "train.batch_size=16", "train.optim.lr=2e-3", "model.context_frames=4", "model.stem_stride=2"], steps=900,
        conditioned=False),
}
ORDER = ("vae", "dit", "dit-buckets", "dit-i2v", "dit-latent", "gan", "rnn")


# --- data ---------------------------------------------------------------------------------------------


def data_config(source: str, buckets: tuple[str, ...] = ()):
    from vidgen_ray.data.config import DataConfig

    cfg = DataConfig(source=source, buckets=tuple(tuple(int(v) for v in b.split("x")) for b in buckets))
    cfg.clip.frames, cfg.clip.height, cfg.clip.width, cfg.clip.fps = CLIP["frames"], CLIP["height"], CLIP["width"], CLIP["fps"]
    cfg.clip.clips_per_video = 1
    # Held-out videos for two disjoint real sets of N clips each; the rest trains.
    cfg.split.train, cfg.split.val, cfg.split.test = 0.5, 0.02, 0.48
    cfg.augment.temporal_shift = 0
    return cfg


def dataset(work: Path, videos: int, seed: int, buckets: tuple[str, ...] = ()) -> Path:
    """Synthetic videos and their prepared clips under ``work`` (made once, reused when present); with
    ``buckets``, the same videos prepared into those shapes."""
    from vidgen_ray.data.prepare import is_prepared, prepare
    from vidgen_ray.data.synth import generate

    synth, clips = work / f"synth_{videos}_{seed}", work / f"clips_{videos}_{seed}"
    if buckets:
        clips = work / f"clips_{videos}_{seed}_buckets_{'_'.join(buckets)}"
    if not is_prepared(str(clips)):
        if not (synth / "manifest.parquet").exists():
            generate(str(synth), videos=videos, seed=seed, broken=False)
        prepare(data_config(str(synth), buckets), str(clips))
    return clips


@dataclass
class RealSets:
    a: object  # LabelledClips: the set every generated figure is compared with
    b: object  # disjoint videos: the floor's second side
    train: object  # every train clip: the classifier's data


def real_sets(clips: Path, n: int, seed: int) -> RealSets:
    from vidgen_ray.evaluate.labelled import labelled_clips

    cfg = data_config(str(clips))
    test = labelled_clips(cfg, "test").one_per_video()
    if len(test) < 2 * n:
        raise SystemExit(f"the test split has {len(test)} videos; two disjoint sets of --n {n} need {2 * n}: raise --videos")
    order = np.random.default_rng(seed).permutation(len(test))
    return RealSets(test.subset(order[:n]), test.subset(order[n : 2 * n]), labelled_clips(cfg, "train"))


# --- features -----------------------------------------------------------------------------------------


class Scorer:
    """The FID Inception and FVD I3D, loaded once in this process, and the real side's features."""

    def __init__(self, real: RealSets, image_frames: int, threads: int, cache: Path | None = None) -> None:
        from vidgen_ray.evaluate.inception import read_inception_weights
        from vidgen_ray.evaluate.i3d import read_i3d_weights
        from vidgen_ray.evaluate.worker import FeatureWorker, NetworkBytes, SideFeatures

        networks = NetworkBytes(inception=read_inception_weights(), i3d=read_i3d_weights())
        self.worker = FeatureWorker(("fid", "fvd"), networks, image_frames, threads, use_cuda=False)
        # The real sides' features (6.5 min for 2 x 256 clips here) are kept beside the dataset: a rerun
        # (another family, a crash) starts training at once.
        if cache is not None and cache.exists():
            blob = np.load(cache)
            self.a = SideFeatures(inception=blob["a_inception"], i3d=blob["a_i3d"])
            self.b = SideFeatures(inception=blob["b_inception"], i3d=blob["b_i3d"])
            return
        self.a = self.worker.features(real.a.videos)
        self.b = self.worker.features(real.b.videos)
        if cache is not None:
            np.savez(cache, a_inception=self.a.inception, a_i3d=self.a.i3d, b_inception=self.b.inception, b_i3d=self.b.i3d)

    def floor(self) -> dict[str, float]:
        from vidgen_ray.evaluate.frechet import frechet_distance_from_features as fd

        return {"fvd_floor": fd(self.a.i3d, self.b.i3d), "fid_floor": fd(self.a.inception, self.b.inception)}

    def against_a(self, fake: np.ndarray) -> dict[str, float]:
        from vidgen_ray.evaluate.frechet import frechet_distance_from_features as fd

        f = self.worker.features(fake)
        return {"fvd": fd(self.a.i3d, f.i3d), "fid": fd(self.a.inception, f.inception)}


# --- one family ---------------------------------------------------------------------------------------


def experiment(family: Family, clips: Path, runs: Path, steps: int, points: int, extra: list[str]):
    from vidgen_ray.config import load_experiment

    every = max(1, steps // points)
    sets = [
        f"data.source={clips}", f"storage_path={runs}", f"name={family.name}",
        f"data.clip.frames={CLIP['frames']}", f"data.clip.fps={CLIP['fps']}", f"data.clip.height={CLIP['height']}",
        f"data.clip.width={CLIP['width']}", "data.clip.clips_per_video=1", "data.augment.temporal_shift=0",
        "data.split.train=0.5", "data.split.val=0.02", "data.split.test=0.48",
        f"model.frames={CLIP['frames']}", f"model.height={CLIP['height']}", f"model.width={CLIP['width']}",
        "parallel.num_workers=1", "parallel.strategy=none", "parallel.cpus_per_worker=2", "parallel.max_failures=0",
        f"train.max_steps={steps}", f"train.checkpoint_every={every}", f"train.keep_last={points + 1}",
        # The predictor feeds itself more and more of its own frames over the first half of the budget.
        *([f"model.teacher_forcing_decay_steps={max(1, steps // 2)}"] if family.name == "rnn" else []),
        "train.val_every=0", "train.log_every=50", "train.num_samples=8", "train.schedule.warmup_steps=50",
        *family.sets, *extra,
        *([f"data.buckets=[{','.join(family.buckets)}]"] if family.buckets else []),
    ]
    return load_experiment(family.preset, sets=sets)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if (p / "meta.json").exists())


def generate(model, family: Family, real, batch: int = 32) -> np.ndarray:
    """uint8 [N, T, H, W, C] conditioned like ``real`` (labels; the predictor's context frames)."""
    import torch

    from vidgen_ray.models.base import to_uint8

    out = []
    for i in range(0, len(real), batch):
        chunk = real.subset(np.arange(i, min(i + batch, len(real))))
        cond: dict = {}
        video = torch.from_numpy(chunk.videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        if family.name.startswith(("dit", "gan")):
            cond["labels"] = torch.from_numpy(chunk.labels)
        if family.image:
            cond["image"] = video[:, :, 0]
        if family.name == "rnn":
            cond["context"] = video[:, :, : model.config.context_frames]
        out.append(to_uint8(model.sample(len(chunk), seed=1000 + i, **cond)).cpu().numpy())
    return np.concatenate(out)


def pixel_scores(model, family: Family, real) -> dict[str, float]:
    """VAE: reconstruction of A. Predictor: predicted frames against the truth and against the copy baseline."""
    import torch

    from vidgen_ray.evaluate.pixel import psnr, ssim
    from vidgen_ray.models.base import to_uint8

    video = torch.from_numpy(real.videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    if family.name == "vae":
        recon = np.concatenate([to_uint8(model.sample(len(v), 0, video=v)).numpy() for v in video.split(32)])
        per_clip = np.array([psnr(r, f) for r, f in zip(real.videos, recon)])
        out = {"recon_psnr": float(per_clip.mean()),
               "recon_ssim": float(np.mean([ssim(r, f) for r, f in zip(real.videos, recon)]))}
        # Which classes hold the mean down (the zooming textures: stripes near the pixel pitch at 32 x 32).
        names = lambda c: real.label_names[c] if c < len(real.label_names) else str(c)  # unnamed labels: the index
        out.update({f"recon_psnr/{names(c)}": float(per_clip[real.labels == c].mean()) for c in np.unique(real.labels)})
        return out
    if family.name == "rnn":
        tc = model.config.context_frames
        pred = generate(model, family, real)[:, tc:]
        truth = real.videos[:, tc:]
        copy = np.repeat(real.videos[:, tc - 1 : tc], truth.shape[1], axis=1)
        out = {"psnr": float(np.mean([psnr(t, p) for t, p in zip(truth, pred)])),
               "ssim": float(np.mean([ssim(t, p) for t, p in zip(truth, pred)])),
               "psnr_copy": float(np.mean([psnr(t, c) for t, c in zip(truth, copy)])),
               "ssim_copy": float(np.mean([ssim(t, c) for t, c in zip(truth, copy)]))}
        out["psnr_vs_copy_db"] = out["psnr"] - out["psnr_copy"]
        return out
    return {}


def score(model, family: Family, real: RealSets, scorer: Scorer, classifier) -> tuple[dict[str, float], np.ndarray]:
    from vidgen_ray.evaluate.classifier import accuracy
    from vidgen_ray.evaluate.pixel import high_frequency_energy

    fake = generate(model, family, real.a)
    out = scorer.against_a(fake)
    out["high_frequency_ratio"] = high_frequency_energy(fake) / high_frequency_energy(real.a.videos)
    if family.conditioned:
        out["class_accuracy"] = accuracy(classifier, fake, real.a.labels)
    out.update(pixel_scores(model, family, real.a))
    if family.image:  # frame 0 of each sample against the held-out first frame it was given
        from vidgen_ray.evaluate.pixel import psnr

        out["first_frame_psnr"] = float(np.mean([psnr(r[:1], f[:1]) for r, f in zip(real.a.videos, fake)]))
    return out, fake


def run_family(family: Family, clips: Path, runs: Path, steps: int, points: int, real: RealSets, scorer: Scorer,
               classifier, results: dict, out_dir: Path) -> dict:
    import torch

    from vidgen_ray.media import contact_sheet, encode_png
    from vidgen_ray.runtime import get_logger
    from vidgen_ray.checkpoints import load_for_inference, read_meta
    from vidgen_ray.train.loop import untrained_model
    from vidgen_ray.train.run import train

    log = get_logger("bench.learning")
    extra: list[str] = []
    if family.needs:
        base = results.get(family.needs)
        if not base or not base.get("final_checkpoint"):
            raise SystemExit(f"{family.name} needs the {family.needs} family's checkpoint: add {family.needs} to --families")
        extra += [f"model.autoencoder={base['final_checkpoint']}", f"model.latent_scale={latent_scale(base['final_checkpoint'], real)}"]
    cfg = experiment(family, clips, runs, steps, points, extra)
    started = time.perf_counter()
    train(cfg)
    train_wall = time.perf_counter() - started
    torch.set_num_threads(2)
    curve = []
    sheets = []
    for step, model, seconds in [(0, untrained_model(cfg), 0.0)] + [
        (read_meta(p)["state"]["step"], load_for_inference(str(p))[0], read_meta(p)["state"].get("train_seconds", math.nan))
        for p in checkpoints(runs / family.name)
    ]:
        t0 = time.perf_counter()
        metrics, fake = score(model, family, real, scorer, classifier)
        point = {"step": int(step), "seconds": round(float(seconds), 1), **{k: round(v, 4) for k, v in metrics.items()},
                 "eval_seconds": round(time.perf_counter() - t0, 1)}
        curve.append(point)
        sheets.append(fake[:8])
        log.info("%s step %d: %s", family.name, step, point)
    last = checkpoints(runs / family.name)[-1]
    grid = np.concatenate([real.a.videos[:8], *sheets[-1:]])
    (out_dir / f"{family.name}_samples.png").write_bytes(encode_png(contact_sheet(grid)))
    return {"preset": family.preset, "sets": cfg_sets(family, extra), "steps": steps, "curve": curve,
            "train_wall_seconds": round(train_wall, 1), "cpu_minutes": round(2 * curve[-1]["seconds"] / 60, 1),
            "final_checkpoint": str(last), "samples_png": str(out_dir / f"{family.name}_samples.png")}


def cfg_sets(family: Family, extra: list[str]) -> list[str]:
    return [*family.sets, *extra]


def latent_scale(vae_checkpoint: str, real: RealSets) -> float:
    """1 / std of the VAE's latents of the train clips, so the DiT sees about unit variance."""
    import torch

    from vidgen_ray.checkpoints import load_for_inference

    vae, _, _ = load_for_inference(vae_checkpoint)
    video = torch.from_numpy(real.train.videos[:256]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.net(video, mode="encode")
    return round(float(1.0 / z.std()), 4)


# --- report -------------------------------------------------------------------------------------------


def write_png(result: dict, path: Path) -> None:
    import cv2  # opencv-python-headless is a dependency (warping error); draws the curves without matplotlib

    families = result["families"]
    panels = [("fvd", "FVD (floor dashed)"), ("fid", "FID (floor dashed)"), ("class_accuracy", "class accuracy")]
    w, h, pad = 420, 300, 40
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    canvas = np.full((h + 2 * pad, len(panels) * (w + pad) + pad, 3), 255, np.uint8)
    for p, (key, title) in enumerate(panels):
        x0 = pad + p * (w + pad)
        cv2.rectangle(canvas, (x0, pad), (x0 + w, pad + h), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0, pad - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        series = [(n, [(c["step"], c[key]) for c in f["curve"] if key in c]) for n, f in families.items()]
        values = [v for _, s in series for _, v in s] + ([result[f"{key}_floor"]] if f"{key}_floor" in result else [])
        if not values:
            continue
        top = 1.0 if key == "class_accuracy" else max(values) * 1.05
        max_step = max([s for _, ser in series for s, _ in ser] + [1])
        to_px = lambda s, v: (int(x0 + w * s / max_step), int(pad + h - h * v / top))  # noqa: E731
        if f"{key}_floor" in result:
            y = to_px(0, result[f"{key}_floor"])[1]
            for x in range(x0, x0 + w, 8):
                cv2.line(canvas, (x, y), (x + 4, y), (90, 90, 90), 1)
        for i, (name, ser) in enumerate(series):
            colour = colours[i % len(colours)][::-1]
            pts = [to_px(s, v) for s, v in ser]
            for a, b in zip(pts, pts[1:]):
                cv2.line(canvas, a, b, colour, 2)
            for pt in pts:
                cv2.circle(canvas, pt, 3, colour, -1)
            if ser:
                cv2.putText(canvas, name, (x0 + 6, pad + 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
        cv2.putText(canvas, f"0 .. {max_step} steps; 0 .. {top:.3g}", (x0, pad + h + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    from vidgen_ray.media import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(canvas))


def print_table(result: dict) -> None:
    print(f"\nN = {result['n']} clips a side; floor FVD {result['fvd_floor']:.1f}, FID {result['fid_floor']:.1f}; "
          f"real_accuracy {result['real_accuracy']:.3f}")
    print(f"{'family':<11}{'steps':>6}{'cpu-min':>8}{'FVD 0 -> end':>20}{'FID 0 -> end':>18}{'class acc':>10}  other")
    for name, f in result["families"].items():
        first, last = f["curve"][0], f["curve"][-1]
        shown = ("high_frequency_ratio", "recon_psnr", "psnr", "psnr_copy", "psnr_vs_copy_db", "first_frame_psnr")
        other = " ".join(f"{k} {last[k]:.2f}" for k in shown if k in last)
        acc = f"{last['class_accuracy']:.3f}" if "class_accuracy" in last else "-"
        print(f"{name:<11}{f['steps']:>6}{f['cpu_minutes']:>8.1f}{first['fvd']:>9.0f} -> {last['fvd']:<7.0f}"
              f"{first['fid']:>8.0f} -> {last['fid']:<7.0f}{acc:>10}  {other}")


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(ORDER), help=f"comma-separated, from {', '.join(ORDER)}")
    ap.add_argument("--quick", action="store_true", help="smoke run: few videos, tiny N, a few steps per family")
    ap.add_argument("--videos", type=int, help="synthetic videos (default 1200; --quick 48)")
    ap.add_argument("--n", type=int, help="clips per real set and generated samples per point (default 256; --quick 8)")
    ap.add_argument("--points", type=int, default=3, help="checkpoints evaluated after step 0 (default 3)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every family's step budget")
    ap.add_argument("--steps", type=step_budgets, default={},
                    help="step budgets overriding the above: N for every family, or FAMILY=N,... for some (dit=300)")
    ap.add_argument("--work", default="outputs/bench/learning", help="datasets, runs and sample sheets")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--png", help="write the curves here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-checkpoint", help="dit-latent without the vae family: use this trained VAE checkpoint")
    ap.add_argument("--classifier-steps", type=int,
                    help="the motion classifier's minimum optimiser steps (default 600; --quick 300 of a "
                         "classifier with a quarter of the channels' work, as the demo's)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {', '.join(ORDER)}")
    if args.vae_checkpoint:
        args.vae_checkpoint = str(Path(args.vae_checkpoint).resolve()) if "://" not in args.vae_checkpoint else args.vae_checkpoint
        from vidgen_ray import storage

        if not storage.exists(storage.join(args.vae_checkpoint, "meta.json")):
            raise SystemExit(f"--vae-checkpoint {args.vae_checkpoint} is not a checkpoint (no meta.json)")
    videos = args.videos or (48 if args.quick else 1200)
    n = args.n or (6 if args.quick else 256)

    import torch

    from vidgen_ray.evaluate.classifier import LIGHT as LIGHT_CLASSIFIER
    from vidgen_ray.evaluate.classifier import (TRAINING_VERSION, ClassifierConfig, load_classifier, save_classifier,
                                                train_classifier)
    from vidgen_ray.runtime import init_ray

    init_ray(num_cpus=4)
    torch.set_num_threads(2)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    clips = dataset(work, videos, args.seed)
    real = real_sets(clips, n, args.seed)
    cls_cfg = ClassifierConfig(frames=CLIP["frames"], height=CLIP["height"], width=CLIP["width"], num_classes=4,
                               epochs=2 if args.quick else 10, seed=args.seed,
                               **(LIGHT_CLASSIFIER if args.quick else {}))  # --quick: the demo's light classifier
    if args.classifier_steps is not None:
        cls_cfg.min_steps = args.classifier_steps
    heldout = (np.concatenate([real.a.videos, real.b.videos]), np.concatenate([real.a.labels, real.b.labels]))
    tag = f"{videos}_{args.seed}"
    import hashlib

    # Reused while the data and the classifier's settings are the same (their hash is in the name).
    cached = work / f"classifier_{tag}_{hashlib.sha1(f'{cls_cfg!r} v{TRAINING_VERSION}'.encode()).hexdigest()[:8]}"
    if (cached / "classifier.pt").exists():
        trained = load_classifier(str(cached))
    else:
        trained = train_classifier(real.train.videos, real.train.labels, cls_cfg, heldout=heldout)
        save_classifier(trained, str(cached))
    scorer = Scorer(real, image_frames=2, threads=2, cache=work / f"real_features_{tag}_n{n}.npz")
    result: dict = {
        "machine": machine(), "videos": videos, "n": n, "clip": CLIP, "quick": args.quick,
        "train_clips": len(real.train), **{k: round(v, 2) for k, v in scorer.floor().items()},
        "real_accuracy": round(trained.heldout_accuracy, 4), "classifier_train_accuracy": round(trained.train_accuracy, 4),
        "classifier_seconds": round(trained.seconds, 1), "families": {},
    }
    print(f"floor at N={n}: FVD {result['fvd_floor']}, FID {result['fid_floor']}; real_accuracy {result['real_accuracy']}", flush=True)
    runs = work / ("runs_quick" if args.quick else "runs") / time.strftime("%Y%m%d-%H%M%S")
    if args.vae_checkpoint and "vae" not in names:
        result["families"]["vae"] = {"final_checkpoint": args.vae_checkpoint, "given": True}
    for name in [f for f in ORDER if f in names]:
        family = FAMILIES[name]
        steps = args.steps.get(name) or args.steps.get("*") or (
            family.quick_steps if args.quick else max(2, int(family.steps * args.steps_scale)))
        source = dataset(work, videos, args.seed, family.buckets) if family.buckets else clips
        result["families"][name] = run_family(family, source, runs, steps, args.points, real, scorer, trained.model,
                                              result["families"], work)
        if family.buckets:  # what the bucketed set holds: clips per shape
            from vidgen_ray.data.prepare import MARKER

            marker = json.loads((source / MARKER).read_text())
            result["families"][name]["clips_by_bucket"] = marker["summary"].get("clips_by_bucket")
        if args.json:  # after every family: a long run leaves what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))
    result["families"] = {k: v for k, v in result["families"].items() if not v.get("given")}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.png:
        write_png(result, Path(args.png))
    print_table(result)
    return result


def step_budgets(text: str) -> dict[str, int]:
    """``--steps``: "300" (every family, key "*") or "dit=300,gan=6"."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        if name and name not in FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown family {name!r} in --steps; choose from {', '.join(ORDER)}")
        if not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"--steps wants positive step counts, got {part!r}")
        out[name or "*"] = int(value)
    return out


def machine() -> str:
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, Python {platform.python_version()}"


if __name__ == "__main__":
    main(sys.argv[1:])
