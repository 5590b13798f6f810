"""Run pytorch-grad-cam's own tests with DenseReadoutCAM added to their method lists.

pytorch-grad-cam (MIT, (c) 2021 Jacob Gildenblat) ships its tests in the sdist on
PyPI. This script takes four of them from the sdist of the *installed* version
(downloaded with ``pip download grad-cam==<version> --no-binary :all: --no-deps``
into ``~/.cache/dense-readout/`` unless ``--sdist``/``--source`` is given), copies
them with the sdist's LICENSE into a temporary directory and patches them:

* ``DenseReadoutCAM`` is added to each ``cam_method`` / ``base_method`` list;
* ``weights="DEFAULT"`` / ``pretrained=False`` become ``weights=None`` (no
  downloads; the tests check shapes and running, not accuracy);
* ``examples/both.png`` (not in the sdist) is written: scikit-image's ``chelsea``
  at 224×224 when scikit-image is installed, else a fixed random image;
* a ``conftest.py`` keeps only the DenseReadoutCAM cases (``--all-methods`` keeps
  every method) and marks the cases DenseReadoutCAM refuses on purpose as
  expected failures with the exact error class: VGG11 (``UnsupportedModelError``:
  a 7×7 adaptive pool and a flattening MLP, not global average pooling) and
  ``RefineCAM`` (``InputError``: it builds ``DenseReadoutCAM(model, [layer4[-2]])``,
  a layer whose output is not the grid the head reads);
* when ``psutil`` is missing (``test_context_release`` reads memory use), a
  two-function stand-in reading ``/proc/meminfo`` is written beside the tests.

    python benchmarks/gradcam_suite.py                   # DenseReadoutCAM cases only
    python benchmarks/gradcam_suite.py --all-methods     # every method of the four files
    python benchmarks/gradcam_suite.py --source ~/pytorch-grad-cam   # a git checkout

Prints one line per test file (passed / failed / expected failures / ...) and
exits with pytest's status.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

FILES = (
    "test_run_all_models.py",
    "test_one_channel.py",
    "test_context_release.py",
    "test_refine_cam.py",
)
CACHE = Path.home() / ".cache" / "dense-readout"

CONFTEST = """
import os

import pytest

from dense_readout.errors import InputError, UnsupportedModelError
from dense_readout.gradcam import DenseReadoutCAM

ONLY_OURS = os.environ.get("GRADCAM_SUITE_ALL_METHODS") != "1"
REFUSED = {
    "vgg11": (UnsupportedModelError, "VGG pools to 7x7 and flattens into an MLP: not GAP"),
    "refine": (InputError, "RefineCAM builds DenseReadoutCAM(model, [layer4[-2]]): not the grid"),
}


def _ours(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(key) is DenseReadoutCAM for key in ("cam_method", "base_method"))


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        ours = _ours(item)
        (kept if ours or not ONLY_OURS else dropped).append(item)
        if not ours:
            continue
        params = item.callspec.params
        model = getattr(params.get("cnn_model"), "__name__", "")
        key = "refine" if "base_method" in params else model
        if key in REFUSED:
            error, reason = REFUSED[key]
            item.add_marker(pytest.mark.xfail(raises=error, strict=True, reason=reason))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
"""

PSUTIL_STANDIN = '''"""Stand-in for psutil.virtual_memory (the grad-cam suite runs without psutil)."""


def virtual_memory():
    info = {}
    with open("/proc/meminfo") as lines:
        for line in lines:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    total, available = info["MemTotal"], info["MemAvailable"]
    return (total, available, 100.0 * (total - available) / total)
'''


def installed_version() -> str:
    return metadata.version("grad-cam")


def find_sdist(version: str) -> Path:
    """The grad-cam sdist of ``version`` in the cache, downloaded with pip if missing."""
    target = CACHE / f"grad_cam-{version}.tar.gz"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"grad-cam=={version}"]
    command += ["--no-binary", ":all:", "--no-deps", "--quiet", "--retries", "0"]
    command += ["--timeout", "10", "-d", str(CACHE)]
    subprocess.run(command, check=True)
    if not target.is_file():
        raise FileNotFoundError(f"pip download did not produce {target}")
    return target


def read_sources(sdist: Path | None, source: Path | None) -> dict[str, str]:
    """``{name: text}`` of the four test files and LICENSE."""
    names = [*(f"tests/{name}" for name in FILES), "LICENSE"]
    if source is not None:
        return {Path(name).name: (source / name).read_text() for name in names}
    path = sdist if sdist is not None else find_sdist(installed_version())
    texts = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            relative = member.name.split("/", 1)[-1]
            if relative in names:
                handle = archive.extractfile(member)
                if handle is not None:
                    texts[Path(relative).name] = handle.read().decode()
    missing = {Path(name).name for name in names} - set(texts)
    if missing:
        raise FileNotFoundError(f"{path} lacks {sorted(missing)}")
    return texts


def patch(text: str) -> str:
    """Add DenseReadoutCAM to the method lists; no pretrained weights."""
    text = text.replace(
        "import pytest\n", "import pytest\nfrom dense_readout.gradcam import DenseReadoutCAM\n", 1
    )
    text = re.sub(
        r'(parametrize\(\s*"(?:cam_method|base_method)"\s*,\s*\[)', r"\1DenseReadoutCAM, ", text
    )
    text = text.replace('weights="DEFAULT"', "weights=None")
    return text.replace("pretrained=False", "weights=None")


def write_image(path: Path) -> None:
    import cv2
    import numpy as np

    try:
        from skimage import data

        rgb = cv2.resize(data.chelsea(), (224, 224))
        image = np.ascontiguousarray(rgb[:, :, ::-1])  # cv2 writes BGR
    except ImportError:
        image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def prepare(directory: Path, texts: dict[str, str]) -> list[Path]:
    tests = directory / "tests"
    tests.mkdir(parents=True)
    (directory / "LICENSE.pytorch-grad-cam").write_text(texts["LICENSE"])
    (tests / "conftest.py").write_text(CONFTEST)
    try:
        import psutil  # noqa: F401
    except ImportError:
        (tests / "psutil.py").write_text(PSUTIL_STANDIN)
    write_image(directory / "examples" / "both.png")
    paths = []
    for name in FILES:
        path = tests / name
        path.write_text(patch(texts[name]))
        paths.append(path)
    return paths


def summarise(report: Path) -> dict[str, dict[str, int]]:
    """``{file: {outcome: count}}`` from pytest's JUnit XML."""
    counts: dict[str, dict[str, int]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("classname", "").rsplit(".", 1)[-1] + ".py"
        kinds = {child.tag for child in case}
        skipped = case.find("skipped")
        if "failure" in kinds or "error" in kinds:
            outcome = "failed"
        elif skipped is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        per_file = counts.setdefault(name, {})
        per_file[outcome] = per_file.get(outcome, 0) + 1
    return counts


def run(
    sdist: Path | None = None,
    source: Path | None = None,
    all_methods: bool = False,
    extra: tuple[str, ...] = (),
) -> tuple[int, dict[str, dict[str, int]]]:
    """Prepare and run the suite; returns pytest's exit status and the per-file counts."""
    import os

    texts = read_sources(sdist, source)
    with tempfile.TemporaryDirectory(prefix="gradcam-suite-") as folder:
        directory = Path(folder)
        paths = prepare(directory, texts)
        report = directory / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-o", "addopts=", f"--junitxml={report}", *map(str, paths), *extra]
        env = dict(os.environ, GRADCAM_SUITE_ALL_METHODS="1" if all_methods else "0")
        status = subprocess.run(command, cwd=directory, env=env, check=False).returncode
        counts = summarise(report) if report.is_file() else {}
    return status, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", type=Path, help="a grad-cam sdist (.tar.gz)")
    parser.add_argument("--source", type=Path, help="an unpacked grad-cam sdist or checkout")
    parser.add_argument("--all-methods", action="store_true", help="keep every CAM method")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    print(f"grad-cam {installed_version()}", flush=True)
    status, counts = run(args.sdist, args.source, args.all_methods, tuple(args.pytest_args))
    for name in FILES:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.get(name, {}).items()))
        print(f"{name}: {outcomes or 'nothing ran'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
