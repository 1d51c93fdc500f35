#!/usr/bin/env bash
# Install vidgen-ray into a Ray node image (rayproject/ray:2.60.0-py311-cpu|gpu): torch first, then the
# package under constraints that pin the installed torch and Ray, so no dependency can swap either.
#
#   bash cluster/setup_node.sh gpu    # CUDA 12.8 torch: GPU training nodes
#   bash cluster/setup_node.sh cpu    # CPU torch: head and decode nodes (no 3 GB of CUDA wheels they never use)
#
# Used by the launcher YAMLs (cluster/aws.yaml, gcp.yaml, azure.yaml) on every node and by
# cluster/docker/Dockerfile for KubeRay images. TORCH_VERSION / TORCH_INDEX override the defaults.
set -euo pipefail

flavor=${1:-}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
case "$flavor" in
  gpu) index=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128} ;;
  cpu) index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu} ;;
  *) echo "usage: setup_node.sh cpu|gpu (got '${flavor}')" >&2; exit 2 ;;
esac

python -m pip install --quiet "torch==${TORCH_VERSION}" --index-url "$index"

# A bare `torch` requirement resolved later would download PyPI's CUDA build on top of this one, and
# `ray[...]` extras must not move Ray off the version the image (and the cluster) runs.
constraints=$(mktemp)
python -c 'from importlib.metadata import version; print("torch==" + version("torch")); print("ray==" + version("ray"))' > "$constraints"
# [text]: transformers, for pretrained T5 / CLIP caption encoders (model.text_encoder=t5|clip).
python -m pip install --quiet -c "$constraints" "${repo}[text]"
rm -f "$constraints"

python -c 'import ray, torch, vidgen_ray; print(f"vidgen-ray ready: ray {ray.__version__}, torch {torch.__version__}, cuda {torch.version.cuda}")'
