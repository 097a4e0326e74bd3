"""The component image reference: one place for its name and tag, and how to run it locally.

The tag is the package version, so a spec compiled from version X runs the image built from X.
The registry is chosen when the image is built and when specs are compiled, through the
``BATCHPREDICT_IMAGE_REGISTRY`` environment variable (read when called, never at import), e.g.
``us-central1-docker.pkg.dev/my-project/my-repo``. Without it the image is the local name that
``make image`` builds and kfp.local's DockerRunner runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from batchpredict.version import __version__

if TYPE_CHECKING:  # kfp is never imported at module top level
    from kfp.local import DockerRunner

IMAGE_NAME = "batchpredict"
REGISTRY_ENV = "BATCHPREDICT_IMAGE_REGISTRY"
# A variant is the default image plus one of the package's extras (containers/Dockerfile.variant),
# tagged <version>-<variant>. ``tf``: TensorFlow, for SavedModels and the TensorFlow tutorial.
VARIANT_ENV = "BATCHPREDICT_IMAGE_VARIANT"
IMAGE_VARIANTS = {"tf": "tf"}  # variant -> extra of the package

# The image's non-root user (containers/Dockerfile creates it with these ids).
IMAGE_UID = 10001
IMAGE_GID = 10001


def image_tag(variant: str | None = None) -> str:
    """The image tag: the package version, and ``-<variant>`` for a variant.

    ``variant`` None reads ``BATCHPREDICT_IMAGE_VARIANT`` (empty: the default image).
    """
    variant = variant if variant is not None else os.environ.get(VARIANT_ENV, "")
    if variant and variant not in IMAGE_VARIANTS:
        raise ValueError(
            f"Unknown image variant {variant!r} ({VARIANT_ENV}); known: {sorted(IMAGE_VARIANTS)}, "
            "or empty for the default image."
        )
    return f"{__version__}-{variant}" if variant else __version__


def component_image(registry: str | None = None, variant: str | None = None) -> str:
    """The full image reference, ``[<registry>/]batchpredict:<version>[-<variant>]``."""
    registry = (registry if registry is not None else os.environ.get(REGISTRY_ENV, "")).rstrip("/")
    name = f"{IMAGE_NAME}:{image_tag(variant)}"
    return f"{registry}/{name}" if registry else name


def docker_runner_args(pipeline_root: str | os.PathLike[str]) -> dict[str, str]:
    """``kfp.local.DockerRunner`` arguments: steps write to ``pipeline_root``, never as root.

    DockerRunner bind-mounts ``pipeline_root`` at the same path, and a bind mount keeps the host's
    owners and modes, so the step's user needs write access to that host directory:

    * run by a non-root user: the step runs as that user's uid:gid (non-root too). Its outputs
      are owned by the user, as with SubprocessRunner, whatever the directory's mode.
    * run by root: the step runs as the image's own non-root user, and ``pipeline_root`` (created
      if missing, so that Docker does not create it root-owned) is handed to that user (chown);
      root still reads and writes everything in it.

    Args:
        pipeline_root: the ``pipeline_root`` given to ``kfp.local.init``.

    Returns:
        Keyword arguments for ``kfp.local.DockerRunner``.
    """
    root = os.path.abspath(os.fspath(pipeline_root))
    os.makedirs(root, exist_ok=True)
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        return {"user": f"{uid}:{gid}"}
    stat = os.stat(root)
    if stat.st_uid != IMAGE_UID:
        os.chown(root, IMAGE_UID, IMAGE_GID)
    return {"user": f"{IMAGE_UID}:{IMAGE_GID}"}


def docker_runner(pipeline_root: str | os.PathLike[str], **container_run_args: str) -> DockerRunner:
    """A ``kfp.local.DockerRunner`` for batchpredict's image; see :func:`docker_runner_args`.

    Use it with the same ``pipeline_root``::

        local.init(runner=docker_runner(root), pipeline_root=root)

    Args:
        pipeline_root: the ``pipeline_root`` given to ``kfp.local.init``.
        **container_run_args: more ``docker run`` arguments; they override the defaults.

    Returns:
        The runner.
    """
    from kfp import local

    return local.DockerRunner(**{**docker_runner_args(pipeline_root), **container_run_args})
