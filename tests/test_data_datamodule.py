"""SemiSupervisedDataModule (DESIGN.md §4, docs/DESIGN.md §6): batches, samplers, DDP shards, presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import QUIET_TRAINER
from PIL import Image
from torch.utils.data.distributed import DistributedSampler

from corrmatch.data import DataContract, DataError, SemiSupervisedDataModule, ShardSampler, generate_demo

COUNTS = {"num_labeled": 3, "num_unlabeled": 8, "num_val": 2}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", seed=0, **COUNTS)


def make_module(root, contract: DataContract | None = None, **kwargs) -> SemiSupervisedDataModule:
    options = {"root": str(root), "preset": "demo", "batch_size": 2, "num_workers": 0, "seed": 0}
    module = SemiSupervisedDataModule(**(options | kwargs))
    module.contract = contract or DataContract()
    return module


def test_attributes_and_batches(demo_root):
    module = make_module(demo_root, DataContract(num_strong_views=2))
    assert module.num_classes == 6 and module.class_names[0] == "background" and module.crop_size == 96
    assert module.palette.shape == (256, 3) and module.palette.dtype == np.uint8
    module.prepare_data()
    module.setup("fit")
    iterator = iter(module.train_dataloader())
    assert len(iterator) == 4  # 8 unlabeled / batch 2
    batch, _, _ = next(iterator)
    assert set(batch) == {"labeled", "unlabeled", "unlabeled_mix"}
    assert batch["labeled"]["image"].shape == (2, 3, 96, 96) and batch["labeled"]["mask"].dtype == torch.long
    assert set(batch["unlabeled"]) == {
        "image_w",
        "image_s",
        "image_s2",
        "ignore",
        "cutmix_box",
        "cutmix_box2",
        "mask_w",  # the demo's unlabeled lines have masks: ground truth for the pseudo-label metrics
    }
    ignore, truth = batch["unlabeled"]["ignore"], batch["unlabeled"]["mask_w"]
    assert (truth[ignore == 255] == 255).all() and truth[truth != 255].max() < 6
    val = next(iter(module.val_dataloader()))
    assert val["image"].shape[:2] == (1, 3) and val["mask"].dim() == 3 and isinstance(val["id"][0], str)
    predict = next(iter(module.predict_dataloader()))
    assert set(predict) == {"image", "id"} and predict["id"] == [Path(val["id"][0]).name]  # named by file


def test_labeled_list_is_repeated_to_the_unlabeled_length(demo_root):
    module = make_module(demo_root)
    module.setup("fit")
    labeled, unlabeled = module.train_datasets()
    assert len(labeled) == len(unlabeled) == 8
    counts = {entry.image: 0 for entry in module._entries["labeled"]}
    for entry in labeled.entries:
        counts[entry.image] += 1
    assert sorted(counts.values()) == [2, 3, 3]  # 3 × ceil(8/3) = 9 shuffled, truncated to 8


def test_labeled_only_trains_on_one_pass_over_the_labeled_list(demo_root, tmp_path):
    module = make_module(
        demo_root, DataContract(labeled_only=True), unlabeled_split=str(tmp_path / "absent.txt")
    )
    module.setup("fit")  # the unlabeled split is neither needed nor read
    labeled, unlabeled = module.train_datasets()
    assert unlabeled is None and len(labeled) == 3
    assert sorted(entry.image for entry in labeled.entries) == sorted(
        entry.image for entry in module._entries["labeled"]
    )
    batches = list(module.train_dataloader())
    assert len(batches) == 1 and set(batches[0][0]) == {"labeled"}  # 3 labeled, batch 2, drop_last


def sampler_indices(loader, epoch: int = 0) -> list[int]:
    sampler = loader.sampler
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world_size", [1, 2])
def test_training_samplers_shard_and_differ(demo_root, monkeypatch, world_size):
    shards = {}
    for rank in range(world_size):
        module = make_module(demo_root, batch_size=1)
        monkeypatch.setattr(module, "_world", lambda rank=rank: (world_size, rank))
        loaders = module.train_dataloader().iterables
        assert all(
            isinstance(loader.sampler, DistributedSampler) and loader.drop_last for loader in loaders.values()
        )
        shards[rank] = {name: sampler_indices(loader) for name, loader in loaders.items()}
        assert shards[rank]["unlabeled"] != shards[rank]["unlabeled_mix"]
        assert sampler_indices(loaders["unlabeled"], epoch=1) != shards[rank]["unlabeled"]
    for name in ("labeled", "unlabeled", "unlabeled_mix"):
        together = [index for rank in shards for index in shards[rank][name]]
        assert sorted(together) == list(range(8))  # disjoint shards covering the dataset


def test_distributed_samplers_without_process_group(demo_root):
    module = make_module(demo_root)
    module.setup("fit")
    _, unlabeled = module.train_datasets()
    ranks = [set(DistributedSampler(unlabeled, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == len(unlabeled)
    shards = [list(ShardSampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
    assert shards == [[0, 2, 4], [1, 3]] and len(ShardSampler(range(5), 2, 1)) == 2


class BatchChecker(pl.LightningModule):
    """Minimal module asserting the batch contract of docs/DESIGN.md §6 inside a real Trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        assert set(batch) == {"labeled", "unlabeled", "unlabeled_mix"}
        assert batch["unlabeled"]["ignore"].dtype == torch.long
        self.seen.append("train")
        return (self.weight - batch["labeled"]["image"].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        assert batch["image"].shape[0] == 1 and len(batch["id"]) == 1
        self.seen.append("val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_with_lightning(demo_root):
    module = make_module(demo_root, num_workers=1)
    model = BatchChecker()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        **QUIET_TRAINER,
    )
    trainer.fit(model, datamodule=module)
    assert model.seen.count("train") == 3 and "val" in model.seen


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_folder_preset_with_class_file(tmp_path, suffix):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index in range(4):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "images" / f"{index}.png")
        Image.fromarray(np.full((20, 20), index % 3, np.uint8)).save(tmp_path / "masks" / f"{index}.png")
    (tmp_path / "split.txt").write_text("".join(f"images/{i}.png masks/{i}.png\n" for i in range(4)))
    content = {"classes": ["sky", "road", "car"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    path = tmp_path / f"classes{suffix}"
    path.write_text(json.dumps(content) if suffix == ".json" else "classes: [sky, road, car]\n"
                    "palette: [[1, 2, 3], [4, 5, 6], [7, 8, 9]]\n")  # fmt: skip
    split = str(tmp_path / "split.txt")
    module = SemiSupervisedDataModule(
        root=str(tmp_path), labeled_split=split, unlabeled_split=split, val_split=split,
        preset="folder", class_names=str(path), crop_size=16, batch_size=2, num_workers=0,
    )  # fmt: skip
    assert module.class_names == ["sky", "road", "car"] and module.num_classes == 3
    assert module.palette[1].tolist() == [4, 5, 6] and module.palette.shape == (256, 3)
    with pytest.warns(UserWarning, match="both the labeled and the unlabeled"):
        module.setup("fit")
    with pytest.raises(DataError, match="num_classes is 4"):
        SemiSupervisedDataModule(root=str(tmp_path), preset="folder", class_names=str(path), num_classes=4)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match=r"classes\.yaml' does not exist"):
        SemiSupervisedDataModule(root=str(other), preset="folder")
    (other / "classes.yaml").write_text("[sky, road]\n")  # the folder preset's default class file
    assert SemiSupervisedDataModule(root=str(other), preset="folder").class_names == ["sky", "road"]
    generic = SemiSupervisedDataModule(root=str(tmp_path), preset="folder", num_classes=2)
    assert generic.class_names == ["class_0", "class_1"]


def test_predict_dir(tmp_path, demo_root):
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "pics" / "sub" / "a.png")
    module = make_module(demo_root, predict_dir=str(tmp_path / "pics"))
    module.setup("predict")
    batch = next(iter(module.predict_dataloader()))
    assert batch["image"].shape == (1, 3, 10, 12) and batch["id"] == ["a.png"]  # the file name names it
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "pics" / "a.jpg")
    kept = make_module(demo_root, predict_dir=str(tmp_path / "pics"))
    kept.setup("predict")
    loader = kept.predict_dataloader()
    assert [batch["id"][0] for batch in loader] == ["a.jpg", "sub/a.png"]
    assert "share file names" in loader.dataset.naming_note  # a shared name keeps the folders, as said
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "pics" / "a.png")
    both = make_module(demo_root, predict_dir=str(tmp_path / "pics"))
    with pytest.raises(DataError, match=r"'a\.jpg' and 'a\.png' would both be predicted to a\.png"):
        both.setup("predict")  # before any prediction is written
    empty = make_module(demo_root, predict_dir=str(tmp_path / "none"))
    with pytest.raises(DataError, match="none"):
        empty.predict_dataloader()


def test_worker_loading_is_deterministic_under_seed_everything(demo_root):
    def first_batch() -> dict:
        pl.seed_everything(7, workers=True)
        batch, _, _ = next(iter(make_module(demo_root, num_workers=1).train_dataloader()))
        return batch

    first, second = first_batch(), first_batch()
    for group in first:
        assert all(torch.equal(first[group][key], second[group][key]) for key in first[group])


def test_too_small_unlabeled_split(demo_root):
    with pytest.raises(DataError, match="cannot fill one batch"):
        make_module(demo_root, batch_size=9).train_dataloader()


def test_jsonargparse_reads_every_argument(demo_root):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SemiSupervisedDataModule, "data")
    arguments = ["--data.preset", "demo", "--data.root", str(demo_root), "--data.split", "92"]
    config = parser.parse_args(
        [*arguments, "--data.augment.blur_p", "0.3", "--data.augment.scale_range", "[1, 1.5]"]
    )
    module = parser.instantiate(config).data
    assert module.split == "92" and module.augment.blur_p == 0.3 and module.augment.scale_range == (1, 1.5)


def test_demo_texture_scale_reaches_the_generator(tmp_path):
    """``data.demo_texture_scale`` selects the demo variant: a coarse-texture folder is used as it is
    when asked for, and refused, naming the setting, when the standard scale is asked for."""
    root = generate_demo(tmp_path / "coarse", num_labeled=2, num_unlabeled=4, num_val=2, clutter=False, texture_scale=2.0)
    SemiSupervisedDataModule(root=str(root), preset="demo", demo_clutter=False, demo_texture_scale=2.0).prepare_data()
    standard = SemiSupervisedDataModule(root=str(root), preset="demo", demo_clutter=False)
    with pytest.raises(DataError, match="data.demo_texture_scale"):
        standard.prepare_data()


def test_demo_class_hues_reaches_the_generator(tmp_path):
    """``data.demo_class_hues: false`` generates the any-hue variant into an empty root (its stamp says so)."""
    module = SemiSupervisedDataModule(root=str(tmp_path / "anyhue"), preset="demo", demo_clutter=False, demo_class_hues=False)
    module.prepare_data()
    assert '"class_hues": false' in (tmp_path / "anyhue" / "generator.json").read_text()
