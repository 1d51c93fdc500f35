"""Command lines of ``jobs/serve.py`` and ``jobs/serve_bench.py`` (also usable as ``vidgen-ray``
subcommands: ``add_*_args`` + ``cmd_*``).

    python jobs/serve.py --checkpoint outputs/runs/demo/checkpoint_000004 --port 8000 --set max_batch_size=8
    python jobs/serve_bench.py --checkpoint s3://bucket/runs/dit/checkpoint_000042 --json out.json --png out.png

``--set KEY=VALUE`` sets any ServeConfig field (``--set limits.max_steps=50``, ``--set sampling=fused``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import replace

from vidgen_ray.configs import ConfigError, coerce, parse_set_args, set_dotted


def _serve_config(args: argparse.Namespace):
    from vidgen_ray.serve.config import ServeConfig

    config = ServeConfig(checkpoint=args.checkpoint)
    for key, value in parse_set_args(args.sets):
        if key == "loader":
            raise ConfigError("loader is a Python callable: set it from Python, not from the command line")
        set_dotted(config, key, value)
    from vidgen_ray.serve.app import check_checkpoint

    check_checkpoint(config.validate())
    return config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory: local path or s3:// (meta.json + model.pt)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any ServeConfig field, e.g. --set max_batch_size=8 --set num_gpus=1 (repeatable)")
    p.add_argument("--port", type=int,
                   help="HTTP port of Serve's proxy if this starts Serve (default 8000 / a free one)")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="proxy bind address (0.0.0.0 to listen on every interface)")
    p.add_argument("--detach", action="store_true",
                   help="return once deployed (on a cluster the app keeps running; a local Ray instance would stop)")


def cmd_serve(args: argparse.Namespace) -> int:
    from ray import serve
    from ray.serve.context import _get_global_client

    from vidgen_ray.runtime import init_ray
    from vidgen_ray.serve.app import run

    config = _serve_config(args)
    init_ray(address=args.address)
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        serve.start(http_options={"host": args.host, "port": args.port or 8000})
        client = _get_global_client()
    run(config)
    port = client.http_config.port
    base = f"http://{client.http_config.host}:{port}{config.route_prefix.rstrip('/')}"
    print(f"serving {config.checkpoint} at {base}/generate  (metadata: {base}/metadata, health: {base}/health)")
    print(f"try: curl -s -X POST {base}/generate -d '{{\"seed\": 0}}' -o video.mp4")
    if args.detach:
        return 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    serve.delete(config.app_name)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    return coerce(text, tuple[int, ...], "list")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--png", help="write the latency / throughput plot here")
    p.add_argument("--markdown", action="store_true", help="also print the grid as a Markdown table")
    p.add_argument("--quick", action="store_true", help="the small grid of `make demo` (concurrency 1,2,4; batch 4)")
    p.add_argument("--concurrency", type=_ints, help="concurrent clients per grid point, e.g. 1,2,4,8,16")
    p.add_argument("--batch-sizes", type=_ints, help="max_batch_size values, one deployment each, e.g. 1,4,8")
    p.add_argument("--batch-waits", type=lambda v: tuple(v.split(",")),
                   help="batch_wait values, one deployment each: adaptive,fixed (default both, side by side)")
    p.add_argument("--requests", type=int, help="request budget per grid point")
    p.add_argument("--time-limit", type=float, help="seconds per grid point before the load stops sending")
    p.add_argument("--warmup", type=int, help="uncounted requests per grid point")
    p.add_argument("--bare-repeats", type=int, help="timed in-process runs of the bare model per batch size")
    p.add_argument("--steps", type=int, help="sampling steps per request (families that have them)")
    p.add_argument("--format", choices=["mp4", "npy"], help="response format")


def cmd_bench(args: argparse.Namespace) -> int:
    from vidgen_ray.runtime import init_ray
    from vidgen_ray.serve.bench import QUICK, BenchConfig, benchmark_app, print_report, write_report
    from vidgen_ray.serve.report import markdown

    config = _serve_config(args)
    bench = replace(QUICK) if args.quick else BenchConfig()
    for attr, key in (("concurrency", "concurrency"), ("batch_sizes", "batch_sizes"), ("batch_waits", "batch_waits"),
                      ("requests", "requests_per_point"), ("time_limit", "time_limit_s"),
                      ("warmup", "warmup_requests"), ("bare_repeats", "bare_repeats"),
                      ("steps", "steps"), ("format", "format")):
        if getattr(args, attr) is not None:
            setattr(bench, key, getattr(args, attr))
    bench.validate()
    init_ray(address=args.address)
    result = benchmark_app(config, bench, args.port)
    write_report(result, args.json, args.png)
    print_report(result)
    if args.markdown:
        print("\n" + markdown(result))
    if not args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    return 0


def main(add_args, command, description: str, argv: list[str] | None = None) -> int:
    """Parse, run, and turn a ConfigError into a one-line message and exit code 2 (like ``vidgen-ray``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    try:
        return int(command(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
