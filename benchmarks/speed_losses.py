"""Speed of the debiased contrastive loss (forward + backward) against lightly's NTXentLoss,
the paper's plain formulation, and the floor of the three matmuls it needs.

    python -m benchmarks.speed_losses            # B in {256, 1024, 2048}, d = 128
    python -m benchmarks.speed_losses --smoke    # tiny, for CI
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_medians, peak_memory_mib
from dcl_cluster.losses import debiased_contrastive_loss  # noqa: E402

TEMPERATURE, TAU_PLUS = 0.5, 0.1


def reference_debiased(z_a, z_b, t=TEMPERATURE, tau_plus=TAU_PLUS):
    """The formulation of the paper's code: the full exp matrix, a boolean mask, linear space."""
    b = z_a.shape[0]
    z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    out = torch.cat([z_a, z_b])
    neg = torch.exp(out @ out.t() / t)
    mask = torch.ones(2 * b, 2 * b, dtype=torch.bool)
    idx = torch.arange(b)
    mask[idx, idx] = mask[idx + b, idx + b] = mask[idx, idx + b] = mask[idx + b, idx] = False
    neg = neg.masked_select(mask).view(2 * b, -1)
    pos = torch.exp((z_a * z_b).sum(1) / t)
    pos = torch.cat([pos, pos])
    n = 2 * b - 2
    ng = ((neg.sum(1) - tau_plus * n * pos) / (1 - tau_plus)).clamp(min=n * math.exp(-1 / t))
    return (-torch.log(pos / (pos + ng))).mean()


def make_inputs(b, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, d, generator=g).requires_grad_(True),
            torch.randn(b, d, generator=g).requires_grad_(True))


def make_contender(name, b, d):
    """A zero-argument callable running one forward + backward of contender ``name``."""
    torch.set_num_threads(2)
    z_a, z_b = make_inputs(b, d)
    if name == "dcl_cluster (debiased)":
        def step():
            debiased_contrastive_loss(z_a, z_b, TEMPERATURE, TAU_PLUS).backward()
    elif name == "reference (paper's formulation)":
        def step():
            reference_debiased(z_a, z_b).backward()
    elif name == "lightly NTXentLoss":
        from lightly.loss import NTXentLoss
        loss_fn = NTXentLoss(temperature=TEMPERATURE)

        def step():
            loss_fn(z_a, z_b).backward()
    elif name == "matmul floor (3 matmuls)":
        z = torch.cat([z_a, z_b]).detach()
        g = torch.randn(2 * b, 2 * b)

        def step():
            _ = z @ z.t()
            _ = g @ z
            _ = g.t() @ z
    else:
        raise ValueError(name)
    return step


def has_lightly() -> bool:
    try:
        import lightly.loss  # noqa: F401
    except ImportError:
        return False
    return True


def run(batch_sizes, d, repeats, memory=True) -> list[dict]:
    torch.set_num_threads(2)
    names = ["dcl_cluster (debiased)", "reference (paper's formulation)", "matmul floor (3 matmuls)"]
    if has_lightly():
        names.insert(1, "lightly NTXentLoss")
    rows = []
    for b in batch_sizes:
        times = interleaved_medians({n: make_contender(n, b, d) for n in names}, repeats)
        for n in names:
            row = {"B": b, "d": d, "contender": n, "ms": 1000 * times[n],
                   "x_ours": times[n] / times["dcl_cluster (debiased)"]}
            if memory and not n.startswith("matmul"):
                row["peak_mib"] = peak_memory_mib(functools.partial(make_contender, n, b, d))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| B | contender | ms (median) | time / ours | peak memory (MiB) |", "|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "-"
        lines.append(f"| {r['B']} | {r['contender']} | {r['ms']:.1f} | {r['x_ours']:.2f} | {mem} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, no memory runs")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.smoke:
        rows = run([16], 8, repeats=1, memory=False)
    else:
        rows = run([256, 1024, 2048], 128, args.repeats)
    print(markdown(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
