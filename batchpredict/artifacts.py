"""The part of a KFP artifact the runtime uses (a Protocol: no kfp import), and its metadata.

Component bodies pass their artifacts to runtime functions typed with this; tests pass simple
stand-ins.
"""

from __future__ import annotations

from typing import Any, Protocol


def container_image_uri(metadata: dict[str, Any] | None) -> str:
    """A model artifact's serving image: ``containerSpec.imageUri`` of its metadata, or "".

    The metadata of an UnmanagedContainerModel (camelCase, as KFP artifacts carry it) or the same
    in snake_case (as Vertex's API types name it).
    """
    for spec_key, image_key in (("containerSpec", "imageUri"), ("container_spec", "image_uri")):
        container_spec = (metadata or {}).get(spec_key) or {}
        if container_spec.get(image_key):
            return container_spec[image_key]
    return ""


class ArtifactLike(Protocol):
    """A KFP artifact, duck-typed."""

    uri: str
    metadata: dict[str, Any]

    @property
    def path(self) -> str:
        """The local path of the artifact (``/gcs/...`` for ``gs://`` on Vertex)."""
        ...
