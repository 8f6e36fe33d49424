"""Why ``num_clusters="auto"`` chose its K, as a person reads it: the mean silhouette per
candidate K drawn beside the run's other files, and the numbers as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dcl_cluster.cluster.estimate_k import STRUCTURE_SILHOUETTE, KEstimate

__all__ = ["write_k_scores"]


def write_k_scores(estimate: KEstimate, folder: str | os.PathLike, name: str = "k_scores") -> Path:
    """Write ``<name>.json`` (:meth:`KEstimate.as_dict`) and ``<name>.png`` into ``folder``
    (created); returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(estimate.as_dict(), indent=2) + "\n")
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(estimate.candidates, estimate.silhouette, marker="o", color="tab:blue", label="mean silhouette")
    ax.axhline(STRUCTURE_SILHOUETTE, color="grey", linestyle="--", linewidth=1,
               label=f"{STRUCTURE_SILHOUETTE}: below at every K = no clear structure")
    ax.axvline(estimate.by_silhouette, color="tab:blue", linestyle=":", linewidth=1)
    ax.axvline(estimate.by_separation, color="tab:orange", linestyle=":", linewidth=1,
               label=f"separation test: K={estimate.by_separation}")
    verdict = f"chosen K={estimate.k}" if estimate.structured else "no clear structure: K not chosen"
    ax.set_title(f"num_clusters='auto': {verdict}", fontsize=10)
    ax.set_xlabel("K")
    ax.set_ylabel("mean silhouette")
    ax.legend(fontsize=7, loc="best")
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    return path
