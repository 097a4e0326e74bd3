"""The component image reference: one place for its name and tag.

The tag is the package version, so a spec compiled from version X runs the image built from X.
The registry is chosen when the image is built and when specs are compiled, through the
``BATCHPREDICT_IMAGE_REGISTRY`` environment variable (read when called, never at import), e.g.
``us-central1-docker.pkg.dev/my-project/my-repo``. Without it the image is the local name that
``make image`` builds and kfp.local's DockerRunner runs.
"""

from __future__ import annotations

import os

from batchpredict import __version__

IMAGE_NAME = "batchpredict"
REGISTRY_ENV = "BATCHPREDICT_IMAGE_REGISTRY"


def image_tag() -> str:
    """The image tag: the package version."""
    return __version__


def component_image(registry: str | None = None) -> str:
    """The full image reference, ``[<registry>/]batchpredict:<version>``."""
    registry = (registry if registry is not None else os.environ.get(REGISTRY_ENV, "")).rstrip("/")
    name = f"{IMAGE_NAME}:{image_tag()}"
    return f"{registry}/{name}" if registry else name
