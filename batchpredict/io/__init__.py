"""Reading instances and writing results, over one filesystem layer (fsspec)."""
