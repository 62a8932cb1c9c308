"""The command line: exit codes (0 ok, 2 usage or input error, one line on stderr), --help for every
command, --version, classify / models / layers, and a misspelt layer name in any command."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import preimage
from preimage.cli import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def _one_line(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_foundation_commands_are_discovered():
    assert {"classify", "models", "layers"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: preimage {command}")


def test_top_level_help_and_no_command(capsys):
    assert main(["--help"]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: preimage" in capsys.readouterr().err


def test_version_in_process(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"preimage {preimage.__version__}"


def test_python_dash_m_version():
    proc = subprocess.run([sys.executable, "-m", "preimage", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"preimage {preimage.__version__}"


@pytest.mark.parametrize("argv,pattern", [
    (["frobnicate"], "invalid choice"),
    (["classify"], "required: IMAGE"),
    (["classify", "sample:coffee", "--top", "0"], "must be > 0"),
    (["classify", "sample:coffee", "--top", "many"], "not an integer"),
    (["layers", "alexnet", "--input-size", "-3"], "must be > 0"),
    (["models", "--source", "moon"], "invalid choice"),
])
def test_usage_errors_exit_2_with_one_line(argv, pattern, capsys):
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("preimage")
    assert pattern in line


@pytest.mark.parametrize("argv,command", [
    (["invert", "sample:chelsea", "--bogus"], "invert"),
    (["layers", "alexnet", "--weights", "none", "extra"], "layers"),
    (["gan", "train", "--bogus"], "gan train"),
    (["fool", "sample:chelsea", "--steps", "3"], "fool"),  # fool has --max-steps, not --steps
])
def test_an_unknown_argument_is_named_by_its_command(argv, command, capsys):
    # the line names the command and its --help, which lists the options it does have
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"preimage {command}: error: unrecognized arguments: "), line
    assert argv[-1] in line and line.endswith(f"(see preimage {command} --help)"), line


def test_an_unknown_option_of_the_top_level_is_its_own_error(capsys):
    assert main(["--nosuch"]) == 2
    assert _one_line(capsys.readouterr().err) == "preimage: error: unrecognized arguments: --nosuch (see preimage --help)"


def test_classify_coffee_prints_espresso_first(capsys):
    assert main(["classify", "sample:coffee", "--top", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3
    assert out[0].split()[-1] == "espresso"


def test_classify_several_images_random_init(capsys):
    argv = ["classify", "sample:coffee", "sample:chelsea", "-k", "2", "--model", "squeezenet1_1", "--weights", "none"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sample:coffee:" and out[3] == "sample:chelsea:" and len(out) == 6


@pytest.mark.parametrize("argv,pattern", [
    (["classify", "sample:chelsae", "--model", "squeezenet1_1", "--weights", "none"], "did you mean 'chelsea'"),
    (["classify", "sample:coffee", "--model", "alexnt", "--weights", "none"], "did you mean 'alexnet'"),
    (["classify", "sample:coffee", "--model", "hog"], "not a classifier"),
    (["classify", "sample:coffee", "--device", "cuda:7"], "cuda"),
    (["layers", "vgg61", "--weights", "none"], "did you mean .*'vgg16'"),
    (["layers", "squeezenet1_1", "--weights", "/nonexistent/w.pth"], "not found"),
    (["layers", "squeezenet1_1", "--weights", "none", "--input-size", "8"], "too small"),
])
def test_preimage_errors_exit_2_with_one_line(argv, pattern, capsys):
    if "cuda:7" in argv:
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith(f"preimage {argv[0]}: error: ")
    assert re.search(pattern, line), line
    assert captured.out == ""


def test_models_lists_the_embedded_model_as_offline(capsys):
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows["efficientnet_lite0"][1:4] == ["embedded", "224", "yes"]
    assert "alexnet" in rows and "resnet18" in rows
    assert main(["models", "--source", "embedded"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "alexnet" not in out


def test_layers_alexnet_prints_conv1_to_fc8_with_shapes(capsys):
    assert main(["layers", "alexnet", "--weights", "none"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 4:
            rows[parts[1]] = parts[3]
    expected = {"conv1": "64x55x55", "conv2": "192x27x27", "conv3": "384x13x13", "conv4": "256x13x13",
                "conv5": "256x13x13", "pool5": "256x6x6", "fc6": "4096", "fc7": "4096", "fc8": "1000"}
    for alias, shape in expected.items():
        assert rows.get(alias) == shape, alias


def test_layers_filter(capsys):
    assert main(["layers", "resnet18", "--weights", "none", "--input-size", "64", "--filter", "res"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out[2:]]
    assert names == ["layer1", "layer2", "layer3", "layer4"]


LAYER_DESTS = ("layer", "layers", "content_layer", "content_layers", "style_layer", "style_layers")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _layer_options(command: str) -> list[str]:
    return [next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0])
            for a in _subparser(command)._actions if a.option_strings and a.dest in LAYER_DESTS]


def _layer_commands() -> list[tuple[str, str]]:
    """(command, option) for every command option that takes layer names."""
    return [(c, o) for c in _commands() for o in _layer_options(c)]


@pytest.mark.parametrize("command,option", _layer_commands() or [pytest.param("none", "", marks=pytest.mark.skip(
    reason="no command takes a layer name yet"))])
def test_misspelt_layer_in_any_command_exits_2_with_a_suggestion(command, option, tmp_path, capsys):
    sub = _subparser(command)
    argv = [command]
    for action in sub._actions:
        if not action.option_strings and action.dest != "help":
            n = action.nargs if isinstance(action.nargs, int) else (2 if "style" in command and action.nargs == "+" else 1)
            argv += ["sample:chelsea"] * n
    for other in _layer_options(command):
        argv += [other, "conv33" if other == option else "conv2"]
    opts = {a.dest for a in sub._actions}
    argv += ["--model", "alexnet", "--weights", "none", "--out", str(tmp_path / "out")]
    if "steps" in opts:
        argv += ["--steps", "1"]
    if "quiet" in opts:
        argv += ["--quiet"]
    if "image" in opts:  # dream --image IMAGE --layer L (DeepDream): the layer goes with a photo
        argv += ["--image", "sample:chelsea"]
    assert main(argv) == 2, argv
    line = _one_line(capsys.readouterr().err)
    assert "conv33" in line and "did you mean 'conv3'" in line
    assert not (tmp_path / "out").exists()


def test_help_states_the_real_defaults_and_every_preset(capsys):
    """--help of invert names the model and seed it really uses, and invert and sweep list every preset."""
    from preimage.recipes import INVERT_PRESET_NAMES, ORIGINAL_SEED
    from preimage.tasks.invert import INVERT_PRESETS

    assert set(INVERT_PRESET_NAMES) == set(INVERT_PRESETS)
    assert INVERT_PRESETS["original"].seed == ORIGINAL_SEED
    assert main(["invert", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default: None" not in out and "efficientnet_lite0" in out
    assert f"original preset: {ORIGINAL_SEED}" in out
    assert main(["sweep", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"inversion presets: {', '.join(INVERT_PRESET_NAMES)}" in out


# -- positionals anywhere among the options (`invert a.jpg --layer blocks.3 b.jpg`, globs around options) --

@pytest.mark.parametrize("argv,dest,expected", [
    (["invert", "a.jpg", "--steps", "2", "b.jpg", "--input-size", "64", "c.jpg"], "images",
     ["a.jpg", "b.jpg", "c.jpg"]),
    (["invert", "--layer", "blocks.3", "--", "a.jpg", "-b.jpg"], "images", ["a.jpg", "-b.jpg"]),  # after --: files only
    (["invert", "--image_path", "a.jpg", "--steps", "2"], "images", []),  # the original script's flags
    (["sweep", "a.jpg", "--dry-run", "b.jpg"], "images", ["a.jpg", "b.jpg"]),
    (["saliency", "a.jpg", "--method", "gradient", "b.jpg"], "images", ["a.jpg", "b.jpg"]),
    (["fool", "a.jpg", "--max-steps", "3", "b.jpg"], "images", ["a.jpg", "b.jpg"]),
    (["classify", "a.jpg", "--top", "2", "b.jpg"], "images", ["a.jpg", "b.jpg"]),
    (["atlas", "a.jpg", "--layer", "blocks.3", "b.jpg"], "images", ["a.jpg", "b.jpg"]),
    (["caption", "a.jpg", "--beam", "2", "b.jpg"], "action", ["a.jpg", "b.jpg"]),
    (["caption", "eval", "--split", "val", "runs/cap"], "action", ["eval", "runs/cap"]),  # an action and its DIR
    (["gan", "interpolate", "--rows", "2", "runs/gan", "--steps", "3"], "checkpoint", "runs/gan"),  # sub-commands
])
def test_positionals_may_come_between_options(argv, dest, expected):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == expected


def test_an_unknown_option_among_split_positionals_is_still_one_line(capsys):
    assert main(["sweep", "a.jpg", "--bogus", "--dry-run"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == "preimage sweep: error: unrecognized arguments: --bogus (see preimage sweep --help)"


def test_a_file_after_an_option_of_several_values_is_named_with_where_they_end(capsys):
    assert main(["invert", "--decay-steps", "10", "20", "a.jpg"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == ("preimage invert: error: argument --decay-steps: 'a.jpg' is not an integer; --decay-steps takes "
                    "every value up to the next option: give files before it (see preimage invert --help)")
    assert main(["invert", "--steps", "x"]) == 2  # an option of one value needs no such word
    assert "next option" not in capsys.readouterr().err


def test_invert_runs_images_given_on_both_sides_of_options(tmp_path, capsys):
    argv = ["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
            "--layer", "conv2", "--steps", "2", "sample:coffee", "--out", str(tmp_path), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "chelsea.png").is_file() and (tmp_path / "coffee.png").is_file()


def test_sweep_dry_run_lists_images_given_on_both_sides_of_options(tmp_path, capsys):
    argv = ["sweep", "sample:chelsea", "--layers", "blocks.1", "--dry-run", "sample:coffee", "-o", str(tmp_path / "s")]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "sample:chelsea" in out[0] and "sample:coffee" in out[1]


def test_caption_eval_takes_its_folder_after_options(tmp_path, capsys):
    # the sub-action and its DIR on both sides of an option: the folder is checked, not refused as an extra
    assert main(["caption", "eval", "--split", "val", str(tmp_path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("preimage caption eval: error: ") and "checkpoint.pt" in line, line
