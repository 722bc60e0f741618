"""The bad-input catalogue: one table of input -> message and exit code, run through the real CLI.

Every row is a mistake a new user (or an attacker) makes. Each must give one ``ssmrec: error:`` line that
says what is wrong (no traceback), the exit code of the README's table, and leave no run directory
behind. Rows run ``ssmrec.cli.main`` in-process (the same parser and handlers as the ``ssmrec``
script); :func:`test_the_installed_command_returns_the_exit_codes` checks the codes through a real
process.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_clustered

from ssmrec.cli import main

TINY = ["--model", "mf", "--dim", "8", "--batch-size", "64", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("catalogue")
    write_clustered(base / "data", 60, 5, 2)
    ambiguous = base / "ambiguous"
    ambiguous.mkdir()
    for name in ("train.txt", "test.txt"):  # three small ids per line: LightGCN lines or triples?
        lines = [f"{user} {user % 7} {(user * 3) % 11}" for user in range(40)]
        (ambiguous / name).write_text("\n".join(lines) + "\n")
    huge = base / "huge"
    huge.mkdir()
    (huge / "train.txt").write_text("0 1 2\n1 " + "x" * 1_000_000 + "\n")
    (huge / "test.txt").write_text("0 3\n1 4\n")
    cold = base / "cold"  # every test item is unseen in training: the test split is empty once cleaned
    write_clustered(cold, 20, 3, 0)
    (cold / "test.txt").write_text("".join(f"{user} {900 + user}\n" for user in range(20)))
    (base / "a-file").write_text("not a folder\n")
    (base / "unknown.toml").write_text('model = "mf"\ntemperatur = 0.1\n')
    (base / "broken.toml").write_text('model = "mf\n')
    return {"base": base, "data": base / "data", "ambiguous": ambiguous, "huge": huge, "cold": cold}


# (id, argv after `ssmrec`, exit code, fragment of the message); {data}, {base}... are filled in, and
# {out} is the run directory that must not exist afterwards.
CATALOGUE: list[tuple[str, list[str], int, str]] = [
    ("negative-seed", ["--seed", "-1"], 2, "seed must be an integer in [0, 2**63 - 1]"),
    ("huge-seed", ["--seed", str(2**70)], 2, "seed must be an integer in [0, 2**63 - 1]"),
    ("zero-eval-chunk", ["--eval-chunk-size", "0"], 2, "eval_chunk_size must be > 0"),
    ("negative-threads", ["--threads", "-1"], 2, "threads must be >= 1"),
    ("infinite-temperature", ["--loss", "ssm", "--temperature", "inf"], 2, "temperature: expected a finite"),
    ("infinite-lr", ["--lr", "inf"], 2, "lr: expected a finite number"),
    ("infinite-reg", ["--reg", "inf"], 2, "reg: expected a finite number"),
    ("nan-alpha", ["--model", "lightgcn", "--alpha", "nan,nan"], 2, "alpha: expected a finite number"),
    ("zero-batch", ["--batch-size", "0"], 2, "batch_size must be > 0"),
    ("bad-ks", ["--ks", "0"], 2, "ks must be positive integers"),
    ("misspelt-metric", ["--metric", "recal@20"], 2, "unknown metric 'recal'"),
    ("temperature-with-bpr", ["--loss", "bpr", "--temperature", "0.1"], 2,
     "temperature applies to ssm, softmax, bsl, adap-tau, not to loss 'bpr'"),
    ("layers-with-mf", ["--layers", "2"], 2, "layers applies to lightgcn"),
    ("margin-with-ssm", ["--loss", "ssm", "--margin", "0.5"], 2, "margin applies to ccl"),
    ("valid-ratio-with-paper", ["--protocol", "paper", "--valid-ratio", "0.2"], 2,
     "the paper protocol carves no validation split"),
    ("unknown-preset", ["--preset", "ssm-gowala"], 2, "did you mean 'ssm-gowalla'"),
    ("unknown-config-key", ["--config", "{base}/unknown.toml"], 2, "unknown key 'temperatur'"),
    ("broken-toml", ["--config", "{base}/broken.toml"], 2, "broken.toml: invalid TOML"),
    ("missing-config", ["--config", "{base}/nope.toml"], 2, "nope.toml: config file not found"),
    ("ambiguous-triples", ["--data", "{ambiguous}"], 2, "reads either as LightGCN"),
    ("huge-bad-token", ["--data", "{huge}"], 2, "(1,000,000 bytes) is not a non-negative integer"),
    ("empty-test-split", ["--data", "{cold}", "--protocol", "paper"], 2, "the test split of"),
    ("dev-null-data", ["--data", "/dev/null"], 2, "/dev/null: file is empty"),
    ("missing-data", ["--data", "{base}/nowhere"], 2, "nowhere"),
    ("output-is-a-file", ["--output", "{base}/a-file"], 2, "exists and is not a folder"),
    ("output-under-a-file", ["--output", "{base}/a-file/run"], 2, "cannot create run directory"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "fragment"), [row[1:] for row in CATALOGUE],
                         ids=[row[0] for row in CATALOGUE])  # fmt: skip
def test_a_bad_input_is_one_message_and_its_exit_code(
    inputs: dict[str, Path], tmp_path: Path, capsys, argv: list[str], code: int, fragment: str
) -> None:
    out = tmp_path / "run"
    names = {key: str(value) for key, value in inputs.items()}
    filled = [part.format(**names, out=out) for part in argv]
    if "--data" not in filled and "--config" not in filled and "--preset" not in filled:
        filled += ["--data", names["data"]]
    if "--output" not in filled:
        filled += ["--output", str(out)]
    assert main(["train", *TINY, *filled]) == code
    error = capsys.readouterr().err
    assert "ssmrec: error: " in error and fragment in error and "Traceback" not in error
    assert len(error) < 2000, "a message must not echo the whole bad input"
    assert not out.exists(), "a refused run leaves no run directory"


def test_the_installed_command_returns_the_exit_codes(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The exit code reaches the shell (``ssmrec train ... && next`` can tell)."""
    command = [sys.executable, "-m", "ssmrec", "train", *TINY, "--data", str(inputs["data"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    refused = subprocess.run([*command, "--seed", "-1", "--output", str(tmp_path / "a")],
                             capture_output=True, text=True, env=env)  # fmt: skip
    assert refused.returncode == 2 and "seed must be" in refused.stderr and "Traceback" not in refused.stderr
    finished = subprocess.run([*command, "--output", str(tmp_path / "b")], capture_output=True, text=True,
                              env=env)  # fmt: skip
    assert finished.returncode == 0, finished.stderr


def test_a_full_disk_mid_run_is_exit_74_and_leaves_whole_files(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``No space left on device`` while the weights are written: one message naming the file and how to
    go on, exit 74, no temporary file left, and the run resumes to the end once there is room."""
    real_fsync = os.fsync

    def full_for_weights(fd: int) -> None:
        if "model.safetensors" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file is being synced")
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", full_for_weights)
    argv = ["train", *TINY, "--epochs", "2", "--data", str(inputs["data"]), "--output", str(out)]
    assert main(argv) == 74
    error = capsys.readouterr().err
    assert "model.safetensors: No space left on device" in error and f"--resume {out}" in error
    assert "Traceback" not in error
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and not (out / "model.safetensors").exists()
    assert {"config.json", "data.json", "id_maps.json"} <= {p.name for p in out.iterdir()}

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["train", "--resume", str(out)]) == 0
    assert (out / "final_metrics.json").is_file() and (out / "model.safetensors").is_file()


ROOT = os.geteuid() == 0


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders: EACCES cannot be tested as root")
def test_a_read_only_output_is_one_message(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        argv = ["train", *TINY, "--data", str(inputs["data"]), "--output", str(locked / "run")]
        assert main(argv) == 2
        assert "Permission denied" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_refused_write_permission_is_one_message(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The same refusal as the read-only folder above, made by the OS call itself (runs as root too)."""
    real_open = os.open

    def refuse(path: str | os.PathLike, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".claim"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse)
    argv = ["train", *TINY, "--data", str(inputs["data"]), "--output", str(tmp_path / "run")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "cannot create run directory" in error and "Permission denied" in error
    assert not (tmp_path / "run").exists()


def test_a_pipe_as_data_is_read_once_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--data <(cat inter.csv)``: a FIFO is read as a stream (an unsplit CSV is split as from a file),
    and the run warns that its recorded path cannot be read again."""
    import threading

    lines = ["user_id,item_id"] + [f"{user},{(user * 7 + k) % 40}" for user in range(60) for k in range(8)]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("\n".join(lines) + "\n"))
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ssmrec"):
            assert main(["train", *TINY, "--data", str(fifo), "--output", str(tmp_path / "run")]) == 0
    finally:
        writer.join(timeout=10)
    assert f"--data {fifo} is a pipe or device, read once as a stream" in caplog.text
    assert (tmp_path / "run" / "final_metrics.json").is_file()


def test_the_paper_protocol_records_no_validation_carve(inputs: dict[str, Path], tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    argv = ["train", *TINY, "--data", str(inputs["data"]), "--protocol", "paper", "--output", str(out)]
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["data"]
    assert recorded["valid_ratio"] == 0.0  # what ran, not the unused default 0.1
    assert main(["evaluate", str(out)]) == 0


def test_a_reader_that_leaves_early_is_not_an_error(inputs: dict[str, Path]) -> None:
    """``ssmrec data info DIR | head -1``: the pipe closes before ssmrec writes; exit 0, no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ssmrec", "data", "info", str(inputs["data"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # no reader is left: the command's first write meets a broken pipe
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and "Traceback" not in error and "BrokenPipe" not in error
