"""The package version: the one place it is defined (and so the component image's tag).

A module of its own, importing nothing, so that any part of the package reads it without
importing the package's top level.
"""

__version__ = "0.1.0"
