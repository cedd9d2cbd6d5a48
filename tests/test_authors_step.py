"""benchmarks/authors_step.py: the loop body it reads out of a training script, its stand-in for einops'
reshapes, the goal's verdict, the checkout's commit and its errors, without the authors' code; and, where
AUTHORS_CODE / AUTHORS_CODE_V2 name checkouts of it, one tiny side by side of each release."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import authors_step
import pytest
import torch

SCRIPT = '''
def setup():
    for i, batch in enumerate(loader):
        raise AssertionError("not the training loop")

def main():
    total = 0
    for epoch in range(3):
        loader = zip(first, second)
        for i, ((x, y), z) in enumerate(loader):
            total_loss += x * y + z
            last = i
'''


def test_the_training_loop_body_runs_one_batch_as_written(tmp_path: Path) -> None:
    script = tmp_path / "corrmatch.py"
    script.write_text(SCRIPT)
    body = authors_step.training_loop_body(script)
    namespace = {"total_loss": 1, "__batch__": (4, ((2, 3), 5))}
    exec(body, namespace)  # noqa: S102
    assert (namespace["total_loss"], namespace["last"]) == (12, 4)


def test_a_script_without_one_such_loop_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "corrmatch.py"
    script.write_text("def main():\n    pass\n")
    with pytest.raises(SystemExit, match="expected one `for … in enumerate\\(loader\\)` loop in main, found 0"):
        authors_step.training_loop_body(script)


@pytest.mark.parametrize(
    ("shape", "pattern", "sizes", "expected"),
    [
        ((2, 3, 4), "n h w -> n 1 h w", {}, (2, 1, 3, 4)),
        ((2, 3, 4, 5), "n c h w -> n c (h w)", {}, (2, 3, 20)),
        ((2, 3, 20), "n c (h w) -> n c h w", {"h": 4, "w": 5}, (2, 3, 4, 5)),
        ((2, 3, 20), "n m (h w) -> (n m) 1 h w", {"h": 4, "w": 5}, (6, 1, 4, 5)),
        ((6, 1, 4, 5), "(n m) 1 h w -> (n m) (h w)", {"n": 2, "m": 3}, (6, 20)),
        ((6, 20), "(n m) (h w) -> n m h w", {"n": 2, "m": 3, "h": 4, "w": 5}, (2, 3, 4, 5)),
    ],
)
def test_the_einops_stand_in_reshapes_as_einops_does(
    shape: tuple[int, ...], pattern: str, sizes: dict[str, int], expected: tuple[int, ...]
) -> None:
    tensor = torch.arange(torch.Size(shape).numel()).reshape(shape)
    out = authors_step.rearrange_stand_in(tensor, pattern, **sizes)
    assert out.shape == expected and torch.equal(out.flatten(), tensor.flatten())


def test_the_einops_stand_in_refuses_a_pattern_that_moves_axes() -> None:
    with pytest.raises(SystemExit, match="is not a reshape: pip install einops"):
        authors_step.rearrange_stand_in(torch.zeros(2, 3, 4), "n h w -> n w h")


def rows(authors_peak: int | None, best_ratio: float, best_peak: int | None) -> list[dict]:
    authors = {"code": "authors", "precision": "fp32", "compile": None, "step_s": 1.0, "peak_mib": authors_peak}
    slow = {"code": "toolkit", "precision": "fp32", "compile": None, "step_s": 0.9, "ratio": 0.9, "peak_mib": best_peak}
    best = {"code": "toolkit", "precision": "bf16", "compile": "default", "channels_last": False, "step_s": best_ratio,
            "ratio": best_ratio, "peak_mib": best_peak}
    return [authors, slow, best]


@pytest.mark.parametrize(
    ("authors_peak", "best_ratio", "best_peak", "met", "memory"),
    [
        (1000, 0.45, 900, True, True),  # twice as fast, less memory
        (1000, 0.45, 1100, False, False),  # fast enough, but more memory
        (1000, 0.55, 900, False, True),  # not fast enough
        (None, 0.5, None, True, None),  # the CPU: peaks not apart, time alone
    ],
)
def test_the_goal_judges_the_fastest_row_by_time_and_memory(
    authors_peak: int | None, best_ratio: float, best_peak: int | None, met: bool, memory: bool | None
) -> None:
    verdict = authors_step.goal(rows(authors_peak, best_ratio, best_peak))
    assert (verdict["met"], verdict["no_more_memory"]) == (met, memory)
    assert verdict["best"] == {
        "precision": "bf16", "compile": "default", "channels_last": False, "ratio": best_ratio, "peak_mib": best_peak
    }


def test_a_missing_or_wrong_checkout_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTHORS_CODE", raising=False)
    monkeypatch.delenv("AUTHORS_CODE_V2", raising=False)
    with pytest.raises(SystemExit) as stop:
        authors_step.main([])
    assert stop.value.code == 2
    assert "give --authors-code (CorrMatch) and/or --authors-code-v2 (UniMatch V2)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        authors_step.main(["--authors-code-v2", str(tmp_path)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        f" error: --authors-code-v2 (or AUTHORS_CODE_V2) must be a checkout of "
        f"LiheYoung/UniMatch-V2: {tmp_path / 'unimatch_v2.py'} is not a file"
    )


@pytest.mark.parametrize(("method", "crop"), [("CorrMatch", "33"), ("UniMatchV2", "28")])
def test_the_authors_iteration_runs_beside_the_toolkits(
    method: str, crop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the authors' checkout at hand: one tiny step of each, a result file with the goal's verdict."""
    release = authors_step.RELEASES[method]
    repo = os.environ.get(release.variable)
    if not repo:
        pytest.skip(f"{release.variable}: a checkout of {release.github}")
    monkeypatch.setattr(torch.Tensor, "cuda", torch.Tensor.cuda)  # main sends .cuda() to the CPU: undone after
    authors_step.main([release.option, repo, "--crop", crop, "--steps", "1", "--compile", "none", "--precisions", "fp32",
                       "--results", str(tmp_path)])
    (result,) = (tmp_path / "authors_step").glob(f"*-{method}-*-crop{crop}-eager.json")
    data = json.loads(result.read_text())
    assert [(row["code"], row["precision"]) for row in data["rows"]] == [("authors", "fp32"), ("toolkit", "fp32")]
    assert all(row["step_s"] > 0 for row in data["rows"]) and data["goal"]["target"] == 0.5


def test_the_checkouts_commit_is_its_own_never_an_enclosing_repositorys(tmp_path: Path) -> None:
    repo = tmp_path / "CorrMatch"
    (repo / "model").mkdir(parents=True)
    (repo / "corrmatch.py").write_text("def main():\n    pass\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "the release"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert authors_step.checkout_commit(repo) == head
    assert authors_step.checkout_commit(repo / "model") is None  # inside the repository, not its top
    assert authors_step.checkout_commit(tmp_path) is None  # no repository
