"""Writing split files (DESIGN.md §4): ``python -m corrmatch.data.splits``.

Lines are ``"<image> <mask>"`` relative to the root (unlabeled images without a mask: ``"<image>"``;
a tab between the two when a path holds a space).
The draw is reproducible byte for byte: inputs are sorted, one ``random.Random(seed)`` draws, outputs are
sorted. Labeled, unlabeled and validation sets never overlap.

``--labeled`` is a count (``92``) or a fraction (``0.125`` or ``1/8``). Counts are drawn from the
fine-annotated training list where the dataset has one (Pascal VOC ``ImageSets/Segmentation/train.txt``,
the paper's 92 … 1464 splits); fractions from the whole training pool, rounded up (the paper's 1/16, 1/8,
1/4 of the augmented set, 186 … 1488 of Cityscapes). Unlabeled is the rest of the training pool. Where the
dataset has no official validation set (folder, demo), ``--val`` (count or fraction, default 1/10 of the
annotated images) draws one first.
"""

from __future__ import annotations

import argparse
import math
import os
import random
from fractions import Fraction
from pathlib import Path

from corrmatch.data.io import DataError
from corrmatch.data.presets import PRESETS, Pair, get_preset

__all__ = ["make_splits", "parse_amount", "write_splits", "main"]


def parse_amount(text: str | int | float) -> int | Fraction:
    """``"92"`` → 92; ``"0.125"`` or ``"1/8"`` → Fraction(1, 8); raises ValueError for other text."""
    if isinstance(text, int):
        return text
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    value = Fraction(text)
    if not 0 < value < 1:
        raise ValueError(f"a fraction must lie strictly between 0 and 1, got {text!r}")
    return value


def _resolve(amount: int | Fraction, total: int, what: str) -> int:
    count = amount if isinstance(amount, int) else math.ceil(amount * total)
    if not 1 <= count <= total:
        raise DataError(f"cannot draw {count} {what} samples from a pool of {total}")
    return count


def _line(pair: Pair) -> str:
    """``"<image> <mask>"``, or ``"<image>\t<mask>"`` when a path holds a space (:func:`parse_split`)."""
    if any("\t" in part or "\n" in part for part in pair if part):
        raise DataError(f"'{pair[0]}': a path with a tab or a line break cannot be listed; rename the file")
    separator = "\t" if any(" " in part for part in pair if part) else " "
    return pair[0] if pair[1] is None else f"{pair[0]}{separator}{pair[1]}"


def make_splits(
    root: str | os.PathLike,
    preset: str,
    labeled: int | Fraction,
    seed: int = 0,
    val: int | Fraction = Fraction(1, 10),
) -> dict[str, list[str]]:
    """The lines of ``labeled``, ``unlabeled`` and ``val`` for the dataset under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' does not exist or is not a folder")
    layout = get_preset(preset).layout(root)
    rng = random.Random(seed)
    train = sorted(layout.train, key=_line)
    if not train:
        raise DataError(f"no training samples under '{root}': preset {preset!r} expects {get_preset(preset).expects}")
    annotated = [pair for pair in train if pair[1] is not None]
    if layout.val is None:
        chosen = set(rng.sample(annotated, _resolve(val, len(annotated), "validation")))
        val_pairs = [pair for pair in annotated if pair in chosen]
        train = [pair for pair in train if pair not in chosen]
        annotated = [pair for pair in annotated if pair not in chosen]
    else:
        val_pairs = list(layout.val)
    pool = annotated
    if isinstance(labeled, int) and layout.labeled_pool is not None:
        in_train = set(annotated)
        pool = sorted((pair for pair in layout.labeled_pool if pair in in_train), key=_line)
    count = _resolve(labeled, len(annotated) if isinstance(labeled, Fraction) else len(pool), "labeled")
    chosen = set(rng.sample(pool, count))
    unlabeled = [pair for pair in train if pair not in chosen]
    if not unlabeled:
        raise DataError(f"no unlabeled samples left under '{root}' after drawing {count} labeled")
    return {
        "labeled": sorted(_line(pair) for pair in chosen),
        "unlabeled": sorted(_line(pair) for pair in unlabeled),
        "val": sorted(_line(pair) for pair in val_pairs),
    }


def write_splits(splits: dict[str, list[str]], out: str | os.PathLike) -> dict[str, Path]:
    """Writes ``<name>.txt`` per split into ``out`` (UTF-8, ``\\n`` line ends); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lines in splits.items():
        paths[name] = out / f"{name}.txt"
        with open(paths[name], "w", encoding="utf-8", newline="\n") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m corrmatch.data.splits",
        description="Write labeled.txt / unlabeled.txt / val.txt split files (DESIGN.md §4).",
    )
    parser.add_argument("--root", required=True, help="dataset root")
    parser.add_argument("--preset", required=True, choices=list(PRESETS))
    parser.add_argument(
        "--labeled", required=True, type=parse_amount, help="count (92) or fraction (0.125, 1/8)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--val",
        type=parse_amount,
        default=Fraction(1, 10),
        help="validation draw where there is no official set",
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        splits = make_splits(args.root, args.preset, args.labeled, args.seed, args.val)
    except DataError as error:
        parser.exit(2, f"error: {error}\n")
    for name, path in write_splits(splits, args.out).items():
        print(f"{path}: {len(splits[name])} samples")


if __name__ == "__main__":
    main()
