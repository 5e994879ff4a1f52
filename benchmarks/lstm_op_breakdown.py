"""Where the fused LSTM's time goes: the forward and backward ops against at::mm doing their products.

    python benchmarks/lstm_op_breakdown.py [threads]
Times, at (T, B) = (10, 64) and hidden 64 and 256 with token-id input, the forward and backward
ops and, separately, the products the ops compute (the T per-step products of each direction and
the weight-gradient product) done with torch.mm. The ops run their products through oneDNN's
brgemm kernel instead, so the ratio says how the whole ops compare with torch.mm's products alone.
Prints microseconds (medians) and writes benchmarks/results/lstm_op_breakdown.json.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

import charlstm.ops  # noqa: F401  (registers torch.ops.charlstm)
from charlstm.checkpoint import atomic_write_bytes


def median_us(fn, repeats=100, warmup=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def breakdown(hidden, T=10, B=64, V=27):
    H = hidden
    ops = torch.ops.charlstm
    x = torch.randint(0, V, (T, B))
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    w_ih, w_hh, b = torch.randn(4 * H, V) * 0.1, torch.randn(4 * H, H) * 0.1, torch.zeros(4 * H)
    y, _, _, gates, cs = ops.lstm_forward(x, h0, c0, w_ih, w_hh, b, None)
    grad_y = torch.randn_like(y)
    h, g, dh = torch.randn(B, H), torch.empty(B, 4 * H), torch.empty(B, H)
    dpre, prev = torch.randn(T * B, 4 * H), torch.randn(T * B, H)
    return {
        "hidden": H,
        "forward_op_us": median_us(lambda: ops.lstm_forward(x, h0, c0, w_ih, w_hh, b, None)),
        "backward_op_us": median_us(lambda: ops.lstm_backward(grad_y, None, None, x, h0, c0, w_ih, w_hh,
                                                              y, gates, cs)),
        "forward_products_us": median_us(lambda: [torch.mm(h, w_hh.t(), out=g) for _ in range(T)]),
        "backward_products_us": median_us(lambda: [torch.mm(g, w_hh, out=dh) for _ in range(T)]),
        "weight_gradient_product_us": median_us(lambda: dpre.t().mm(prev)),
    }


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    rows = [breakdown(h) for h in (64, 256)]
    for r in rows:
        products = r["forward_products_us"] + r["backward_products_us"] + r["weight_gradient_product_us"]
        ops_total = r["forward_op_us"] + r["backward_op_us"]
        print(f"hidden {r['hidden']:>3}: forward {r['forward_op_us']:.0f} us, backward {r['backward_op_us']:.0f} us;"
              f" the same products with torch.mm alone {products:.0f} us, {products / ops_total:.2f}x the whole ops")
    out = Path(__file__).parent / "results" / "lstm_op_breakdown.json"
    atomic_write_bytes(out, json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
