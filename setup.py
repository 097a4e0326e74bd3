"""Package layout that pyproject.toml cannot express: find batchpredict's packages, map others.

``components/`` (the KFP component definitions) installs as ``batchpredict_components`` and
``component_specs/`` as ``batchpredict_components.specs``; the repository keeps both at the top.
Everything else about the distribution is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["batchpredict", "batchpredict.*"]),
        "batchpredict_components",
        "batchpredict_components.specs",
    ],
    package_dir={
        "batchpredict_components": "components",
        "batchpredict_components.specs": "component_specs",
    },
)
