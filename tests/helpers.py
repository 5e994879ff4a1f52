"""What several test files share."""

import torch
import torch.nn.functional as F


# The language-model step (charlstm.ops.lm_sgd_step) and its specification, which
# tests/test_lm_step.py and the per-build check of tests/test_ops.py compare.

LM_STEP_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
def make(cell, T, B, V, H, dtype=torch.float64, device="cpu", bias=(True, True), seed=0):
    """Random inputs of one language-model step: (window [T + 1, B], state, weights)."""
    gen = torch.Generator().manual_seed(seed)
    G = LM_STEP_GATES[cell]

    def uniform(*shape, scale=0.6):
        return ((torch.rand(*shape, generator=gen, dtype=dtype) * 2 - 1) * scale).to(device)

    weights = {
        "w_ih": uniform(G * H, V), "w_hh": uniform(G * H, H),
        "b_ih": uniform(G * H, scale=0.2) if bias[0] else None,
        "b_hh": uniform(G * H, scale=0.2) if bias[1] else None,
        "w_out": uniform(H, V), "b_out": uniform(V, scale=0.2),
    }
    window = torch.randint(0, V, (T + 1, B), generator=gen).to(device)
    state = tuple(uniform(B, H, scale=0.5) for _ in range(2 if cell == "lstm" else 1))
    return window, state, weights


def autograd_step(cell, window, state, weights, lr, clip):
    """The specification: -> loss, norm, logits, new weights (dict), new state."""
    from charlstm import reference

    w = {k: None if v is None else v.clone().requires_grad_() for k, v in weights.items()}
    rec = (w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    if cell == "lstm":
        y, new_state = reference.lstm(window[:-1], state[0], state[1], *rec)
    elif cell == "gru":
        y, h = reference.gru(window[:-1], state[0], *rec)
        new_state = (h,)
    else:
        y, h = reference.rnn(window[:-1], state[0], *rec, nonlinearity=cell.split("_")[1])
        new_state = (h,)
    logits = y.reshape(-1, y.shape[-1]) @ w["w_out"] + w["b_out"]
    loss = F.cross_entropy(logits, window[1:].reshape(-1))
    loss.backward()
    leaves = [v for v in w.values() if v is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.grad) for v in leaves]))
    scale = clip / max(norm.item(), clip) if clip > 0 else 1.0
    with torch.no_grad():
        new = {k: None if v is None else v - lr * scale * v.grad for k, v in w.items()}
    return loss.detach(), norm, logits.detach(), new, tuple(s.detach() for s in new_state)


def fused_step(cell, window, state, weights, lr, clip):
    """The same step as one charlstm.ops.lm_sgd_step on copies of the weights."""
    from charlstm import ops

    w = {k: None if v is None else v.clone() for k, v in weights.items()}
    loss, norm, logits, new_state = ops.lm_sgd_step(window, state, w["w_ih"], w["w_hh"],
                                                    w["b_ih"], w["b_hh"], w["w_out"], w["b_out"],
                                                    cell=cell, lr=lr, clip=clip)
    return loss, norm, logits, w, new_state


