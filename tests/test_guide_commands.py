"""Every ``dcl-cluster`` command written in the README, the quickstart and the guides parses as
written (placeholders such as ``/path/to/images`` and shell variables filled in): an option the
code no longer has fails here, not in a reader's terminal. Parse only (``--print_config``),
nothing is read or trained; about 1 s a command."""

import re
import shlex
from pathlib import Path

import pytest

from dcl_cluster.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/quickstart.md", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs" / "guides").glob("*.md"))]
FILL = {"$method": "dcl_cluster", "${method}": "dcl_cluster", "$seed": "0", "${seed}": "0",
        # a run folder that fit wrote: its saved config stands in for the shipped one it came from
        "$run/config.yaml": "examples/configs/cluster_folder.yaml", "$run": "runs/cluster_folder/version_0"}


def documented_commands():
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", (REPO / page).read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = re.search(r"(?:dcl-cluster|-m dcl_cluster\.cli)\s+(fit|validate|test|predict)\s(.*)", line)
                if match and not line.lstrip().startswith("#"):
                    args = match.group(2).split(" #")[0]
                    for key, value in FILL.items():
                        args = args.replace(key, value)
                    found.append(pytest.param([match.group(1), *shlex.split(args)], id=f"{page}:{len(found)}"))
    return found


@pytest.mark.parametrize("args", documented_commands())
def test_documented_command_parses(args, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err


def test_the_callbacks_guide_standalone_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    # the scoring-and-plotting block; the others are fragments of a user's own module
    block = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "guides" / "callbacks.md").read_text(), re.S)[2]
    monkeypatch.chdir(tmp_path)
    exec(block, {})
    assert "nmi" in capsys.readouterr().out and (tmp_path / "cluster_sizes.png").is_file()


def test_the_term_guide_runs_as_written_in_a_small_mode(tmp_path, monkeypatch):
    # subclass.md: the term, the module with it, and the training block (2 epochs instead of 60)
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "guides" / "subclass.md").read_text(), re.S)
    small = {"max_epochs=60": "max_epochs=2, limit_train_batches=2, logger=False, enable_progress_bar=False",
             "warmup_epochs=30": "warmup_epochs=1", "every_n_epochs=20": "every_n_epochs=2"}
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks[:2]:
        for old, new in small.items():
            block = block.replace(old, new)
        exec(block, namespace)
    model = namespace["model"]
    assert [t.name for t in model.objectives][-1] == "uniformity" and model.cluster_head.ready
    assert "train/uniformity" in namespace["trainer"].callback_metrics
