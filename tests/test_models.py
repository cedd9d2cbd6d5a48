"""The student network (DESIGN.md §1) and the import of official checkpoints."""

import pytest
import timm
import torch
import torch.nn.functional as F

from corrmatch.compat import load_official, toolkit_to_official
from corrmatch.errors import CheckpointError, ConfigError
from corrmatch.models import DeepLabV3Plus, NetworkConfig, region_masks

# Parameter count of the authors' DeepLabV3Plus(resnet101, nclass=21) with its correlation branch,
# counted on their model class.
PAPER_PARAMETERS = 64_198_239


def as_official(model: DeepLabV3Plus) -> dict[str, torch.Tensor]:
    """The model's tensors under the names the authors' code gives them."""
    return {toolkit_to_official(name): value.clone() for name, value in model.state_dict().items()}


def randomise_batch_norm(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(
    ("encoder", "head", "size", "grid"),
    [
        ("resnet18", "paper", 65, (9, 9)),
        ("tu-resnet101s", "paper", 65, (9, 9)),
        ("tu-mobilenetv3_small_100", "smp", 67, (9, 9)),
    ],
)
def test_output_shapes(encoder: str, head: str, size: int, grid: tuple[int, int]) -> None:
    model = DeepLabV3Plus(encoder, num_classes=5, head=head).eval()
    x = torch.randn(2, 3, size, size + 6)
    with torch.no_grad():
        result = model(x, perturb=True, correlation=True)
    assert result["out"].shape == (2, 5, size, size + 6)
    assert result["out_fp"].shape == (2, 5, size, size + 6)
    assert result["corr_out"].shape == (2, 5, size, size + 6)
    h, w = result["feature_size"]
    assert h == grid[0] and w >= grid[1]
    assert result["corr"].shape == (2, h * w, h * w)
    assert set(model(x)) == {"out"}


def test_output_stride_16_halves_the_feature_grid() -> None:
    x = torch.randn(1, 3, 64, 64)
    grids = []
    for stride in (8, 16):
        model = DeepLabV3Plus(
            "resnet18", num_classes=3, output_stride=stride, atrous_rates=(6, 12, 18)
        ).eval()
        with torch.no_grad():
            grids.append(model(x, correlation=True)["feature_size"])
    assert grids == [(8, 8), (4, 4)]


def test_perturbed_branch_differs_in_train_mode_and_clean_half_is_unperturbed() -> None:
    torch.manual_seed(0)
    model = DeepLabV3Plus("resnet18", num_classes=4).train()
    x = torch.randn(2, 3, 65, 65)
    result = model(x, perturb=True)
    assert not torch.allclose(result["out"], result["out_fp"])
    model.eval()  # the perturbation's dropout is active in eval mode too (official quirk)
    with torch.no_grad():
        clean = model(x)["out"]
        perturbed = model(x, perturb=True)
    torch.testing.assert_close(perturbed["out"], clean, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(perturbed["out_fp"], clean)


def test_correlation_rows_sum_to_one() -> None:
    model = DeepLabV3Plus("resnet18", num_classes=6).eval()
    with torch.no_grad():
        corr = model(torch.randn(2, 3, 81, 81), correlation=True)["corr"]
    assert (corr >= 0).all()
    torch.testing.assert_close(corr.sum(-1), torch.ones(corr.shape[:2]), rtol=0, atol=1e-5)


def test_pixel_propagation_does_not_backpropagate_into_out() -> None:
    model = DeepLabV3Plus("resnet18", num_classes=4).train()
    result = model(torch.randn(2, 3, 65, 65), correlation=True)
    result["corr_out"].square().sum().backward()
    assert model.classifier.weight.grad is None
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.correlation.conv1.weight.grad.abs().sum() > 0
    assert model.correlation.proj[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_corr_out_is_out_propagated_by_the_correlation_matrix() -> None:
    model = DeepLabV3Plus("resnet18", num_classes=3).eval()
    with torch.no_grad():
        result = model(torch.randn(1, 3, 65, 65), correlation=True)
    h, w = result["feature_size"]
    small = F.interpolate(result["out"], (h, w), mode="bilinear", align_corners=True).flatten(2)
    expected = torch.einsum("bkn,bnm->bkm", small, result["corr"]).reshape(1, 3, h, w)
    expected = F.interpolate(expected, (65, 65), mode="bilinear", align_corners=True)
    torch.testing.assert_close(result["corr_out"], expected, rtol=1e-4, atol=1e-5)


def test_region_masks_equal_direct_recomputation() -> None:
    torch.manual_seed(3)
    corr = torch.randn(2, 30, 30).softmax(-1)
    index = torch.tensor([0, 7, 28, 7])
    masks = region_masks(corr, (5, 6), (23, 31), index=index)
    assert masks.shape == (2, 4, 23, 31) and masks.dtype == torch.bool
    for b in range(2):
        for m, row in enumerate(index.tolist()):
            image = corr[b, row].reshape(1, 1, 5, 6)
            image = F.interpolate(image, (23, 31), mode="bilinear", align_corners=True)[0, 0]
            expected = (image - image.min()) / (image.max() - image.min()) > 0.5
            assert torch.equal(masks[b, m], expected)


def test_region_masks_sample_from_all_but_the_last_position() -> None:
    corr = torch.eye(6).expand(1, 6, 6).contiguous()  # row i is one-hot at position i
    torch.manual_seed(0)
    masks = region_masks(corr, (2, 3), (2, 3), num_samples=500)
    chosen = masks.flatten(2).float().argmax(-1).unique()
    assert chosen.tolist() == [0, 1, 2, 3, 4]


def test_paper_model_parameter_count() -> None:
    model = DeepLabV3Plus()  # tu-resnet101s, 21 classes, output stride 8, correlation on
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS


def test_official_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    source = DeepLabV3Plus("tu-resnet18", num_classes=7)
    randomise_batch_norm(source)
    path = tmp_path / "official.pth"
    torch.save({"module." + k: v for k, v in as_official(source).items()}, path)
    loaded = load_official(path, encoder_name="tu-resnet18")
    assert loaded.num_classes == 7
    x = torch.randn(1, 3, 97, 97)
    source.eval()
    loaded.eval()
    with torch.no_grad():
        expected, actual = source(x, correlation=True), loaded(x, correlation=True)
    assert torch.equal(expected["out"], actual["out"])
    assert torch.equal(expected["corr_out"], actual["corr_out"])


def test_official_checkpoint_without_correlation_branch_builds_none() -> None:
    source = DeepLabV3Plus("tu-resnet18", num_classes=3, correlation=False)
    loaded = load_official(as_official(source), encoder_name="tu-resnet18")
    assert loaded.correlation is None


@pytest.mark.parametrize("fault", ["missing", "extra", "shape"])
def test_official_checkpoint_errors_name_the_key(fault: str) -> None:
    state = as_official(DeepLabV3Plus("tu-resnet18", num_classes=3))
    if fault == "missing":
        del state["fuse.3.weight"]
        key = "fuse.3.weight"
    elif fault == "extra":
        state["head.b9.weight"] = torch.zeros(1)
        key = "head.b9.weight"
    else:
        state["proj.0.bias"] = torch.zeros(5)
        key = "proj.0.bias"
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")) as error:
        load_official(state, encoder_name="tu-resnet18")
    assert "\n" not in str(error.value)


def test_encoder_weights_from_a_local_imagenet_file(tmp_path) -> None:
    torch.manual_seed(1)
    classifier = timm.create_model("resnet18", num_classes=1000)  # includes fc.* as ImageNet files do
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    model = DeepLabV3Plus("tu-resnet18", num_classes=3, encoder_weights=str(path))
    assert torch.equal(model.encoder.model.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    state = classifier.state_dict()
    del state["layer2.0.bn1.running_var"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer2\.0\.bn1\.running_var"):
        DeepLabV3Plus("tu-resnet18", num_classes=3, encoder_weights=str(path))


def test_methods_start_from_an_official_checkpoint(tmp_path) -> None:
    from corrmatch.methods import CorrMatch, SupervisedOnly

    source = DeepLabV3Plus("tu-resnet18", num_classes=3)
    randomise_batch_norm(source)
    path = tmp_path / "official.pth"
    torch.save(as_official(source), path)
    network = {"encoder_name": "tu-resnet18"}
    method = CorrMatch(network=network, num_classes=3, official_checkpoint=str(path))
    for name, value in source.state_dict().items():
        assert torch.equal(method.net.state_dict()[name], value), name
    with pytest.raises(CheckpointError, match=r"unexpected key 'proj\."):
        SupervisedOnly(network=network, num_classes=3, official_checkpoint=str(path))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_a_file_that_is_not_a_checkpoint_is_named_and_never_unpickled_unsafely(tmp_path, content) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"not a (plain )?PyTorch checkpoint.*model\.pth") as error:
        load_official(path)
    message = str(error.value)
    assert "\n" not in message and "weights_only=False" not in message
    with pytest.raises(CheckpointError, match="no such file"):
        load_official(tmp_path / "absent.pth")


def test_pretrained_tags_fail_within_seconds_without_the_hub(monkeypatch) -> None:
    """A tag needs a download; with the hub unreachable (here: a closed local port) the error is one
    line saying how to go on, at once rather than after a minute of retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    # the check's own message (a download's retries would end in another error, a minute later)
    with pytest.raises(ConfigError, match=r"encoder_weights 'imagenet' .*cannot be reached .*encoder_weights null") as error:
        NetworkConfig(encoder_name="resnet18", encoder_weights="imagenet").build(3, correlation=False)
    assert "\n" not in str(error.value)


def test_network_config_round_trips_through_a_checkpoint_dict() -> None:
    config = NetworkConfig(encoder_name="resnet18", atrous_rates=[6, 12, 18])
    assert config.atrous_rates == (6, 12, 18)
    assert NetworkConfig.coerce(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown setting 'encoder'"):
        NetworkConfig.coerce({"encoder": "resnet18"})
