"""Devices: parsing and refusal, the CPU path unchanged and free of CUDA calls, cross-device resume,
deferred (sync-free) loss checks, deterministic mode, bf16 autocast, device-built evaluation masks.

Device-dependent cases are parametrised over :data:`DEVICES`; CUDA and MPS cases skip with the reason
when this machine has none (CI has no GPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import write_clustered

from ssmrec import checkpoint, device
from ssmrec.batch import Batch
from ssmrec.cli import main
from ssmrec.config import resolve_config
from ssmrec.data import load_dataset
from ssmrec.device import DeviceError, deterministic_mode, parse_device, resolve_device
from ssmrec.errors import ConfigError
from ssmrec.evaluate import evaluate_ranking
from ssmrec.evaluate.ranking import DevicePairs, chunk_pairs, device_chunk_size
from ssmrec.experiment import build_trainer, train
from ssmrec.trainer import NonFiniteError, batch_loss

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")),
]
PAIRS = [
    ("cpu", "cpu"),
    pytest.param("cuda", "cpu", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")),
    pytest.param("cpu", "cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")),
]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clustered(tmp_path_factory.mktemp("device") / "data", 160, 8, 2)


def _config(data_path: Path, **flags):
    values = {"data": {"path": str(data_path)}, "model": "lightgcn", "layers": 1, "loss": "ssm", "dim": 8,
              "batch_size": 64, "epochs": 3, "lr": 0.01, "seed": 3, "progress": False, **flags}  # fmt: skip
    return resolve_config({}, values)


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("auto", ("auto", None)),
        ("cpu", ("cpu", None)),
        ("CUDA", ("cuda", None)),
        ("cuda:1", ("cuda", 1)),
        ("mps", ("mps", None)),
    ],
)
def test_parse_device_accepts_the_documented_forms(text: str, parsed: tuple) -> None:
    assert parse_device(text) == parsed


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cpu:0", "mps:1", "", "cuda:-1"])
def test_parse_device_refuses_anything_else(text: str) -> None:
    with pytest.raises(DeviceError, match="device"):
        parse_device(text)


def test_resolve_device_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="use --device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="use --device cpu or auto"):
        resolve_device("cuda:0")


def test_resolve_device_refuses_a_missing_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\): 0..1"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_mps_refused_where_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS backend is not available"):
        resolve_device("mps")


def test_config_validates_and_records_the_settings(data_path: Path) -> None:
    with pytest.raises(ConfigError, match="device must be"):
        _config(data_path, device="gpu")
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        _config(data_path, precision="fp16")
    recorded = _config(data_path, device="cpu", deterministic=True, precision="bf16").to_dict()
    assert recorded["run"]["device"] == "cpu" and recorded["run"]["deterministic"] is True
    assert recorded["optim"]["precision"] == "bf16"
    assert _config(data_path).to_dict()["run"]["device"] == "auto"


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU: a missing one cannot be asked for")
def test_asking_for_a_missing_gpu_is_exit_2_before_anything_is_written(
    data_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "run"
    assert main(["train", "--data", str(data_path), "--output", str(output), "--device", "cuda"]) == 2
    assert "device cuda asked for" in capsys.readouterr().err
    assert not output.exists()
    assert main(["train", "--data", str(data_path), "--output", str(output), "--device", "tpu"]) == 2
    assert not output.exists()


# ---------------------------------------------------------------------------------------- CPU path


def _reference_losses(config, data, epochs: int) -> list[float]:
    """The epoch losses of a plain loop written here: per batch, the loss as a float, backward, Adam."""
    trainer = build_trainer(config, data)
    model, objective, optimizer = trainer.model, trainer.objective, trainer.optimizer
    sampler = trainer.sampler
    losses = []
    for epoch in range(1, epochs + 1):
        from ssmrec.losses import EpochContext

        objective.begin_epoch(EpochContext(epoch, model, data.train))
        order = trainer.pairs.epoch_order(trainer.rng)
        total, n = 0.0, trainer.pairs.n_batches(config.optim.batch_size)
        for index in range(n):
            users, positives = trainer.pairs.batch(order, index, config.optim.batch_size)
            negatives = sampler.sample(users, positives, trainer.rng)
            batch = Batch.build(users, positives, negatives, sampler.training)
            loss = batch_loss(model, objective, batch, config.optim.reg).total
            total += float(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for parameter in model.parameters():
                if parameter.grad is not None and parameter.grad.is_sparse:
                    parameter.grad = parameter.grad.to_dense()
            optimizer.step()
        losses.append(total / n)
    return losses


@pytest.mark.parametrize("loss", ["ssm", "bpr"])
def test_device_cpu_trains_exactly_as_a_plain_loop(data_path: Path, loss: str) -> None:
    config = _config(data_path, device="cpu", loss=loss)
    data = load_dataset(config.data)
    trainer = build_trainer(config, data)
    assert trainer.device == torch.device("cpu") and not trainer.sync_free
    assert [trainer.train_epoch() for _ in range(3)] == _reference_losses(config, data, 3)


def test_the_cpu_path_never_calls_cuda(
    data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA API was called on the CPU path")

    # torch imports dynamo lazily (Adam's first step): loaded under the stand-ins below, it registers
    # them as torch functions and breaks the worker; load it first (it calls no CUDA API either way)
    import torch._dynamo

    for name in ("synchronize", "mem_get_info", "current_device", "get_device_properties", "Stream",
                 "get_rng_state", "set_rng_state", "is_available", "device_count", "init"):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "pin_memory", forbidden)
    result = train(_config(data_path, device="cpu", output=str(tmp_path / "run"), epochs=2, loss="softmax",
                           layers=None, model="mf"))  # fmt: skip
    assert result.exit_code == 0 and "test" in result.final
    assert main(["evaluate", str(tmp_path / "run"), "--device", "cpu"]) == 0
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["device"]["type"] == "cpu" and environment["deterministic"] is False


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"exclude": "train", "num_negatives": 4},  # masks built from the batch's host copy
        {"loss": "softmax", "model": "mf", "layers": None},
        {"loss": "adap-tau", "adaptive_warmup": 1},  # per-user state that follows the batch's device
    ],
)
def test_the_sync_free_path_gives_the_same_losses(data_path: Path, flags: dict) -> None:
    """The accelerator's step (batch copied with :meth:`Batch.to`, loss summed on the device, checks
    deferred), run on the CPU tensors: the same losses and weights as the per-step path."""
    config = _config(data_path, device="cpu", **flags)
    data = load_dataset(config.data)
    direct, deferred = build_trainer(config, data), build_trainer(config, data)
    deferred.sync_free = True
    for _ in range(3):
        assert deferred.train_epoch() == direct.train_epoch()
    for name, value in direct.model.state_dict().items():
        assert torch.equal(value, deferred.model.state_dict()[name]), name


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_non_finite_step_is_located_in_both_paths(
    data_path: Path, sync_free: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 70 of epoch 1 (past one deferred window of 64) gets a NaN objective: both paths name it."""
    config = _config(data_path, device="cpu", batch_size=8)
    data = load_dataset(config.data)
    trainer = build_trainer(config, data)
    trainer.sync_free = sync_free
    assert trainer.pairs.n_batches(8) > 70
    calls = {"n": 0}
    original = type(trainer.objective).forward

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        value = original(self, *args, **kwargs)
        return value * math.nan if calls["n"] == 70 else value

    monkeypatch.setattr(type(trainer.objective), "forward", poisoned)
    with pytest.raises(NonFiniteError) as raised:
        trainer.train_epoch()
    assert (raised.value.epoch, raised.value.batch, raised.value.term) == (1, 70, "objective")


# ---------------------------------------------------------------------------------------- resuming


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_a_checkpoint_resumes_on_another_device(
    data_path: Path, tmp_path: Path, first: str, second: str
) -> None:
    """Stop inside epoch 2 on ``first``, write the checkpoint, resume on ``second``: same losses and
    weights as an uninterrupted run on ``second`` (checkpoint tensors are read on the CPU and placed)."""
    config = _config(data_path)
    data = load_dataset(config.data)
    straight = build_trainer(config, data, device=torch.device(second))
    expected = [straight.train_epoch() for _ in range(3)]

    steps = {"n": 0}

    def stop_after_30() -> bool:
        steps["n"] += 1
        return steps["n"] >= 30

    interrupted = build_trainer(config, data, stop_after_30, device=torch.device(first))
    losses = [interrupted.train_epoch()]
    assert interrupted.train_epoch() is None and interrupted.state.step > 0  # stopped inside epoch 2
    checkpoint.write(tmp_path, *interrupted.checkpoint_state())
    saved = checkpoint.latest(tmp_path)
    assert saved is not None
    resumed = build_trainer(config, data, device=torch.device(second))
    resumed.restore(saved.state, saved.tensors)
    losses += [resumed.train_epoch(), resumed.train_epoch()]
    if first == second:
        assert losses == expected
    else:  # another device sums in another order: equal to float rounding
        assert np.allclose(losses, expected, rtol=1e-4)
    assert resumed.model.user_embedding.weight.device.type == second


def test_resume_may_change_the_device(data_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", str(data_path), "--output", str(run), "--epochs", "2", "--dim", "8",
            "--batch-size", "64", "--no-progress", "--keep-checkpoint", "true"]  # fmt: skip
    assert main([*argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--device", "auto", "--deterministic"]) == 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["run"]["device"] == "auto" and recorded["run"]["deterministic"] is True
    environment = json.loads((run / "environment.json").read_text())
    assert environment["device"]["device"] == "cpu"  # where it started
    resumed = environment["resumed_on"]
    assert len(resumed) == 1 and resumed[0]["deterministic"] is True
    assert resumed[0]["device"]["type"] == ("cuda" if HAS_CUDA else "cpu")
    assert main(["train", "--resume", str(run), "--epochs", "4", "--precision", "bf16"]) == 2
    assert "optim.precision" in capsys.readouterr().err


# ----------------------------------------------------------------------------- modes and precision


def test_deterministic_mode_is_on_during_the_run_and_restored(
    data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    from ssmrec import trainer as trainer_module

    original = trainer_module.Trainer.fit

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "fit", spy)
    before = torch.are_deterministic_algorithms_enabled()
    train(_config(data_path, device="cpu", deterministic=True, epochs=1, output=str(tmp_path / "a")))
    train(_config(data_path, device="cpu", epochs=1, output=str(tmp_path / "b")))
    assert seen == [True, before] and torch.are_deterministic_algorithms_enabled() == before
    with deterministic_mode(True, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize("name", DEVICES)
def test_deterministic_runs_repeat_exactly(data_path: Path, name: str) -> None:
    config = _config(data_path, device=name, deterministic=True)
    data = load_dataset(config.data)
    runs = []
    for _ in range(2):
        with deterministic_mode(True, torch.device(name)):
            trainer = build_trainer(config, data)
            runs.append(([trainer.train_epoch() for _ in range(2)], trainer.evaluate()))
    assert runs[0] == runs[1]


def test_bf16_trains_on_the_cpu_close_to_fp32(data_path: Path) -> None:
    results = {}
    for precision in ("fp32", "bf16"):
        config = _config(data_path, device="cpu", precision=precision, epochs=4)
        data = load_dataset(config.data)
        trainer = build_trainer(config, data)
        results[precision] = ([trainer.train_epoch() for _ in range(4)], trainer.evaluate()["recall@20"])
    fp32, bf16 = results["fp32"], results["bf16"]
    assert fp32[0] != bf16[0]  # bf16 autocast really changed the arithmetic
    assert np.allclose(fp32[0], bf16[0], rtol=2e-2)  # ... by rounding only
    assert abs(fp32[1] - bf16[1]) < 0.05


# -------------------------------------------------------------------------------------- evaluation


def test_device_pairs_equal_the_host_pairs() -> None:
    rng = np.random.default_rng(0)
    matrix = sp.random(50, 30, density=0.2, format="csr", random_state=1)
    matrix.sort_indices()
    pairs = DevicePairs(matrix, torch.device("cpu"))
    for start, stop in [(0, 50), (0, 1), (7, 19), (49, 50), (10, 10)] + [
        tuple(sorted(rng.integers(0, 51, 2))) for _ in range(10)
    ]:
        host, built = chunk_pairs(matrix, start, stop, torch.device("cpu")), pairs.pairs(start, stop)
        assert torch.equal(host[0], built[0]) and torch.equal(host[1], built[1])


def test_device_chunk_size_from_free_memory() -> None:
    assert device_chunk_size(1_000_000, 100 * 2**30) == (50 * 2**30) // (16 * 1_000_000)
    assert device_chunk_size(40_981, 100 * 2**30) == 8192  # capped
    assert device_chunk_size(10**9, 2**20) == 1  # never zero


@pytest.mark.parametrize("name", DEVICES)
def test_device_metrics_equal_the_cpu_evaluator(name: str) -> None:
    """Same embeddings, truth, exclusions and chunks: the metrics on ``name`` equal the CPU's exactly
    (the top-K lists are exact everywhere; the float64 sums over chunks follow the chunking)."""
    generator = torch.Generator().manual_seed(5)
    users, items = torch.randn(300, 16, generator=generator), torch.randn(5000, 16, generator=generator)
    users[:10] = users[10]  # tied rows and duplicated items: the tie-breaking rule is exercised too
    items[100:120] = items[7]
    truth = sp.random(300, 5000, density=0.002, format="csr", random_state=2)
    train_matrix = sp.random(300, 5000, density=0.01, format="csr", random_state=3)
    options = {"exclude": [train_matrix], "ks": [10, 20, 50], "chunk_size": 64}
    with pytest.warns(RuntimeWarning, match="also excluded"):
        expected = evaluate_ranking(users, items, truth, precision="fp32", **options)
    target = torch.device(name)
    for precision in ("fp32", "bf16"):
        with pytest.warns(RuntimeWarning, match="also excluded"):
            got = evaluate_ranking(users.to(target), items.to(target), truth, precision=precision, **options)
        assert got == expected
    assert expected["users"] > 200 and expected["recall@50"] > 0


def test_cpu_description_and_moves_are_free() -> None:
    described = device.describe_device(torch.device("cpu"))
    assert described["device"] == "cpu" and described["type"] == "cpu"
    assert device.device_summary(described).startswith("cpu (")
    tensor = torch.arange(5)
    assert device.to_device(tensor, torch.device("cpu")) is tensor  # the CPU path copies nothing
    batch = Batch.build(tensor, tensor, _no_negatives())
    moved = batch.to(torch.device("cpu"))
    assert moved.users is tensor and moved.host is batch and moved.on_host is batch and batch.on_host is batch


def _no_negatives():
    from ssmrec.sampling.negatives import Negatives

    return Negatives(ids=None, in_batch=True)
