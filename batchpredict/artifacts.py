"""The part of a KFP artifact the runtime uses, as a Protocol (no kfp import).

Component bodies pass their artifacts to runtime functions typed with this; tests pass simple
stand-ins.
"""

from __future__ import annotations

from typing import Any, Protocol


class ArtifactLike(Protocol):
    """A KFP artifact, duck-typed."""

    uri: str
    metadata: dict[str, Any]

    @property
    def path(self) -> str:
        """The local path of the artifact (``/gcs/...`` for ``gs://`` on Vertex)."""
        ...
