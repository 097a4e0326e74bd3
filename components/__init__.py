"""KFP component definitions: one module per component, each a thin layer over ``batchpredict``.

``scripts/compile.py`` compiles every component found here into ``component_specs/<module>.yaml``.
"""
