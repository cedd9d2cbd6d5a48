"""benchmarks/authors_step.py's two pieces that run without the authors' checkout: the loop body it
reads out of a training script, and its stand-in for einops' reshapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import authors_step  # noqa: E402

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
