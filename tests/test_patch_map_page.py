"""The patch index's interactive map page (paper A.8, Fig. 10).

Data: what the page embeds reads back equal to what was written (coords, points,
neighbours); each thumbnail is the crop of its own cell (solid-colour cells: the
thumbnail's centre has that cell's colour) with the cell outlined where the margin
puts it; each source image is downscaled to the stated side. Inputs that disagree
are refused with an InputError naming the problem. In headless Chromium (skipped,
with the reason, without Chromium, its driver or Selenium): the page makes no request
but file:/data:, a hover at a point's screen position shows its thumbnail, a click
shows its image with the cell outlined and its neighbours (a neighbour selects), the
colour toggle recolours the canvas pixels, and wheel/drag/buttons/keys zoom and pan.
One slow test runs the real UMAP (numba compiles on its first call).
"""

from __future__ import annotations

import base64
import io
import re
import sys

import numpy as np
import pytest
from PIL import Image

from browser_support import headless_chromium, requests_made
from dense_readout.errors import InputError, MissingDependencyError
from dense_readout.page.patch_map import (
    MapPoint,
    map_page_data,
    map_page_html,
    read_map_page,
    umap_coords,
    write_map_page,
)

# (width, height, rows, columns) of the synthetic images: every cell is one solid colour
SHAPES = [(90, 60, 2, 3), (40, 80, 4, 2), (600, 300, 2, 4)]
GROUPS = ["cat", "dog", None]


def _cell_colour(image: int, u: int, v: int) -> tuple[int, int, int]:
    return (40 + 60 * image, 30 + 50 * u, 20 + 45 * v)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three images in two folders, one point per cell, coords on a lattice, exact k-NN."""
    folder = tmp_path_factory.mktemp("images")
    paths, points = [], []
    for k, (width, height, rows, cols) in enumerate(SHAPES):
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        ch, cw = height // rows, width // cols
        for u in range(rows):
            for v in range(cols):
                box = (v * cw, u * ch, (v + 1) * cw, (u + 1) * ch)
                pixels[box[1] : box[3], box[0] : box[2]] = _cell_colour(k, u, v)
                top1 = None if (u, v) == (0, 0) else f"top {(u + 2 * v + k) % 3}"
                points.append(MapPoint(k, (u, v), box, GROUPS[k], top1))
        path = folder / ("a" if k < 2 else "b") / f"image {k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    n = len(points)
    rng = np.random.default_rng(0)
    lattice = np.array([(i % 6, i // 6) for i in range(n)], dtype=np.float64)
    coords = lattice * 1.7 + rng.uniform(-0.2, 0.2, (n, 2)) - 3.1  # float64, not round numbers
    distance = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    neighbours = np.argsort(distance, axis=1, kind="stable")[:, :5]  # itself first, as FAISS does
    neighbours[1, 4] = -1  # FAISS's "no result"
    return coords, points, paths, neighbours


def _jpeg(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


@pytest.fixture(scope="module")
def page(inputs, tmp_path_factory):
    coords, points, paths, neighbours = inputs
    out = tmp_path_factory.mktemp("page") / "map.html"
    return write_map_page(out, coords, points, paths, neighbours, title="Pets <map>")


def test_data_reads_back_equal(inputs, page):
    coords, points, _, neighbours = inputs
    data = read_map_page(page)
    assert data["points"] == points
    assert data["coords"].dtype == np.float32
    assert np.array_equal(data["coords"], coords.astype(np.float32))  # exact, not approximate
    assert np.array_equal(data["neighbours"], neighbours)
    assert data["title"] == "Pets <map>" and data["colour_by"] == "group"
    assert [image["name"] for image in data["images"]] == [
        "a/image 0.png",
        "a/image 1.png",
        "b/image 2.png",
    ]
    assert data["groups"] == ["dog", "cat"]  # most frequent first: 8 dogs, 6 cats
    assert len(data["thumbs"]) == len(points)


def test_thumbnails_show_their_own_cell(inputs, page):
    points = inputs[1]
    data = read_map_page(page)
    for point, thumb in zip(points, data["thumbs"], strict=True):
        picture = _jpeg(thumb["uri"])
        assert max(picture.size) == 64 and list(picture.size) == thumb["size"]
        x0, y0, x1, y1 = thumb["outline"]
        centre = picture.getpixel(
            (int((x0 + x1) / 2 * picture.width), int((y0 + y1) / 2 * picture.height))
        )
        expected = _cell_colour(point.image, *point.cell)
        assert np.abs(np.subtract(centre, expected)).max() <= 12, (point, centre, expected)
        # the margin is 0.25 cell on each side, clipped at the image's border
        width, height = SHAPES[point.image][:2]
        bx0, by0, bx1, by1 = point.box
        pad_x, pad_y = 0.25 * (bx1 - bx0), 0.25 * (by1 - by0)
        left, top = max(0, np.floor(bx0 - pad_x)), max(0, np.floor(by0 - pad_y))
        right, bottom = min(width, np.ceil(bx1 + pad_x)), min(height, np.ceil(by1 + pad_y))
        expected_outline = [
            (bx0 - left) / (right - left),
            (by0 - top) / (bottom - top),
            (bx1 - left) / (right - left),
            (by1 - top) / (bottom - top),
        ]
        assert thumb["outline"] == pytest.approx(expected_outline, abs=1e-4)


def test_source_images_are_downscaled(inputs, page):
    data = read_map_page(page)
    for (width, height, _, _), image in zip(SHAPES, data["images"], strict=True):
        picture = _jpeg(image["uri"])
        assert image["size"] == [width, height]
        scale = min(1.0, 256 / max(width, height))
        assert picture.size == (round(width * scale), round(height * scale))
        assert image["scale"] == pytest.approx(scale)


def test_page_is_self_contained(inputs, page):
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", html)
    assert "default-src 'none'; img-src data:; style-src 'unsafe-inline'" in html
    assert re.findall(r'\b(?:src|href)="', html) == []  # every image comes from the JSON
    assert html.count("data:image/jpeg;base64,") == len(inputs[1]) + len(SHAPES)
    assert "<title>Pets &lt;map&gt; · dense readout</title>" in html


def test_names_cannot_break_out_of_the_page(inputs):
    coords, points, paths, neighbours = inputs
    evil = "</script><script>alert(1)</script>"
    points = [MapPoint(p.image, p.cell, p.box, evil, p.top1) for p in points]
    html = map_page_html(map_page_data(coords, points, paths, neighbours, title=evil))
    assert html.count("</script>") == 2  # the JSON block and the page's script
    data = read_map_page(html)
    assert data["title"] == evil and data["points"][0].group == evil


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, p, n: {"coords": c[:-1]}, r"coords has 21 rows but there are 22 points"),
        (lambda c, p, n: {"coords": c[:, :1]}, r"coords must be an N×2 array"),
        (lambda c, p, n: {"coords": np.where(c == c[0, 0], np.nan, c)}, r"NaN or Inf"),
        (lambda c, p, n: {"neighbours": n[:-1]}, r"neighbours must be an N×k array with N = 22"),
        (
            lambda c, p, n: {"neighbours": np.where(n == 7, 22, n)},
            r"neighbours\[\d+, \d+\] = 22 is out of range",
        ),
        (lambda c, p, n: {"neighbours": np.where(n == 7, -2, n)}, r"= -2 is out of range"),
        (lambda c, p, n: {"neighbours": n * 1.0}, r"integer indices"),
        (
            lambda c, p, n: {"points": [*p[:3], MapPoint(3, (0, 0), (0, 0, 1, 1)), *p[4:]]},
            r"points\[3\]\.image = 3 is out of range: there are 3 image_paths",
        ),
        (
            lambda c, p, n: {"points": [MapPoint(0, (0, 0), (5, 0, 5, 9)), *p[1:]]},
            r"points\[0\]\.box = \(5, 0, 5, 9\) is empty",
        ),
        (
            lambda c, p, n: {"points": [MapPoint(0, (0, 0), (95, 0, 120, 9)), *p[1:]]},
            r"lies outside its image \(90×60 px\)",
        ),
        (
            lambda c, p, n: {"colour_by": "class"},
            r"colour_by must be one of 'group', 'top1', got 'class'",
        ),
        (
            lambda c, p, n: {
                "colour_by": "top1",
                "points": [MapPoint(q.image, q.cell, q.box) for q in p],
            },
            r"no point has a top1 class",
        ),
    ],
)
def test_inconsistent_inputs_are_refused(inputs, tmp_path, change, message):
    coords, points, paths, neighbours = inputs
    arguments = {"coords": coords, "points": points, "image_paths": paths, "neighbours": neighbours}
    arguments.update(change(coords, points, neighbours))
    out = tmp_path / "map.html"
    with pytest.raises(InputError, match=message):
        write_map_page(out, **arguments)
    assert not out.exists()


def test_umap_refuses_too_few_vectors_and_names_the_extra(monkeypatch):
    with pytest.raises(InputError, match="needs at least 17 vectors, got 16"):
        umap_coords(np.ones((16, 4)))
    with pytest.raises(InputError, match="n_neighbors must be at least 2"):
        umap_coords(np.ones((16, 4)), n_neighbors=1)
    with pytest.raises(InputError, match="NaN"):
        umap_coords(np.full((20, 4), np.nan), n_neighbors=5)
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(MissingDependencyError, match=r"dense-readout\[patches\]"):
        umap_coords(np.random.default_rng(0).normal(size=(20, 4)), n_neighbors=5)


@pytest.mark.slow
def test_umap_keeps_clusters_apart_and_is_deterministic():
    """60 vectors in 3 directions (cosine clusters): each point's 2-D nearest neighbour
    is in its own cluster; the same seed gives the same coordinates."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    labels = np.repeat(np.arange(3), 20)
    vectors = centres[labels] + 0.15 * rng.normal(size=(60, 32))
    vectors *= rng.uniform(0.5, 3.0, size=(60, 1))  # lengths differ: cosine ignores them
    first = umap_coords(vectors, seed=3, n_neighbors=10)
    assert first.shape == (60, 2) and first.dtype == np.float32 and np.isfinite(first).all()
    distance = ((first[:, None] - first[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    assert (labels[distance.argmin(axis=1)] == labels).all()
    assert np.array_equal(umap_coords(vectors, seed=3, n_neighbors=10), first)


# --- in a real browser -------------------------------------------------------------------------


browser = pytest.fixture(scope="module")(headless_chromium)


def _move(driver, x: float, y: float, click: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    if click:
        actions.pointer_action.click()
    actions.perform()


def _position(driver, i: int) -> tuple[float, float]:
    at = driver.execute_script("return window.patchMap.screenPosition(arguments[0])", i)
    return at["x"], at["y"]


def _pixel(driver, i: int) -> str:
    """The canvas pixel at point i's centre as #rrggbb."""
    return driver.execute_script(
        """const canvas = document.getElementById("map"), r = canvas.getBoundingClientRect();
        const p = window.patchMap.screenPosition(arguments[0]), ratio = canvas.width / r.width;
        const [x, y] = [(p.x - r.left) * ratio, (p.y - r.top) * ratio].map(Math.round);
        const d = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
        return "#" + [d[0], d[1], d[2]].map((c) => c.toString(16).padStart(2, "0")).join("");""",
        i,
    )


@pytest.fixture
def opened(browser, page):
    requests_made(browser)
    browser.get(page.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "true"
    return browser


def test_hover_shows_the_thumbnail(opened, inputs, page):
    data = read_map_page(page)
    tooltip = opened.find_element("id", "tooltip")
    assert not tooltip.is_displayed()
    for i in (0, 9, 19):
        _move(opened, *_position(opened, i))
        assert tooltip.is_displayed() and tooltip.get_attribute("data-index") == str(i)
        thumb = opened.find_element("id", "tooltip-thumb")
        assert thumb.get_attribute("src") == data["thumbs"][i]["uri"]
        assert (
            opened.execute_script("return arguments[0].naturalWidth", thumb)
            == data["thumbs"][i]["size"][0]
        )
        point = inputs[1][i]
        text = tooltip.text
        assert data["images"][point.image]["name"] in text
        assert f"cell ({point.cell[0]}, {point.cell[1]})" in text
        assert f"image class: {point.group or '(none)'}" in text
        assert f"readout top-1 of the cell: {point.top1 or '(none)'}" in text
    x, y = _position(opened, 0)
    _move(opened, x + 40, y + 40)  # between lattice points: nothing under the pointer
    assert not tooltip.is_displayed()
    urls = requests_made(opened)
    assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls
    assert [e for e in opened.get_log("browser") if e["level"] == "SEVERE"] == []


def test_click_shows_the_source_image_and_neighbours(opened, inputs, page):
    _, points, _, neighbours = inputs
    data = read_map_page(page)
    source = opened.find_element("id", "source")
    assert not source.is_displayed()
    for i in (1, 14):  # row 1 has a -1 neighbour; point 14 is on the large, downscaled image
        _move(opened, *_position(opened, i), click=True)
        assert opened.execute_script("return document.body.dataset.selected") == str(i)
        assert source.is_displayed()
        image = opened.find_element("id", "source-image")
        assert image.get_attribute("src") == data["images"][points[i].image]["uri"]
        frame = image.rect
        outline = opened.find_element("id", "cell-outline").rect
        width, height = SHAPES[points[i].image][:2]
        x0, y0, x1, y1 = points[i].box
        sx, sy = frame["width"] / width, frame["height"] / height
        assert outline["x"] - frame["x"] == pytest.approx(x0 * sx, abs=1.5)
        assert outline["y"] - frame["y"] == pytest.approx(y0 * sy, abs=1.5)
        assert outline["width"] == pytest.approx((x1 - x0) * sx, abs=1.5)
        assert outline["height"] == pytest.approx((y1 - y0) * sy, abs=1.5)
        shown = opened.find_elements("css selector", "#neighbours .neighbour")
        expected = [j for j in neighbours[i] if j >= 0 and j != i]
        assert [int(b.get_attribute("data-index")) for b in shown] == expected
        assert all(
            b.find_element("tag name", "img").get_attribute("src") == data["thumbs"][j]["uri"]
            for b, j in zip(shown, expected, strict=True)
        )
    shown[1].click()  # a neighbour is a button: pressing it selects that point
    assert opened.execute_script("return document.body.dataset.selected") == str(expected[1])
    assert opened.find_element("id", "detail-heading").text == f"point {expected[1] + 1} of 22"


def test_colour_toggle_recolours_the_points(opened, page):
    differ = [
        i
        for i in range(len(read_map_page(page)["points"]))
        if opened.execute_script(
            "const m = window.patchMap; m.setMode('group'); const a = m.colourOf(arguments[0]);"
            "m.setMode('top1'); const b = m.colourOf(arguments[0]); m.setMode('group');"
            "return a !== b",
            i,
        )
    ]
    assert differ
    i = differ[0]
    x, y = _position(opened, 0)
    _move(opened, x + 40, y + 40)  # no hover ring over the point
    colour = opened.execute_script("return window.patchMap.colourOf(arguments[0])", i)
    assert _pixel(opened, i) == colour
    assert opened.find_element("id", "colour-modes").is_displayed()
    opened.find_element("css selector", 'input[name="colour"][value="top1"]').click()
    assert opened.execute_script("return window.patchMap.mode()") == "top1"
    recoloured = opened.execute_script("return window.patchMap.colourOf(arguments[0])", i)
    assert recoloured != colour and _pixel(opened, i) == recoloured
    legend = opened.find_element("id", "legend").text
    assert "top 0" in legend and "(none) (3)" in legend  # each image's cell (0, 0) has no top-1


def test_zoom_and_pan(opened):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.keys import Keys

    def view() -> dict:
        return opened.execute_script("return window.patchMap.view()")

    k = view()["k"]
    opened.find_element("id", "zoom-in").click()
    assert view()["k"] == pytest.approx(1.5 * k)
    opened.find_element("id", "zoom-reset").click()
    assert view()["k"] == pytest.approx(k)
    x, y = _position(opened, 7)
    origin = ScrollOrigin.from_viewport(round(x), round(y))
    ActionChains(opened).scroll_from_origin(origin, 0, -300).perform()
    assert view()["k"] > 1.2 * k  # zoomed in around the pointer: the point under it stays
    assert _position(opened, 7) == pytest.approx((x, y), abs=1.5)
    before, zoomed = _position(opened, 3), view()["k"]
    drag = ActionBuilder(opened)
    drag.pointer_action.move_to_location(round(x) + 30, round(y) + 30).pointer_down()
    drag.pointer_action.move_to_location(round(x) + 80, round(y) + 10).pointer_up()
    drag.perform()
    assert _position(opened, 3) == pytest.approx((before[0] + 50, before[1] - 20), abs=1.5)
    assert opened.execute_script("return document.body.dataset.selected") == "-1"  # a drag
    opened.find_element("id", "map").send_keys("-")  # keys on the focused plot
    assert view()["k"] == pytest.approx(zoomed / 1.5)
    opened.find_element("id", "map").send_keys("0")
    assert view()["k"] == pytest.approx(k)
    canvas = opened.find_element("id", "map").rect
    centre = np.array([canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2])
    at = np.array([_position(opened, i) for i in range(22)])
    opened.find_element("id", "map").send_keys(Keys.ARROW_LEFT, Keys.ENTER)  # pan, then select
    nearest = int(np.argmin(((at + np.array([40.0, 0.0]) - centre) ** 2).sum(axis=1)))
    assert opened.execute_script("return document.body.dataset.selected") == str(nearest)


def test_without_top1_there_is_no_toggle(browser, inputs, tmp_path):
    coords, points, paths, neighbours = inputs
    plain = [MapPoint(p.image, p.cell, p.box, p.group) for p in points]
    page = write_map_page(tmp_path / "map.html", coords, plain, paths, neighbours)
    browser.get(page.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "true"
    assert not browser.find_element("id", "colour-modes").is_displayed()
    assert browser.find_element("id", "colour-label").text == "colour: image class"
    legend = [e.text for e in browser.find_elements("css selector", "#legend button")]
    assert legend == ["dog (8)", "cat (6)", "(none) (8)"]
    _move(browser, *_position(browser, 20))
    assert "readout top-1" not in browser.find_element("id", "tooltip").text
    x, y = _position(browser, 0)
    _move(browser, x + 40, y + 40)
    colours = browser.execute_script("return [0, 6].map(window.patchMap.colourOf)")
    assert [_pixel(browser, 0), _pixel(browser, 6)] == colours  # a cat, a dog
    browser.find_elements("css selector", "#legend button")[0].click()  # highlight the dogs
    pressed = browser.find_elements("css selector", '#legend button[aria-pressed="true"]')
    assert [e.text for e in pressed] == ["dog (8)"]
    assert _pixel(browser, 6) == colours[1] and _pixel(browser, 0) != colours[0]


COUNTS = [16, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 3, 2, 1]  # 14 classes, most frequent first


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory):
    """100 cells of one image on a 10×10 lattice, 14 image classes with long names."""
    folder = tmp_path_factory.mktemp("many")
    Image.new("RGB", (200, 200), (90, 120, 60)).save(folder / "grid.png")
    groups = [f"breed {k}, a longer synonym {k}" for k, n in enumerate(COUNTS) for _ in range(n)]
    points = [
        MapPoint(
            0,
            (i // 10, i % 10),
            (20 * (i % 10), 20 * (i // 10), 20 * (i % 10) + 20, 20 * (i // 10) + 20),
            group,
        )
        for i, group in enumerate(groups)
    ]
    coords = np.array([(i % 10, i // 10) for i in range(100)], dtype=np.float32)
    neighbours = np.arange(100)[:, None]
    return write_map_page(folder / "map.html", coords, points, [folder / "grid.png"], neighbours)


def test_top_nine_classes_get_colours_the_rest_one_grey_and_the_legend_filters(
    browser, many_classes
):
    browser.get(many_classes.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "true"
    rank = [k for k, n in enumerate(COUNTS) for _ in range(n)]  # class rank of each point
    legend = [e.text for e in browser.find_elements("css selector", "#legend button")]
    assert legend == [f"breed {k} ({COUNTS[k]})" for k in range(9)] + ["5 other classes (13)"]
    colours = browser.execute_script("return [...Array(100).keys()].map(window.patchMap.colourOf)")
    assert len(set(colours[:87])) == 9 and set(colours[87:]) == {"#8c8c8c"}  # ranks 9-13: grey
    assert [_pixel(browser, i) for i in (0, 90, 99)] == [colours[0], "#8c8c8c", "#8c8c8c"]
    _move(browser, *_position(browser, 0))
    tip = browser.find_element("id", "tooltip").text
    assert "image class: breed 0" in tip and "synonym" not in tip  # short names

    buttons = browser.find_elements("css selector", "#legend button")
    buttons[2].click()  # breed 2 only: points 30-41
    assert browser.execute_script("return document.body.dataset.filter") == "2"
    visible = browser.execute_script("return [...Array(100).keys()].map(window.patchMap.visible)")
    assert [i for i in range(100) if visible[i]] == [i for i in range(100) if rank[i] == 2]
    _move(browser, 10, 10)  # away from the points: no hover ring
    blank = "#000000"  # nothing drawn: the canvas is transparent there (rgba 0, 0, 0, 0)
    assert _pixel(browser, 30) == colours[30] and _pixel(browser, 0) == blank
    _move(browser, *_position(browser, 0))  # a hidden point cannot be hovered
    assert not browser.find_element("id", "tooltip").is_displayed()
    browser.find_elements("css selector", "#legend button")[9].click()  # + the other classes
    assert browser.execute_script("return document.body.dataset.filter") == "2,9"
    _move(browser, 10, 10)
    assert _pixel(browser, 95) == "#8c8c8c" and _pixel(browser, 50) == blank
    browser.find_element("id", "show-all").click()
    assert browser.execute_script("return document.body.dataset.filter") == ""
    assert _pixel(browser, 0) == colours[0]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
