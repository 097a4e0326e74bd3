"""Example pipelines composing the components; each compiles to ``pipelines/<module>.yaml``."""
