"""Reference benchmarks and the loops edgeclf is compared with; results are recorded in ``benchmarks/results/``."""
