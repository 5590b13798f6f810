"""The command line starts without torch: ``--help``, ``--version`` and argument errors.

Each case runs ``dense_readout.cli.main`` in a fresh Python process and reports which
heavy modules ended up in ``sys.modules``: none of torch, timm, transformers (nor
numpy, PIL, matplotlib, for help and version). Also here, because they need only the
parser: every registered command is documented in docs/cli.md, and each top-level
command lives in the module named after it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dense_readout.cli import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[1]
MODEL_STACK = ("torch", "timm", "transformers")  # never before the model is needed
HEAVY = (*MODEL_STACK, "numpy", "PIL", "matplotlib", "faiss", "skimage")  # not for --help

PROBE = """
import json, sys
from dense_readout.cli import main
report = []
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as stop:  # --help, --version, argparse errors
        code = stop.code
    loaded = [m for m in {heavy} if m in sys.modules]
    report.append({{"argv": argv, "code": code, "loaded": loaded}})
print(json.dumps(report), file=sys.__stdout__)
"""


def probe(cases: list[list[str]], heavy=HEAVY) -> tuple[list[dict], str, str]:
    """Run ``main`` on each argv in one fresh process, in order: per case the exit status
    and the heavy modules loaded so far; and the process's stdout and stderr.

    Modules accumulate over the cases, so the first case that loads one is the culprit.
    """
    process = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=tuple(heavy)), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    *printed, last = process.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed), process.stderr


def command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the parser, e.g. ``("index", "build")``."""
    paths = []
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += command_paths(sub, (*prefix, name))
    return paths


def top_level_commands() -> list[str]:
    return [path[0] for path in command_paths(build_parser()) if len(path) == 1]


def test_help_and_version_import_no_torch():
    cases = [["--help"], ["--version"], []]
    cases += [[*path, "--help"] for path in command_paths(build_parser())]
    report, stdout, _ = probe(cases)
    assert len(report) == len(cases) > 20
    for case in report:
        assert case["loaded"] == [], f"{case['argv']} imported {case['loaded']}"
    assert [case["code"] for case in report[:3]] == [0, 0, 2]  # help, version, no command
    assert all(case["code"] == 0 for case in report[3:]), report
    from dense_readout import __version__

    assert f"dense-readout {__version__}" in stdout.splitlines()
    assert stdout.count("usage: dense-readout") == len(cases) - 1  # all but --version


def _argument_errors(tmp: Path) -> list[tuple[list[str], int, str]]:
    photo = tmp / "photo.jpg"
    photo.write_bytes(b"never read: the arguments are wrong first")
    folder = tmp / "folder"
    folder.mkdir()
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    return [
        (["explain", "missing.jpg"], 1, "error: missing.jpg: no such file."),
        (["explain", "a.jpg", str(folder), "b.png"], 1, "3 of 3 image(s) failed."),
        (["explain", str(photo), "--topk", "0"], 2, "--topk must be >= 1, got 0."),
        (["explain", str(photo), "--crop-pct", "0"], 2, "--crop-pct must be in (0, 1]"),
        (["explain", str(photo), "--out", str(blocker / "sub")], 2, "cannot create the output"),
        (["explain", str(photo), "--out", str(blocker)], 2, "cannot use the output directory"),
        (["explain", str(photo), "--checkpoint", "no.pth", "--model", "x"], 2, "does not exist"),
        (["explain", str(photo), "--compare", "gradcam"], 2, "add --html"),
        (["demo", "cheshire"], 2, "unknown demo sample(s) cheshire"),
        (["lrp", "missing.jpg"], 1, "error: missing.jpg: no such file."),
        (["attack", "missing.jpg"], 1, "error: missing.jpg: no such file."),
        (["attack", str(photo), "--eps", "2"], 2, "--eps must be in (0, 1]"),
        (["attack", str(photo), "--steps", "0"], 2, "--steps must be >= 1"),
        (["correspond", "missing.jpg", str(photo)], 1, "error: missing.jpg: no such file."),
        (["correspond", str(photo), str(photo), "--top", "0"], 2, "--top must be >= 1"),
        (["bench", "ilsvrc", "--root", str(tmp), "--out", "o", "--limit", "0"], 2, "--limit"),
        (["explain", str(photo), "--topk", "x"], 2, "invalid int value: 'x'"),
    ]


def test_argument_errors_come_before_torch(tmp_path):
    cases = _argument_errors(tmp_path)
    report, _, stderr = probe([argv for argv, _, _ in cases], heavy=MODEL_STACK)
    for (argv, status, message), case in zip(cases, report, strict=True):
        assert case["code"] == status, (argv, case, stderr)
        assert case["loaded"] == [], f"{argv} imported {case['loaded']}"
        assert message in stderr, (argv, message, stderr)
    # one error line per problem (three for the case with three inputs); argparse's
    # own error line reads "dense-readout explain: error: ..."
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(cases) - 1 + 2, stderr


def _unwritable_folder(tmp_path: Path) -> Path | None:
    """A folder that exists and refuses a new file: /sys, or a chmod 500 one when not root."""
    candidates = [Path("/sys")]
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        candidates.insert(0, locked)
    for folder in candidates:
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError:
            return folder
    return None


def test_existing_unwritable_out_fails_before_the_model(tmp_path):
    folder = _unwritable_folder(tmp_path)
    if folder is None:
        pytest.skip("no folder here refuses a new file (root, and /sys is writable)")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    cases = [
        ["explain", str(photo), "--out", str(folder)],
        ["explain", str(photo), "--out", str(folder / "new")],
        ["lrp", str(photo), "--out", str(folder)],
        ["correspond", str(photo), str(photo), "--out", str(folder)],
    ]
    report, _, stderr = probe(cases, heavy=MODEL_STACK)
    lines = [line for line in stderr.splitlines() if line.startswith("error")]
    assert [case["code"] for case in report] == [2, 2, 2, 2]
    assert all(case["loaded"] == [] for case in report), report
    assert lines[0].startswith(f"error: cannot write into the output directory {folder}: ")
    assert lines[0].endswith("; choose another --out.")
    assert lines[1].startswith(f"error: cannot create the output directory {folder / 'new'}")
    assert len(lines) == len(cases), lines


# -- the parser: one module per command, every command documented -----------------------
GROUPED = {"pseudo-labels": "export"}  # a second command of a module named after its first


def test_each_command_lives_in_the_module_named_after_it():
    for module_name in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module_name).register(subparsers)
        stem = module_name.rsplit(".", 1)[1]
        for command in subparsers.choices:
            expected = GROUPED.get(command, command.replace("-", "_"))
            assert stem == expected, f"{command!r} is registered by {module_name}"
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))


def test_docs_cli_md_documents_every_command():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("#")]
    commands = top_level_commands()
    assert len(commands) >= 9, commands
    for command in commands:
        assert any(f"`dense-readout {command}" in line for line in headings), (
            f"docs/cli.md has no heading for `dense-readout {command}`"
        )
        assert f"dense-readout {command} " in text.replace("`", " "), f"no example of {command}"


def test_the_walk_finds_nested_commands():
    paths = command_paths(build_parser())
    assert ("index", "build") in paths and ("bench", "ilsvrc") in paths
    assert ("explain",) in paths and ("synthetic", "train") in paths


def startup_rows(results: dict) -> list[str]:
    """The rows of docs/cli.md's start-up table, as written from cli_startup.json."""
    return [
        f"| `{name}` | {row['ratio_to_python']:.2f} | {row['cpu_ratio_to_python']:.2f} "
        f"| {results['runs'][name]} |"
        for name, row in results["cases"].items()
    ]


def test_docs_startup_table_is_the_json():
    """Every figure of the start-up table comes from docs/results/cli_startup.json."""
    results = json.loads((ROOT / "docs" / "results" / "cli_startup.json").read_text())
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "benchmarks/cli_startup.py" in results["provenance"]["command"]
    for row in startup_rows(results):
        assert row in text, f"docs/cli.md lacks the row {row!r} of cli_startup.json"
    cases = results["cases"]
    assert cases["python -c pass"]["ratio_to_python"] == 1.0
    assert cases["dense-readout --help"]["cpu_ratio_to_python"] < 20  # no torch behind it
    load = results["provenance"]["machine"]["load_average_1min"]
    assert f"load average {load:g}" in text
