"""The Ray Serve app on checkpoints made by real training runs: requests, errors, backpressure,
determinism, fault isolation and the latency benchmark's report.

    pytest tests/test_serve.py -q
"""

from __future__ import annotations

import http.client
import io
import json
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import av
import numpy as np
import pytest
import requests
import torch

from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.schema import GenerateRequest

pytestmark = pytest.mark.ray

# Replicas cannot import this test module: ship `faulty_loader` to them by value.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

FAULTY_SEED = 666
TIMEOUT = 120  # seconds a client waits: a hung request fails the test instead of hanging it


def faulty_loader(uri, use_ema, device):
    """The real checkpoint, with ``sample`` raising for one seed: a generation failure on demand."""
    from vidgen_ray.checkpoints import load_for_inference

    model, experiment, meta = load_for_inference(uri, use_ema=use_ema, device=device)
    sample = model.sample

    def failing_sample(n, seed, **kwargs):
        if seed == FAULTY_SEED:
            raise RuntimeError("injected fault")
        return sample(n, seed, **kwargs)

    model.sample = failing_sample
    return model, experiment, meta


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_port(ray_session):
    from ray import serve

    from vidgen_ray.serve.bench import ensure_serve

    port, _ = ensure_serve()
    yield port
    serve.shutdown()


def _deploy(config: ServeConfig, port: int):
    from vidgen_ray.serve.app import run

    run(config)
    return f"http://127.0.0.1:{port}{config.route_prefix}"


@pytest.fixture(scope="module")
def dit_url(serve_port, trained_checkpoints):
    """The trained DiT, small capacity on purpose: 2 running + 2 queued, then 503."""
    from ray import serve

    config = ServeConfig(checkpoint=trained_checkpoints["dit-debug"], app_name="test-dit", route_prefix="/dit",
                         max_batch_size=2, max_ongoing_requests=2, max_queued_requests=2)
    yield _deploy(config, serve_port)
    serve.delete(config.app_name)


@pytest.fixture(scope="module")
def gan_url(serve_port, trained_checkpoints):
    """The trained GAN with fused batching, and a fault injected for FAULTY_SEED."""
    from ray import serve

    config = ServeConfig(checkpoint=trained_checkpoints["gan-debug"], app_name="test-gan", route_prefix="/gan",
                         sampling="fused", max_batch_size=4, max_ongoing_requests=4, loader=faulty_loader)
    yield _deploy(config, serve_port)
    serve.delete(config.app_name)


def post(url: str, body) -> requests.Response:
    if isinstance(body, (bytes, str)):
        return requests.post(url + "/generate", data=body, headers={"content-type": "application/json"},
                             timeout=TIMEOUT)
    return requests.post(url + "/generate", json=body, timeout=TIMEOUT)


def npy(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    return np.load(io.BytesIO(response.content), allow_pickle=False)


# --- a correct request ------------------------------------------------------------------------------


def test_health_and_metadata_describe_the_trained_checkpoint(dit_url, trained_checkpoints):
    assert requests.get(dit_url + "/health", timeout=TIMEOUT).json()["status"] == "ok"
    meta = requests.get(dit_url + "/metadata", timeout=TIMEOUT).json()
    saved = json.loads(open(f"{trained_checkpoints['dit-debug']}/meta.json").read())
    assert (meta["name"], meta["family"]) == ("dit-debug", "dit")
    assert (meta["frames"], meta["height"], meta["width"], meta["channels"]) == (8, 32, 32, 3)
    assert meta["fps"] == saved["experiment"]["data"]["clip"]["fps"]
    assert meta["step"] == saved["state"]["step"] > 0
    assert meta["num_classes"] == saved["experiment"]["model"]["num_classes"] and meta["caption"] is True
    assert meta["parameters"] > 100_000 and meta["device"] == "cpu"
    assert meta["max_batch_size"] == 2 and meta["sampling"] == "per_request"


def test_generate_returns_a_decodable_mp4_of_the_requested_frames(dit_url):
    response = post(dit_url, {"class": 3, "caption": "a red ball", "seed": 1, "frames": 5, "steps": 2,
                              "guidance": 2.0})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["x-vidgen-seed"] == "1" and response.headers["x-vidgen-frames"] == "5"
    with av.open(io.BytesIO(response.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5
    assert frames[0].shape == (32, 32, 3)


def test_npy_round_trips_and_a_seed_gives_the_same_video_batched_or_not(dit_url, trained_checkpoints):
    from vidgen_ray.models.base import to_uint8
    from vidgen_ray.checkpoints import load_for_inference

    body = {"class": 2, "caption": "waves", "steps": 2, "format": "npy"}
    alone = npy(post(dit_url, body | {"seed": 5}))
    assert alone.dtype == np.uint8 and alone.shape == (8, 32, 32, 3)
    assert alone.std() > 0  # a real video, not a constant array
    # Two at once share a batch (max_batch_size 2). Two, not more: the router may still count the request
    # above as running on the replica (its view of the replica's load lags), and then queues them all;
    # only max_queued_requests=2 of them are then guaranteed a place rather than a 503.
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda s: post(dit_url, body | {"seed": s}), [6, 5]))
    batched = [npy(r) for r in responses]
    np.testing.assert_array_equal(batched[1], alone)
    assert np.abs(batched[0].astype(int) - alone.astype(int)).mean() > 1  # another seed, another video
    # ... and the served video is the bare model's sample for that seed (same single thread as the replica).
    model, _, _ = load_for_inference(trained_checkpoints["dit-debug"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        offline = to_uint8(model.sample(1, seed=5, labels=torch.tensor([2]), captions=["waves"], steps=2))[0].numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(offline, alone)


def test_the_replica_logs_nothing_per_request(dit_url):
    # Serve resolves one more future per streamed request when a batch ends; unread, asyncio logged
    # "Future exception was never retrieved ... StopAsyncIteration" three lines a request.
    import time
    from pathlib import Path

    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    # The replica's own log and every worker's stderr (where asyncio's unhandled-future lines go).
    files = lambda: [p for p in logs.rglob("*") if p.is_file() and (p.suffix == ".err" or "replica_test-dit" in p.name)]  # noqa: E731
    before = {p: p.stat().st_size for p in files()}
    # Two at a time: dit_url holds 2 running + 2 queued, and the router's view of the replica lags.
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda s: post(dit_url, {"seed": s, "steps": 2, "format": "npy"}), range(8)))
    assert [r.status_code for r in responses] == [200] * 8

    def abandon(seed: int) -> None:  # a client that hangs up before its video is ready
        url = urllib.parse.urlsplit(dit_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        conn.request("POST", url.path + "/generate", body=json.dumps({"seed": seed, "steps": 32, "format": "npy"}),
                     headers={"content-type": "application/json"})
        time.sleep(0.2)
        conn.close()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(abandon, range(4)))
    assert post(dit_url, {"seed": 9, "steps": 2, "format": "npy"}).status_code == 200  # the replica is fine
    time.sleep(3)  # the replica's stderr reaches its file
    written, replica = "", ""
    for path in files():
        with open(path, "rb") as f:
            f.seek(before.get(path, 0))
            text = f.read().decode(errors="replace")
        written += text
        replica += text if "replica_test-dit" in path.name else ""
    assert "never retrieved" not in written and "StopAsyncIteration" not in written, written[-3000:]
    assert "Traceback" not in replica, replica[-3000:]


def test_a_lone_request_skips_the_batch_wait_and_a_crowd_still_batches(serve_port, trained_checkpoints):
    from ray import serve

    def replica_ms(response) -> float:
        assert response.status_code == 200, response.text
        return float(response.headers["x-vidgen-replica-ms"])

    body = {"steps": 2, "format": "npy"}
    # A long wait (0.5 s) makes the difference plain against a ~50 ms generation.
    base = ServeConfig(checkpoint=trained_checkpoints["dit-debug"], app_name="test-wait", route_prefix="/wait",
                       max_batch_size=2, max_ongoing_requests=4, batch_wait_timeout_s=0.5)
    try:
        url = _deploy(replace(base, batch_wait="fixed"), serve_port)
        post(url, body | {"seed": 0})  # warm-up
        assert min(replica_ms(post(url, body | {"seed": s})) for s in (1, 2)) >= 500  # waited for company
        url = _deploy(replace(base, batch_wait="adaptive"), serve_port)
        post(url, body | {"seed": 0})
        assert max(replica_ms(post(url, body | {"seed": s})) for s in (1, 2)) < 400  # dispatched at once
        # Three at once: the first goes alone, the next two find each other within the wait.
        with ThreadPoolExecutor(3) as pool:
            crowd = list(pool.map(lambda s: post(url, body | {"seed": s}), (3, 4, 5)))
        assert max(int(r.headers["x-vidgen-batch-size"]) for r in crowd) == 2, [r.headers for r in crowd]
    finally:
        serve.delete(base.app_name)


# --- the playground page -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver (Debian's chromium + chromium-driver; .ci/run installs them)."""
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("the playground test needs Chromium: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    yield drv
    drv.quit()


def test_the_playground_plays_a_generated_video_and_shows_api_errors(dit_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT)
    browser.get(dit_url)  # GET / under the app's route prefix (/dit)
    wait.until(lambda d: d.find_element(By.ID, "form").is_displayed())
    # Only the inputs this model takes: the trained DiT has classes, captions, steps and guidance.
    classes = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#class option")]
    num_classes = requests.get(dit_url + "/metadata", timeout=TIMEOUT).json()["num_classes"]
    assert num_classes > 0 and classes == [str(i) for i in range(num_classes)]
    assert all(browser.find_element(By.ID, i).is_displayed() for i in ("caption", "steps", "guidance", "seed"))
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("2")
    browser.find_element(By.ID, "generate").click()
    # A playable video: the browser decoded the MP4 and knows its length (8 frames at 8 fps ~ 1 s).
    wait.until(lambda d: d.execute_script("const v = document.getElementById('video'); return v.readyState >= 1 && v.duration > 0"))
    duration = browser.execute_script("return document.getElementById('video').duration")
    assert 0.5 < duration < 2.0, duration
    assert browser.find_element(By.ID, "latency").text.startswith("latency ")
    assert browser.find_element(By.ID, "error").text == ""
    # A bad input shows the API's own 4xx message.
    steps.clear()
    steps.send_keys("100000")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "error").text)
    error = browser.find_element(By.ID, "error").text
    assert error.startswith("HTTP 422: ") and "steps" in error, error


# --- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"seed": 1,', 400, "not valid JSON"),
        (b"", 400, "empty body"),
        (b"[1, 2]", 422, "JSON object"),
        ({"seed": 1, "sead": 2}, 422, "unknown field 'sead'"),
        ({"seed": "1"}, 422, "'seed'"),
        ({"frames": 9}, 422, "1..8"),
        ({"frames": 0}, 422, "'frames'"),
        ({"height": 48}, 422, "not trained at 48x32"),
        ({"steps": 0}, 422, "'steps'"),
        ({"steps": 10_000}, 422, "'steps'"),
        ({"guidance": -1.0}, 422, "'guidance'"),
        ({"guidance": 1e6}, 422, "'guidance'"),
        ({"class": 10}, 422, "out of range"),
        ({"caption": "x" * 200}, 422, "shorten"),
        ({"format": "gif"}, 422, "'format'"),
        ({"seed": -3}, 422, "'seed'"),
        (json.dumps({"caption": "y" * 20_000}).encode(), 413, "limit"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(dit_url, body, status, message):
    response = post(dit_url, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_options_the_model_does_not_have_are_rejected(gan_url):
    for body, message in (({"caption": "a cat"}, "takes no captions"), ({"class": 1}, "not class-conditional"),
                          ({"steps": 4}, "no sampling option 'steps'")):
        response = post(gan_url, body)
        assert response.status_code == 422 and message in response.json()["error"], response.text


# --- the GAN, fused batching, failures --------------------------------------------------------------


def test_gan_checkpoint_serves_fused_batches(gan_url):
    meta = requests.get(gan_url + "/metadata", timeout=TIMEOUT).json()
    assert meta["family"] == "gan" and meta["default_steps"] is None and meta["sampling"] == "fused"
    # Alone, a request is its own sample call: the same seed gives the same video.
    first, second = (post(gan_url, {"seed": 42, "format": "npy"}) for _ in range(2))
    assert first.headers["x-vidgen-fused-size"] == second.headers["x-vidgen-fused-size"] == "1"
    np.testing.assert_array_equal(npy(first), npy(second))
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda s: post(gan_url, {"seed": s, "format": "npy"}), range(6)))
    videos = [npy(r) for r in responses]
    assert all(v.shape == (8, 32, 32, 3) for v in videos)
    sizes = [int(r.headers["x-vidgen-fused-size"]) for r in responses]
    assert max(sizes) > 1, f"six concurrent requests never shared a sample call: {sizes}"
    rows = {(r.headers["x-vidgen-fused-seed"], r.headers["x-vidgen-fused-row"]) for r in responses}
    assert len(rows) == 6  # every request got its own row of its own call


def test_a_failing_generation_is_a_500_and_the_replica_keeps_serving(gan_url):
    replica = requests.get(gan_url + "/health", timeout=TIMEOUT).json()["replica"]
    for _ in range(2):
        failed = post(gan_url, {"seed": FAULTY_SEED, "format": "npy"})
        assert failed.status_code == 500
        assert "injected fault" in failed.json()["error"]
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda s: post(gan_url, {"seed": s, "format": "npy"}), (1, 2, 3)))
    assert all(npy(r).shape == (8, 32, 32, 3) for r in responses)
    assert requests.get(gan_url + "/health", timeout=TIMEOUT).json()["replica"] == replica  # same process


def test_fused_group_failure_fails_only_its_culprit(trained_checkpoints):
    """In-process: a fused sample call that raises is rerun request by request."""
    from vidgen_ray.serve.engine import Engine

    config = ServeConfig(checkpoint=trained_checkpoints["gan-debug"], sampling="fused", loader=faulty_loader)
    engine = Engine(config)
    jobs = [engine.validate(GenerateRequest(seed=s, format="npy")) for s in (FAULTY_SEED, 7, 8)]
    outputs = engine.run(jobs)
    assert outputs[0].error and "injected fault" in outputs[0].error
    assert [o.error for o in outputs[1:]] == [None, None]
    assert np.load(io.BytesIO(outputs[1].body)).shape == (8, 32, 32, 3)


# --- capacity ---------------------------------------------------------------------------------------


def test_a_burst_beyond_capacity_is_answered_whole_or_503(dit_url):
    """24 at once against 2 running + 2 queued: every accepted request comes back whole, the rest get
    503 with Retry-After at once; nothing times out and the replica serves on."""
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda s: post(dit_url, {"seed": s, "steps": 2, "format": "npy"}), range(24)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    accepted = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code == 503]
    assert len(accepted) >= 2 and rejected, codes
    for r in accepted:
        assert len(r.content) == int(r.headers["content-length"])
        assert npy(r).shape == (8, 32, 32, 3)
    assert all(r.headers.get("retry-after") == "1" for r in rejected)
    assert post(dit_url, {"seed": 99, "steps": 2, "format": "npy"}).status_code == 200


# --- object storage and config ----------------------------------------------------------------------


@pytest.mark.s3
def test_engine_loads_a_checkpoint_from_s3(trained_checkpoints, s3_bucket):
    from pathlib import Path

    from vidgen_ray import storage
    from vidgen_ray.serve.engine import Engine

    local = Path(trained_checkpoints["gan-debug"])
    remote = f"{s3_bucket}/runs/gan/checkpoint"
    for name in ("meta.json", "model.pt"):
        storage.write_bytes(f"{remote}/{name}", (local / name).read_bytes())
    engine = Engine(ServeConfig(checkpoint=remote))
    assert engine.card.checkpoint == remote and engine.card.family == "gan"
    out = engine.run([engine.validate(GenerateRequest(seed=3, format="mp4"))])[0]
    assert out.error is None and out.media_type == "video/mp4" and len(out.body) > 100


def test_serve_config_errors_name_the_fix():
    from vidgen_ray.configs import ConfigError

    ok = ServeConfig(checkpoint="x")
    for bad, fix in ((replace(ok, checkpoint=""), "--checkpoint"),
                     (replace(ok, max_batch_size=8, max_ongoing_requests=4), "max_ongoing_requests >= 8"),
                     (replace(ok, min_replicas=3, max_replicas=2), "min_replicas"),
                     (replace(ok, device="cuda"), "num_gpus"),
                     (replace(ok, route_prefix="vidgen"), "start with '/'")):
        with pytest.raises(ConfigError, match=fix):
            bad.validate()


def test_deployment_options_carry_backpressure_and_autoscaling():
    from vidgen_ray.serve.app import build_app, deployment_options

    fixed = deployment_options(ServeConfig(checkpoint="x", max_ongoing_requests=6, max_queued_requests=3, num_cpus=2))
    assert (fixed["max_ongoing_requests"], fixed["max_queued_requests"], fixed["num_replicas"]) == (6, 3, 1)
    assert fixed["backpressure_config"].status_code == 503 and fixed["ray_actor_options"]["num_cpus"] == 2
    assert "autoscaling_config" not in fixed
    scaled = deployment_options(ServeConfig(checkpoint="x", min_replicas=1, max_replicas=4, target_ongoing_requests=3))
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                            "target_ongoing_requests": 3}
    assert "num_replicas" not in scaled
    build_app(ServeConfig(checkpoint="x", min_replicas=1, max_replicas=4))  # Serve accepts the options


# --- the benchmark ----------------------------------------------------------------------------------


def test_benchmark_writes_json_and_png(serve_port, trained_checkpoints, tmp_path):
    from vidgen_ray.serve.bench import BenchConfig, serve_and_benchmark

    bench = BenchConfig(concurrency=(1, 2), batch_sizes=(2,), requests_per_point=4, time_limit_s=30.0,
                        warmup_requests=1, bare_repeats=2, steps=2, format="mp4")
    result = serve_and_benchmark(trained_checkpoints["dit-debug"], tmp_path, bench=bench)
    saved = json.loads((tmp_path / "serve_latency.json").read_text())
    # Both batch waits side by side, one deployment each, the same bare model under both.
    assert [(row["batch_wait"], row["concurrency"]) for row in saved["grid"]] == [
        ("adaptive", 1), ("adaptive", 2), ("fixed", 1), ("fixed", 2)]
    assert set(saved["overhead_ratio_c1_by_wait"]) == {"adaptive", "fixed"}
    for row in saved["grid"]:
        for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps", "error_rate", "bare_p50_ms"):
            assert isinstance(row[key], float) and row[key] >= 0, (key, row)
        assert row["requests"] == 4 and row["error_rate"] == 0.0, row
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["overhead_ratio"] == pytest.approx(row["p50_ms"] / row["bare_p50_ms"])
    assert saved["overhead_ratio_c1"] == min(saved["grid"][0]["overhead_ratio"], saved["grid"][2]["overhead_ratio"])
    assert (tmp_path / "serve_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["json"] == str(tmp_path / "serve_latency.json")


def test_the_sample_command_writes_a_video_under_generates_checks(trained_checkpoints, tmp_path, capsys):
    from vidgen_ray.cli import main

    out = tmp_path / "clip.npy"
    args = ["sample", "--checkpoint", trained_checkpoints["dit-debug"], "--steps", "2"]
    assert main([*args, "--seed", "3", "--frames", "4", "--out", str(out)]) == 0
    video = np.load(out)
    assert video.shape == (4, 32, 32, 3) and video.dtype == np.uint8
    assert main([*args, "--seed", "3", "--frames", "4", "--out", str(tmp_path / "again.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), video)  # the seed decides the video
    assert main([*args, "--height", "48", "--width", "48", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "not trained at 48x48" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
