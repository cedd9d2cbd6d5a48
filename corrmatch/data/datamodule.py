"""The semi-supervised LightningDataModule (DESIGN.md §4; batch keys in docs/DESIGN.md §6).

Training yields one dict per step, ``{"labeled": L, "unlabeled": U, "unlabeled_mix": U2}``, from a
``CombinedLoader`` in ``min_size`` mode over three loaders: the labeled list repeated and shuffled to the
unlabeled length, and two independent shuffles of the unlabeled list. Every training loader uses an
explicit :class:`~torch.utils.data.distributed.DistributedSampler` (also with one process) with its own
seed, so each rank reads its own shard, Lightning's ``set_epoch`` reshuffles it every epoch, the two
unlabeled loaders differ, and Lightning leaves the samplers alone. Validation and prediction shard the
list over ranks without padding (:class:`ShardSampler`), so every image is evaluated exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader, rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from corrmatch.data.checks import validate_dataset
from corrmatch.data.datasets import LabeledDataset, PredictDataset, UnlabeledDataset, ValDataset
from corrmatch.data.demo import DEFAULT_DEMO_ROOT, ensure_demo
from corrmatch.data.io import DataError, SplitEntry
from corrmatch.data.presets import get_preset, load_class_file
from corrmatch.data.transforms import AugmentConfig
from corrmatch.errors import check_range

__all__ = ["DataContract", "SemiSupervisedDataModule", "ShardSampler"]

PresetName = Literal["pascal", "cityscapes", "coco", "ade20k", "folder", "demo"]
ROLES = ("labeled", "unlabeled", "val")


@dataclass(frozen=True)
class DataContract:
    """What a method reads from the training data; each method declares its own
    (``SemiSupervisedMethod.data_contract``) and the datamodule takes it from the attached method.

    Args:
        num_strong_views: strong views per unlabeled sample: 1 (FixMatch, CorrMatch) or 2 (UniMatch,
            adding ``image_s2`` and ``cutmix_box2``).
        labeled_only: train on the labeled list alone, an epoch being one pass over it (the supervised
            baseline as UniMatch's ``supervised.py`` trains it); no unlabeled split is needed.
        mix_batch: a second unlabeled batch (``unlabeled_mix``) to paste the CutMix boxes from; UniMatch
            V2 pastes from its own batch in reverse order and reads none.
    """

    num_strong_views: Literal[1, 2] = 1
    labeled_only: bool = False
    mix_batch: bool = True


def split_files(root: Path, split: str) -> dict[str, Path]:
    """The lists of ``split`` (§4): ``<root>/splits/<split>/labeled.txt`` and ``unlabeled.txt``, and
    the validation list ``<root>/splits/<split>/val.txt`` if present, else ``<root>/splits/val.txt``."""
    folder = root / "splits" / split
    own_val = folder / "val.txt"
    return {
        "labeled": folder / "labeled.txt",
        "unlabeled": folder / "unlabeled.txt",
        "val": own_val if own_val.is_file() else root / "splits" / "val.txt",
    }


class ShardSampler(DistributedSampler):
    """Indices ``rank, rank + R, …`` in order: disjoint shards covering the dataset once, no padding.

    A ``DistributedSampler`` subclass so that Lightning does not replace it with a padding one.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class SemiSupervisedDataModule(pl.LightningDataModule):
    """Labeled, unlabeled and validation data of one dataset (DESIGN.md §4).

    Args:
        root: dataset root; for the demo preset data/demo by default, generated on first use.
        split: name of a split folder: <root>/splits/<split>/labeled.txt and unlabeled.txt, with the
            validation list <root>/splits/<split>/val.txt if present, else <root>/splits/val.txt
            (e.g. 92 or 1_16).
        labeled_split: a split file (lines "<image> <mask>", relative to root) replacing the labeled
            list that split names; the demo preset reads <root>/splits/labeled.txt by default.
        unlabeled_split: a split file replacing the unlabeled list (lines "<image>" or
            "<image> <mask>").
        val_split: a split file replacing the validation list.
        num_classes: class count K; by default the preset's, or the count of class names.
        crop_size: training crop in pixels; by default the preset's (Pascal 321, Cityscapes 801, COCO
            513, ADE20K 518, folder 321, demo 96).
        batch_size: labeled images per step and process (and as many unlabeled ones).
        num_workers: DataLoader worker processes per loader (three training loaders, one validation
            loader); 0 loads in the training process.
        preset: the dataset family: class names, palette and file layout (pascal, cityscapes, coco,
            ade20k, folder for your own images and masks, demo).
        class_names: a list, or a YAML or JSON file holding a list, an {index: name} mapping or
            {classes: [...], palette: [[r, g, b], ...]}; the folder preset reads <root>/classes.yaml
            when neither this nor num_classes is given. Background is a class: name it first.
        val_batch_size: validation batch (whole images; above 1 needs images of one size).
        predict_dir: folder of images for predict; the validation images otherwise.
        augment: the augmentation parameters (DESIGN.md §4; the paper's by default).
        seed: seed of the labeled list's repetition and of the samplers; by default seed_everything's.
        check_masks: check before training that the labeled and validation masks hold only values
            0..K-1 and 255 (ignored), and that the labeled masks show at least two classes.
        demo_seed: seed of the generated demo dataset.
        demo_clutter: false for the demo's plain variant (no textured clutter in the background).
        demo_texture_scale: the demo's texture periods times this.
        demo_object_scale: the demo's object sizes times this.
        demo_class_hues: false for the demo's variant whose objects have random hues (shape and texture
            tell the class).

    What the method needs (strong views, labeled only) is the contract attribute, taken from the
    attached method in setup; set it directly to use the datamodule alone.
    """

    def __init__(
        self,
        root: str | None = None,
        split: str | None = None,
        labeled_split: str | None = None,
        unlabeled_split: str | None = None,
        val_split: str | None = None,
        num_classes: int | None = None,
        crop_size: int | None = None,
        batch_size: int = 4,
        num_workers: int = 2,
        preset: PresetName = "pascal",
        class_names: list[str] | str | None = None,
        val_batch_size: int = 1,
        predict_dir: str | None = None,
        augment: AugmentConfig | None = None,
        seed: int | None = None,
        check_masks: bool = True,
        demo_seed: int = 0,
        demo_clutter: bool = True,
        demo_texture_scale: float = 1.0,
        demo_object_scale: float = 1.0,
        demo_class_hues: bool = True,
    ) -> None:
        super().__init__()
        spec = get_preset(preset)
        if root is None:
            if preset != "demo":
                raise DataError(f"data.root is required for preset {preset!r}")
            root = DEFAULT_DEMO_ROOT
        self.root = Path(root)
        self.preset = preset
        self.split = None if split is None else str(split)
        given = {"labeled": labeled_split, "unlabeled": unlabeled_split, "val": val_split}
        if self.split is not None:
            named = split_files(self.root, self.split)
        elif preset == "demo":
            named = {role: self.root / "splits" / f"{role}.txt" for role in ROLES}
        else:
            named = {}
        self.splits = {role: given[role] or (str(named[role]) if role in named else None) for role in ROLES}
        if preset == "folder" and class_names is None and num_classes is None:
            class_names = str(self.root / "classes.yaml")
        self.class_names, palette = self._resolve_classes(spec.class_names, class_names, num_classes)
        self.palette = spec.palette.copy() if palette is None else palette
        self.num_classes = len(self.class_names)
        self.crop_size = spec.crop_size if crop_size is None else crop_size
        for setting, value, low in (
            ("data.crop_size", self.crop_size, 1),
            ("data.batch_size", batch_size, 1),
            ("data.val_batch_size", val_batch_size, 1),
            ("data.num_workers", num_workers, 0),
        ):
            check_range(setting, value, low, error=DataError)
        check_range("data.demo_texture_scale", demo_texture_scale, above=0, error=DataError)
        check_range("data.demo_object_scale", demo_object_scale, above=0, error=DataError)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_batch_size = val_batch_size
        self.predict_dir = predict_dir
        self.augment = augment or AugmentConfig()
        self.seed = seed
        self.check_masks = check_masks
        self.demo_seed = demo_seed
        self.demo_clutter = demo_clutter
        self.demo_texture_scale = demo_texture_scale
        self.demo_object_scale = demo_object_scale
        self.demo_class_hues = demo_class_hues
        self.contract = DataContract()
        self._entries: dict[str, list[SplitEntry]] = {}
        self._predict: PredictDataset | None = None

    @staticmethod
    def _resolve_classes(
        preset_names: tuple[str, ...] | None, class_names: list[str] | str | None, num_classes: int | None
    ) -> tuple[list[str], np.ndarray | None]:
        palette = None
        if isinstance(class_names, str | os.PathLike):
            names, palette = load_class_file(class_names)
        elif class_names is not None:
            names = list(class_names)
        elif preset_names is not None and num_classes in (None, len(preset_names)):
            names = list(preset_names)
        elif num_classes is not None:
            names = [f"class_{index}" for index in range(num_classes)]
        else:
            raise DataError("data.num_classes or data.class_names is required for this preset")
        if num_classes is not None and num_classes != len(names):
            raise DataError(f"data.num_classes is {num_classes} but {len(names)} class names are given")
        if len(names) < 2:
            if class_names is None:
                source, given = "data.num_classes", f"is {num_classes}"
            else:
                source = str(class_names) if isinstance(class_names, str | os.PathLike) else "data.class_names"
                given = f"names {len(names)} class ({', '.join(map(repr, names)) or 'none'})"
            example = names[0] if class_names is not None and names else "object"
            raise DataError(
                f"{source} {given}; a segmentation needs at least two classes, so name the background too, "
                f"e.g. [background, {example}] with mask value 0 for background and 1 for {example}"
            )
        if len(names) > 255:
            raise DataError(f"the class count must be at most 255 (255 is the ignore index), got {len(names)}")
        return names, palette

    def _ensure_demo(self) -> None:
        ensure_demo(
            self.root,
            seed=self.demo_seed,
            clutter=self.demo_clutter,
            texture_scale=self.demo_texture_scale,
            object_scale=self.demo_object_scale,
            class_hues=self.demo_class_hues,
        )

    def prepare_data(self) -> None:
        """Generates the demo dataset on first use (local rank 0 only, per Lightning)."""
        if self.preset == "demo":
            self._ensure_demo()

    def setup(self, stage: str | None = None) -> None:
        """Takes the attached method's :class:`DataContract` and validates the split files the stage
        needs (:mod:`corrmatch.data.checks`) before any step runs."""
        if self.trainer is not None:
            self.contract = getattr(self.trainer.lightning_module, "data_contract", self.contract)
        self.check(stage)

    def check(self, stage: str | None = None) -> None:
        """Validates the split files ``stage`` needs (all of them for ``fit``); the demo data is
        generated first if missing. Raises a one-line :class:`DataError` naming the file at fault."""
        if self.preset == "demo":
            self._ensure_demo()
        if stage == "predict":
            self._validate(() if self.predict_dir else ("val",))
            self._predict_dataset()
        elif stage in ("validate", "test"):
            self._validate(("val",))
        else:
            self._validate(self._train_roles + ("val",))

    @property
    def _train_roles(self) -> tuple[str, ...]:
        return ("labeled",) if self.contract.labeled_only else ("labeled", "unlabeled")

    def _validate(self, roles: tuple[str, ...]) -> None:
        todo = [role for role in roles if role not in self._entries]
        if self.split is not None and not (self.root / "splits" / self.split).is_dir():
            found = sorted(p.name for p in (self.root / "splits").glob("*") if p.is_dir())
            raise DataError(
                f"data.split {self.split!r}: no folder {self.root / 'splits' / self.split}"
                + (f" (splits there: {', '.join(found)})" if found else "")
            )
        for role in todo:
            if self.splits[role] is None:
                raise DataError(f"data.split or data.{role}_split is required for preset {self.preset!r}")
        if todo:
            found = validate_dataset(
                self.root,
                num_classes=self.num_classes,
                check_masks=self.check_masks,
                **{role: self.splits[role] for role in todo},
            )
            self._entries.update(found)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _base_seed(self) -> int:
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: DistributedSampler,
        drop_last: bool,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    def _evaluation_loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """Every item once, sharded across ranks, with a generator of its own: each iterator of a
        DataLoader draws a seed from its generator, and drawn from torch's global one it would shift the
        random draws of the training steps that follow (CorrMatch's region rows, dropout masks), so
        that how often a run validates would change how it trains."""
        sampler = ShardSampler(dataset, *self._world())
        return self._loader(dataset, batch_size, sampler, drop_last=False, generator=torch.Generator())

    def train_datasets(self) -> tuple[LabeledDataset, UnlabeledDataset | None]:
        """The labeled dataset (repeated to the unlabeled length) and the unlabeled dataset; with
        ``contract.labeled_only``, the labeled dataset once over and no unlabeled dataset."""
        self._validate(self._train_roles)
        world_size, rank = self._world()
        if self.contract.labeled_only:
            entries = self._entries["labeled"]
            if len(entries) < self.batch_size * world_size:
                raise DataError(
                    f"{self.splits['labeled']}: {len(entries)} samples cannot fill one batch of "
                    f"{self.batch_size} on each of {world_size} process(es)"
                )
            labeled = LabeledDataset(
                self.root, entries, self.crop_size, self.augment, len(entries), self._base_seed()
            )
            labeled.rank = rank
            return labeled, None
        unlabeled = UnlabeledDataset(
            self.root,
            self._entries["unlabeled"],
            self.crop_size,
            self.augment,
            self.contract.num_strong_views,
        )
        labeled = LabeledDataset(
            self.root,
            self._entries["labeled"],
            self.crop_size,
            self.augment,
            len(unlabeled),
            self._base_seed(),
        )
        if len(unlabeled) < self.batch_size * world_size:
            raise DataError(
                f"{self.splits['unlabeled']}: {len(unlabeled)} samples cannot fill one batch of "
                f"{self.batch_size} on each of {world_size} process(es)"
            )
        labeled.rank = unlabeled.rank = rank
        return labeled, unlabeled

    def train_dataloader(self) -> CombinedLoader:
        """``CombinedLoader({"labeled", "unlabeled", "unlabeled_mix"}, mode="min_size")``, drop_last
        (no ``unlabeled_mix`` without ``contract.mix_batch``; ``{"labeled"}`` alone with
        ``contract.labeled_only``)."""
        labeled, unlabeled = self.train_datasets()
        world_size, rank = self._world()
        seed = self._base_seed()
        loaders = {}
        datasets = (("labeled", labeled), ("unlabeled", unlabeled), ("unlabeled_mix", unlabeled))
        count = 1 if unlabeled is None else 3 if self.contract.mix_batch else 2
        for offset, (name, dataset) in enumerate(datasets[:count]):
            sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed + offset
            )
            loaders[name] = self._loader(dataset, self.batch_size, sampler, drop_last=True)
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        """Whole validation images, ``{"image", "mask", "id"}``, each evaluated once over all ranks."""
        self._validate(("val",))
        dataset = ValDataset(self.root, self._entries["val"], self.augment)
        return self._evaluation_loader(dataset, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The validation split: the paper reports its results on it."""
        return self.val_dataloader()

    def _predict_dataset(self) -> PredictDataset:
        """The images of ``predict_dir`` (or of the validation split), read once; says how the outputs
        are named when file names repeat (:func:`~corrmatch.data.datasets.prediction_ids`)."""
        if self._predict is None:
            if self.predict_dir:
                self._predict = PredictDataset.from_directory(self.predict_dir, self.augment)
            else:
                self._validate(("val",))
                images = [entry.image for entry in self._entries["val"]]
                self._predict = PredictDataset(self.root, images, self.augment)
            if self._predict.naming_note:
                rank_zero_info(self._predict.naming_note)
        return self._predict

    def predict_dataloader(self) -> DataLoader:
        """Whole images of ``predict_dir`` (or of the validation split), ``{"image", "id"}``, batch 1."""
        return self._evaluation_loader(self._predict_dataset(), 1)
