import signal

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device visible: CUDA parity tests need a GPU")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def first_layer_widths(monkeypatch):
    """The input width of the first layer's weight in every call of charlstm.ops.layers, in order:
    the vocabulary where an embedding was folded into it, input_size otherwise."""
    from charlstm import ops
    widths, layers = [], ops.layers

    def spy(x, hx, weights, **options):
        widths.append(weights[0].shape[1])
        return layers(x, hx, weights, **options)

    monkeypatch.setattr(ops, "layers", spy)
    return widths


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: training commands save under ./runs by default,
    and a test must find no run there but its own."""
    monkeypatch.chdir(tmp_path)


def pytest_configure(config):
    """Ctrl-C reaches the tests and the commands they start, however the test run was started.

    A shell script's `command &` starts the command with SIGINT ignored, and an ignored signal stays
    ignored in every process started from there: the Ctrl-C tests' commands would run through
    their SIGINT, and training, which keeps a caller's choice to ignore it, would too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
