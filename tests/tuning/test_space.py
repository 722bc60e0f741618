"""Search spaces: the defaults table per model and loss, TOML overrides, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmrec.config import resolve_config
from ssmrec.errors import ConfigError, SsmrecError
from ssmrec.tuning.space import build_space, given_settings

DATA = {"data": {"dataset": "ml-100k"}}


def _space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def _by_name(space):
    return {parameter.name: parameter for parameter in space.parameters}


def test_default_spaces_follow_the_model_and_loss() -> None:
    ssm = _by_name(build_space("lightgcn", "ssm", flag_values=DATA))
    tau = ssm["temperature"]
    assert (tau.kind, tau.low, tau.high, tau.log) == ("float", 0.03, 0.5, True)
    assert (ssm["layers"].kind, ssm["layers"].low, ssm["layers"].high) == ("int", 1, 3)
    assert ssm["reg"].log and ssm["logq"].choices == ("none", "corrected")
    assert ssm["num_negatives"].when == {"negatives": ("mixed",)}
    bsl = _by_name(build_space("mf", "bsl", flag_values=DATA))
    assert {"temperature", "negative_weight"} <= set(bsl) and "layers" not in bsl  # MF has no layers
    assert "positive_temperature" not in bsl  # with the default weight τ2/τ1 it only rescales the loss
    adaptive = _by_name(build_space("mf", "adap-tau", flag_values=DATA))
    assert {"adaptive_scale", "adaptive_warmup"} <= set(adaptive)
    assert "temperature" not in _by_name(build_space("mf", "bpr", flag_values=DATA))  # BPR has no τ


def test_a_conditional_parameter_is_sampled_only_when_its_condition_holds() -> None:
    space = build_space("mf", "ssm", flag_values=DATA)

    class Fixed:  # a stand-in trial answering each suggestion with a set value
        def __init__(self, negatives: str) -> None:
            self.negatives = negatives

        def suggest_float(self, name, low, high, log=False):
            return low

        def suggest_int(self, name, low, high, log=False):
            return low

        def suggest_categorical(self, name, choices):
            return self.negatives if name == "negatives" else choices[0]

    assert "num_negatives" not in space.sample(Fixed("in-batch"))
    assert space.sample(Fixed("mixed"))["num_negatives"] == 16


def test_the_baseline_trial_is_the_presets_own_setting(tmp_path: Path) -> None:
    """``--baseline-first``: the preset's values of the searched keys; an inactive conditional key and a
    value outside its range are left to the sampler."""
    preset = resolve_config({}, {"preset": "ssm-gowalla"})
    space = build_space("lightgcn", "ssm", flag_values={"preset": "ssm-gowalla"})
    assert space.baseline(preset) == {
        "layers": 1, "temperature": 0.12, "reg": 1e-5, "negatives": "in-batch", "logq": "none",
    }  # fmt: skip  (no num_negatives: its condition, mixed negatives, does not hold)
    mixed = resolve_config({}, {"preset": "ssm-gowalla", "negatives": "mixed", "num_negatives": 64})
    assert build_space("lightgcn", "ssm", flag_values=DATA).baseline(mixed)["num_negatives"] == 64
    narrow = _space_file(tmp_path, "[temperature]\nlow = 0.2\nhigh = 0.4\n")
    outside = build_space("lightgcn", "ssm", narrow, flag_values={"preset": "ssm-gowalla"}).baseline(preset)
    assert "temperature" not in outside and outside["reg"] == 1e-5


def test_the_baseline_takes_the_loss_rows_optimisation_settings_nobody_set() -> None:
    """A BPR study without a preset starts from LightGCN-PyTorch's L2 1e-4 (its row of the defaults
    table, as ``ssmrec grid`` runs BPR), not the config's generic 1e-5; a preset's or a flag's value wins."""

    def baseline(flags: dict) -> dict:
        config = resolve_config({}, flags)
        space = build_space(config.model.name, config.loss.name, flag_values=flags)
        return space.baseline(config, given_settings({}, flags))

    assert resolve_config({}, {**DATA, "loss": "bpr"}).optim.reg == 1e-5  # what `ssmrec train` would run
    assert baseline({**DATA, "model": "mf", "loss": "bpr"}) == {"reg": 1e-4, "lr": 1e-3}
    assert baseline({**DATA, "model": "mf", "loss": "bpr", "lr": 5e-3}) == {"reg": 1e-4}  # lr: not searched
    assert baseline({"preset": "ssm-gowalla", "loss": "bpr"})["reg"] == 1e-5  # the preset's own L2
    assert baseline({**DATA, "model": "mf", "loss": "ssm"})["reg"] == 1e-5  # SSM's row has no L2


def test_the_adap_tau_authors_setting_is_inside_the_default_space() -> None:
    """``ssmrec tune --preset adap-tau-gowalla --baseline-first`` starts from the authors' published
    Gowalla setting, 100 warm-up epochs and Lambert-W scale 0.6, instead of leaving them to the sampler."""
    flags = {"preset": "adap-tau-gowalla"}
    config = resolve_config({}, flags)
    space = build_space(config.model.name, config.loss.name, flag_values=flags)
    assert space.baseline(config, given_settings({}, flags)) == {
        "layers": 3, "adaptive_scale": 0.6, "adaptive_warmup": 100, "reg": 1e-5,
        "negatives": "in-batch", "logq": "none",
    }  # fmt: skip


def test_a_space_file_replaces_and_adds_entries(tmp_path: Path) -> None:
    text = "[temperature]\nlow = 0.05\nhigh = 0.2\n\n[lr]\nlow = 1e-4\nhigh = 1e-2\nlog = true\n"
    space = _by_name(build_space("lightgcn", "ssm", _space_file(tmp_path, text), flag_values=DATA))
    tau = space["temperature"]
    assert (tau.low, tau.high, tau.log) == (0.05, 0.2, False)
    assert space["lr"].log and "layers" in space  # added; the defaults' other entries stay
    path = _space_file(tmp_path, "inherit = false\n[layers]\nchoices = [1, 3]\n")
    only = build_space("lightgcn", "ssm", path, flag_values=DATA)
    assert [p.name for p in only.parameters] == ["layers"] and only.parameters[0].choices == (1, 3)


def test_settings_given_as_flags_are_not_searched() -> None:
    space = _by_name(build_space("lightgcn", "ssm", flag_values={**DATA, "temperature": 0.2, "layers": 2}))
    assert "temperature" not in space and "layers" not in space and "reg" in space


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[temprature]\nlow = 0.1\nhigh = 0.2\n", "unknown parameter; did you mean 'temperature'"),
        ("[margin]\nlow = 0.1\nhigh = 0.2\n", "[margin]: not a searchable setting of model 'lightgcn'"),
        ("[temperature]\nlow = 0.3\nhigh = 0.2\n", "[temperature]: low (0.3) must be below high (0.2)"),
        ("[reg]\nlow = 0.0\nhigh = 0.1\nlog = true\n", "[reg]: a log-scale range needs low > 0"),
        ("[temperature]\nlow = 0.0\nhigh = 0.2\n", "[temperature]: 0.0 cannot run: temperature must be > 0"),
        ("[layers]\nlow = 1.5\nhigh = 3\n", "[layers].low: expected an integer"),
        ('[logq]\nchoices = ["none", "typo"]\n', "[logq]: 'typo' cannot run: logq must be one of"),
        ("[temperature]\nlow = 0.1\n", "[temperature]: a range needs both low and high"),
        ("[temperature]\nlow = 0.1\nhigh = 0.2\nchoices = [0.1]\n", "give exactly one of low + high"),
        ("[temperature]\nlow = 0.1\nhigh = 0.2\nstep = 0.01\n", "[temperature]: unknown entry key 'step'"),
        ('[num_negatives]\nlow = 8\nhigh = 64\nwhen = { negativs = ["mixed"] }\n', "mean 'negatives'?"),
        ('[negatives]\nchoices = ["uniform"]\n', "[negatives]: 'uniform' cannot run: uniform negatives need"),
    ],
)
def test_bad_space_files_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _space_file(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        build_space("lightgcn", "ssm", path, flag_values=DATA)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)
    assert isinstance(error.value, SsmrecError)


def test_a_condition_checks_its_companions(tmp_path: Path) -> None:
    """Uniform negatives need a count: with a num_negatives entry conditional on them the file is valid."""
    text = '[negatives]\nchoices = ["uniform"]\n'
    text += '[num_negatives]\nlow = 8\nhigh = 64\nwhen = { negatives = ["uniform"] }\n'
    space = _by_name(build_space("lightgcn", "ssm", _space_file(tmp_path, text), flag_values=DATA))
    assert space["num_negatives"].when == {"negatives": ("uniform",)}


def test_a_space_file_that_is_not_toml_is_one_clear_error(tmp_path: Path) -> None:
    path = _space_file(tmp_path, "[temperature\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        build_space("mf", "ssm", path, flag_values=DATA)
    with pytest.raises(ConfigError, match="not found"):
        build_space("mf", "ssm", tmp_path / "missing.toml", flag_values=DATA)
