import dataclasses
import subprocess
import sys

import pytest

from charlstm.config import (CalcConfig, SampleConfig, SpeechConfig, TrainConfig, flag,
                             parse_init, run_folder)


def test_the_config_module_imports_no_torch():
    code = ("import sys, charlstm.config, charlstm.loop, charlstm.checkpoint, charlstm.sweep; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("config_class", [TrainConfig, SpeechConfig, CalcConfig, SampleConfig])
def test_every_option_has_help_and_its_defaults_pass_the_check(config_class):
    for f in dataclasses.fields(config_class):
        assert f.metadata.get("help"), f.name
    values = {"corpus": "speeches/"} if config_class is SpeechConfig else {}
    config_class(**values).check()


def test_flags_are_the_field_names_unless_a_field_says_otherwise():
    assert flag(TrainConfig, "batch_size") == "--batch-size"
    assert flag(SpeechConfig, "lrs") == "--lr" and flag(SpeechConfig, "epochs_per_lr") == "--epochs"


@pytest.mark.parametrize("change, message", [
    ({"nodes": 0}, "--nodes must be at least 1"), ({"lr": -1.0}, "--lr must be a positive"),
    ({"clip": float("nan")}, "--clip"), ({"cell": "lstm2"}, "--cell must be one of lstm, gru, rnn"),
    ({"backend": "tf"}, "--backend must be one of fused, reference, torch"),
    ({"dtype": "float16"}, "--dtype"), ({"device": "abacus"}, "not a device"),
    ({"init": "zeros"}, "unknown init"), ({"threads": 0}, "--threads"),
    ({"decay_rate": float("inf")}, "--decay-rate"),
])
def test_train_options_that_cannot_work_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**change).check()


@pytest.mark.parametrize("change, message", [
    ({"model": "mlp"}, "--model must be one of fc3"), ({"bptt": 0}, "--bptt must be at least 1"),
    ({"lrs": []}, "--lr: learning rates"), ({"lrs": [0.1, -1]}, "--lr: learning rates"),
    ({"dropout": 1.0}, "--dropout"), ({"max_steps_per_epoch": 0}, "--max-steps"),
    ({"batch_size": 0}, "--batch-size"), ({"valid_fraction": 0}, "--valid-fraction"),
    ({"backend": "gpu"}, "--backend must be one of"),
])
def test_speech_options_that_cannot_work_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        SpeechConfig(corpus="x", **change).check()


@pytest.mark.parametrize("change, message", [
    ({"task": "div"}, "--task must be one of add, sub, mul, count-ones"),
    ({"model": "cnn"}, "--model must be one of"), ({"backend": "gpu"}, "--backend"),
    ({"task": "count-ones", "length": 0}, "--length must be at least 1"),
    ({"digits": 0}, "--digits must be at least 1"), ({"digits": 7}, "--digits must be between 1"),
    ({"samples": 1}, "--samples must be at least 2"), ({"valid_fraction": 1.0}, "--valid-fraction"),
    ({"lr": 0.0}, "--lr must be a positive number"),
    ({"task": "count-ones", "digits": 2}, "--digits applies to add/sub/mul only"),
    ({"task": "add", "length": 12}, "--length applies to count-ones only"),
])
def test_calc_options_that_cannot_work_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        CalcConfig(**change).check()


@pytest.mark.parametrize("change, message", [
    ({"temperature": -1.0}, "--temperature"), ({"temperature": float("nan")}, "--temperature"),
    ({"top_k": 0}, "--top-k"), ({"length": -1}, "--length"), ({"backend": "x"}, "--backend"),
])
def test_sample_options_that_cannot_work_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig(**change).check()


@pytest.mark.parametrize("spec, expected", [
    ("truncated_normal", ("truncated_normal", -0.1, 0.1)),
    ("uniform:-0.5,0.25", ("uniform", -0.5, 0.25)),
])
def test_init_specs_parse(spec, expected):
    assert parse_init(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("xavier", "unknown init"), ("normal:1", "two numbers"), ("normal:0,0", "std must be > 0"),
    ("uniform:1,0", "LOW < HIGH"), ("normal:a,b", "two numbers"), ("normal:0,inf", "is empty"),
])
def test_bad_init_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_init(spec)


def test_a_run_folder_is_named_after_what_runs_under_runs():
    folder = run_folder("speech")
    assert folder.parent.name == "runs" and folder.name.startswith("speech-")
