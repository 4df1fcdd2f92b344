"""hookwise benchmarks (``make bench``)."""
