"""edgeclf: from a Keras training run to a fast, faithful classifier on a CPU or edge device.

Subpackages (installed under this namespace from the repository's top-level folders):

- ``edgeclf.edge_runtime``: preprocessing contract and inference; never imports TensorFlow.
- ``edgeclf.models``: backbone registry and model builder.
- ``edgeclf.toolkit``: data loading, training, evaluation (imports TensorFlow lazily).
- ``edgeclf.benchmarks``: benchmark scripts and reference results.
"""

__version__ = "0.1.0"
