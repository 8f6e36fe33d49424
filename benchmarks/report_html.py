"""Whether ``report.html`` stays usable at 100 clusters of 100,000 images: its size in bytes and
the time to write it, next to everything ``predict`` writes (CSV, page, contact sheets, sizes).

Data: cluster sizes falling geometrically (IF 100) over K clusters, random confidences, and
labels; the images are real CIFAR-10 test images (32 px, from ``../shared/data``, tiled to N;
synthetic gradients where that copy is absent), held in memory as ``predict`` holds an array
source, and, for the "photos" rows, files on disk: 640 x 480 JPEGs (CIFAR images upscaled),
``files`` distinct ones cycled over the N paths, as a photo folder gives them. Where a
``chromium`` binary is found, the time it takes to load the page and screenshot it (headless,
a 1280 x 900 window) is the "opens in" column.

    python -m benchmarks.report_html            # about a minute on one thread
    python -m benchmarks.report_html --smoke    # seconds, writes nothing

Writes ``benchmarks/results/report_html.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "report_html.json"
SHARED_DATA = Path(os.environ.get("DCL_CLUSTER_SHARED_DATA", REPO.parent / "shared" / "data"))


def source_images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` uint8 images ``(n, 32, 32, 3)``, their labels and what they are."""
    path = SHARED_DATA / "cifar10" / "cifar10_test_uint8.npz"
    if path.is_file():
        data = np.load(path)
        reps = -(-n // len(data["y_test"]))
        return (np.tile(data["x_test"], (reps, 1, 1, 1))[:n], np.tile(data["y_test"], reps)[:n].astype(np.int64),
                "CIFAR-10 test images")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32, dtype=np.float32)
    base = (ramp[None, :, None] + ramp[:, None, None] * rng.random((16, 1, 1, 3))[:, None]) % 256  # (16, 32, 32, 3)
    labels = rng.integers(0, 10, n)
    return base[labels % 16].astype(np.uint8), labels, "synthetic gradients"


def long_tailed_clusters(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ids with sizes falling geometrically from the largest to 1/100 of it, shuffled, and confidences."""
    weights = 100.0 ** (-np.arange(k) / max(k - 1, 1))
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(np.int64)
    sizes[0] += n - sizes.sum()
    rng = np.random.default_rng(seed)
    clusters = rng.permutation(np.repeat(np.arange(k), sizes))
    return torch.as_tensor(clusters), torch.as_tensor(rng.beta(5, 2, n), dtype=torch.float32)


def photo_files(folder: Path, images: np.ndarray, count: int) -> list[str]:
    """``count`` 640 x 480 JPEG files made from ``images`` (upscaled, so they compress like photos)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:05d}.jpg"
        Image.fromarray(images[i]).resize((640, 480), Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


def measure(k: int, n: int, source: str, files: int, workdir: Path) -> dict:
    """One row: write the page alone, then everything ``predict`` writes, into fresh folders."""
    from dcl_cluster.callbacks import write_cluster_results
    from dcl_cluster.callbacks.html_report import write_html_report

    images, labels, what = source_images(n)
    clusters, confidence = long_tailed_clusters(n, k)
    labels = torch.as_tensor(labels)
    if source == "photos":
        distinct = photo_files(workdir / "photos", images, min(files, n))
        paths, arrays = [distinct[i % len(distinct)] for i in range(n)], None
    else:
        paths, arrays = [f"/data/photos/{i // 1000:03d}/IMG_{i:06d}.png" for i in range(n)], images
    names = [f"class {c}" for c in range(10)]
    start = time.perf_counter()
    page = write_html_report(workdir / "page", clusters, confidence, labels, paths, arrays, class_names=names)
    page_s = time.perf_counter() - start
    start = time.perf_counter()
    written = write_cluster_results(workdir / "all", clusters, confidence, labels, paths, arrays, class_names=names)
    all_s = time.perf_counter() - start
    text = page.read_text()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    browser_s = None
    if browser:
        start = time.perf_counter()
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                        f"--user-data-dir={workdir / 'profile'}", f"--screenshot={workdir / 'shot.png'}",
                        page.as_uri()], capture_output=True, timeout=300)
        browser_s = round(time.perf_counter() - start, 2) if (workdir / "shot.png").is_file() else None
    return {"clusters": k, "images": n, "source": f"{what} as " + ("640x480 JPEG files" if source == "photos"
                                                                    else "arrays in memory"),
            "distinct_files": len(set(paths)) if source == "photos" else None,
            "smallest_cluster": int(torch.bincount(clusters).min()),
            "largest_cluster": int(torch.bincount(clusters).max()),
            "thumbnails": text.count("data:image/jpeg;base64,"), "report_bytes": page.stat().st_size,
            "report_s": round(page_s, 2), "predict_files": len(written), "predict_s": round(all_s, 2),
            "chromium_screenshot_s": browser_s}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = ([(3, 300, "arrays", 0), (3, 300, "photos", 30)] if args.smoke else
             [(10, 10_000, "arrays", 0), (100, 100_000, "arrays", 0), (100, 100_000, "photos", 1000)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for j, (k, n, source, files) in enumerate(cases):
            rows.append(measure(k, n, source, files, Path(tmp) / str(j)))
            print(json.dumps(rows[-1]), flush=True)
    if not args.smoke:
        OUT.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, one thread",
                                   "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
