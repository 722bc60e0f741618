"""A damaged or tampered run directory, a taken output folder, JSON without NaN: one clear message each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_clustered

from ssmrec.cli import main
from ssmrec.rundir import RunDir, atomic_write_json


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("faults")
    write_clustered(base / "data", 60, 5, 2)
    argv = ["train", "--data", str(base / "data"), "--output", str(base / "run"), "--model", "mf",
            "--dim", "8", "--loss", "bpr", "--batch-size", "64", "--epochs", "2",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return base / "run"


def _copy(run: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run, target)
    return target


def test_a_relative_data_path_is_stored_absolute(
    finished: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    config = json.loads((finished / "config.json").read_text())
    assert Path(config["data"]["path"]).is_absolute()
    monkeypatch.chdir("/")  # evaluate from another working directory
    assert main(["evaluate", str(finished)]) == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: (run / "model.safetensors").write_bytes(b""), "model.safetensors"),
        (lambda run: (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:100]),
         "model.safetensors"),
        (lambda run: (run / "config.json").write_text('{"model": '), "config.json: not a readable JSON file"),
        (lambda run: (run / "config.json").write_text(""), "config.json: not a readable JSON file"),
        (lambda run: (run / "data.json").write_text("[1, 2"), "data.json: not a readable JSON file"),
        (lambda run: (run / "model.safetensors").rename(run / "weights.bin"), "model.safetensors is missing"),
    ],
    ids=["empty-weights", "cut-weights", "cut-config", "empty-config", "bad-data-json", "renamed"],
)  # fmt: skip
def test_a_damaged_run_is_one_message_and_exit_2(
    finished: Path, tmp_path: Path, capsys, damage, message
) -> None:
    run = _copy(finished, tmp_path / "run")
    damage(run)
    assert main(["evaluate", str(run)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_tampering_is_noticed_and_force_only_warns(finished: Path, tmp_path: Path, capsys) -> None:
    flipped = _copy(finished, tmp_path / "flipped")
    weights = bytearray((flipped / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF  # one flipped byte in the last float
    (flipped / "model.safetensors").write_bytes(bytes(weights))
    assert main(["evaluate", str(flipped)]) == 2
    assert "model.safetensors changed after the run" in capsys.readouterr().err
    assert main(["evaluate", str(flipped), "--force"]) == 0
    captured = capsys.readouterr()
    assert "warning: --force: " in captured.err and json.loads(captured.out)["warnings"]

    edited = _copy(finished, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    config["model"]["name"] = "lightgcn"  # MF weights would load into LightGCN: same tensor names
    (edited / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(edited)]) == 2
    assert "config.json changed after the run" in capsys.readouterr().err

    resplit = _copy(finished, tmp_path / "resplit")
    config = json.loads((resplit / "config.json").read_text())
    config["data"]["split_seed"] = 99  # another validation carve: part of it would be training data
    (resplit / "config.json").write_text(json.dumps(config))
    final = json.loads((resplit / "final_metrics.json").read_text())
    final.pop("config_sha256")  # even with the config hash gone, the split options disagree
    (resplit / "final_metrics.json").write_text(json.dumps(final))
    assert main(["evaluate", str(resplit)]) == 2
    assert "split_seed" in capsys.readouterr().err


def test_an_output_folder_is_claimed_once(tmp_path: Path) -> None:
    first = RunDir.create(tmp_path / "run")
    with pytest.raises(FileExistsError, match="being written by another run"):
        RunDir.create(tmp_path / "run")  # an empty folder claimed by a run that has not written yet
    first.release_claim()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        RunDir.create(tmp_path / "file")
    with pytest.raises(FileExistsError, match="cannot create run directory"):
        RunDir.create(tmp_path / "file" / "below")
    os.chmod(tmp_path, 0o755)


def test_json_never_holds_nan(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"recall@20": float("nan"), "k": [float("inf"), 1.5]})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"recall@20": None, "k": [None, 1.5]} and "NaN" not in text


def test_a_preset_applies_to_ones_own_data(tmp_path: Path) -> None:
    from ssmrec.config import resolve_config

    config = resolve_config(flag_values={"preset": "ssm-gowalla", "data": {"path": str(tmp_path)}})
    assert (config.data.path, config.data.dataset, config.loss.temperature) == (str(tmp_path), None, 0.12)


def test_a_preset_gives_a_model_only_the_settings_it_has() -> None:
    from ssmrec.config import resolve_config

    mf = resolve_config(flag_values={"preset": "ssm-gowalla", "model": "mf"})  # the README's MF + SSM row
    assert (mf.model.name, mf.model.layers, mf.loss.temperature, mf.optim.reg) == ("mf", None, 0.12, 1e-5)
    with pytest.raises(Exception, match="layers applies to"):
        resolve_config(flag_values={"preset": "ssm-gowalla", "model": "mf", "layers": 2})
