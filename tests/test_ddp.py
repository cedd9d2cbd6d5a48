"""DDP with two CPU processes (gloo) computes what one process computes.

* On the same batch, both ranks of a CorrMatch or UniMatchV2 step give the one-process loss terms, τ,
  gradients and teacher, bit for bit (one thread per process, as torchrun sets it).
* On their own batches, τ is the one-process update on both batches together and the ranks stay in step.
* ``torchrun … train.py fit``: each rank draws its own augmentations, region rows and dropout masks from
  disjoint shards of the epoch; one W&B run, one config.yaml and one set of checkpoints; the 2-process
  validation is the one-process mIoU exactly.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import HANG_GUARD, REPO, WANDB, tiny_config
from jsonargparse import Namespace

from corrmatch.cli import CorrMatchCLI, main
from corrmatch.pseudo import DynamicThreshold

TESTS = Path(__file__).resolve().parent
PROBE_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node 2 <args>`` from the repository root, CPU processes (gloo)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    return subprocess.run(
        command, cwd=REPO, env=PROBE_ENV, capture_output=True, text=True, timeout=HANG_GUARD
    )


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Runs the body on one thread, as every torchrun process does, so the sums are done alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["CorrMatch", "UniMatchV2"])
def probe(
    request: pytest.FixtureRequest, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """tests/ddp_probe.py under torchrun (2 processes) and, for its ``same`` fit, on this one process."""
    import ddp_probe  # noqa: PLC0415 (the tests folder is on the path only under pytest)

    method, out = request.param, tmp_path_factory.mktemp(f"ddp_{request.param}")
    result = torchrun(str(TESTS / "ddp_probe.py"), method, str(tiny_root), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    with one_thread():
        ddp_probe.fit(method, ddp_probe.batches(method, str(tiny_root)), "same", out / "single")

    def load(name: str) -> Any:
        return torch.load(out / name, weights_only=False)

    return {
        "method": method,
        "single": load("single/same-rank0.pt"),
        "same": [load(f"same-rank{rank}.pt") for rank in range(2)],
        "own": [load(f"own-rank{rank}.pt") for rank in range(2)],
    }


def test_ddp_ranks_on_the_same_batch_equal_one_process(probe: dict[str, Any]) -> None:
    single = probe["single"]["steps"]
    assert any(step["losses"]["loss_u_s"] > 0 for step in single)  # the unlabeled terms take part
    for rank, run in enumerate(probe["same"]):
        assert len(run["steps"]) == len(single) >= 2
        for index, (step, expected) in enumerate(zip(run["steps"], single)):
            where = f"rank {rank}, step {index}"
            assert step["losses"].keys() == expected["losses"].keys()
            for name, value in expected["losses"].items():
                assert torch.equal(step["losses"][name], value), f"{where}: {name}"
            if "tau" in expected:
                assert torch.equal(step["tau"], expected["tau"]), where
            assert step["grads"].keys() == expected["grads"].keys()
            for name, grad in expected["grads"].items():
                assert torch.equal(step["grads"][name], grad), f"{where}: gradient of {name}"
            if "teacher" in expected:
                for name, tensor in expected["teacher"].items():
                    assert torch.equal(step["teacher"][name], tensor), f"{where}: teacher {name}"
        for name, tensor in probe["single"]["net"].items():
            assert torch.equal(run["net"][name], tensor), f"rank {rank}: {name}"


def test_ddp_ranks_on_their_own_batches_gather_tau_and_stay_in_step(probe: dict[str, Any]) -> None:
    first, second = probe["own"]
    for name, tensor in first["params"].items():  # BatchNorm's running statistics are each rank's own
        assert torch.equal(second["params"][name], tensor), name
    if probe["method"] == "UniMatchV2":
        for name, tensor in first["teacher"].items():
            assert torch.equal(second["teacher"][name], tensor), f"teacher {name}"
        return
    assert len(first["tau_updates"]) == len(second["tau_updates"]) >= 2
    for (logits0, ignore0, before, tau0), (logits1, ignore1, before1, tau1) in zip(
        first["tau_updates"], second["tau_updates"]
    ):
        assert torch.equal(before, before1) and torch.equal(tau0, tau1)
        assert not torch.equal(logits0, logits1)
        whole, alone = DynamicThreshold(init=float(before)), DynamicThreshold(init=float(before))
        assert torch.equal(whole.update(torch.cat((logits0, logits1)), torch.cat((ignore0, ignore1))), tau0)
        assert not torch.equal(alone.update(logits0, ignore0), tau0)


@pytest.fixture(scope="module")
def copies_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset with every labeled image (and mask) a copy of the first, and every unlabeled
    image a copy of the first unlabeled one: two ranks whose draws agreed would train on equal batches."""
    root = tmp_path_factory.mktemp("copies") / "demo"
    shutil.copytree(tiny_root, root)
    for split in ("labeled", "unlabeled"):
        entries = [line.split() for line in (root / "splits" / f"{split}.txt").read_text().splitlines()]
        for entry in entries[1:]:
            for first, other in zip(entries[0], entry):
                shutil.copyfile(root / first, root / other)
    return root


@pytest.fixture(scope="module")
def torchrun_fit(copies_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``torchrun --nproc_per_node 2 train.py fit`` on the copies, logging to W&B offline, with the draws
    of each rank recorded (tests/ddp_probe.py's RecordDraws)."""
    tmp = tmp_path_factory.mktemp("torchrun")
    draws = tmp / "draws"
    trainer = {
        "devices": 2,
        "strategy": "ddp",
        "limit_train_batches": 2,
        "limit_val_batches": 1.0,
        "logger": WANDB,
        "callbacks": [{"class_path": "ddp_probe.RecordDraws", "init_args": {"out": str(draws)}}],
    }
    config = tiny_config(tmp / "fit.yaml", copies_root, tmp / "run", trainer=trainer)
    result = torchrun("train.py", "fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "stdout": result.stdout,
        "run": tmp / "run",
        "draws": [torch.load(draws / f"draws-rank{rank}.pt", weights_only=False) for rank in range(2)],
        "tmp": tmp,
    }


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


@pytest.fixture(scope="module")
def srun_fit(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``srun python train.py fit`` as SLURM starts it for ``--ntasks-per-node 2`` on one node: two
    processes told their rank by SLURM's variables alone, logging to W&B offline."""
    tmp = tmp_path_factory.mktemp("srun")
    trainer = {"devices": 2, "limit_train_batches": 2, "limit_val_batches": 1.0, "logger": WANDB}
    config = tiny_config(tmp / "fit.yaml", tiny_root, tmp / "run", trainer=trainer)
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "corrmatch", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
    }
    tasks = [
        subprocess.Popen(
            [sys.executable, "train.py", "fit", "--config", str(config)],
            cwd=REPO, env={**PROBE_ENV, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in range(2)
    ]
    outputs = [task.communicate(timeout=HANG_GUARD) for task in tasks]
    for rank, (task, (_, stderr)) in enumerate(zip(tasks, outputs)):
        assert task.returncode == 0, stderr[-3000:]
        # each task is the rank SLURM named, and starts no process of its own
        assert re.findall(r"GLOBAL_RANK: \d+, MEMBER: \d+/\d+", stderr) == [f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2"]
    return {"stdout": "".join(stdout for stdout, _ in outputs), "run": tmp / "run"}


@pytest.mark.parametrize("launch", ["torchrun_fit", "srun_fit"])
def test_ddp_launch_writes_one_run_config_and_checkpoint_set(launch: str, request: pytest.FixtureRequest) -> None:
    fit = request.getfixturevalue(launch)
    run, stdout = fit["run"], fit["stdout"]
    assert stdout.count("val mIoU = ") == 1 and stdout.count("fit finished in ") == 1  # rank 0 prints
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert [path.name for path in run.glob("*.yaml")] == ["config.yaml"]
    names = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert len(names) == 2 and names[1] == "last.ckpt" and names[0].startswith("best-"), names
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert len(checkpoint["rng_states"]) == 2  # every rank's generators, for an exact resume


def test_ddp_ranks_draw_their_own_augmentations_from_disjoint_shards(
    torchrun_fit: dict[str, Any], copies_root: Path
) -> None:
    first, second = torchrun_fit["draws"]
    assert first["indices"].keys() == {"labeled", "unlabeled", "unlabeled_mix"}
    for name, ((mine,), (theirs,)) in zip(
        first["indices"], zip(first["indices"].values(), second["indices"].values())
    ):
        assert len(mine) == len(theirs) and not set(mine) & set(theirs), name
        assert sorted(mine + theirs) == list(range(2 * len(mine))), name  # the epoch, once
    for step, (a, b) in enumerate(zip(first["batches"], second["batches"])):
        for group, key in (
            ("labeled", "image"),
            ("unlabeled", "image_w"),
            ("unlabeled", "image_s"),
                        ("unlabeled_mix", "image_s"),
        ):
            assert not torch.equal(a[group][key], b[group][key]), f"step {step}: {group} {key}"
        assert not torch.equal(first["rng"][step], second["rng"][step])  # dropout masks
        assert not torch.equal(first["rows"][step], second["rows"][step])  # region rows


def test_ddp_validation_equals_one_process(
    torchrun_fit: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    tmp = torchrun_fit["tmp"]
    config = yaml.safe_load((torchrun_fit["run"] / "config.yaml").read_text())
    config["trainer"].update({"devices": 1, "strategy": "auto", "logger": False, "callbacks": None})
    config["trainer"]["default_root_dir"] = str(tmp / "validate")
    (tmp / "validate.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        main(
            [
                "validate",
                "--config",
                str(tmp / "validate.yaml"),
                "--ckpt_path",
                str(tmp / "run" / "checkpoints" / "last.ckpt"),
            ]
        )
    single = capsys.readouterr().out

    def scores(text: str) -> list[str]:
        return re.findall(r"val mIoU = ([\d.]+)", text) + re.findall(r"val IoU per class: (.*)", text)

    assert len(scores(single)) == 2 and scores(single) == scores(torchrun_fit["stdout"])


@pytest.mark.parametrize(
    ("accelerator", "devices", "num_nodes", "expected"),
    [
        ("gpu", 4, 1, ("ddp", True)),  # the paper's 4 GPUs
        ("gpu", 4, 2, ("ddp", True)),
        ("gpu", "0,1", 1, ("ddp", True)),
        ("gpu", 1, 1, ("auto", False)),  # one GPU: plain BatchNorm
        ("cpu", 1, 1, ("auto", False)),
    ],
)
def test_ddp_and_sync_batchnorm_follow_the_number_of_processes(
    accelerator: str, devices: Any, num_nodes: int, expected: tuple[str, bool]
) -> None:
    trainer = Namespace(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="auto",
                        sync_batchnorm=True)
    CorrMatchCLI._set_distributed(trainer)
    assert (trainer.strategy, trainer.sync_batchnorm) == expected


def test_sync_batchnorm_on_several_cpu_processes_is_one_error(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer={"sync_batchnorm": True})
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), "--trainer.devices=2"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: trainer.sync_batchnorm true with 2 CPU processes: torch's SyncBatchNorm runs on GPUs only; pass "
        "--trainer.sync_batchnorm false (each process keeps its own BatchNorm statistics) or train on GPUs"
    ]
    assert not (tmp_path / "run").exists()
