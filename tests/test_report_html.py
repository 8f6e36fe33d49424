"""report.html (issue #27): the page parsed as HTML holds every cluster, its capped members with
their names and confidences, escapes hostile file names, links images relative or absolute as
they lie, gives the scores and label mix when labels exist, and needs nothing outside itself;
one test renders it in headless Chromium."""

import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import normalized_mutual_info_score

from dcl_cluster.callbacks import write_cluster_results
from dcl_cluster.callbacks.html_report import Thumbnails, member_groups, write_html_report


class Page(HTMLParser):
    """What a reader of the page sees: the start tags, the cluster sections with their members
    (index, confidence, caption title, name text, link), and the text of the elements by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[int, dict] = {}
        self.by_id: dict[str, str] = {}
        self._section, self._member, self._in_name, self._open_ids = None, None, False, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section" and "cluster" in (a.get("class") or "").split():
            self._section = {"size": int(a["data-size"]), "members": [], "text": ""}
            self.sections[int(a["data-cluster"])] = self._section
        if tag == "figure" and self._section is not None:
            self._member = {"index": int(a["data-index"]), "confidence": float(a["data-confidence"]),
                            "name": "", "href": None, "src": None}
            self._section["members"].append(self._member)
        if self._member is not None:
            if tag == "a":
                self._member["href"] = a.get("href")
            if tag == "img":
                self._member["src"] = a.get("src")
            if tag == "figcaption":
                self._member["title"] = a.get("title")
            if tag == "span" and a.get("class") == "name":
                self._in_name = True
        if "id" in a:
            self.by_id[a["id"]] = ""
            self._open_ids.append((tag, a["id"]))

    def handle_endtag(self, tag):
        if tag == "figure":
            self._member = None
        if tag == "span":
            self._in_name = False
        if tag == "section":
            self._section = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._in_name and self._member is not None:
            self._member["name"] += data
        if self._section is not None:
            self._section["text"] += data
        for _, i in self._open_ids:
            self.by_id[i] += data


def _toy(n_per_cluster=(40, 9, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    clusters = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_cluster)])
    confidence = torch.rand(len(clusters), generator=g) * 0.9 + 0.1
    images = torch.randint(0, 256, (len(clusters), 3, 8, 8), dtype=torch.uint8, generator=g)
    return clusters, confidence, images


def test_every_cluster_is_a_section_with_its_size_and_its_capped_members(tmp_path):
    clusters, confidence, images = _toy((40, 9, 3))
    page = Page(write_html_report(tmp_path, clusters, confidence, images=images, per_group=4).read_text())
    assert set(page.sections) == {0, 1, 2} and page.by_id["cluster-count"] == "3"
    for k, section in page.sections.items():
        members = (clusters == k).nonzero().flatten().tolist()
        assert section["size"] == len(members)
        shown = [m["index"] for m in section["members"]]
        assert len(shown) == min(len(members), 3 * 4) and len(set(shown)) == len(shown)
        assert set(shown) <= set(members)
        by_confidence = sorted(members, key=lambda i: -float(confidence[i]))
        assert shown[:4] == by_confidence[:4]  # the most confident first
        if len(members) > 4:  # then the least confident of the others, least first
            assert shown[4:8] == by_confidence[::-1][:min(4, len(members) - 4)]
        for m in section["members"]:
            assert m["confidence"] == pytest.approx(float(confidence[m["index"]]), abs=1e-4)
            assert m["src"].startswith("data:image/jpeg;base64,") and m["name"] == f"#{m['index']}"


def test_the_same_predictions_give_the_same_page(tmp_path):
    clusters, confidence, images = _toy((30, 12))
    first = write_html_report(tmp_path / "a", clusters, confidence, images=images).read_text()
    assert write_html_report(tmp_path / "b", clusters, confidence, images=images).read_text() == first


def test_the_groups_are_disjoint_and_the_random_sample_is_seeded():
    members = np.arange(100)
    a = member_groups(members, 10, np.random.default_rng([0, 3]))
    b = member_groups(members, 10, np.random.default_rng([0, 3]))
    assert a["most confident"].tolist() == list(range(10))
    assert a["least confident"].tolist() == list(range(99, 89, -1))
    sample = a["random sample"].tolist()
    assert len(sample) == 10 and all(10 <= i < 90 for i in sample) and sample == sorted(sample)
    assert sample == b["random sample"].tolist()
    small = member_groups(np.arange(5), 10, np.random.default_rng(0))
    assert [len(v) for v in small.values()] == [5, 0, 0]


def test_hostile_file_names_are_escaped_and_shown_as_text(tmp_path):
    # an unescaped "<script>" would swallow the rest of the page; "/" cannot be in a file name
    hostile = ["<script>alert(1).png", "fish & chips &amp;.png", "say \"hi\" it's.png", "<img src=x onerror=y>.png"]
    paths = [str(tmp_path / "elsewhere" / name) for name in hostile]
    clusters, confidence = torch.tensor([0, 0, 1, 1]), torch.tensor([0.9, 0.8, 0.7, 0.6])
    text = write_html_report(tmp_path / "out", clusters, confidence, labels=torch.tensor([0, 1, 0, 1]),
                             paths=paths, summary={"data": "<b>bold</b> & 'q'"},
                             class_names=["<i>cat</i>", "dog & \"co\""]).read_text()
    page = Page(text)
    assert not any(tag in ("script", "i", "b") for tag, _ in page.tags)  # no markup came in with the names
    assert [tag for tag, _ in page.tags].count("img") == 0  # no image files: no thumbnails, no injected img
    names = {m["name"] for s in page.sections.values() for m in s["members"]}
    assert names == set(hostile)
    titles = {m["title"] for s in page.sections.values() for m in s["members"]}
    assert titles == set(paths)
    assert "<b>bold</b> & 'q'" in page.by_id["summary"] and "<i>cat</i>" in page.sections[0]["text"]


def test_paths_are_relative_under_the_report_folder_and_absolute_elsewhere(tmp_path):
    out = tmp_path / "run"
    inside, outside = out / "photos" / "a b.png", tmp_path / "other" / "c.png"
    for path in (inside, outside):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30, 20), (200, 10, 10)).save(path)
    page = Page(write_html_report(out, torch.tensor([0, 0]), torch.tensor([0.9, 0.5]),
                                  paths=[str(inside), str(outside)]).read_text())
    members = {m["index"]: m for m in page.sections[0]["members"]}
    assert members[0]["title"] == "photos/a b.png" and members[0]["href"] == "photos/a%20b.png"
    assert members[1]["title"] == str(outside) and members[1]["href"] == outside.as_uri()
    assert all(m["src"].startswith("data:image/jpeg;base64,") for m in members.values())  # read from the files


def test_labels_give_the_scores_and_each_clusters_label_mix(tmp_path):
    clusters = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, -1])  # one image without a label
    page = Page(write_html_report(tmp_path, clusters, torch.full((8,), 0.5), labels=labels,
                                  class_names=["cat", "dog", "eel"], class_counts=[50, 20, 5]).read_text())
    scores = {a["data-score"]: None for tag, a in page.tags if "data-score" in a}
    assert {"nmi", "acc", "balanced_acc", "head_acc", "medium_acc", "tail_acc"} <= set(scores)
    text = page.by_id["scores"]
    nmi = normalized_mutual_info_score([0, 0, 1, 1, 1, 1, 2], [0, 0, 0, 1, 1, 1, 2])
    assert f"NMI{nmi:.3f}" in text.replace("\n", "")
    assert f"ACC{6 / 7:.3f}" in text.replace("\n", "")  # 0->cat, 1->dog, 2->eel: 6 of 7 labelled right
    assert "7 labelled images" in text
    assert "cat: 2 (67%)" in page.sections[0]["text"] and "dog: 1 (33%)" in page.sections[0]["text"]
    assert "eel: 1 (100%)" in page.sections[2]["text"]


def test_the_page_needs_nothing_outside_itself(tmp_path):
    clusters, confidence, images = _toy((30, 20))
    text = write_html_report(tmp_path, clusters, confidence, images=images,
                             k_choice={"chosen": 2, "how": "estimated", "k": [2, 3, 4],
                                       "score": [0.5, 0.3, 0.1], "score_name": "silhouette"}).read_text()
    page = Page(text)
    assert "http://" not in text and "https://" not in text
    assert not any(tag in ("script", "link", "iframe", "object") for tag, _ in page.tags)
    assert all(a["src"].startswith("data:image/jpeg;base64,") for tag, a in page.tags if tag == "img")
    circles = [a for tag, a in page.tags if tag == "circle"]
    assert len(circles) == 3 and [c["fill"] for c in circles].count("#d62728") == 1  # the chosen K in red
    assert "2, estimated" in page.by_id["summary"]


def test_each_image_is_thumbnailed_once_for_the_page_and_the_sheets(tmp_path):
    clusters, confidence, images = _toy((40, 30))

    class Counted:
        reads: list[int] = []

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            self.reads.append(int(i))
            return images[i]

    counted = Counted()
    files = write_cluster_results(tmp_path, clusters, confidence, images=counted, per_sheet=5, per_group=4)
    assert len(counted.reads) == len(set(counted.reads)) > 0
    assert {f.name for f in files} >= {"report.html", "cluster_000.png", "cluster_001.png"}
    assert Image.open(tmp_path / "clusters" / "cluster_000.png").size[0] > 2 * 5 * 80  # two halves of 5 columns


def test_a_thumbnail_keeps_the_aspect_and_is_never_stored_larger_than_the_image():
    thumbs = Thumbnails(images=[np.zeros((10, 20, 3), dtype=np.uint8), torch.zeros(3, 200, 100)], side=32)
    assert thumbs[0].size == (20, 10) and thumbs.display_size(thumbs[0]) == (32, 16)
    assert thumbs[1].size == (16, 32) and thumbs.display_size(thumbs[1]) == (16, 32)


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser"):
        binary = shutil.which(name)
        if binary is None:
            continue
        try:  # a stub that only points to another installer (Ubuntu's snap) counts as absent
            if subprocess.run([binary, "--version"], capture_output=True, timeout=60).returncode == 0:
                return binary
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def test_the_page_renders_in_headless_chromium_with_every_cluster(tmp_path):
    binary = _browser()
    if binary is None:
        pytest.skip("no working chromium or chromium-browser on PATH (Debian: apt-get install chromium; "
                    ".ci/run installs it where it can)")
    clusters, confidence, images = _toy((25, 12, 6, 2))
    images[:, 0] = 255  # red-ish thumbnails on a white page
    report = write_html_report(tmp_path / "out", clusters, confidence, images=images, per_group=4)
    flags = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900"]
    shot = tmp_path / "shot.png"
    run = subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), run.stderr.decode(errors="replace")[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 10 and (pixels.min(axis=2) < 128).mean() > 0.01  # not blank: text and pictures
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)}).stdout.decode()
    page = Page(dom)
    assert page.by_id["cluster-count"] == "4" and len(page.sections) == 4
    assert sum(len(s["members"]) for s in page.sections.values()) == 12 + 12 + 6 + 2


def test_the_report_benchmark_runs_at_a_tiny_size():
    from benchmarks import report_html

    rows = report_html.main(["--smoke"])
    assert [row["clusters"] for row in rows] == [3, 3]
    assert all(row["thumbnails"] <= 3 * 30 and row["report_bytes"] > 0 for row in rows)


def test_predict_through_the_callback_writes_the_page_with_the_modules_k_choice(tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from dcl_cluster.callbacks import ClusterPredictionWriter

    class Probs(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Identity()
            self.k_choice = {"chosen": 3, "how": "estimated", "k": [2, 3, 4], "score": [0.2, 0.6, 0.4],
                             "score_name": "silhouette"}

        def predict_step(self, batch, batch_idx):
            return {"cluster_probs": torch.softmax(batch[0] * 5, dim=1)}

    x = torch.eye(3).repeat(4, 1)  # (12, 3): four images of each cluster
    loader = DataLoader(TensorDataset(x, torch.arange(12) % 3), batch_size=5)
    writer = ClusterPredictionWriter(tmp_path)
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[writer]).predict(Probs(), loader)
    page = Page((tmp_path / "report.html").read_text())
    assert page.by_id["cluster-count"] == "3" and all(s["size"] == 4 for s in page.sections.values())
    assert "3, estimated" in page.by_id["summary"] and "Identity" in page.by_id["summary"]
    assert len([a for tag, a in page.tags if tag == "circle"]) == 3
    assert "1.000" in page.by_id["scores"]  # NMI of a perfect clustering
