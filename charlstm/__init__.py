"""charlstm: fused LSTM / GRU / RNN ops and character-level language model studies.

Importing the package imports nothing heavy: `charlstm.config` and the command line's help work
without torch, which the modules that compute (ops, nn, models, the trainers) import themselves.
"""

__version__ = "0.2.0"
__all__ = ["build_info", "__version__"]


def build_info() -> dict:
    """Torch version, whether CUDA kernels were compiled, OpenMP and SIMD, threads, devices."""
    from charlstm.build import build_info as info
    return info()
