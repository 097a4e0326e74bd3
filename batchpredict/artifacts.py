"""The part of a KFP artifact the runtime uses (a Protocol: no kfp import), and its metadata.

Component bodies pass their artifacts to runtime functions typed with this; tests pass simple
stand-ins.
"""

from __future__ import annotations

from typing import Any, Protocol

# snake_case keys of a containerSpec (Vertex's API types) and their camelCase (KFP metadata) names.
_CONTAINER_SPEC_KEYS = {
    "image_uri": "imageUri",
    "predict_route": "predictRoute",
    "health_route": "healthRoute",
    "container_port": "containerPort",
}


def container_spec(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A model artifact's ``containerSpec`` with camelCase keys ({} when it has none).

    The metadata of an UnmanagedContainerModel (camelCase, as KFP artifacts carry it) or the same
    in snake_case (as Vertex's API types name it).
    """
    spec = (metadata or {}).get("containerSpec") or (metadata or {}).get("container_spec") or {}
    if not isinstance(spec, dict):
        return {}
    return {_CONTAINER_SPEC_KEYS.get(k, k): v for k, v in spec.items()}


def container_image_uri(metadata: dict[str, Any] | None) -> str:
    """A model artifact's serving image: ``containerSpec.imageUri`` of its metadata, or ""."""
    return container_spec(metadata).get("imageUri") or ""


class ArtifactLike(Protocol):
    """A KFP artifact, duck-typed."""

    uri: str
    metadata: dict[str, Any]

    @property
    def path(self) -> str:
        """The local path of the artifact (``/gcs/...`` for ``gs://`` on Vertex)."""
        ...
