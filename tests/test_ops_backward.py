"""The public backward ops (torch.ops.charlstm.{lstm,gru,rnn}_backward) check what they are given
as the forward ops do: each bad argument raises an error naming it before any kernel runs."""

import pytest
import torch

from ops_helpers import make


def lstm_backward_args(device="cpu", ids=False):
    x, (h0, c0), (w_ih, w_hh, b_ih, b_hh) = make("lstm", 3, 2, 5, 4, device=device, ids=ids, requires_grad=False)
    y, hT, cT, gates, cs = torch.ops.charlstm.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return {"grad_y": torch.ones_like(y), "grad_hT": torch.ones_like(hT), "grad_cT": torch.ones_like(cT),
            "x": x, "h0": h0, "c0": c0, "w_ih": w_ih, "w_hh": w_hh, "y": y, "gates": gates, "cs": cs}


def gru_backward_args(device="cpu"):
    x, (h0,), (w_ih, w_hh, b_ih, b_hh) = make("gru", 3, 2, 5, 4, device=device, requires_grad=False)
    y, hT, save = torch.ops.charlstm.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    return {"grad_y": torch.ones_like(y), "grad_hT": torch.ones_like(hT), "x": x, "h0": h0, "w_ih": w_ih,
            "w_hh": w_hh, "y": y, "save": save}


def rnn_backward_args(device="cpu"):
    x, (h0,), (w_ih, w_hh, b_ih, b_hh) = make("rnn_tanh", 3, 2, 5, 4, device=device, requires_grad=False)
    y, hT = torch.ops.charlstm.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, "tanh")
    return {"grad_y": torch.ones_like(y), "grad_hT": torch.ones_like(hT), "x": x, "h0": h0, "w_ih": w_ih,
            "w_hh": w_hh, "y": y, "nonlinearity": "tanh"}


ARGS = {"lstm": lstm_backward_args, "gru": gru_backward_args, "rnn": rnn_backward_args}

# (cell, argument, bad value from the good arguments, expected message)
BAD = [
    ("lstm", "grad_y", lambda a: a["grad_y"][:2],
     r"grad_y must have shape \[3, 2, 4\] \(\[T, B, hidden_size\]"),
    ("lstm", "grad_hT", lambda a: a["grad_hT"][:1], r"grad_hT must have shape \[2, 4\]"),
    ("lstm", "grad_cT", lambda a: a["grad_cT"].float(), r"grad_cT has dtype Float but w_hh has Double"),
    ("lstm", "x", lambda a: a["x"][:, :, :3], r"x must have shape \[T, B, input_size\] with input_size = 5"),
    ("lstm", "x", lambda a: a["x"][:2], r"y must have shape \[2, 2, 4\]"),
    ("lstm", "h0", lambda a: a["h0"].t(), r"h0 must have shape \[2, 4\]"),
    ("lstm", "c0", lambda a: a["c0"][:1], r"c0 must have shape \[2, 4\]"),
    ("lstm", "w_hh", lambda a: a["w_hh"][:12], r"w_hh must have shape \[4\*hidden_size, hidden_size\]"),
    ("lstm", "w_ih", lambda a: a["w_ih"].float(), r"w_ih has dtype Float but w_hh has Double"),
    ("lstm", "y", lambda a: a["y"][..., :3],
     r"y must have shape \[3, 2, 4\] \(\[T, B, hidden_size\]: the forward"),
    ("lstm", "gates", lambda a: a["gates"][..., :8],
     r"gates must have shape \[3, 2, 16\].*saved by lstm_forward"),
    ("lstm", "cs", lambda a: a["cs"].half(), r"cs has dtype Half but w_hh has Double"),
    ("gru", "save", lambda a: a["save"][..., :12], r"save must have shape \[3, 2, 16\].*saved by gru_forward"),
    ("gru", "w_hh", lambda a: torch.zeros(16, 4, dtype=torch.float64),
     r"w_hh must have shape \[3\*hidden_size, hidden_size\]"),
    ("rnn", "nonlinearity", lambda a: "sigmoid", r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
    ("rnn", "y", lambda a: a["y"][:, :1], r"y must have shape \[3, 2, 4\]"),
    ("rnn", "grad_y", lambda a: a["grad_y"].float(), r"grad_y has dtype Float but w_hh has Double"),
]


@pytest.mark.parametrize("cell, name, bad, message", BAD,
                         ids=[f"{c}-{n}-{i}" for i, (c, n, _, _) in enumerate(BAD)])
def test_bad_backward_arguments_raise_clear_errors(cell, name, bad, message):
    args = ARGS[cell]()
    args[name] = bad(args)
    with pytest.raises(RuntimeError, match=message):
        getattr(torch.ops.charlstm, f"{cell}_backward")(*args.values())


def test_backward_of_out_of_range_ids_raises_on_the_cpu():
    args = lstm_backward_args(ids=True)
    args["x"] = torch.full_like(args["x"], 5)
    with pytest.raises(RuntimeError, match=r"token ids x must lie in \[0, 5\)"):
        torch.ops.charlstm.lstm_backward(*args.values())


@pytest.mark.parametrize("cell", list(ARGS))
def test_good_arguments_pass_the_checks(cell, device):
    """The checks accept what the forward op made, the None gradients autograd passes included."""
    args = ARGS[cell](device)
    full = getattr(torch.ops.charlstm, f"{cell}_backward")(*args.values())
    args["grad_y"] = None
    no_grad_y = getattr(torch.ops.charlstm, f"{cell}_backward")(*args.values())
    assert all(torch.isfinite(t).all() for t in (*full, *no_grad_y) if t.numel())
    assert not torch.equal(full[-1], no_grad_y[-1])


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="mixed devices need a CUDA device")
@pytest.mark.parametrize("cell", list(ARGS))
@pytest.mark.parametrize("name", ["x", "h0", "y", "grad_y"])
def test_backward_arguments_on_two_devices_are_refused(cell, name):
    """Without the check a host pointer would reach a kernel, and the illegal address would end
    the process's CUDA context."""
    args = ARGS[cell]("cuda")
    args[name] = args[name].cpu()
    with pytest.raises(RuntimeError, match=f"{name} is on cpu but w_(ih|hh) is on cuda.*move all inputs to one"):
        getattr(torch.ops.charlstm, f"{cell}_backward")(*args.values())
    # The context is still usable.
    assert torch.ones(2, device="cuda").sum().item() == 2
