#!/usr/bin/env bash
# Pushes the component image to a registry and recompiles the specs against it.
#
# Usage:
#   BATCHPREDICT_IMAGE_REGISTRY=us-central1-docker.pkg.dev/MY_PROJECT/MY_REPO containers/push_image.sh
#   (or: make push BATCHPREDICT_IMAGE_REGISTRY=...)
#
# 1. builds the image (containers/build_image.sh; cached) tagged
#    <registry>/batchpredict:<package version>, the reference batchpredict.image.component_image()
#    gives with that registry;
# 2. pushes it (log in first, e.g. `gcloud auth configure-docker us-central1-docker.pkg.dev`);
# 3. recompiles component_specs/ and pipelines/*.yaml with BATCHPREDICT_IMAGE_REGISTRY set, so every
#    step of the compiled specs runs the pushed image (`make compile` without the variable goes back
#    to the local name).
#
# Environment: BATCHPREDICT_IMAGE_REGISTRY (required), BASE_IMAGE and XGBOOST_DIST as for
# build_image.sh, PYTHON (default .venv/bin/python), NO_COMPILE=1 to push without recompiling.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
say() { echo "push_image: $*" >&2; }

REGISTRY=${BATCHPREDICT_IMAGE_REGISTRY:-}
REGISTRY=${REGISTRY%/}
if [ -z "$REGISTRY" ]; then
    say "set BATCHPREDICT_IMAGE_REGISTRY, e.g. us-central1-docker.pkg.dev/MY_PROJECT/MY_REPO"
    exit 2
fi
export BATCHPREDICT_IMAGE_REGISTRY=$REGISTRY

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON

IMAGE=$("$ROOT/containers/build_image.sh")
expected=$("$PYTHON" -c 'from batchpredict.image import component_image; print(component_image())')
if [ "$IMAGE" != "$expected" ]; then
    say "built $IMAGE but the specs would reference $expected"; exit 1
fi

say "pushing $IMAGE"
docker push "$IMAGE" >&2
digest=$(docker image inspect --format '{{ range .RepoDigests }}{{ println . }}{{ end }}' "$IMAGE" \
    | grep -F "${IMAGE%:*}@" | head -n 1 || true)
say "pushed ${digest:-$IMAGE}"

if [ "${NO_COMPILE:-0}" != 1 ]; then
    say "recompiling the specs against $IMAGE"
    "$PYTHON" scripts/compile.py >&2
fi
echo "$IMAGE"
