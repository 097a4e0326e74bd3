#!/usr/bin/env bash
# Builds the component image and tags it with batchpredict.image.component_image():
# [<BATCHPREDICT_IMAGE_REGISTRY>/]batchpredict:<package version>. Prints the image reference.
#
# Usage: containers/build_image.sh            (or `make image`)
#
# Environment:
#   BATCHPREDICT_IMAGE_REGISTRY  registry prefix of the tag, e.g.
#                                us-central1-docker.pkg.dev/my-project/my-repo (default: none)
#   BASE_IMAGE                   base image (default: the Dockerfile's, python:3.11-slim-bookworm);
#                                `local` builds and uses a Debian base made here with debootstrap
#                                (containers/build_base_image.sh), for machines with no registry
#   XGBOOST_DIST                 xgboost-cpu (default) or xgboost (CUDA build)
#   BATCHPREDICT_IMAGE_VARIANT   also build a variant on top of the default image
#                                (containers/Dockerfile.variant): `tf` adds the package's [tf]
#                                extra (tensorflow-cpu), tagged batchpredict:<version>-tf; the
#                                variant's reference is printed last
#   PYTHON                       the project's Python (default: .venv/bin/python, else python3);
#                                the image's dependencies are pinned to the versions installed there
#
# Repeated builds are cheap: the wheel is reproducible and dependencies have their own layer.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
say() { echo "build_image: $*" >&2; }

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

IMAGE=$("$PYTHON" -c 'from batchpredict.image import component_image; print(component_image(variant=""))')
VERSION=$("$PYTHON" -c 'from batchpredict.image import image_tag; print(image_tag(variant=""))')
VARIANT=${BATCHPREDICT_IMAGE_VARIANT:-}
if [ -n "$VARIANT" ]; then
    VARIANT_IMAGE=$("$PYTHON" -c 'from batchpredict.image import component_image; print(component_image())')
    EXTRA=$("$PYTHON" -c "from batchpredict.image import IMAGE_VARIANTS; print(IMAGE_VARIANTS['$VARIANT'])")
fi

build_args=(--build-arg "BATCHPREDICT_VERSION=$VERSION")
if [ "${BASE_IMAGE:-}" = local ]; then
    BASE_IMAGE=$(BASE_IMAGE="" "$ROOT/containers/build_base_image.sh")
fi
[ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${XGBOOST_DIST:-}" ] && build_args+=(--build-arg "XGBOOST_DIST=$XGBOOST_DIST")

# The build context: only what the Dockerfile copies (never the repo with its .venv).
CTX=$ROOT/.build/image
rm -rf "$CTX"
mkdir -p "$CTX"
SRC=$(mktemp -d "${TMPDIR:-/tmp}/batchpredict-src.XXXXXX")
trap 'rm -rf "$SRC"' EXIT

# A wheel of the working tree, built from a clean copy (no stale build/ dirs, no __pycache__), with
# fixed timestamps so that the same sources give the same bytes and Docker's layer cache holds.
sources=(pyproject.toml setup.py batchpredict components component_specs)
[ -f README.md ] && sources+=(README.md)
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "${sources[@]}" | tar -C "$SRC" -xf -
[ -f "$SRC/README.md" ] || echo "# batchpredict" >"$SRC/README.md"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800} \
    "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$CTX" "$SRC" >&2

# requirements.txt: the wheel's runtime dependencies. constraints.txt: the exact versions of
# their whole closure as installed in $PYTHON's environment, so the image runs what was tested.
"$PYTHON" - "$CTX" "$VERSION" "${EXTRA:-}" <<'PY'
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ctx, version, variant_extra = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
wheel = next(ctx.glob(f"batchpredict-{version}-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zf.read(name).decode())


def applies(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**default_environment(), "extra": extra})


runtime = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
runtime = [r for r in runtime if applies(r)]
(ctx / "requirements.txt").write_text("".join(f"{r}\n" for r in runtime))

def pin_closure(reqs: list[Requirement], pins: dict[str, str], warn: bool) -> None:
    """Adds to ``pins`` the installed version of every package in the closure of ``reqs``."""
    todo = [(r, "") for r in reqs]
    while todo:
        req, _ = todo.pop()
        key = canonicalize_name(req.name)
        if key in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if warn:
                print(f"build_image: {req.name} is not installed here; the image resolves it freely",
                      file=sys.stderr)
            continue
        pins[key] = dist.version
        for extra in req.extras or [""]:
            for sub in dist.requires or []:
                sub_req = Requirement(sub)
                if applies(sub_req, extra):
                    todo.append((sub_req, extra))


def write_pins(path: Path, pins: dict[str, str]) -> None:
    path.write_text("".join(f"{k}=={v}\n" for k, v in sorted(pins.items())))


pins: dict[str, str] = {}
pin_closure(runtime, pins, warn=True)
write_pins(ctx / "constraints.txt", pins)

if variant_extra:
    # A variant: the extra's own requirements, pinned with the whole closure (runtime + extra).
    variant = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    variant = [r for r in variant if applies(r, variant_extra) and not applies(r)]
    (ctx / "requirements-variant.txt").write_text("".join(f"{r.name}{r.specifier}\n" for r in variant))
    pin_closure(variant, pins, warn=False)
    write_pins(ctx / "constraints-variant.txt", pins)
PY

say "building $IMAGE (base: ${BASE_IMAGE:-Dockerfile default})"
docker build "${build_args[@]}" --tag "$IMAGE" --file "$ROOT/containers/Dockerfile" "$CTX" >&2
docker image ls "$IMAGE" >&2
if [ -n "$VARIANT" ]; then
    say "building $VARIANT_IMAGE ($IMAGE + batchpredict[$EXTRA])"
    docker build --build-arg "BASE_IMAGE=$IMAGE" --build-arg "EXTRA=$EXTRA" \
        --tag "$VARIANT_IMAGE" --file "$ROOT/containers/Dockerfile.variant" "$CTX" >&2
    docker image ls "$VARIANT_IMAGE" >&2
fi
echo "$IMAGE"
[ -z "$VARIANT" ] || echo "$VARIANT_IMAGE"
