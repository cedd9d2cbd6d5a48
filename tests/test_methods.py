"""The four methods as LightningModules: training steps, the CorrMatch losses term by term (DESIGN.md
§2 steps 1–10), the poly schedule (§2 step 11), evaluation-mode switching, precision and memory format,
and the checkpoint compatibility check."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import CROP, METHOD_ARGS, QUIET_TRAINER, TINY_MODEL, TINY_NETWORK
from torch import nn

from corrmatch.data import SemiSupervisedDataModule
from corrmatch.errors import CheckpointError
from corrmatch.methods import CorrMatch, FixMatch, SupervisedOnly, UniMatch
from corrmatch.methods.base import pseudo_label_accuracy

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

METHODS = {
    "SupervisedOnly": SupervisedOnly,
    "FixMatch": FixMatch,
    "UniMatch": UniMatch,
    "CorrMatch": CorrMatch,
}
NUM_CLASSES = 6


def build(method: str, **overrides: Any) -> pl.LightningModule:
    torch.manual_seed(0)
    args = {**TINY_MODEL, **METHOD_ARGS[method], "num_classes": NUM_CLASSES, "crop_size": CROP, **overrides}
    return METHODS[method](**args)


def datamodule(module: pl.LightningModule, root: Any) -> SemiSupervisedDataModule:
    """The tiny dataset, loaded as ``module`` needs it."""
    data = SemiSupervisedDataModule(
        root=str(root), preset="demo", crop_size=CROP, batch_size=2, num_workers=0, seed=0
    )
    data.contract = module.data_contract
    return data


def first_batch(module: pl.LightningModule, root: Any) -> dict[str, Any]:
    dm = datamodule(module, root)
    dm.setup("fit")
    torch.manual_seed(0)
    return next(iter(dm.train_dataloader()))[0]


@pytest.mark.parametrize("method", list(METHODS))
def test_training_step_lowers_the_loss(method: str, tiny_root: Any) -> None:
    module = build(method)
    batch = first_batch(module, tiny_root)
    optimizer = torch.optim.SGD(module.parameters(), lr=module.hparams.lr, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = module.training_step(batch, 0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < losses[0], losses


# ---------------------------------------------------------------- CorrMatch, term by term


def test_corrmatch_draws_its_region_rows_as_the_authors_unless_replaced(tiny_root: Any) -> None:
    """By default the M rows are the authors' ``randint(0, N − 1)`` from torch's generator, drawn where
    their step draws them (runs stay bit-identical); a replaced ``region_rows`` is what the step uses."""
    module = build("CorrMatch", thresh_init=0.5)
    with torch.no_grad():
        module.net.classifier.weight *= 10  # confident and unconfident pixels: propagation happens
    batch = first_batch(module, tiny_root)

    def loss_with(region_rows: Any = None) -> torch.Tensor:
        step = copy.deepcopy(module)
        if region_rows is not None:
            step.region_rows = region_rows
        torch.manual_seed(7)
        return step.training_step(batch, 0)["loss"]

    def official(num_rows: int, num_samples: int) -> torch.Tensor:  # the authors' draw, written out
        return torch.randint(0, num_rows - 1, (num_samples,))

    default = loss_with()
    assert torch.equal(default, loss_with(official))
    assert not torch.equal(default, loss_with(lambda num_rows, num_samples: torch.zeros(num_samples).long()))


def reference_threshold(
    tau: float, pred: torch.Tensor, ignore: torch.Tensor, momentum: float
) -> torch.Tensor:
    """§2 step 7 written as the authors' loop over the predicted classes."""
    label, conf = pred.argmax(1), pred.softmax(1).max(1)[0]
    maxima = []
    for cls in torch.unique(label):
        where = (label == cls) & (ignore != 255)
        if where.sum() > 0:
            maxima.append(conf[where].max())
    return momentum * torch.tensor(tau) + (1 - momentum) * torch.stack(maxima).mean()


def reference_regions(
    corr: torch.Tensor, size: tuple[int, int], index: torch.Tensor, out: tuple
) -> torch.Tensor:
    """§1 region masks: sampled rows, resized, min-max normalised, thresholded at 0.5."""
    b, m = corr.shape[0], index.numel()
    rows = corr[:, index, :].reshape(b * m, 1, *size)
    rows = F.interpolate(rows, out, mode="bilinear", align_corners=True).reshape(b * m, -1)
    low, high = rows.min(1, keepdim=True)[0], rows.max(1, keepdim=True)[0]
    return ((rows - low) / (high - low) > 0.5).reshape(b, m, *out)


def test_corrmatch_losses_recomputed_term_by_term(tiny_root: Any) -> None:
    module = build("CorrMatch", thresh_init=0.5)
    with torch.no_grad():
        module.net.classifier.weight *= 10  # confident and unconfident pixels both occur
    batch = first_batch(module, tiny_root)
    unlabeled, mix = batch["unlabeled"], batch["unlabeled_mix"]
    unlabeled["cutmix_box"].zero_()
    unlabeled["cutmix_box"][0, 5:30, 10:50] = 1
    unlabeled["cutmix_box"][1, 40:60, 0:20] = 1
    unlabeled["ignore"][:, -6:, :] = 255
    mix["ignore"][:, :, -5:] = 255
    index = torch.arange(24)  # every row the official draw can pick on the 5×5 grid

    calls: list[tuple[tuple, dict, dict]] = []
    hook = module.net.register_forward_hook(lambda m, a, k, o: calls.append((a, k, o)), with_kwargs=True)
    module.region_rows = lambda num_rows, num_samples: index
    out = module.training_step(batch, 0)
    hook.remove()
    assert len(calls) == 3
    (_, _, res_mix), (_, _, res_w), ((u_s_used,), _, res_s) = calls

    x, y = batch["labeled"]["image"], batch["labeled"]["mask"]
    box, ignore = unlabeled["cutmix_box"], unlabeled["ignore"]
    n_x = x.shape[0]

    # 1. mixing batch in eval mode, strong view pasted in the box
    pred_mix = res_mix["out"]
    conf_mix, label_mix = pred_mix.softmax(1).max(1)[0], pred_mix.argmax(1)
    u_s = unlabeled["image_s"].clone()
    for b in range(u_s.shape[0]):
        inside = box[b] == 1
        u_s[b][:, inside] = mix["image_s"][b][:, inside]
    assert torch.equal(u_s_used, u_s)

    # 2.–4. network outputs and weak pseudo-labels
    pred_x, pred_u_w = res_w["out"][:n_x], res_w["out"][n_x:].detach()
    pred_u_w_fp = res_w["out_fp"][n_x:]
    pred_x_corr, pred_u_w_corr = res_w["corr_out"][:n_x], res_w["corr_out"][n_x:]
    regions = reference_regions(
        res_w["corr"][n_x:].detach(), res_w["feature_size"], index, tuple(u_s.shape[-2:])
    )
    pred_u_s, pred_u_s_corr = res_s["out"], res_s["corr_out"]
    conf, label = pred_u_w.softmax(1).max(1)[0], pred_u_w.argmax(1)

    # 5. mixed targets
    label_m, conf_m, ignore_m = label.clone(), conf.clone(), ignore.clone()
    inside = box == 1
    label_m[inside], conf_m[inside], ignore_m[inside] = (
        label_mix[inside],
        conf_mix[inside],
        mix["ignore"][inside],
    )

    # 6. region masks outside the box, on non-ignored pixels
    regions = regions & ~inside[:, None] & (ignore_m != 255)[:, None]

    # 7.–8. threshold and confident pixels
    assert torch.allclose(module.threshold.value, reference_threshold(0.5, pred_u_w, ignore_m, 0.999))
    tau = module.threshold.value  # the same value; reused so that borderline pixels cannot flip
    high = (conf_m >= tau) & (ignore_m != 255)
    assert 0 < high.sum() < (ignore_m != 255).sum()

    # 9. sequential region propagation
    target, loss_mask = label_m.clone(), high.clone()
    for b in range(regions.shape[0]):
        for m in range(regions.shape[1]):
            region = regions[b, m]
            segment = region & high[b]
            if segment.sum() == 0 or segment.sum() / region.sum() < tau:
                continue
            classes, counts = torch.unique(target[b][segment], return_counts=True)
            if counts.max() / counts.sum() > tau:
                target[b][region] = classes[counts.argmax()]
                loss_mask[b] = loss_mask[b] | region
    loss_mask = loss_mask | high
    assert (loss_mask & ~high).any(), "the test batch should exercise region propagation"

    # 10. losses
    crit = nn.CrossEntropyLoss(ignore_index=255)
    ce = nn.CrossEntropyLoss(reduction="none")
    kl = nn.KLDivLoss(reduction="none")
    valid_m, valid = (ignore_m != 255).sum(), (ignore != 255).sum()
    weak_mask = (conf >= tau) & (ignore != 255)
    expected = {
        "loss_x": crit(pred_x, y),
        "loss_x_corr": crit(pred_x_corr, y),
        "loss_u_s": (ce(pred_u_s, target) * loss_mask).sum() / valid_m,
        "loss_u_corr_s": (ce(pred_u_s_corr, target) * loss_mask).sum() / valid_m,
        "loss_u_corr_w": (ce(pred_u_w_corr, label) * weak_mask).sum() / valid,
        "loss_kl": (kl(F.log_softmax(pred_u_s, 1), F.softmax(pred_u_w, 1)).sum(1) * high).sum() / valid_m,
        "loss_u_fp": (ce(pred_u_w_fp, label) * weak_mask).sum() / valid,
    }
    expected["loss_u_corr"] = 0.5 * (expected["loss_u_corr_s"] + expected["loss_u_corr_w"])
    expected["loss"] = (
        0.5 * expected["loss_x"]
        + 0.5 * expected["loss_x_corr"]
        + 0.25 * expected["loss_u_s"]
        + 0.25 * expected["loss_kl"]
        + 0.25 * expected["loss_u_fp"]
        + 0.25 * expected["loss_u_corr"]
    ) / 2.0
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(out[name], value, rtol=1e-5, atol=1e-7), (name, out[name], value)


def test_corrmatch_without_pixel_propagation_drops_the_correlation_terms(tiny_root: Any) -> None:
    """The ablation switch leaves ``loss_x_corr`` and ``loss_u_corr`` out of the total, the other weights
    as published, so the correlation branch gets no gradient while the rest of the network does."""
    published = build("CorrMatch", num_region_samples=0)
    ablated = build("CorrMatch", num_region_samples=0, pixel_propagation=False)
    batch = first_batch(published, tiny_root)
    torch.manual_seed(1)
    terms = published.training_step(copy.deepcopy(batch), 0)
    torch.manual_seed(1)
    out = ablated.training_step(copy.deepcopy(batch), 0)
    for name in set(terms) - {"loss"}:
        assert torch.allclose(out[name], terms[name]), name  # same weights, data and dropout: same terms
    expected = (0.5 * out["loss_x"] + 0.25 * (out["loss_u_s"] + out["loss_kl"] + out["loss_u_fp"])) / 2
    assert torch.allclose(out["loss"], expected)
    assert not torch.allclose(terms["loss"], expected)
    out["loss"].backward()
    branch = ablated.net.correlation
    assert all(p.grad is None or not p.grad.any() for p in branch.parameters())
    assert ablated.net.classifier.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- pseudo-label quality metrics


def test_pseudo_label_accuracy_counts_the_used_pixels_with_known_truth() -> None:
    label = torch.tensor([[0, 1, 2, 2, 1, 0]])
    used = torch.tensor([[True, True, True, False, True, False]])
    truth = torch.tensor([[0, 2, 2, 2, 255, 1]])  # known: 5 pixels; used and known: 3, of them 2 right
    accuracy, share = pseudo_label_accuracy(label, used, truth)
    assert accuracy.item() == pytest.approx(2 / 3) and share.item() == pytest.approx(3 / 5)
    nothing = pseudo_label_accuracy(label, torch.zeros_like(used), truth)
    assert math.isnan(nothing[0].item()) and nothing[1].item() == 0.0


def step_with_logs(module: pl.LightningModule, batch: dict[str, Any]) -> tuple[torch.Tensor, list, dict]:
    """Loss, gradients and the values ``self.log`` received, for one training step of a copy of
    ``module`` (so batch-norm statistics start equal) from a fixed seed."""
    module = copy.deepcopy(module)
    logged: dict[str, torch.Tensor] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)  # type: ignore[method-assign]
    module.zero_grad()
    torch.manual_seed(1)
    if isinstance(module, CorrMatch):
        module.region_rows = lambda num_rows, num_samples: torch.arange(8)
    loss = module.training_step(batch, 0)["loss"]
    loss.backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return loss.detach(), grads, logged


@pytest.mark.parametrize("method", ["FixMatch", "UniMatch", "CorrMatch"])
def test_ground_truth_of_unlabeled_images_reaches_only_the_metrics(method: str, tiny_root: Any) -> None:
    module = build(method, **({"thresh_init": 0.0} if method == "CorrMatch" else {"conf_thresh": 0.0}))
    batch = first_batch(module, tiny_root)
    loss, grads, logged = step_with_logs(module, batch)
    names = {"train/pl_acc", "train/pl_used"}
    if method == "CorrMatch":
        names |= {
            f"train/pl_{kind}_{stat}" for kind in ("confident", "propagated") for stat in ("acc", "used")
        }
    assert names <= set(logged)
    if method == "CorrMatch":  # at τ = 0 every pixel is confident: none is added, their accuracy is undefined
        names -= {"train/pl_propagated_acc"}
        assert logged["train/pl_propagated_used"].item() == 0.0
        assert math.isnan(logged["train/pl_propagated_acc"].item())
    assert all(0.0 <= logged[name].item() <= 1.0 for name in names)

    scrambled = {key: dict(value) for key, value in batch.items()}
    for part in ("unlabeled", "unlabeled_mix"):
        truth = scrambled[part]["mask_w"]
        scrambled[part]["mask_w"] = torch.randint_like(truth, 0, NUM_CLASSES)
    loss2, grads2, logged2 = step_with_logs(module, scrambled)
    assert torch.equal(loss, loss2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
    assert logged2["train/pl_acc"] != logged["train/pl_acc"]  # the metric does read the masks

    for part in ("unlabeled", "unlabeled_mix"):
        del scrambled[part]["mask_w"]
    loss3, _, logged3 = step_with_logs(module, scrambled)
    assert torch.equal(loss, loss3) and not any(name.startswith("train/pl_") for name in logged3)


# ---------------------------------------------------------------- inside a Trainer


class Recorder(pl.Callback):
    """Learning rates at the start of each step, losses at its end, the evaluation mode of each run."""

    def __init__(self) -> None:
        self.lrs: list[tuple[float, float]] = []
        self.losses: list[torch.Tensor] = []
        self.modes: list[str] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.lrs.append(tuple(group["lr"] for group in trainer.optimizers[0].param_groups))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.losses.append(outputs["loss"].detach())

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.modes.append(pl_module.evaluation_mode())


def fit(
    module: pl.LightningModule, root: Any, epochs: int = 2, accelerator: str = "cpu", **trainer_args: Any
) -> Recorder:
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[recorder],
        accelerator=accelerator,
        **QUIET_TRAINER,
        **trainer_args,
    )
    trainer.fit(module, datamodule=datamodule(module, root))
    return recorder


def test_poly_schedule_and_evaluation_modes(tiny_root: Any) -> None:
    module = build("FixMatch", lr=0.02, lr_multi=10.0, eval_mode="center_crop", sliding_window_last_epochs=1)
    recorder = fit(module, tiny_root, epochs=2)
    total = 4  # 2 epochs × 2 batches
    expected = [0.02, 0.02] + [0.02 * (1 - it / total) ** 0.9 for it in (1, 2)]
    assert recorder.lrs == pytest.approx([(lr, lr * 10.0) for lr in expected], rel=1e-12)
    assert recorder.modes == ["center_crop", "sliding_window"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_and_channels_last(tiny_root: Any, precision: str) -> None:
    if precision == "16-mixed" and not torch.cuda.is_available():
        pytest.skip("Lightning runs 16-mixed on GPUs only; on the CPU it falls back to bf16-mixed")
    module = build("CorrMatch", channels_last=True)
    assert module.net.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    recorder = fit(module, tiny_root, epochs=1, precision=precision, accelerator="auto")
    assert len(recorder.losses) == 2 and all(torch.isfinite(loss) for loss in recorder.losses)


def test_incompatible_checkpoint_is_refused() -> None:
    saved = build("SupervisedOnly")
    checkpoint = {"method": "SupervisedOnly", "hyper_parameters": dict(saved.hparams)}
    with pytest.raises(CheckpointError, match=r"num_classes=6 but the model has num_classes=5"):
        build("SupervisedOnly", num_classes=5).on_load_checkpoint(checkpoint)
    other = {**TINY_NETWORK, "encoder_name": "resnet34"}
    with pytest.raises(
        CheckpointError, match=r"network.encoder_name='resnet18'.*network.encoder_name='resnet34'"
    ):
        build("SupervisedOnly", network=other).on_load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="written by SupervisedOnly, the model is FixMatch"):
        build("FixMatch").on_load_checkpoint(checkpoint)
