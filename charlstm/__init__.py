"""charlstm: fused LSTM / GRU / RNN ops and character-level language model studies."""

# torch must be imported before the extension: it loads libc10 and libtorch, which _C links to.
import torch  # noqa: F401

from charlstm.build import build_info

__all__ = ["build_info"]
__version__ = "0.1.0"
