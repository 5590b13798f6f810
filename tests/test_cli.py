"""The CLI: ``demo`` on scikit-image photos, ``explain`` on files, per-file errors, model options.

Bad input, each with its message and exit status: Ctrl-C (130, one line, nothing
half-written), PIL's decompression-bomb warning (one line of ours), images smaller
than the model input (a warning, upsampled), checkpoints that are empty, not
checkpoints, whole pickled models or of another architecture (2, one line), and
no empty ``--out`` left when every image fails.

The demo's JSON is checked against a second, independent computation with the
API (same preprocessing, own softmax/argmax), and carries the must-show facts:
chelsea → "Egyptian cat", coffee → "espresso", most chelsea cells a cat class.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.cli import main
from dense_readout.imagenet import imagenet_class_names

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing in the CLI may open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("the CLI tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    capture = pytest.MonkeyPatch()
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    try:
        code = main(["demo", "--out", str(out)])
    finally:
        capture.undo()
    return code, out, stdout.getvalue(), stderr.getvalue()


def load_json(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.json").read_text())


# -- demo -----------------------------------------------------------------------------
def test_demo_writes_pictures_and_json(demo_run):
    code, out, stdout, stderr = demo_run
    assert code == 0, stderr
    assert stderr == ""
    for stem in ("chelsea", "coffee", "astronaut"):
        for suffix in ("_labels.png", "_heatmap.png", ".json"):
            assert (out / f"{stem}{suffix}").is_file(), stem + suffix
        with Image.open(out / f"{stem}_labels.png") as image:
            assert (
                image.width >= 1000 and image.height >= 800
            )  # 224 px input drawn at 800 px + legend
    lines = stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("skimage.data.chelsea: top-1 Egyptian cat (")
    assert lines[1].startswith("skimage.data.coffee: top-1 espresso (")


def test_demo_must_show_facts(demo_run):
    """Embedded model: chelsea → Egyptian cat, coffee → espresso, most chelsea cells a cat."""
    _, out, _, _ = demo_run
    chelsea, coffee = load_json(out, "chelsea"), load_json(out, "coffee")
    assert chelsea["top5"][0]["name"] == "Egyptian cat" and chelsea["top5"][0]["class"] == 285
    assert coffee["top5"][0]["name"] == "espresso" and coffee["top5"][0]["class"] == 967
    labels = np.array(chelsea["label_grid"])
    cat_cells = np.isin(labels, list(CAT_CLASSES)).sum()
    assert cat_cells > labels.size / 2, f"only {cat_cells} of {labels.size} chelsea cells are cats"


def test_demo_json_matches_an_independent_api_run(demo_run, embedded):
    """Recompute chelsea with the API and compare every number the JSON reports."""
    _, out, _, _ = demo_run
    record = load_json(out, "chelsea")
    model, preprocess, names, _ = embedded
    image = Image.fromarray(skimage_data.chelsea())
    x = preprocess(image).unsqueeze(0)
    result = DenseReadout(model)(x)
    probs = torch.softmax(result.logits[0].double(), dim=0)
    order = probs.argsort(descending=True)[:5]
    assert [e["class"] for e in record["top5"]] == order.tolist()
    assert [e["name"] for e in record["top5"]] == [names[int(c)] for c in order]
    np.testing.assert_allclose(
        [e["probability"] for e in record["top5"]], probs[order].numpy(), atol=1e-5
    )

    h, w = result.scores.shape[-2:]
    assert record["grid_size"] == [h, w] and record["input_size"] == [224, 224]
    assert record["cell_size"] == [224 / h, 224 / w]
    assert record["label_grid"] == result.scores[0].argmax(0).tolist()
    cell_probs = torch.softmax(result.scores[0].double(), dim=0)
    assert len(record["cells"]) == h * w
    for cell in record["cells"]:
        u, v = cell["row"], cell["col"]
        expected = cell_probs[:, u, v].argsort(descending=True)[:3]
        assert [e["class"] for e in cell["topk"]] == expected.tolist()
        got = [e["probability"] for e in cell["topk"]]
        np.testing.assert_allclose(got, cell_probs[expected, u, v].numpy(), atol=1e-5)
        np.testing.assert_allclose(
            [e["score"] for e in cell["topk"]], result.scores[0, expected, u, v], atol=1e-4
        )
        assert cell["box"] == [v * 224 / w, u * 224 / h, (v + 1) * 224 / w, (u + 1) * 224 / h]

    counts = np.bincount(np.array(record["label_grid"]).ravel(), minlength=1000)
    assert {e["class"]: e["cells"] for e in record["classes_on_grid"]} == {
        int(c): int(counts[c]) for c in np.nonzero(counts)[0]
    }
    assert record["exact"] is True
    assert record["residual"] <= 1e-4 * max(1.0, float(result.logits.abs().max()))
    assert (
        record["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
        and record["model"] == "tf_efficientnet_lite0"
    )


def test_record_of_a_non_exact_model_reports_its_residual():
    """A [CLS] ViT (readout from patch tokens): exact is False and the residual is recomputed."""
    from dense_readout.commands.explain import explanation_record

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=7, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    result = DenseReadout(model)(x)
    record = explanation_record(result, topk=7)
    with torch.no_grad():
        logits = model(x)  # the model's own forward, independent of the readout
    expected = float((result.scores.mean(dim=(2, 3)) - logits).abs().max())
    assert record["exact"] is False and record["grid_size"] == [4, 4]
    assert record["residual"] == pytest.approx(expected, rel=1e-5) and record["residual"] > 1e-3
    assert all(e["name"] is None for e in record["top5"])
    probabilities = [sum(e["probability"] for e in cell["topk"]) for cell in record["cells"]]
    np.testing.assert_allclose(probabilities, 1.0, atol=1e-5)  # top-7 of 7 classes = whole softmax


def test_record_argument_checks():
    from dense_readout.commands.explain import explanation_record
    from dense_readout.errors import InputError

    model = timm.create_model("resnet18", num_classes=3).eval()
    result = DenseReadout(model)(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputError, match="topk"):
        explanation_record(result, topk=0)
    with pytest.raises(InputError, match="2 names for 3 classes"):
        explanation_record(result, ["a", "b"])
    with pytest.raises(InputError, match="index"):
        explanation_record(result, index=1)


def test_demo_unknown_sample(capsys):
    assert main(["demo", "lena", "--out", "unused"]) == 2
    assert "error: unknown demo sample(s) lena" in capsys.readouterr().err


# -- explain on files -----------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Good images in several modes and bad files, all made from chelsea."""
    root = tmp_path_factory.mktemp("photos")
    cat = Image.fromarray(skimage_data.chelsea())
    cat.save(root / "cat.jpg", quality=92)
    cat.convert("L").save(root / "cat_gray.png")
    rgba = cat.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(root / "cat_rgba.png")
    cat.convert("CMYK").save(root / "cat_cmyk.jpg")
    Image.fromarray(np.asarray(cat.convert("L")).astype(np.uint16) * 257).save(
        root / "cat_16bit.png"
    )
    data = (root / "cat.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.jpg").write_text("not an image")
    return root


def test_explain_finishes_good_files_and_reports_each_bad_one(photo_dir, tmp_path, capsys):
    good = ["cat.jpg", "cat_gray.png", "cat_rgba.png", "cat_cmyk.jpg", "cat_16bit.png"]
    bad = ["missing.jpg", "truncated.jpg", "notes.jpg"]
    order = [
        "missing.jpg",
        "cat.jpg",
        "truncated.jpg",
        "cat_gray.png",
        "notes.jpg",
        "cat_rgba.png",
        "cat_cmyk.jpg",
        "cat_16bit.png",
    ]
    code = main(
        [
            "explain",
            *[str(photo_dir / n) for n in order],
            "--out",
            str(tmp_path),
            "--topk",
            "2",
            "--no-png",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for name, line in zip(bad, errors, strict=False):
        assert line.startswith(f"error: {photo_dir / name}: "), line
    assert (
        "no such file" in errors[0]
        and "truncated" in errors[1]
        and "not a readable image" in errors[2]
    )
    assert "3 of 8 image(s) failed" in captured.err
    assert len(captured.out.strip().splitlines()) == len(good)
    for name in good:
        stem = Path(name).stem
        record = load_json(tmp_path, stem)
        assert record["image"] == str(photo_dir / name)
        assert all(len(cell["topk"]) == 2 for cell in record["cells"])
        assert record["files"] == {} and not (tmp_path / f"{stem}_labels.png").exists()  # --no-png
    for name in bad:
        assert not (tmp_path / f"{Path(name).stem}.json").exists()
    # The converted modes still show a cat (gray/CMYK/16-bit lose colour, not the cat).
    assert load_json(tmp_path, "cat")["top5"][0]["class"] in CAT_CLASSES
    assert load_json(tmp_path, "cat_cmyk")["top5"][0]["class"] in CAT_CLASSES


def test_explain_all_good_exits_zero_and_dedupes_names(photo_dir, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.open(photo_dir / "cat.jpg").resize((120, 80)).save(tmp_path / "a" / "x.png")
    Image.open(photo_dir / "cat.jpg").resize((80, 120)).save(tmp_path / "b" / "x.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(tmp_path / "a" / "x.png"),
                str(tmp_path / "b" / "x.png"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert load_json(out, "x")["original_size"] == [80, 120]  # [height, width]
    assert load_json(out, "x-2")["original_size"] == [120, 80]
    for stem in ("x", "x-2"):
        files = load_json(out, stem)["files"]
        assert files == {"label_grid": f"{stem}_labels.png", "heatmap": f"{stem}_heatmap.png"}
        assert all((out / name).is_file() for name in files.values())
    # Both are smaller than the 224 px input: explained, with one warning line each.
    err = capsys.readouterr().err.splitlines()
    assert err == [
        (
            f"warning: {tmp_path / 'a' / 'x.png'}: the image (120 x 80 px) is smaller than the "
            "model input (224 px): upsampled 2.8x"
        ),
        (
            f"warning: {tmp_path / 'b' / 'x.png'}: the image (80 x 120 px) is smaller than the "
            "model input (224 px): upsampled 2.8x"
        ),
    ]
    assert load_json(out, "x")["warnings"] == [err[0].split(": ", 2)[2]]


# -- model options --------------------------------------------------------------------
def test_other_model_without_checkpoint_is_a_clear_error(photo_dir, capsys):
    code = main(["explain", str(photo_dir / "cat.jpg"), "--model", "resnet18", "--out", "unused"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --model resnet18 needs --checkpoint PATH")
    assert "nothing is downloaded" in err


def test_checkpoint_for_another_timm_model(photo_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval()
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(photo_dir / "cat.jpg"),
            "--model",
            "resnet18",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--normalization",
            "imagenet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = load_json(out, "cat")
    assert record["model"] == "resnet18" and record["checkpoint"] == str(checkpoint)
    assert record["exact"] is True and record["grid_size"] == [7, 7]
    assert record["preprocessing"]["normalization"] == "imagenet"
    # Same weights through the API give the same top class.
    image = Image.open(photo_dir / "cat.jpg").convert("RGB")
    from dense_readout import Preprocess

    x = Preprocess.from_model(model, "imagenet", crop_pct=1.0)(image).unsqueeze(0)
    assert record["top5"][0]["class"] == int(model(x).argmax())
    assert record["top5"][0]["name"] == imagenet_class_names()[record["top5"][0]["class"]]


def test_mismatched_or_missing_checkpoint(photo_dir, tmp_path, capsys):
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    assert (
        main(
            [
                "explain",
                str(photo_dir / "cat.jpg"),
                "--model",
                "resnet18",
                "--checkpoint",
                str(wrong),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not match" in capsys.readouterr().err
    assert (
        main(
            [
                "explain",
                str(photo_dir / "cat.jpg"),
                "--model",
                "resnet18",
                "--checkpoint",
                str(tmp_path / "none.pth"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "explain",
                str(photo_dir / "cat.jpg"),
                "--model",
                "no_such_net_9",
                "--checkpoint",
                str(wrong),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "unknown timm model 'no_such_net_9'; no timm name is close" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "{photo}"],
        ["demo", "coffee"],
        ["lrp", "skimage:coffee"],
        ["attack", "skimage:coffee"],
        ["correspond", "skimage:coffee", "skimage:chelsea"],
        ["bench", "ilsvrc", "--root", "{tmp}", "--out", "{tmp}/bench"],
        ["coco-probe", "{tmp}"],
    ],
    ids=lambda argv: argv[0],
)
def test_mistyped_model_names_the_closest_timm_model(argv, photo_dir, tmp_path, capsys):
    """Every command loads through the one shared model setup: the same message."""
    argv = [a.format(photo=photo_dir / "cat.jpg", tmp=tmp_path) for a in argv]
    out = [] if argv[0] in ("bench", "coco-probe") else ["--out", str(tmp_path / "out")]
    assert main([*argv, *out, "--model", "resnet5O"]) == 2
    err = capsys.readouterr().err
    expected = "error: unknown timm model 'resnet5O'; did you mean resnet50? "
    assert err.splitlines() == [expected + "(other close names: resnet51q, resnet50t)"]
    assert not (tmp_path / "out").exists()


def test_cli_literals_equal_the_library_constants():
    """Literals that keep torch out of --help: they must agree with the library."""
    from dense_readout.attacks import DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_STEPS
    from dense_readout.cli import build_parser
    from dense_readout.commands import _model_options, index
    from dense_readout.evaluation.thresholds import DEFAULT_SCORES, DEFAULT_TAUS
    from dense_readout.patches.index_merge import INDEX_KINDS
    from dense_readout.pretrained import DEFAULT_MODEL

    args = build_parser().parse_args(["attack", "x.jpg"])
    assert (args.steps, args.eps, args.alpha) == (DEFAULT_STEPS, DEFAULT_EPS, DEFAULT_ALPHA)
    assert index.INDEX_KINDS == INDEX_KINDS
    assert _model_options.DEFAULT_MODEL == DEFAULT_MODEL
    assert DEFAULT_TAUS[:2] == (0.0, 0.05) and DEFAULT_TAUS[-1] == 1.0  # as --taus says
    assert DEFAULT_SCORES  # what --thresholds defaults to


@pytest.mark.parametrize(
    "options, message",
    [
        (["--topk", "0"], "--topk must be >= 1"),
        (["--topk", "1001"], "exceeds the model's 1000 classes"),
        (["--crop-pct", "1.5"], "--crop-pct must be in (0, 1]"),
    ],
)
def test_bad_options_are_reported(photo_dir, tmp_path, capsys, options, message):
    assert main(["explain", str(photo_dir / "cat.jpg"), "--out", str(tmp_path), *options]) == 2
    assert message in capsys.readouterr().err


def test_output_directory_that_is_a_file(photo_dir, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a directory")
    assert main(["explain", str(photo_dir / "cat.jpg"), "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: cannot create the output directory {blocker / 'sub'}")
        and "--out" in err
    )


def test_console_entry_point_exit_status(tmp_path):
    """Through a real process: one line per failed file on stderr, status 1."""
    missing = tmp_path / "gone.png"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "dense_readout.cli",
            "explain",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 1
    assert f"error: {missing}: no such file." in process.stderr.splitlines()


# -- inputs: folders, globs; options: --class, --view, --device, --random-weights ------
def test_folders_and_globs(photo_dir, tmp_path, capsys):
    nested = tmp_path / "album" / "2024"
    nested.mkdir(parents=True)
    Image.open(photo_dir / "cat.jpg").save(nested / "deep.PNG")
    (tmp_path / "album" / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(tmp_path / "album"),
            str(photo_dir / "cat_g*.png"),
            str(photo_dir / "nothing*.gif"),
            "--no-png",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.splitlines() == [
        f"error: {photo_dir / 'nothing*.gif'}: the pattern matches no file.",
        "1 of 3 image(s) failed.",
    ]
    assert load_json(out, "deep")["image"] == str(nested / "deep.PNG")
    assert load_json(out, "cat_gray")["image"] == str(photo_dir / "cat_gray.png")
    assert not (out / "readme.json").exists()


def test_class_option_view_and_summary_paths(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    options = ["--class", "tabby", "--class", "285", "--html", "--out", str(out)]
    assert main(["explain", str(photo_dir / "cat.jpg"), *options]) == 0
    line = capsys.readouterr().out.strip()
    files = [out / n for n in ("cat.json", "cat_labels.png", "cat_heatmap.png")]
    files += [out / n for n in ("cat_class281.png", "cat_class285.png", "cat.html")]
    assert line.endswith(" -> " + ", ".join(str(f) for f in files))
    assert all(f.is_file() for f in files)
    record = load_json(out, "cat")
    assert record["view"] == "full" and record["region"] == [0, 0, 451, 300]  # --html: whole photo
    assert record["input_size"] == [224, 352] and record["grid_size"] == [7, 11]
    assert record["files"]["classes"] == {"281": "cat_class281.png", "285": "cat_class285.png"}
    from dense_readout.page import read_page

    assert read_page(out / "cat.html")["initial_class"] == 281
    out2 = tmp_path / "crop"
    assert main(["explain", str(photo_dir / "cat.jpg"), "--view", "crop", "--out", str(out2)]) == 0
    record = load_json(out2, "cat")
    assert record["input_size"] == [224, 224] and record["region"][1::2] == [0, 300]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--class", "cat"], "--class cat matches"),
        (["--class", "zebraa"], "--class zebraa: no class of this name. Did you mean: zebra?"),
        (["--class", "1000"], "--class 1000: out of range, ids go from 0 to 999."),
        (["--device", "gpu"], "--device gpu is not a device name"),
        (["--compare", "gradcam"], "--compare shows its maps in the page; add --html."),
        (["--compare", "nosuch", "--html"], "--compare: unknown method(s) nosuch; known:"),
        (["--random-weights", "--checkpoint", "x.pth"], "exclude each other"),
    ],
)
def test_bad_new_options(photo_dir, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    assert main(["explain", str(photo_dir / "cat.jpg"), "--out", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(photo_dir, tmp_path, capsys):
    assert main(["explain", str(photo_dir / "cat.jpg"), "--device", "cuda", "--out", "x"]) == 2
    assert "this machine has 0 CUDA device(s); use --device cpu." in capsys.readouterr().err


def test_random_weights_and_compare(photo_dir, tmp_path, capsys):
    """Any timm architecture without a checkpoint; every output says the weights are random."""
    small = tmp_path / "small.png"
    Image.open(photo_dir / "cat.jpg").resize((300, 200)).save(small)
    out = tmp_path / "out"
    args = ["explain", str(small), "--model", "resnet18", "--random-weights", "--html"]
    code = main([*args, "--compare", "gradcam", "--no-png", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "; RANDOM WEIGHTS -> " in captured.out
    record = load_json(out, "small")
    assert record["weights"] == "random" and record["model"] == "resnet18"
    assert set(record["comparisons"]) == {"dense-readout", "gradcam"}
    from dense_readout.page import read_page

    page = read_page(out / "small.html")
    assert page["random_weights"] is True
    top5 = [e["class"] for e in page["top5"]]
    compared = {(c["method"], c["class"]) for c in page["comparisons"]}
    assert compared == {(m, k) for m in ("dense-readout", "gradcam") for k in top5}


# -- bad input ------------------------------------------------------------------------
def test_ctrl_c_stops_cleanly(photo_dir, tmp_path, capsys, monkeypatch):
    """Interrupted while writing the second image: the first is complete, nothing of the
    second is left, no temporary files, one line, status 130."""
    import dense_readout.page as page

    real, calls = page.readout_page, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(page, "readout_page", interrupt_second)
    out = tmp_path / "out"
    images = [str(photo_dir / n) for n in ("cat.jpg", "cat_gray.png", "cat_rgba.png")]
    code = main(["explain", *images, "--html", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.splitlines() == [
        (
            f"interrupted: 1 of 3 image(s) done, 4 complete file(s) in {out}; the unfinished "
            f"{photo_dir / 'cat_gray.png'} removed (2 file(s))."
        )
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "cat.html",
        "cat.json",
        "cat_heatmap.png",
        "cat_labels.png",
    ]
    assert json.loads((out / "cat.json").read_text())["files"]["page"] == "cat.html"


def test_decompression_bomb_warning_is_one_line(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (1000, 800), "gray").save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)  # 800,000 px: warned, not refused
    out = tmp_path / "out"
    assert main(["explain", str(big), "--no-png", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        (
            f"warning: {big}: 1000 x 800 = 800,000 pixels, above PIL's decompression-bomb warning "
            "limit (500,000); loaded anyway, check that you trust the file."
        )
    ]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300_000)  # over twice the limit: refused
    assert main(["explain", str(big), "--no-png", "--out", str(out)]) == 1
    assert "too large to load safely" in capsys.readouterr().err


def _checkpoints(root: Path) -> dict[str, tuple[Path, str]]:
    (root / "empty.pth").write_bytes(b"")
    (root / "notes.pth").write_text("these are my notes, not weights")
    torch.save(timm.create_model("resnet18", num_classes=2), root / "whole.pth")
    torch.save(timm.create_model("resnet34", num_classes=2).state_dict(), root / "r34.pth")
    return {
        "empty": (root / "empty.pth", "is an empty file (0 bytes); save it again."),
        "not a checkpoint": (root / "notes.pth", ": not a PyTorch or safetensors checkpoint"),
        "pickled model": (
            root / "whole.pth",
            (
                "holds a pickled Python object (timm.models.resnet.ResNet), not a state dict; "
                "loading it would run code from the file. Load it yourself and pass the state_dict"
            ),
        ),
        "architecture": (
            root / "r34.pth",
            (
                "does not match ResNet (96 unexpected key(s): layer1.2.conv1.weight, "
                "layer1.2.bn1.weight, layer1.2.bn1.bias (+93 more))"
            ),
        ),
    }


def test_checkpoint_errors_are_one_line(photo_dir, tmp_path, capsys):
    for kind, (path, message) in _checkpoints(tmp_path).items():
        args = ["explain", str(photo_dir / "cat.jpg"), "--model", "resnet18", "--out", "unused"]
        assert main([*args, "--checkpoint", str(path)]) == 2, kind
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err, (kind, err)
        assert "weights_only" not in err.replace("weights_only=False", ""), kind


def test_no_empty_output_folder_when_every_image_fails(tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    assert main(["explain", str(tmp_path / "gone.jpg"), "--out", str(out)]) == 1
    assert not (tmp_path / "new").exists()
    assert "1 of 1 image(s) failed." in capsys.readouterr().err


def test_fixed_size_model_in_full_view_points_to_crop(photo_dir, tmp_path, capsys):
    """A model that only takes its own input size fails on the whole photo with a way out."""
    args = ["explain", str(photo_dir / "cat.jpg"), "--model", "swin_tiny_patch4_window7_224"]
    args += ["--random-weights", "--no-png", "--out", str(tmp_path / "out")]
    assert main([*args, "--view", "full"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {photo_dir / 'cat.jpg'}: ")
    assert err[0].endswith("--view crop reads out the centre crop at the model's input size.")
    assert main([*args, "--view", "crop"]) == 0
