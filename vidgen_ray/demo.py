"""The end-to-end demo on a local Ray instance: data -> train -> evaluate -> tune -> serve.

    make demo            # or: vidgen-ray demo [--out ./outputs/demo]

No cluster, no cloud account, nothing downloaded: a synthetic dataset of four motion classes is
written, probed and decoded into clips; a small class-conditional video diffusion transformer trains
on 2 CPU workers (DDP) and writes sample videos; the checkpoint is evaluated beside the untrained model
and the real-vs-real floor (FVD with the real I3D, FID with the real Inception, and the class accuracy a
motion classifier of real clips gives its samples), with a contact sheet of real and generated clips per
class; a tiny Optuna + ASHA sweep runs over the same training loop; the model is served with Ray Serve
and its latency measured. Every step prints where its outputs are.
"""

from __future__ import annotations

import time
from pathlib import Path

from vidgen_ray.runtime import get_logger, init_ray

log = get_logger("demo")

DEMO_CLIP = ["data.clip.fps=10", "model.frames=16"]  # 16 frames: what FVD's I3D needs


def banner(text: str, started: float) -> None:
    """A stage header with the seconds since the demo ``started`` (where a slow stage shows)."""
    elapsed = f" [{time.perf_counter() - started:.0f} s]"
    print(f"\n=== {text}{elapsed} " + "=" * max(0, 70 - len(text) - len(elapsed)), flush=True)


def run_demo(out: str = "./outputs/demo", videos: int = 128, steps: int = 500, skip_tune: bool = False,
             skip_serve: bool = False) -> dict:
    from vidgen_ray.config import load_experiment
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.prepare import prepare
    from vidgen_ray.data.synth import generate
    from vidgen_ray.train.run import train

    started = time.perf_counter()
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    init_ray(num_cpus=6)

    banner("1/6 synthetic dataset", started)
    synth = root / "synth"
    generate(str(synth), videos=videos, seed=0)
    outputs["dataset"] = str(synth)
    print(f"{videos} H.264 videos in 4 motion classes + 5 broken files -> {synth}")

    banner("2/6 probe, clean, decode clips (Ray Data)", started)
    data = DataConfig(source=str(synth))
    data.clip.frames, data.clip.fps, data.clip.height, data.clip.width = 16, 10.0, 32, 32
    data.clip.clips_per_video = 2
    # Held-out videos for the evaluation: two disjoint halves of the test split make the real-vs-real floor.
    data.split.train, data.split.val, data.split.test = 0.6, 0.05, 0.35
    clips = root / "clips"
    prepare(data, str(clips))  # logs the accounting: listed = kept + dropped by reason
    outputs["clips"] = str(clips)

    banner(f"3/6 train a class-conditional dit-debug for {steps} steps on 2 CPU workers (Ray Train, DDP)", started)
    cfg = load_experiment("dit-debug", sets=[
        *DEMO_CLIP, f"data.source={clips}", f"storage_path={root / 'runs'}", "name=demo-dit",
        "model.num_classes=4", "model.caption=false", "model.guidance=2.0",
        "parallel.num_workers=2", "parallel.strategy=ddp", "train.batch_size=8", f"train.max_steps={steps}",
        "train.log_every=50", f"train.checkpoint_every={max(1, steps // 2)}", f"train.val_every={max(1, steps // 2)}",
        "train.optim.lr=3e-3", "train.optim.beta2=0.99", "train.schedule.warmup_steps=50", "train.ema_decay=0.995", "train.num_samples=8",
    ])
    result = train(cfg)
    checkpoint = result.checkpoint.path
    outputs["checkpoint"] = checkpoint
    outputs["samples"] = str(root / "runs" / "demo-dit" / "samples")
    print(f"checkpoint: {checkpoint}\nsample videos + contact sheets: {outputs['samples']}")

    banner("4/6 evaluate: class accuracy, FVD (I3D), FID (Inception) against the untrained model and the real floor", started)
    outputs.update(evaluate_demo(cfg, checkpoint, clips, root / "eval"))

    if not skip_tune:
        banner("5/6 tune: Optuna (TPE) + ASHA over the real training loop", started)
        from vidgen_ray.tune.demo import demo_sweep

        sweep = demo_sweep(str(clips), str(root / "tune"), sets=[*DEMO_CLIP, "data.clip.height=32", "data.clip.width=32"])
        outputs["tune"] = sweep.path
        stopped = sum(r["status"] == "stopped" for r in sweep.rows)
        print(f"{len(sweep.rows)} trials ({stopped} stopped early by ASHA); results.parquet, best.yaml and the "
              f"plots: {sweep.path}")

    if not skip_serve:
        banner("6/6 serve with Ray Serve and measure latency", started)
        from vidgen_ray.serve.bench import serve_and_benchmark

        serve_and_benchmark(checkpoint, str(root / "serve"), quick=True)
        outputs["serve"] = str(root / "serve")

    # Training, the sweep's trials and the evaluation each wrote TensorBoard event files (train.trackers).
    outputs["tensorboard"] = f"tensorboard --logdir {root} (training, sweep trials, evaluation)"
    banner("done", started)
    for key, value in outputs.items():
        print(f"  {key:<11} {value}")
    return outputs


def evaluate_demo(cfg, checkpoint: str, clips: Path, out: Path) -> dict[str, str]:
    """The trained model beside the untrained one and the real-vs-real floor, at the same N, plus class
    accuracy by a motion classifier trained on the real train clips; a contact sheet per class."""
    import numpy as np

    from vidgen_ray.evaluate.checkpoint_eval import evaluate_checkpoint, evaluate_loaded, real_clips
    from vidgen_ray.evaluate.classifier import LIGHT as LIGHT_CLASSIFIER, ClassifierConfig, save_classifier, train_classifier
    from vidgen_ray.evaluate.config import EvalConfig
    from vidgen_ray.evaluate.labelled import labelled_clips
    from vidgen_ray.evaluate.report import CLASS_SHEET_NAME, class_sheet
    from vidgen_ray.evaluate.runner import evaluate
    from vidgen_ray.media import encode_png
    from vidgen_ray.train.loop import untrained_model

    data = cfg.data
    train_clips = labelled_clips(data, "train")
    rows = real_clips(cfg, str(clips), 10_000)
    seen: set = set()
    one_per_video = [r for r in rows if not (r["source_id"] in seen or seen.add(r["source_id"]))]
    # The test split comes in catalog order (class folders): shuffle before halving, or each half is a few classes.
    one_per_video = [one_per_video[i] for i in np.random.default_rng(0).permutation(len(one_per_video))]
    n = len(one_per_video) // 2
    half_a, half_b = one_per_video[:n], one_per_video[n : 2 * n]
    real_a = np.stack([r["video"] for r in half_a])
    labels_a = np.array([int(r["label"]) for r in half_a])
    classifier = train_classifier(
        train_clips.videos, train_clips.labels,
        # The light classifier: the demo has a minute for it, not three.
        ClassifierConfig(frames=data.clip.frames, height=data.clip.height, width=data.clip.width, num_classes=4,
                         label_names=tuple(train_clips.label_names), **LIGHT_CLASSIFIER),
        heldout=(real_a, labels_a))
    classifier_uri = save_classifier(classifier, str(out / "classifier"))

    def config(**kw) -> EvalConfig:
        return EvalConfig(num_videos=n, batch_size=4, num_actors=2, image_frames_per_video=2, grid_fps=10.0, **kw)

    kept: list = []
    trained = evaluate_checkpoint(checkpoint, config(metrics=("fid", "kid", "fvd", "flicker", "high_frequency"),
                                                     classifier=classifier_uri, output_uri=str(out)), rows=half_a,
                                  on_batch=lambda videos, cond: kept.append((videos, cond["labels"].numpy())))
    untrained = evaluate_loaded(untrained_model(cfg), cfg, 0,
                                config(metrics=("fid", "fvd", "high_frequency"), classifier=classifier_uri), rows=half_a)
    floor = evaluate(real_a, np.stack([r["video"] for r in half_b]), config(metrics=("fid", "fvd", "high_frequency")))
    fake, fake_labels = np.concatenate([v for v, _ in kept]), np.concatenate([lab for _, lab in kept])
    sheet = out / CLASS_SHEET_NAME
    sheet.write_bytes(encode_png(class_sheet(real_a, labels_a, fake, fake_labels, train_clips.label_names)))
    print(demo_table(trained.metrics, untrained.metrics, floor.metrics, n))
    print(f"per-class sheet (real and generated clips of every class, labelled): {sheet}")
    return {"eval": str(out), "class_sheet": str(sheet), "classifier": classifier_uri}


def demo_table(trained: dict, untrained: dict, floor: dict, n: int) -> str:
    def cell(metrics: dict, key: str, fmt: str) -> str:
        return format(metrics[key], fmt) if key in metrics else "-"

    lines = [f"{'':<16}{'untrained':>12}{'trained':>12}{'real floor':>12}"]
    for key, name, fmt in (("class_accuracy", "class accuracy", ".3f"), ("fvd", "FVD", ".0f"), ("fid", "FID", ".1f"),
                           ("high_frequency_ratio", "speckle ratio", ".2f")):
        real = cell(floor, key, fmt) if key != "class_accuracy" else cell(trained, "real_accuracy", fmt)
        lines.append(f"{name:<16}{cell(untrained, key, fmt):>12}{cell(trained, key, fmt):>12}{real:>12}")
    lines.append(f"(N = {n} clips a side from disjoint held-out videos. The floor is real vs real at the same N; at "
                 "this small N, FVD and FID are indicative only: biased upwards and dominated by which videos are in each set. "
                 "Class accuracy: a motion classifier of real clips labels the generated ones; its ceiling is its "
                 "accuracy on the real clips. Speckle ratio: high-frequency energy of the clips over the real ones', "
                 "1 = the data's; noise a sampler left raises it, blur lowers it.)")
    return "\n".join(lines)
