"""Pictures: the grid is aligned with the image, colours/legend match the labels, text is legible.

Geometry is checked on the rasterised figure: ``panel_box`` gives the image
panel's pixel box, and cell ``(u, v)`` of an ``h×w`` grid must cover exactly the
``(u, v)`` block of the input picture.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.errors import InputError
from dense_readout.viz import (
    add_photo_inset,
    class_palette,
    figure_to_array,
    panel_box,
    plot_heatmap,
    plot_label_grid,
    readout_figures,
    save_png,
    short_name,
)

GRAY = 0.5


def cell_pixel(box, grid, u, v, fu=0.5, fv=0.5):
    """Output pixel (row, col) at fraction (fu, fv) inside cell (u, v)."""
    left, top, right, bottom = box
    rows, cols = grid
    y = top + (u + fu) * (bottom - top) / rows
    x = left + (v + fv) * (right - left) / cols
    return round(y), round(x)


def texts_of(axes):
    return [t.get_text() for t in axes.texts]


# -- geometry -------------------------------------------------------------------------
def test_picture_block_and_grid_cell_coincide():
    """A red block in the picture at cell (2, 3) of a 7×7 grid lands exactly in that drawn cell."""
    picture = np.ones((224, 224, 3))
    picture[64:96, 96:128] = (1.0, 0.0, 0.0)
    labels = np.zeros((7, 7), dtype=int)
    figure = plot_label_grid(picture, labels, cell_text="none", alpha=0.0)
    box = panel_box(figure)
    pixels = figure_to_array(figure).astype(int)
    assert box[2] - box[0] == 800 and box[3] - box[1] == 800  # 224 px drawn at 800 px

    def redness(y, x):
        r, g, b = pixels[y, x]
        return r - (g + b) / 2

    assert redness(*cell_pixel(box, (7, 7), 2, 3)) > 200
    for u, v in [(2, 2), (2, 4), (1, 3), (3, 3)]:
        assert redness(*cell_pixel(box, (7, 7), u, v)) < 30, (u, v)
    # Just inside / just outside each edge of the cell (4 output px ≈ 1.1 input px).
    edge = 4 / (800 / 7)
    assert redness(*cell_pixel(box, (7, 7), 2, 3, fu=edge, fv=0.5)) > 150
    assert redness(*cell_pixel(box, (7, 7), 2, 3, fu=-edge, fv=0.5)) < 30
    assert redness(*cell_pixel(box, (7, 7), 2, 3, fu=0.5, fv=1 - edge)) > 150
    assert redness(*cell_pixel(box, (7, 7), 2, 3, fu=0.5, fv=1 + edge)) < 30


def test_cells_are_tinted_by_class_colour_ranked_by_count():
    labels = np.array([[5, 5, 5], [9, 9, 5], [2, 5, 9]])  # counts: 5→5, 9→3, 2→1
    figure = plot_label_grid(np.full((96, 96, 3), GRAY), labels, cell_text="none", alpha=1.0)
    box = panel_box(figure)
    pixels = figure_to_array(figure).astype(int)
    palette = {
        c: np.round(np.array(colour) * 255)
        for c, colour in zip([5, 9, 2], class_palette(3), strict=False)
    }
    for u in range(3):
        for v in range(3):
            got = pixels[cell_pixel(box, (3, 3), u, v, 0.3, 0.3)]
            assert np.abs(got - palette[int(labels[u, v])]).max() <= 2, (u, v, got)


def test_non_square_picture_and_grid():
    """A 2×3 grid on a 3:2 picture: cells stay aligned with the picture's blocks."""
    picture = np.zeros((100, 150, 3))
    picture[50:, 100:] = (0.0, 0.0, 1.0)  # block of cell (1, 2)
    figure = plot_label_grid(picture, np.zeros((2, 3), dtype=int), cell_text="none", alpha=0.0)
    box = panel_box(figure)
    assert abs((box[2] - box[0]) / (box[3] - box[1]) - 1.5) < 0.01
    pixels = figure_to_array(figure).astype(int)
    assert pixels[cell_pixel(box, (2, 3), 1, 2)][2] > 200
    assert pixels[cell_pixel(box, (2, 3), 1, 1)][2] < 30
    assert pixels[cell_pixel(box, (2, 3), 1, 2, fu=0.5, fv=-0.04)][2] < 30


def test_heatmap_peak_sits_on_its_cell():
    """One hot cell: the brightest rendered pixels are centred on that cell (bilinear, cell centres)."""
    scores = np.zeros((7, 7))
    scores[4, 1] = 3.0
    figure = plot_heatmap(
        np.zeros((224, 224, 3)), scores, cmap="gray", alpha=1.0, show_grid=False, centre=None
    )
    box = panel_box(figure)
    pixels = figure_to_array(figure).astype(int)
    left, top, right, bottom = box
    panel = pixels[top:bottom, left:right, 0]
    ys, xs = np.nonzero(panel >= panel.max() - 1)
    centre_y, centre_x = cell_pixel((0, 0, right - left, bottom - top), (7, 7), 4, 1)
    assert abs(ys.mean() - centre_y) <= 3 and abs(xs.mean() - centre_x) <= 3
    # Far cells are untouched by the bump (bilinear support is one cell).
    assert panel[cell_pixel((0, 0, right - left, bottom - top), (7, 7), 1, 5)] <= 1


def test_heatmap_colour_limits():
    scores = np.array([[-1.0, 2.0], [0.5, 0.0]])
    centred = plot_heatmap(np.zeros((8, 8, 3)), scores, centre=0.0)
    assert centred.axes[0].images[1].norm.vmin == pytest.approx(-2.0)
    assert centred.axes[0].images[1].norm.vmax == pytest.approx(2.0)
    spanned = plot_heatmap(np.zeros((8, 8, 3)), scores)
    assert spanned.axes[0].images[1].norm.vmin == pytest.approx(-1.0)
    assert spanned.axes[0].images[1].norm.vmax == pytest.approx(2.0)
    flat = plot_heatmap(np.zeros((8, 8, 3)), np.ones((2, 2)))  # constant map: no division by zero
    assert flat.axes[0].images[1].norm.vmax > flat.axes[0].images[1].norm.vmin


# -- text and legend ------------------------------------------------------------------
def test_cells_show_short_names_and_legend_counts():
    names = ["tabby, tabby cat", "Egyptian cat", "lynx, catamount"]
    labels = np.array([[0, 1, 1], [1, 2, 1], [0, 1, 1]])
    figure = plot_label_grid(np.full((224, 224, 3), GRAY), labels, names)
    cell_texts = [t.replace("\n", " ") for t in texts_of(figure.axes[0])]
    expected = [short_name(names[c]) for c in labels.flatten()]
    assert cell_texts == expected
    legend = texts_of(figure.axes[1])
    counts = np.bincount(labels.flatten())
    for c in range(3):
        assert f"{short_name(names[c])} ({c}): {counts[c]}" in legend
    # Most frequent class is listed first.
    entries = [t for t in legend if re.search(r"\(\d+\): \d+$", t)]
    assert entries[0].startswith("Egyptian cat")


def test_probabilities_are_printed_under_names():
    labels = np.zeros((4, 4), dtype=int)
    probs = np.linspace(0.1, 0.9, 16).reshape(4, 4)
    figure = plot_label_grid(np.zeros((224, 224, 3)), labels, ["cat"], probabilities=probs)
    percents = [t for t in texts_of(figure.axes[0]) if t.endswith("%")]
    assert percents == [f"{100 * p:.0f}%" for p in probs.flatten()]


def test_text_is_legible_at_224px_input():
    """7×7 grid from a 224 px input: every cell label is at least 7.5 pt at 100 dpi."""
    names = [
        "dial telephone, dial phone",
        "French loaf",
        "espresso maker",
        "punching bag, punch bag",
    ]
    labels = np.arange(49).reshape(7, 7) % 4
    figure = plot_label_grid(np.zeros((224, 224, 3)), labels, names)
    sizes = [t.get_fontsize() for t in figure.axes[0].texts]
    assert min(sizes) >= 7.5
    assert all("\n" not in line or len(line) < 40 for line in texts_of(figure.axes[0]))
    # Nothing drawn outside the canvas: every text's extent lies inside the figure.
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width, height = figure.canvas.get_width_height()
    for text in figure.texts + figure.axes[0].texts + figure.axes[1].texts:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= 0 and extent.y0 >= 0 and extent.x1 <= width and extent.y1 <= height, (
            text.get_text()
        )


def test_cell_labels_fit_inside_their_cells():
    names = ["dial telephone, dial phone", "space shuttle", "football helmet"]
    labels = np.arange(49).reshape(7, 7) % 3
    figure = plot_label_grid(np.zeros((224, 224, 3)), labels, names)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    left, _top, right, _bottom = panel_box(figure)
    cell = (right - left) / 7
    for text in figure.axes[0].texts:
        assert text.get_window_extent(renderer).width < cell, text.get_text()


def test_dense_grids_switch_to_legend_keys():
    labels = np.arange(28 * 28).reshape(28, 28) % 6
    names = [f"long class name number {i}" for i in range(6)]
    figure = plot_label_grid(np.zeros((224, 224, 3)), labels, names)
    cell_texts = texts_of(figure.axes[0])
    counts = np.bincount(labels.flatten())
    order = sorted(range(6), key=lambda c: (-counts[c], c))
    key = {c: str(i + 1) for i, c in enumerate(order)}
    assert cell_texts == [key[c] for c in labels.flatten()]
    assert set(key.values()) <= set(texts_of(figure.axes[1]))


def test_very_dense_grids_drop_cell_text_but_keep_colours():
    labels = (np.arange(64 * 64).reshape(64, 64) // 64) % 3  # horizontal stripes of 3 classes
    figure = plot_label_grid(np.zeros((224, 224, 3)), labels, ["a", "b", "c"], alpha=1.0)
    assert texts_of(figure.axes[0]) == []
    box = panel_box(figure)
    pixels = figure_to_array(figure).astype(int)
    palette = {
        c: np.round(np.array(colour) * 255)
        for c, colour in zip([0, 1, 2], class_palette(3), strict=False)
    }
    for u in (0, 1, 2, 30, 63):
        got = pixels[cell_pixel(box, (64, 64), u, 10)]
        assert np.abs(got - palette[int(labels[u, 10])]).max() <= 12, (u, got)


def test_classes_beyond_the_legend_are_grouped():
    labels = np.arange(25).reshape(5, 5)
    figure = plot_label_grid(
        np.zeros((64, 64, 3)), labels, max_legend=5, cell_text="none", alpha=1.0
    )
    legend = texts_of(figure.axes[1])
    assert "20 other classes: 20" in legend
    assert sum(t.endswith(": 1") for t in legend) == 5
    pixels = figure_to_array(figure).astype(int)
    box = panel_box(figure)
    grey = pixels[cell_pixel(box, (5, 5), 4, 4, 0.3, 0.3)]
    assert np.ptp(grey) <= 2  # an "other" cell is grey


def test_ids_without_names():
    figure = plot_label_grid(np.zeros((64, 64, 3)), np.array([[3, 7]]))
    assert texts_of(figure.axes[0]) == ["3", "7"]


# -- inputs ---------------------------------------------------------------------------
def test_accepts_pil_uint8_and_tensor_images():
    array = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    labels = np.zeros((2, 3), dtype=int)
    reference = figure_to_array(plot_label_grid(array, labels, cell_text="none"))
    for image in (Image.fromarray(array), torch.from_numpy(array).permute(2, 0, 1).float() / 255):
        assert np.array_equal(
            figure_to_array(plot_label_grid(image, labels, cell_text="none")), reference
        )


@pytest.mark.parametrize(
    "image, labels, message",
    [
        (np.zeros((8, 8, 3)), np.zeros((2, 2)), "integer class indices"),
        (np.zeros((8, 8, 3)), np.zeros((2, 2, 2), dtype=int), "h×w grid"),
        (np.zeros((8, 8, 4)), np.zeros((2, 2), dtype=int), "RGB image"),
        (np.full((8, 8, 3), -1.5), np.zeros((2, 2), dtype=int), "denormalize"),
        (np.full((8, 8, 3), np.nan), np.zeros((2, 2), dtype=int), "NaN"),
    ],
)
def test_bad_label_grid_inputs(image, labels, message):
    with pytest.raises(InputError, match=message):
        plot_label_grid(image, labels)


def test_bad_options():
    image, labels = np.zeros((8, 8, 3)), np.zeros((2, 2), dtype=int)
    with pytest.raises(InputError, match="cell_text"):
        plot_label_grid(image, labels, cell_text="everything")
    with pytest.raises(InputError, match="differ in shape"):
        plot_label_grid(image, labels, probabilities=np.zeros((3, 3)))
    with pytest.raises(InputError, match="colour map"):
        plot_heatmap(image, np.zeros((2, 2)), cmap="no-such-map")
    with pytest.raises(InputError, match="NaN"):
        plot_heatmap(image, np.full((2, 2), np.inf))


# -- files and the result helper ------------------------------------------------------
def test_save_png_writes_what_is_rendered(tmp_path):
    labels = np.array([[0, 1], [1, 0]])
    expected = figure_to_array(plot_label_grid(np.zeros((64, 64, 3)), labels, ["a", "b"]))
    path = save_png(
        plot_label_grid(np.zeros((64, 64, 3)), labels, ["a", "b"]), tmp_path / "sub" / "grid.png"
    )
    written = np.asarray(Image.open(path).convert("RGB"))
    assert written.shape == expected.shape
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_readout_figures_from_a_result():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=6).eval()
    x = torch.rand(2, 3, 128, 128)
    result = DenseReadout(model)(x)
    names = [f"thing {i}, alias" for i in range(6)]
    grid, heat = readout_figures(result, x[1], names, index=1, name="pic")
    top = int(result.logits[1].argmax())
    assert grid.texts[0].get_text().startswith(f"pic · image top-1: thing {top} (")
    cell_texts = [
        t.get_text().replace("\n", " ")
        for t in grid.axes[0].texts
        if not t.get_text().endswith("%")
    ]
    assert cell_texts == [f"thing {int(c)}" for c in result.labels()[1].flatten()]
    shown = heat.axes[0].images[1].get_array()
    # The heat layer is the bilinear upsampling of Z[top] of image 1.
    expected = torch.nn.functional.interpolate(
        result.scores[1:2, top : top + 1], size=shown.shape, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert np.abs(np.asarray(shown) - expected).max() < 1e-4
    with pytest.raises(InputError, match="index"):
        readout_figures(result, x[0], index=2)
    with pytest.raises(InputError, match="target"):
        readout_figures(result, x[0], target=6)


@pytest.mark.parametrize("classes", [14, 25])  # the demo's astronaut has 14; 25 = 18 + "other"
def test_photo_inset_leaves_the_legend_alone(classes):
    """The crop-outline thumbnail on a label grid: its box (title included) meets no legend
    artist's box (entries, swatches, heading, note), and every entry is still drawn."""
    labels = np.arange(49).reshape(7, 7) % classes
    names = [f"a rather long class name {k}, synonym" for k in range(classes)]
    probs = np.random.default_rng(0).uniform(0, 1, (7, 7))
    photo = np.random.default_rng(1).uniform(0, 1, (300, 400, 3))
    figure = plot_label_grid(photo[:, 50:350], labels, names, probabilities=probs, title="a\nb")
    inset = add_photo_inset(figure, photo, [50, 0, 350, 300])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend = figure.legend_panel.axes
    assert legend in figure.axes and sum(a is legend for a in figure.axes) == 1  # redrawn once
    box = inset.get_tightbbox(renderer)
    artists = [*legend.texts, *legend.patches]
    assert len(legend.texts) == min(classes, 19) + 2  # entries, the heading and the note
    for artist in artists:
        extent = artist.get_window_extent(renderer)
        assert not box.overlaps(extent), artist
    figure_box = figure.bbox
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0
    crowded = figure.legend_panel.draw(reserve_px=0)  # the old layout: rows down to the note
    figure.canvas.draw()
    extents = [a.get_window_extent(renderer) for a in [*crowded.texts, *crowded.patches]]
    assert any(box.overlaps(extent) for extent in extents)  # the check can fail
