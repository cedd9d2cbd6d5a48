"""``--model.init_args.compile true``: the compiled CorrMatch and UniMatchV2 training steps compute the
eager ones, a compiled run resumes exactly, and a setup torch.compile cannot serve is one error line.

The steps are compiled by torch.compile's ``aot_eager`` backend: Dynamo traces every compiled region
(:func:`corrmatch.models.compile.compiled_regions`) and AOTAutograd builds its forward and backward
graphs, as for inductor, and eager kernels run them, so a test costs seconds instead of the minutes
inductor's C++ kernels take to build on 2 cores (inductor's own step is measured by
``benchmarks/compile.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import WANDB, tiny_config

from corrmatch.errors import ConfigError
from corrmatch.methods import base
from corrmatch.models.compile import check_compile, compile_network, compiled_regions

COMPILED = {"compile": True, "compile_backend": "aot_eager"}


def probe_steps(method: str, root: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """The ``same`` fit of tests/ddp_probe.py on this process: each step's loss terms, τ, gradients
    and teacher, and the network at the end."""
    import ddp_probe  # noqa: PLC0415 (the tests folder is on the path only under pytest)

    path = ddp_probe.fit(method, ddp_probe.batches(method, str(root)), "same", out, **overrides)
    return torch.load(path, weights_only=False)


def assert_steps_close(found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every loss term and τ within 1e-5 relative, the teacher within 1e-4; the first step's gradients within 1e-5
    of its largest gradient entry, the later steps' within 5e-3: after the first update the parameters
    differ in their last bits, and a pixel whose pseudo-label sits on the threshold or between two
    classes may flip, which moves a gradient by about 1e-3 of the largest (measured: 1e-6 on the first
    step, 1e-3 on the second)."""
    assert len(found["steps"]) == len(expected["steps"]) >= 2
    for index, (step, reference) in enumerate(zip(found["steps"], expected["steps"])):
        where = f"step {index}"
        assert step["losses"].keys() == reference["losses"].keys()
        for name, value in reference["losses"].items():
            near(step["losses"][name], value, f"{where}, {name}", rtol=1e-5, atol=1e-6)
        if "tau" in reference:
            near(step["tau"], reference["tau"], f"{where}, tau", rtol=1e-5, atol=0)
        assert step["grads"].keys() == reference["grads"].keys()
        scale = max(float(grad.abs().max()) for grad in reference["grads"].values())
        tolerance = (1e-5 if index == 0 else 5e-3) * scale
        for name, grad in reference["grads"].items():
            near(step["grads"][name], grad, f"{where}, gradient of {name}", rtol=0, atol=tolerance)
        for name, tensor in (reference.get("teacher") or {}).items():
            near(step["teacher"][name], tensor, f"{where}, teacher {name}", rtol=1e-4, atol=1e-5)


def near(found: torch.Tensor, expected: torch.Tensor, what: str, rtol: float, atol: float) -> None:
    torch.testing.assert_close(found, expected, rtol=rtol, atol=atol, msg=lambda message: f"{what}: {message}")


def relu_to_gelu(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
    """A torch.compile backend that runs the traced graph with every ReLU computed as a GELU."""
    swapped = 0
    for node in graph.graph.nodes:
        if node.op == "call_function" and "relu" in getattr(node.target, "__name__", ""):
            node.target, node.kwargs = torch.nn.functional.gelu, {}
            swapped += 1
    assert swapped, "no ReLU in the graph"
    graph.recompile()
    return graph.forward


@pytest.fixture(scope="module")
def eager(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """The eager steps of a method, computed once per module."""
    steps: dict[str, dict[str, Any]] = {}

    def of(method: str) -> dict[str, Any]:
        if method not in steps:
            steps[method] = probe_steps(method, tiny_root, tmp_path_factory.mktemp(f"eager_{method}"))
        return steps[method]

    return of


@pytest.mark.parametrize("method", ["CorrMatch", "UniMatchV2"])
def test_compiled_training_steps_equal_the_eager_ones(
    method: str, eager: Callable[[str], dict[str, Any]], tiny_root: Path, tmp_path: Path
) -> None:
    expected = eager(method)
    assert any(step["losses"]["loss_u_s"] > 0 for step in expected["steps"])  # the unlabeled terms take part
    assert_steps_close(probe_steps(method, tiny_root, tmp_path, **COMPILED), expected)


def test_a_compiled_piece_that_computes_something_else_fails_the_comparison(
    eager: Callable[[str], dict[str, Any]], tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_swapped_decoder(net: torch.nn.Module, mode: str, backend: str) -> torch.nn.Module:
        compile_network(net, mode, backend)
        net.decoder.compile(backend=relu_to_gelu)
        return net

    monkeypatch.setattr(base, "compile_network", with_swapped_decoder)
    with pytest.raises(AssertionError, match="step 0"):
        assert_steps_close(probe_steps("CorrMatch", tiny_root, tmp_path, **COMPILED), eager("CorrMatch"))


def test_compiling_keeps_the_parameter_names() -> None:
    from conftest import TINY_NETWORK  # noqa: PLC0415

    from corrmatch.models import NetworkConfig  # noqa: PLC0415

    net = NetworkConfig.coerce(TINY_NETWORK).build(6, correlation=True)
    names = [name for name, _ in net.named_parameters()]
    compile_network(net, "default", "aot_eager")
    assert [name for name, _ in net.named_parameters()] == names
    assert [type(region).__name__ for region in compiled_regions(net)] == ["ResNetEncoder", "PaperDecoder"]


class StopAfterEpoch(pl.Callback):
    """Ends the fit after epoch ``epoch``, as a run stopped there (its last checkpoint written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_a_compiled_run_resumes_like_an_uninterrupted_one(tiny_root: Path, tmp_path: Path) -> None:
    from corrmatch.cli import main  # noqa: PLC0415

    compile_args = ["--model.init_args.compile=true", "--model.init_args.compile_backend=aot_eager"]
    trainer = {"limit_train_batches": 2, "limit_val_batches": 1, "max_epochs": 2}
    stop = {"class_path": f"{__name__}.StopAfterEpoch", "init_args": {"epoch": 0}}
    straight = tiny_config(tmp_path / "straight.yaml", tiny_root, tmp_path / "straight", trainer=trainer)
    stopped = tiny_config(tmp_path / "stopped.yaml", tiny_root, tmp_path / "stopped",
                          trainer={**trainer, "callbacks": [stop]})
    main(["fit", "--config", str(straight), *compile_args])
    main(["fit", "--config", str(stopped), *compile_args])
    checkpoints = tmp_path / "stopped" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 2
    main(["fit", "--config", str(stopped), *compile_args, "--ckpt_path=last"])
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == expected["global_step"] == 4
    assert "compile" not in expected["hyper_parameters"]
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    assert not any("_orig_mod" in name for name in expected["state_dict"])  # loads into an eager network
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


@pytest.mark.parametrize(
    ("mode", "backend", "device", "message"),
    [
        ("reduce-overhead", "inductor", "cpu", "needs a CUDA device, the run is on cpu"),
        ("max-autotune", "aot_eager", "cpu", "is a mode of the inductor backend"),
        ("default", "no_such_backend", "cpu", "model.compile_backend 'no_such_backend': one of "),
        ("fastest", "inductor", "cpu", "model.compile_mode 'fastest': one of default, reduce-overhead"),
    ],
)
def test_an_unsupported_compile_setup_is_one_error(mode: str, backend: str, device: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_compile(mode, torch.device(device), backend)


@pytest.mark.parametrize(
    ("mode", "backend", "message"),
    [
        ("max-autotune", "aot_eager", "model.compile_mode max-autotune is a mode of the inductor backend, "
         "model.compile_backend is aot_eager: use compile_mode default, or compile_backend inductor"),
        ("reduce-overhead", "inductor", "model.compile_mode reduce-overhead records CUDA graphs and needs a "
         "CUDA device, the run is on cpu: use compile_mode default or max-autotune"),
    ],
)
def test_an_unsupported_compile_setup_stops_train_py_with_one_line(
    mode: str, backend: str, message: str, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Refused before the run directory or a W&B run exist, the one that depends on the device included."""
    from corrmatch.cli import main  # noqa: PLC0415

    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer={"logger": WANDB})
    with pytest.raises(SystemExit) as stopped:
        main([
            "fit", "--config", str(config), "--model.init_args.compile=true",
            f"--model.init_args.compile_backend={backend}", f"--model.init_args.compile_mode={mode}",
        ])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "run").exists()


def test_compile_without_a_cxx_compiler_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        check_compile("default", torch.device("cpu"), "inductor")
    check_compile("default", torch.device("cpu"), "aot_eager")  # runs eager kernels: no compiler

