"""DINOv2 + DPT (docs/DESIGN.md §7): the network against a plain transcription of the authors'
computation (and against their code itself when ``AUTHORS_CODE_V2`` points at a checkout of
LiheYoung/UniMatch-V2), their checkpoints, complementary dropout, one UniMatch V2 iteration term by
term, and tiny ViT-S fits of CorrMatch and UniMatch V2 that resume exactly."""

from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import VIT_CROP, VIT_MODEL, VIT_NETWORK, tiny_config
from torch import Tensor, nn

from corrmatch.cli import main
from corrmatch.compat import dpt_toolkit_to_official, load_official
from corrmatch.data import SemiSupervisedDataModule
from corrmatch.errors import CheckpointError, ConfigError
from corrmatch.methods import CorrMatch, UniMatchV2
from corrmatch.methods.unimatch_v2 import ema_ratio, ema_update
from corrmatch.models import DPT, NetworkConfig, complementary_dropout_mask

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`", "ignore:Found .* module\\(s\\) in eval mode"
)

LAYERS = {"dinov2_small": (2, 5, 8, 11), "dinov2_base": (2, 5, 8, 11)}


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved off its initial value, so no term of the forward is trivially zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return net


def official_state(net: DPT) -> dict[str, Tensor]:
    """``net``'s tensors under UniMatch V2's names, plus the two entries their file has and their
    forward pass never reads (DINOv2's mask token, the deepest fusion block's lateral unit)."""
    state = {dpt_toolkit_to_official(name): value.clone() for name, value in net.state_dict().items()}
    width, features = net.encoder.out_channels, net.classifier.in_channels
    state["backbone.mask_token"] = torch.zeros(1, width)
    for conv in ("conv1", "conv2"):
        state[f"head.scratch.refinenet4.resConfUnit1.{conv}.weight"] = torch.randn(features, features, 3, 3)
        state[f"head.scratch.refinenet4.resConfUnit1.{conv}.bias"] = torch.randn(features)
    return state


def reference_dpt(state: dict[str, Tensor], x: Tensor, layers: tuple[int, ...], mask: Tensor | None = None) -> Tensor:
    """The authors' DINOv2 + DPT forward pass written out with plain tensor operations on their
    parameter names (explicit attention, DINOv2's position-embedding resize, the DPT head)."""
    p = state.__getitem__
    batch, _, height, width = x.shape
    h, w = height // 14, width // 14
    tokens = F.conv2d(x, p("backbone.patch_embed.proj.weight"), p("backbone.patch_embed.proj.bias"), stride=14)
    tokens = tokens.flatten(2).transpose(1, 2)
    pos = p("backbone.pos_embed")
    side = int(math.sqrt(pos.shape[1] - 1))
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if (h, w) != (side, side):
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
    pos = torch.cat((pos[:, :1], grid.flatten(2).transpose(1, 2)), dim=1)
    tokens = torch.cat((p("backbone.cls_token").expand(batch, -1, -1), tokens), dim=1) + pos
    dim = tokens.shape[-1]
    heads = dim // 64

    def norm(t: Tensor, name: str) -> Tensor:
        return F.layer_norm(t, (dim,), p(f"{name}.weight"), p(f"{name}.bias"), 1e-6)

    def linear(t: Tensor, name: str) -> Tensor:
        return F.linear(t, p(f"{name}.weight"), p(f"{name}.bias"))

    maps = []
    for i in range(layers[-1] + 1):
        b = f"backbone.blocks.{i}."
        qkv = linear(norm(tokens, b + "norm1"), b + "attn.qkv").reshape(batch, -1, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
        mixed = (attention.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, dim)
        tokens = tokens + p(b + "ls1.gamma") * linear(mixed, b + "attn.proj")
        hidden = linear(F.gelu(linear(norm(tokens, b + "norm2"), b + "mlp.fc1")), b + "mlp.fc2")
        tokens = tokens + p(b + "ls2.gamma") * hidden
        if i in layers:
            patches = norm(tokens, "backbone.norm")[:, 1:]
            if mask is not None:
                patches = patches * mask.unsqueeze(1)
            maps.append(patches.transpose(1, 2).reshape(batch, dim, h, w))

    levels = []
    for i, level in enumerate(maps):
        level = F.conv2d(level, p(f"head.projects.{i}.weight"), p(f"head.projects.{i}.bias"))
        resize_w, resize_b = state.get(f"head.resize_layers.{i}.weight"), state.get(f"head.resize_layers.{i}.bias")
        if i in (0, 1):
            level = F.conv_transpose2d(level, resize_w, resize_b, stride=4 // (i + 1))
        elif i == 3:
            level = F.conv2d(level, resize_w, resize_b, stride=2, padding=1)
        levels.append(F.conv2d(level, p(f"head.scratch.layer{i + 1}_rn.weight"), padding=1))

    def unit(t: Tensor, name: str) -> Tensor:
        out = F.conv2d(F.relu(t), p(f"{name}.conv1.weight"), p(f"{name}.conv1.bias"), padding=1)
        return t + F.conv2d(F.relu(out), p(f"{name}.conv2.weight"), p(f"{name}.conv2.bias"), padding=1)

    def fuse(k: int, path: Tensor, lateral: Tensor | None, size: Any) -> Tensor:
        name = f"head.scratch.refinenet{k}"
        if lateral is not None:
            path = path + unit(lateral, f"{name}.resConfUnit1")
        path = unit(path, f"{name}.resConfUnit2")
        path = F.interpolate(path, **size, mode="bilinear", align_corners=True)
        return F.conv2d(path, p(f"{name}.out_conv.weight"), p(f"{name}.out_conv.bias"))

    path = fuse(4, levels[3], None, {"size": levels[2].shape[-2:]})
    path = fuse(3, path, levels[2], {"size": levels[1].shape[-2:]})
    path = fuse(2, path, levels[1], {"size": levels[0].shape[-2:]})
    path = fuse(1, path, levels[0], {"scale_factor": 2})
    out = F.relu(F.conv2d(path, p("head.scratch.output_conv.0.weight"), p("head.scratch.output_conv.0.bias"), padding=1))
    out = F.conv2d(out, p("head.scratch.output_conv.2.weight"), p("head.scratch.output_conv.2.bias"))
    return F.interpolate(out, (h * 14, w * 14), mode="bilinear", align_corners=True)


def relative_error(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("size", ["dinov2_small", "dinov2_base"])
def test_dpt_loaded_from_official_names_equals_the_transcription(size: str) -> None:
    torch.manual_seed(0)
    state = official_state(randomised(DPT(size, num_classes=5)))
    net = load_official({"model": {"module." + k: v for k, v in state.items()}}).eval()
    assert net.encoder.size.layers == LAYERS[size]
    for shape in ((2, 3, 98, 112), (1, 3, 518, 518)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert relative_error(net(x)["out"], reference_dpt(state, x, LAYERS[size])) < 1e-5, shape


def test_channel_mask_multiplies_every_level_before_the_head() -> None:
    torch.manual_seed(0)
    net = randomised(DPT("dinov2_small", num_classes=4)).eval()
    mask = complementary_dropout_mask(2, net.encoder.out_channels)
    x = torch.randn(4, 3, 70, 84)
    with torch.no_grad():
        ours = net(x, channel_mask=mask)["out"]
        expected = reference_dpt(official_state(net), x, LAYERS["dinov2_small"], mask)
    assert relative_error(ours, expected) < 1e-5


def test_inputs_off_the_patch_grid_are_predicted_as_the_authors_evaluate_them() -> None:
    """Resized (bilinear, align_corners) to the nearest multiples of 14, logits resized back."""
    torch.manual_seed(0)
    net = randomised(DPT("dinov2_small", num_classes=4)).eval()
    x = torch.randn(1, 3, 100, 130)
    with torch.no_grad():
        inside = net(F.interpolate(x, (98, 126), mode="bilinear", align_corners=True))["out"]
        expected = F.interpolate(inside, (100, 130), mode="bilinear", align_corners=True)
        assert torch.allclose(net(x)["out"], expected, atol=1e-6)


@pytest.mark.skipif(not os.environ.get("AUTHORS_CODE_V2"), reason="AUTHORS_CODE_V2: a checkout of the authors' code")
@pytest.mark.parametrize("size", ["small", "base"])
def test_dpt_equals_the_authors_code(size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(os.environ["AUTHORS_CODE_V2"])
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # their comp_drop calls .cuda()
    from model.semseg.dpt import DPT as AuthorsDPT  # noqa: PLC0415

    widths = {"small": (64, [48, 96, 192, 384]), "base": (128, [96, 192, 384, 768])}[size]
    torch.manual_seed(0)
    theirs = randomised(AuthorsDPT(size, nclass=21, features=widths[0], out_channels=widths[1])).eval()
    ours = load_official({"model": theirs.state_dict()}).eval()
    for shape in ((2, 3, 98, 112), (1, 3, 518, 518)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert relative_error(ours(x)["out"], theirs(x)) < 1e-5, shape
    x = torch.randn(4, 3, 98, 98)
    torch.manual_seed(1)
    first = theirs.binomial.sample((2, ours.encoder.out_channels)) * 2.0
    second = 2.0 - first
    kept = torch.randperm(2)[:1]
    first[kept], second[kept] = 1.0, 1.0
    torch.manual_seed(1)
    with torch.no_grad():
        expected = theirs(x, comp_drop=True)
        assert relative_error(ours(x, channel_mask=torch.cat((first, second)))["out"], expected) < 1e-5
    del sys.modules["model.semseg.dpt"]


def test_official_checkpoint_entries_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    student, teacher = randomised(DPT("dinov2_small", 3), 1), randomised(DPT("dinov2_small", 3), 2)
    path = tmp_path / "latest.pth"
    torch.save(
        {
            "model": {"module." + k: v for k, v in official_state(student).items()},
            "model_ema": {"module." + k: v for k, v in official_state(teacher).items()},
            "epoch": 3,
        },
        path,
    )
    for entry, source in (("model", student), ("model_ema", teacher)):
        loaded = load_official(path, entry=entry)
        assert isinstance(loaded, DPT) and loaded.num_classes == 3
        for name, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), (entry, name)

    state = official_state(student)
    del state["head.scratch.refinenet2.out_conv.bias"]
    with pytest.raises(CheckpointError, match="missing key 'head.scratch.refinenet2.out_conv.bias'"):
        load_official(state)
    method = CorrMatch(network={"encoder_name": "tu-resnet18"}, num_classes=3)
    with pytest.raises(CheckpointError, match="UniMatch V2 \\(DPT\\) checkpoint, the network is DeepLabV3\\+"):
        CorrMatch(network={"encoder_name": "tu-resnet18"}, num_classes=3, official_checkpoint=str(path))
    del method


def test_encoder_file_with_the_original_dinov2_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = randomised(DPT("dinov2_small", 3).encoder.vit)
    path = tmp_path / "dinov2_small.pth"
    torch.save({"mask_token": torch.zeros(1, 384), **source.state_dict()}, path)
    net = NetworkConfig(encoder_name="dinov2_small", encoder_weights=str(path)).build(3, correlation=False)
    for name, value in source.state_dict().items():
        assert torch.equal(net.encoder.vit.state_dict()[name], value), name
    locked = NetworkConfig(encoder_name="dinov2_small", lock_backbone=True).build(3, correlation=True)
    assert not any(p.requires_grad for p in locked.encoder.parameters())
    assert all(p.requires_grad for p in locked.decoder.parameters())


def test_an_unknown_weight_tag_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'imagenet' of dinov2_small: timm's tags are lvd142m"):
        NetworkConfig(encoder_name="dinov2_small", encoder_weights="imagenet").build(3, correlation=False)


def test_complementary_dropout_mask() -> None:
    torch.manual_seed(0)
    mask = complementary_dropout_mask(6, 32)
    first, second = mask.chunk(2)
    assert mask.shape == (12, 32) and set(mask.unique().tolist()) == {0.0, 1.0, 2.0}
    assert torch.equal(first + second, torch.full_like(first, 2.0))
    whole = (first == 1).all(dim=1)
    assert whole.sum() == 3 and torch.equal(whole, (second == 1).all(dim=1))
    assert set(first[~whole].unique().tolist()) == {0.0, 2.0}


def test_unimatch_v2_needs_a_dinov2_network() -> None:
    with pytest.raises(ConfigError, match="UniMatchV2 needs a DINOv2 network"):
        UniMatchV2(network={"encoder_name": "tu-resnet18"}, num_classes=3)


def test_ema_ratio_and_update() -> None:
    assert ema_ratio(0) == 0.0 and ema_ratio(1) == 0.5 and ema_ratio(9) == pytest.approx(0.9)
    assert ema_ratio(10_000) == 0.996
    teacher, student = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0), student.weight.fill_(3.0)
    teacher.running_mean.fill_(2.0), student.running_mean.fill_(4.0)
    teacher.num_batches_tracked.fill_(10), student.num_batches_tracked.fill_(13)
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((2,), 1.5))
    assert torch.allclose(teacher.running_mean, torch.full((2,), 2.5))  # buffers move too
    assert teacher.num_batches_tracked.item() == 10  # 10.75, truncated as the authors' copy_ does


def test_unimatch_v2_iteration_term_by_term(tiny_root: Path) -> None:
    torch.manual_seed(0)
    module = UniMatchV2(network=VIT_NETWORK, num_classes=6, crop_size=VIT_CROP, conf_thresh=0.6)
    randomised(module.net)
    module.teacher = randomised(copy.deepcopy(module.net), seed=5).requires_grad_(False).eval()
    with torch.no_grad():
        module.teacher.classifier.weight.mul_(40)  # confident and unconfident pixels both occur
    data = SemiSupervisedDataModule(root=str(tiny_root), preset="demo", crop_size=VIT_CROP, batch_size=2, seed=0)
    data.contract = module.data_contract
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))[0]
    assert "unlabeled_mix" not in batch
    unlabeled = batch["unlabeled"]
    unlabeled["cutmix_box"].zero_()
    unlabeled["cutmix_box"][0, 5:30, 10:40] = 1
    unlabeled["cutmix_box2"].zero_()
    unlabeled["cutmix_box2"][1, 20:50, 0:30] = 1
    unlabeled["ignore"][0, -6:, :] = 255
    mask = complementary_dropout_mask(2, 384)
    student_ref, teacher_ref = copy.deepcopy(module.net), copy.deepcopy(module.teacher)

    # The module: one step, its optimiser, then the teacher update with a fixed ratio.
    module.trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False)
    optimizer = module.configure_optimizers()["optimizer"]
    module.trainer = None  # the step below logs outside a loop, as the other term-by-term tests do
    module.channel_dropout = lambda pairs, channels, device: mask
    out = module.training_step(batch, 0)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    ratio = 0.7
    ema_update(module.teacher, module.net, ratio)

    # The authors' iteration (unimatch_v2.py), written out.
    x, y = batch["labeled"]["image"], batch["labeled"]["mask"]
    img_u_w, ignore_mask = unlabeled["image_w"], unlabeled["ignore"]
    img_u_s1, img_u_s2 = unlabeled["image_s"].clone(), unlabeled["image_s2"].clone()
    box1, box2 = unlabeled["cutmix_box"], unlabeled["cutmix_box2"]
    with torch.no_grad():
        pred_u_w = teacher_ref(img_u_w)["out"]
        conf_u_w, mask_u_w = pred_u_w.softmax(dim=1).max(dim=1)[0], pred_u_w.argmax(dim=1)
    inside1 = box1.unsqueeze(1).expand(img_u_s1.shape) == 1
    inside2 = box2.unsqueeze(1).expand(img_u_s2.shape) == 1
    img_u_s1[inside1] = img_u_s1.flip(0)[inside1]
    img_u_s2[inside2] = img_u_s2.flip(0)[inside2]
    pred_x = student_ref(x)["out"]
    pred_u_s1, pred_u_s2 = student_ref(torch.cat((img_u_s1, img_u_s2)), channel_mask=mask)["out"].chunk(2)

    def mixed(box: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        targets = (mask_u_w.clone(), conf_u_w.clone(), ignore_mask.clone())
        for target, source in zip(targets, (mask_u_w, conf_u_w, ignore_mask)):
            target[box == 1] = source.flip(0)[box == 1]
        return targets

    ce = nn.CrossEntropyLoss(reduction="none")
    expected = {"loss_x": nn.CrossEntropyLoss(ignore_index=255)(pred_x, y)}
    for name, pred, box in (("loss_u_s1", pred_u_s1, box1), ("loss_u_s2", pred_u_s2, box2)):
        label, conf, ignore = mixed(box)
        loss = ce(pred, label) * ((conf >= 0.6) & (ignore != 255))
        expected[name] = loss.sum() / (ignore != 255).sum().item()
    expected["loss_u_s"] = (expected["loss_u_s1"] + expected["loss_u_s2"]) / 2.0
    expected["loss"] = (expected["loss_x"] + expected["loss_u_s"]) / 2.0
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(out[name], value, rtol=1e-5, atol=1e-7), (name, out[name], value)
    assert 0 < ((conf_u_w >= 0.6) & (ignore_mask != 255)).sum() < ignore_mask.numel()

    reference_optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in student_ref.encoder.parameters() if p.requires_grad], "lr": 5e-6},
            {"params": [p for n, p in student_ref.named_parameters() if not n.startswith("encoder.")], "lr": 5e-6 * 40},
        ],
        lr=5e-6,
        betas=(0.9, 0.999),
        weight_decay=0.01,
    )
    reference_optimizer.zero_grad()
    expected["loss"].backward()
    reference_optimizer.step()
    with torch.no_grad():
        for param, param_ema in zip(student_ref.parameters(), teacher_ref.parameters()):
            param_ema.copy_(param_ema * ratio + param.detach() * (1 - ratio))
    for (name, ours), theirs in zip(module.net.named_parameters(), student_ref.parameters()):
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-9), name
    for (name, ours), theirs in zip(module.teacher.named_parameters(), teacher_ref.parameters()):
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-9), name


CHECKPOINT_EVERY_EPOCH = {"callbacks": [{"class_path": "conftest.StopAfterFirstEpoch"}]}


@pytest.mark.parametrize("method", ["CorrMatch", "UniMatchV2"])
def test_tiny_vit_fit_resumes_exactly(method: str, tiny_root: Path, tmp_path: Path) -> None:
    trainer = {"max_epochs": 2}
    data = {"crop_size": VIT_CROP}
    straight = tiny_config(tmp_path / "a.yaml", tiny_root, tmp_path / "a", method, VIT_MODEL, trainer, data)
    main(["fit", "--config", str(straight)])
    stopped = tiny_config(
        tmp_path / "b.yaml", tiny_root, tmp_path / "b", method, VIT_MODEL, {**trainer, **CHECKPOINT_EVERY_EPOCH}, data
    )
    main(["fit", "--config", str(stopped)])
    first = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 2
    resume = tiny_config(tmp_path / "c.yaml", tiny_root, tmp_path / "b", method, VIT_MODEL, trainer, data)
    main(["fit", "--config", str(resume), "--ckpt_path", "last"])

    expected = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == expected["global_step"] == 4
    assert resumed["hyper_parameters"]["optimizer"] == "adamw"
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    if method == "UniMatchV2":
        assert any(name.startswith("teacher.") for name in expected["state_dict"])
    else:
        assert "threshold.value" in expected["state_dict"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    for index, state in expected["optimizer_states"][0]["state"].items():
        assert torch.equal(resumed["optimizer_states"][0]["state"][index]["exp_avg"], state["exp_avg"])
    # prediction: Segmenter and predict_step (train.py predict) place the windows as the method's release
    from corrmatch import methods  # noqa: PLC0415
    from corrmatch.inference import Segmenter  # noqa: PLC0415

    segmenter = Segmenter.from_checkpoint(tmp_path / "a", device="cpu")
    assert segmenter.window_placement == {"CorrMatch": "corrmatch", "UniMatchV2": "unimatch_v2"}[method]
    module = getattr(methods, method).load_from_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    image = torch.randn(1, 3, 70, 130)
    with torch.no_grad():
        predicted = module.eval().predict_step({"image": image, "id": ["a"]}, 0)["pred"]
    assert torch.equal(segmenter.predict(image), predicted)


def test_segmenter_reads_an_official_unimatch_v2_checkpoint(tmp_path: Path) -> None:
    from corrmatch.inference import Segmenter  # noqa: PLC0415

    torch.manual_seed(0)
    net = randomised(DPT("dinov2_small", 3)).eval()
    path = tmp_path / "best.pth"
    torch.save({"model_ema": {}, "model": {"module." + k: v for k, v in official_state(net).items()}}, path)
    segmenter = Segmenter.from_checkpoint(path, device="cpu")
    assert segmenter.crop_size == 518 and segmenter.network.encoder_name == "dinov2_small"
    assert segmenter.window_placement == "unimatch_v2"  # its release's sliding window
    image = torch.randn(3, 60, 80)  # a normalised image, predicted at 56 × 84 and resized back
    labels = segmenter.predict(image)
    with torch.no_grad():
        expected = net(image[None])["out"].argmax(1)[0]
    assert labels.shape == (60, 80) and torch.equal(labels, expected)


@pytest.mark.parametrize("method", ["FixMatch", "UniMatch", "CorrMatch"])
def test_the_resnet_methods_train_on_dinov2(method: str, tiny_root: Path) -> None:
    import corrmatch.methods as methods  # noqa: PLC0415

    torch.manual_seed(0)
    extra = {"num_region_samples": 8} if method == "CorrMatch" else {}
    module = getattr(methods, method)(network=VIT_NETWORK, num_classes=6, crop_size=VIT_CROP, **extra)
    assert module.hparams.optimizer == "adamw"
    data = SemiSupervisedDataModule(root=str(tiny_root), preset="demo", crop_size=VIT_CROP, batch_size=2, seed=0)
    data.contract = module.data_contract
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))[0]
    out = module.training_step(batch, 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    for part in (module.net.encoder, module.net.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    if method == "CorrMatch":
        assert module.net.correlation.conv1.weight.grad.abs().sum() > 0


def test_dinov2_step_in_bf16_and_channels_last(tiny_root: Path) -> None:
    torch.manual_seed(0)
    module = UniMatchV2(network=VIT_NETWORK, num_classes=6, crop_size=VIT_CROP, channels_last=True)
    data = SemiSupervisedDataModule(root=str(tiny_root), preset="demo", crop_size=VIT_CROP, batch_size=2, seed=0)
    data.contract = module.data_contract
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.training_step(batch, 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and module.net.classifier.weight.grad is not None


def test_dinov2_exports_to_onnx_at_a_fixed_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from corrmatch.export import main as export  # noqa: PLC0415

    torch.manual_seed(0)
    path = tmp_path / "latest.pth"
    torch.save({"model": official_state(randomised(DPT("dinov2_small", 3)))}, path)
    out = tmp_path / "dpt.onnx"
    export([str(path), "--format", "onnx", "--out", str(out), "--height", "70", "--width", "84"])
    assert "vs PyTorch at 70×84" in capsys.readouterr().out
    x = torch.randn(1, 3, 70, 84)
    (logits,) = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = load_official(path)(x)["out"].numpy()
    assert abs(logits - expected).max() < 1e-3
    with pytest.raises(SystemExit):
        export([str(path), "--format", "onnx", "--out", str(tmp_path / "d.onnx"), "--dynamic"])
    assert "--dynamic: the dinov2_small network resizes its position embeddings" in capsys.readouterr().err
