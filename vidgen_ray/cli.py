"""The ``vidgen-ray`` command line: one subcommand per capability, each with ``--help``.

    vidgen-ray data synth --out ./outputs/synth --videos 48 --seed 0
    vidgen-ray data probe ./outputs/synth --report ./outputs/probe
    vidgen-ray data prepare ./outputs/synth --out ./outputs/clips --frames 8 --fps 8 --size 32x32
    vidgen-ray models [--json]
    vidgen-ray train --preset gan-debug --data ./outputs/synth --set train.max_steps=50
    vidgen-ray sample --checkpoint ./outputs/runs/demo/checkpoint_000000500 --class 2 --seed 7 --out video.mp4
    vidgen-ray demo

Every subcommand that touches Ray connects to ``RAY_ADDRESS`` when set (``ray job submit`` sets it)
and otherwise starts the embedded local instance.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from vidgen_ray.configs import ConfigError


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="model preset, e.g. gan-debug, dit-b (see `vidgen-ray models`)")
    p.add_argument("--config", help="YAML experiment file (model/data/train/parallel sections)")
    p.add_argument("--data", help="data source URI (raw videos or a prepared dataset); sets data.source")
    p.add_argument("--storage", help="where runs, checkpoints and samples go (local or s3://); sets storage_path")
    p.add_argument("--name", help="run name; rerunning with the same name and storage resumes")
    p.add_argument("--workers", help="training workers, N or MIN-MAX (elastic); sets parallel.num_workers")
    p.add_argument("--strategy", choices=["none", "ddp", "fsdp2", "deepspeed"], help="sets parallel.strategy")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.optim.lr=3e-4 (repeatable)")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")


def experiment_from_args(args: argparse.Namespace):
    from vidgen_ray.config import load_experiment

    fields = {
        "data.source": args.data,
        "storage_path": args.storage,
        "name": args.name,
        "parallel.num_workers": args.workers,
        "parallel.strategy": args.strategy,
    }
    sets = [f"{k}={v}" for k, v in fields.items() if v is not None] + list(args.sets)
    return load_experiment(args.preset, args.config, sets)


# --- data -------------------------------------------------------------------------------------------


def cmd_data_synth(args: argparse.Namespace) -> int:
    from vidgen_ray.data.synth import generate

    summary = generate(args.out, videos=args.videos, seed=args.seed, broken=not args.no_broken)
    print(json.dumps(summary, indent=2))
    return 0


def _add_encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encode", action="append", default=[], metavar="CHECKPOINT_OR_ENCODER",
                   help="precompute for training: a VAE checkpoint (latents), a T5 / CLIP save_pretrained folder "
                        "(caption embeddings) or a latent DiT checkpoint (both); repeatable")
    p.add_argument("--text-encoder-tokens", dest="text_encoder_tokens", type=int, default=64,
                   help="tokens per caption for a text-encoder folder (the DiT's model.max_caption_tokens; default 64)")


def _data_config(args: argparse.Namespace):
    from vidgen_ray.configs import parse_set_args, set_dotted, validate_all
    from vidgen_ray.data.config import DataConfig

    cfg = DataConfig(source=args.src)
    if getattr(args, "manifest", None):
        cfg.manifest = args.manifest
    for attr, key in (("frames", "clip.frames"), ("fps", "clip.fps"), ("clips_per_video", "clip.clips_per_video")):
        if getattr(args, attr, None) is not None:
            set_dotted(cfg, key, getattr(args, attr))
    if getattr(args, "size", None):
        h, _, w = args.size.lower().partition("x")
        if not w:
            raise ConfigError(f"--size wants HxW, e.g. 64x64, got {args.size!r}")
        set_dotted(cfg, "clip.height", h)
        set_dotted(cfg, "clip.width", w)
    for key, value in parse_set_args(args.sets):
        set_dotted(cfg, key.removeprefix("data."), value)
    validate_all(cfg)
    return cfg


def cmd_data_probe(args: argparse.Namespace) -> int:
    from vidgen_ray.data.prepare import probe_report
    from vidgen_ray.runtime import init_ray

    cfg = _data_config(args)
    init_ray(address=args.address, workers_per_cpu=cfg.decode_tasks_per_cpu)
    probe_report(cfg, args.report)  # logs the accounting summary (once)
    if args.report:
        print(f"report: {args.report}/report.parquet, {args.report}/report.json")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from vidgen_ray.data.prepare import prepare
    from vidgen_ray.runtime import init_ray

    cfg = _data_config(args)
    init_ray(address=args.address, workers_per_cpu=cfg.decode_tasks_per_cpu)
    prepare(cfg, args.out, rows_per_shard=args.rows_per_shard)  # logs the accounting summary (once)
    print(f"clips and report: {args.out}")
    if args.encode:
        return _encode(args.out, args.encode, args.text_encoder_tokens, cfg.normalize)
    return 0


def cmd_data_encode(args: argparse.Namespace) -> int:
    from vidgen_ray.runtime import init_ray

    init_ray(address=args.address)
    return _encode(args.prepared, args.encode, args.text_encoder_tokens, args.normalize)


def _encode(prepared: str, names: list[str], tokens: int, normalize: str) -> int:
    """``--encode``: VAE latents and/or caption embeddings beside a prepared dataset's shards (data/latents.py)."""
    from vidgen_ray.data.latents import encode_prepared, normalizer_for_prepared, resolve_encoders

    encoders = resolve_encoders(names, tokens)
    done = encode_prepared(prepared, encoders, normalizer_for_prepared(prepared, normalize))
    for kind, summary in done.items():
        state = "reused" if summary["reused"] else f"encoded in {summary['seconds']} s"
        print(f"{kind}: {summary['root']} ({state}; clips {summary['clips']})")
    return 0


# --- models -----------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from vidgen_ray.models.listing import models_table

    print(models_table(as_json=args.json))
    return 0


# --- plan -------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    import json
    from dataclasses import fields

    from vidgen_ray.plan import Assumptions, format_plan, make_plan, read_decode_fps, read_gpu_check

    assumptions = Assumptions(**{f.name: getattr(args, f.name) for f in fields(Assumptions)
                                 if getattr(args, f.name, None) is not None})
    decode_fps, decode_source = read_decode_fps(args.data_bench)
    gpu_samples, gpu_source = args.gpu_samples_per_s, "measured: given (--gpu-samples-per-s)"
    if gpu_samples is None and args.gpu_check:
        try:
            gpu_samples, gpu_source = read_gpu_check(args.gpu_check, args.preset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    plan = make_plan(args.preset, args.gpus, args.gpu, clips=args.clips, batch_per_gpu=args.batch_per_gpu,
                     checkpoint_every=args.checkpoint_every, fps=args.fps, decode_fps_per_cpu=decode_fps,
                     decode_source=decode_source, gpu_samples_per_s=gpu_samples, assumptions=assumptions,
                     gpu_source=gpu_source)
    print(json.dumps(plan.as_dict(), indent=1) if args.json else format_plan(plan))
    return 0


# --- train ------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from vidgen_ray.train.run import train

    cfg = experiment_from_args(args)
    if args.dry_run:
        from vidgen_ray.configs import to_yaml

        print(to_yaml(cfg))
        return 0
    result = train(cfg, address=args.address)
    print(f"run: {cfg.storage_path}/{cfg.name}")
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    return 0


# --- evaluate ---------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from vidgen_ray.configs import parse_set_args, set_dotted, validate_all
    from vidgen_ray.evaluate.checkpoint_eval import evaluate_checkpoint
    from vidgen_ray.evaluate.config import EvalConfig
    from vidgen_ray.runtime import init_ray

    config = EvalConfig(num_videos=args.videos, output_uri=args.out)
    if args.metrics:
        set_dotted(config, "metrics", args.metrics)
    for key, value in parse_set_args(args.sets):
        set_dotted(config, key.removeprefix("eval."), value)
    validate_all(config)
    init_ray(address=args.address, num_cpus=math.ceil(config.num_actors * config.cpus_per_actor) + 2)
    report = evaluate_checkpoint(args.checkpoint, config, data=args.data)
    print(format_eval(report))
    if args.out:
        print(f"report: {args.out}/report.json (grid: samples.mp4, samples.png)")
        if "tensorboard" in config.trackers:
            print(f"tensorboard --logdir {args.out}   (the report's metrics and grid at the checkpoint's step)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """One video from a checkpoint without Serve: the same request checks and defaults as ``POST /generate``
    (``serve/engine.py``), so a request that works here works there and fails with the same message."""
    from pathlib import Path

    from vidgen_ray.serve.config import ServeConfig
    from vidgen_ray.serve.engine import Engine
    from vidgen_ray.serve.schema import GenerateRequest, RequestError

    import torch

    fmt = "npy" if args.out.endswith(".npy") else "mp4"
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    fields = {"class": args.label, "caption": args.caption, "seed": args.seed, "frames": args.frames,
              "height": args.height, "width": args.width, "steps": args.steps, "guidance": args.guidance,
              "image_guidance": args.image_guidance}
    import base64

    for name in ("image", "sketch"):  # a picture travels as POST /generate's base64 field, checked the same way
        path = getattr(args, name)
        if path is not None:
            if not Path(path).is_file():
                print(f"vidgen-ray sample: --{name} {path} is not a file", file=sys.stderr)
                return 2
            fields[name] = base64.b64encode(Path(path).read_bytes()).decode()
    engine = Engine(ServeConfig(checkpoint=args.checkpoint, use_ema=not args.no_ema, device=args.device,
                                num_gpus=1 if gpu else 0))
    try:
        job = engine.validate(GenerateRequest(**{k: v for k, v in fields.items() if v is not None}, format=fmt))
    except RequestError as exc:
        print(f"vidgen-ray sample: {exc.message}", file=sys.stderr)
        return 2
    (out,) = engine.run([job])
    if out.error:
        print(f"vidgen-ray sample: {out.error}", file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(out.body)
    shape = "x".join(map(str, job.shape))
    print(f"{args.out}: {job.frames} frames of the {shape} shape, seed {job.seed} ({engine.card.name}, step {engine.card.step})")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from vidgen_ray.evaluate.classifier import ClassifierConfig, save_classifier, train_classifier
    from vidgen_ray.evaluate.labelled import adopt_prepared_spec, labelled_clips
    from vidgen_ray.runtime import init_ray

    data = _data_config(args)
    if args.frames is None and args.fps is None and not args.size:
        data = adopt_prepared_spec(data)  # a prepared dataset holds one clip spec: train at it
    init_ray(address=args.address, workers_per_cpu=data.decode_tasks_per_cpu)
    train = labelled_clips(data, "train")
    heldout = next((c for c in (labelled_clips(data, s, missing_ok=True) for s in ("test", "val")) if len(c.labels)), None)
    cfg = ClassifierConfig(frames=data.clip.frames, height=data.clip.height, width=data.clip.width,
                           num_classes=len(train.label_names), epochs=args.epochs, label_names=tuple(train.label_names))
    trained = train_classifier(train.videos, train.labels, cfg,
                               heldout=None if heldout is None else (heldout.videos, heldout.labels))
    path = save_classifier(trained, args.out)
    print(f"classifier: {path}\n{len(train.labels)} train clips, accuracy {trained.train_accuracy:.4f}; "
          f"held-out ({0 if heldout is None else len(heldout.labels)} clips) {trained.heldout_accuracy:.4f} "
          f"(the ceiling for class_accuracy)")
    return 0


def format_eval(report) -> str:
    lines = [f"{'metric':<20}{'value':>14}"]
    for name, value in report.metrics.items():
        if not name.endswith("_std"):
            lines.append(f"{name:<20}{value:>14.4f}")
    for name, why in report.skipped.items():
        lines.append(f"{name:<20}{'skipped':>14}  ({why})")
    if report.latency:
        lat = report.latency
        lines.append(f"{'latency/video':<20}{lat['per_video_s_mean'] * 1e3:>12.1f}ms  ({lat['per_frame_s_mean'] * 1e3:.1f} ms/frame, "
                     f"warm-up excluded, {lat['device']})")
    lines.append(f"({report.num_videos} videos per side, real {report.real_shape}, generated {report.fake_shape})")
    return "\n".join(lines)


# --- demo -------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from vidgen_ray.demo import run_demo

    run_demo(args.out, videos=args.videos, steps=args.steps, skip_tune=args.skip_tune, skip_serve=args.skip_serve)
    return 0


# --- the parser -------------------------------------------------------------------------------------


def _tune_main(argv: list[str]) -> int:
    from vidgen_ray.tune.cli import main as tune_main

    return tune_main(argv, prog="vidgen-ray tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidgen-ray", description="Train, evaluate, tune and serve video generators on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="make, probe and prepare video datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = dsub.add_parser("synth", help="write a synthetic labelled H.264 dataset (+ a few broken files)")
    p.add_argument("--out", required=True, help="output folder or URI (s3://bucket/prefix works)")
    p.add_argument("--videos", type=int, default=48, help="number of good videos (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-broken", action="store_true", help="skip the deliberately broken files")
    p.set_defaults(func=cmd_data_synth)

    for name, helptext, func in (("probe", "probe and clean only; write the accounting report", cmd_data_probe),
                                 ("prepare", "the whole pipeline: decode clips to parquet shards + report", cmd_data_prepare)):
        p = dsub.add_parser(name, help=helptext)
        p.add_argument("src", help="folder or URI of videos (s3://, gs://, abfs://, local)")
        p.add_argument("--manifest", help="parquet/csv/jsonl with path,label,caption (default: SRC/manifest.*)")
        p.add_argument("--frames", type=int, help="frames per clip (data.clip.frames)")
        p.add_argument("--fps", type=float, help="target frame rate (data.clip.fps)")
        p.add_argument("--size", help="clip size HxW, e.g. 64x64")
        p.add_argument("--clips-per-video", dest="clips_per_video", type=int, help="clips per opened file")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="any data config field, e.g. --set clean.min_side=96")
        p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")
        if name == "probe":
            p.add_argument("--report", help="where to write report.parquet / report.json")
        else:
            p.add_argument("--out", required=True, help="where to write clips, report and prepared.json")
            p.add_argument("--rows-per-shard", dest="rows_per_shard", type=int, default=16,
                           help="clips per parquet shard (the unit of shuffling and resume; default 16)")
            _add_encode_args(p)
        p.set_defaults(func=func)

    p = dsub.add_parser("encode", help="precompute VAE latents / caption embeddings beside a prepared dataset")
    p.add_argument("prepared", help="a prepared dataset (vidgen-ray data prepare's --out)")
    _add_encode_args(p)
    p.add_argument("--normalize", default="minus_one_one", choices=["minus_one_one", "zero_one", "mean_std"],
                   help="the training run's data.normalize (the latents are of clips normalised this way)")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")
    p.set_defaults(func=cmd_data_encode)

    p = sub.add_parser("train", help="train a model on Ray Train (DDP / FSDP2 / DeepSpeed)")
    _add_experiment_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: FID, FVD, KID, PSNR, SSIM, temporal consistency, latency")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or URI (s3:// works)")
    p.add_argument("--data", help="real videos or a prepared dataset (default: the run's data.source)")
    p.add_argument("--videos", type=int, default=256, help="videos per side (default 256)")
    p.add_argument("--metrics", help="comma-separated, e.g. fid,fvd,psnr,ssim (default: all that need no extra weights)")
    p.add_argument("--out", help="where report.json and the real|generated grid go")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any EvalConfig field, e.g. --set num_actors=4 --set image_frames_per_video=4")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="one video from a checkpoint, with POST /generate's options, without Serve")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or URI (s3:// works)")
    p.add_argument("--out", required=True, help="video.mp4 (H.264) or video.npy (uint8 [T, H, W, C])")
    p.add_argument("--class", dest="label", type=int, help="class index (class-conditional models)")
    p.add_argument("--caption", help="text (caption-conditional models)")
    p.add_argument("--seed", type=int, help="the same seed gives the same video (default: a random one)")
    p.add_argument("--frames", type=int, help="keep the first N frames")
    p.add_argument("--height", type=int, help="a trained shape's height (models trained on data.buckets)")
    p.add_argument("--width", type=int, help="a trained shape's width")
    p.add_argument("--steps", type=int, help="sampling steps (transformer)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (transformer)")
    p.add_argument("--image", help="a PNG / JPEG the video starts from (models trained with model.image_condition)")
    p.add_argument("--image-guidance", type=float, help="guidance scale on the image (transformer; 1 = none)")
    p.add_argument("--sketch", help="a PNG / JPEG whose edges steer the video (models trained with model.control)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-ema", action="store_true", help="the raw weights instead of their moving average")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("classifier", help="train the motion classifier that class_accuracy uses, on a labelled dataset")
    p.add_argument("src", help="labelled videos or a prepared dataset (train split: training, test/val: accuracy)")
    p.add_argument("--out", required=True, help="where classifier.pt goes (local or s3://); pass it as eval's classifier")
    p.add_argument("--frames", type=int, help="frames per clip (default: the dataset's, else data.clip.frames)")
    p.add_argument("--fps", type=float, help="frame rate (data.clip.fps)")
    p.add_argument("--size", help="clip size HxW, e.g. 32x32")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="any data config field")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")
    p.set_defaults(func=cmd_classifier)

    p = sub.add_parser("demo", help="data -> train -> evaluate -> tune -> serve on a local Ray instance")
    p.add_argument("--out", default="./outputs/demo", help="where everything goes (default ./outputs/demo)")
    p.add_argument("--videos", type=int, default=128, help="synthetic videos (default 128)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    p.add_argument("--skip-tune", action="store_true", help="leave out the sweep")
    p.add_argument("--skip-serve", action="store_true", help="leave out serving")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tune", help="hyperparameter sweep (Ray Tune + Optuna + ASHA) from a tuning/*.yaml file",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="as for jobs/tune.py (vidgen-ray tune --help)")
    p.set_defaults(func=lambda a: _tune_main(a.args))

    from vidgen_ray.serve.cli import add_bench_args, add_serve_args, cmd_bench, cmd_serve

    p = sub.add_parser("serve", help="serve a checkpoint over HTTP on Ray Serve (/generate, /health, /metadata)")
    add_serve_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("serve-bench", help="Serve latency / throughput benchmark against the bare model")
    add_bench_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("plan", help="size a cluster for a run: decode CPUs, storage bandwidth, cache, checkpoints, epoch time")
    p.add_argument("--preset", required=True, help="model preset (vidgen-ray models)")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--gpu", default="h100", help="h100, h200, a100, b200, l40s, l4")
    p.add_argument("--clips", type=int, default=1_000_000, help="training clips in the dataset")
    p.add_argument("--batch-per-gpu", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps")
    p.add_argument("--fps", type=float, default=8.0, help="training clip frame rate (data.clip.fps)")
    p.add_argument("--data-bench", help="a benchmarks/data_throughput.py --json file (else BENCHMARKS.md's figure)")
    p.add_argument("--gpu-samples-per-s", type=float, help="measured training samples/s of one GPU (else a FLOPs estimate)")
    p.add_argument("--gpu-check", help="a benchmarks/gpu_check.py --json file: its fastest row for the preset, per GPU")
    for name, help_text in (("mfu", "assumed MFU for the FLOPs estimate"), ("source_fps", "source video frame rate"),
                            ("source_mbps", "source video bitrate, Mbit/s"), ("upload_gbps", "checkpoint upload, Gbit/s"),
                            ("cpus_per_decode_node", "CPUs of a decode node"), ("decode_headroom", "decode capacity over need")):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int if name == "cpus_per_decode_node" else float,
                       help=help_text)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("models", help="list model presets with shapes, parameters and FLOPs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A ``UserError`` (bad config, mismatched data, missing bucket, bad credentials,
    a cluster too small for the run) prints its message alone and returns 2, also when it was raised
    inside a Ray worker; ``--debug`` anywhere in ``argv`` or ``VIDGEN_DEBUG=1`` shows the traceback."""
    import os

    from vidgen_ray.errors import find_user_error
    from vidgen_ray.runtime import setup_logging

    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("VIDGEN_DEBUG") == "1" or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv[:1] == ["tune"]:  # the sweep CLI owns all of its flags, --help included
            return int(_tune_main(argv[1:]) or 0)
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except Exception as exc:
        user = find_user_error(exc)
        if user is None or debug:
            raise
        kind = "config error" if isinstance(user, ConfigError) else "error"
        print(f"{kind}: {user}\n(run with --debug or VIDGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
