"""dlp_lib: layer-wise sparsity allocation (Uniform, OWL, DLP, DSA) for pruning decoder-only LLMs.

The pipeline: token windows -> dense statistics -> per-block sparsity -> sequential block-by-block
pruning (magnitude, Wanda, SparseGPT) -> perplexity / zero-shot evaluation -> result record.
"""

__version__ = "0.1.0"
