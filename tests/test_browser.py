"""The readout page in a real browser (headless Chromium driven by Selenium).

Hover a cell → the listed top-5 is ``result.topk(5)`` of that cell; keyboard focus
and arrow keys do the same; typing a class name redraws the picture with that
class's map; the page makes no request that is not ``file:`` or ``data:``
(Chrome's DevTools ``Network`` events); it fits a phone's width. A screenshot is
saved (``DENSE_READOUT_SCREENSHOTS=DIR`` keeps it, as docs/figures/page_chelsea.png
was made). Skipped, with the reason, only where Chromium, its driver or Selenium
is missing (Debian: ``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser_support import headless_chromium, requests_made, set_viewport
from dense_readout import DenseReadout
from dense_readout.cli import main
from dense_readout.images import full_view
from dense_readout.page import PageComparison, readout_page

skimage_data = pytest.importorskip("skimage.data")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

browser = pytest.fixture(scope="module")(headless_chromium)


def open_page(driver, path: Path, viewport: tuple[int, int] | None = None) -> None:
    requests_made(driver)  # drop earlier events
    driver.get_log("browser")  # and earlier pages' console messages
    if viewport is None:
        driver.set_window_size(1200, 900)
    else:
        set_viewport(driver, *viewport)
    driver.get(path.as_uri())
    for _ in range(100):
        if driver.execute_script("return document.body.dataset.ready") == "true":
            return
        driver.implicitly_wait(0.05)
    raise AssertionError("the page never finished drawing")


def canvas_pixels(driver) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById('picture');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
    )
    return np.array(data, dtype=np.uint8)


@pytest.fixture(scope="module")
def chelsea_page(tmp_path_factory, embedded):
    """The CLI's page of chelsea (whole photo) and the readout of the same input."""
    root = tmp_path_factory.mktemp("browser")
    photo = Image.fromarray(skimage_data.chelsea())
    photo.save(root / "chelsea.png")
    out = root / "out"
    assert (
        main(["explain", str(root / "chelsea.png"), "--html", "--no-png", "--out", str(out)]) == 0
    )
    model, preprocess, names, _ = embedded
    picture = full_view(photo, preprocess.crop)
    result = DenseReadout(model)(preprocess.normalize(picture).unsqueeze(0))
    return out / "chelsea.html", result, names


def hover_cell(driver, u: int, v: int, grid: tuple[int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "picture")
    h, w = grid
    size = canvas.size
    x = (v + 0.5) * size["width"] / w - size["width"] / 2
    y = (u + 0.5) * size["height"] / h - size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).perform()


def listed(driver) -> list[int]:
    items = driver.find_elements("css selector", "#cell-top5 li")
    return [int(item.get_attribute("data-class")) for item in items]


def test_hover_lists_the_cells_top5(browser, chelsea_page):
    path, result, names = chelsea_page
    open_page(browser, path)
    h, w = result.grid_size
    values, classes = result.topk(5, probabilities=True)
    for u, v in [(0, 0), (3, 4), (h - 1, w - 1), (2, w - 2)]:
        hover_cell(browser, u, v, (h, w))
        assert listed(browser) == classes[0, :, u, v].tolist(), (u, v)
        first = browser.find_element("css selector", "#cell-top5 li").text
        short = names[int(classes[0, 0, u, v])].split(",")[0]
        assert first.startswith(short) and f"{100 * float(values[0, 0, u, v]):.1f}%" in first
        assert f"Z {float(result.scores[0, classes[0, 0, u, v], u, v]):.2f}" in first
    assert browser.get_log("browser") == []  # no script errors


def test_keyboard_moves_between_cells(browser, chelsea_page):
    from selenium.webdriver.common.keys import Keys

    path, result, _ = chelsea_page
    open_page(browser, path)
    canvas = browser.find_element("id", "picture")
    browser.execute_script("arguments[0].focus()", canvas)
    canvas.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_DOWN)
    assert browser.find_element("id", "cell-heading").text.startswith("cell row 2, column 3")
    assert listed(browser) == result.topk(5)[1][0, :, 1, 2].tolist()


def test_typing_a_class_name_draws_its_map(browser, chelsea_page):
    path, result, _ = chelsea_page
    open_page(browser, path)
    assert (
        browser.find_element("id", "picture").get_attribute("data-mode") == "labels"
    )  # no --class
    assert browser.find_element("id", "class-search").get_attribute("value") == ""
    labels = canvas_pixels(browser)
    search = browser.find_element("id", "class-search")
    search.send_keys("tabby")  # 281 "tabby, tabby cat"
    canvas = browser.find_element("id", "picture")
    assert (
        canvas.get_attribute("data-mode") == "class" and canvas.get_attribute("data-cls") == "281"
    )
    tabby = canvas_pixels(browser)
    assert np.abs(tabby.astype(int) - labels).mean() > 5
    search.clear()
    search.send_keys("Egyptian cat (285)")
    assert canvas.get_attribute("data-cls") == "285"
    assert np.abs(canvas_pixels(browser).astype(int) - tabby).mean() > 1  # another map
    bar = browser.find_element("id", "bar-label").text
    assert bar.startswith("Z[285] Egyptian cat") and "image logit" in bar
    low = float(browser.find_element("id", "bar-min").text)
    assert low == pytest.approx(float(result.scores[0, 285].min()), abs=0.01)
    browser.find_element("css selector", 'input[value="plain"]').click()
    assert canvas.get_attribute("data-mode") == "plain"


def test_no_request_leaves_the_file(browser, chelsea_page, tmp_path):
    path, _, _ = chelsea_page
    open_page(browser, path)
    urls = requests_made(browser)
    assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls
    # The detector works: a page that does reach out is caught.
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    browser.get(leaky.as_uri())
    assert any(url.startswith("http:") for url in requests_made(browser))


def test_comparisons_appear_for_their_classes(browser, tmp_path):
    import timm

    model = timm.create_model("resnet18", num_classes=4).eval()
    result = DenseReadout(model)(torch.rand(1, 3, 64, 64))
    maps = [PageComparison("gradcam", 2, np.eye(8), 0.5, 5)]
    page = tmp_path / "small.html"
    page.write_text(readout_page(result, None, list("abcd"), comparisons=maps))
    open_page(browser, page)
    section = browser.find_element("id", "comparisons")
    browser.execute_script("window.denseReadout.selectClass(1, false)")
    assert not section.is_displayed()
    browser.execute_script("window.denseReadout.selectClass(2, false)")
    assert section.is_displayed()
    caption = browser.find_element("css selector", "#comparison-maps figcaption").text
    assert caption == "gradcam: 0.500 s for 5 classes"


def test_phone_width_and_screenshot(browser, chelsea_page, tmp_path):
    path, _, _ = chelsea_page
    open_page(browser, path)
    browser.execute_script("window.denseReadout.showCell(3, 4)")
    shot = tmp_path / "page_chelsea.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.width >= 800
    if os.environ.get("DENSE_READOUT_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["DENSE_READOUT_SCREENSHOTS"]) / shot.name)
    browser.set_window_size(390, 844)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    canvas = browser.find_element("id", "picture")
    assert canvas.size["width"] <= 390


@pytest.fixture(scope="module")
def astronaut_page(tmp_path_factory):
    """``explain --html --class "football helmet" --class tabby`` on astronaut (a square photo)."""
    root = tmp_path_factory.mktemp("astronaut")
    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut.png")
    arguments = ["explain", str(root / "astronaut.png"), "--html", "--no-png"]
    arguments += ["--class", "football helmet", "--class", "tabby", "--out", str(root / "out")]
    assert main(arguments) == 0
    return root / "out" / "astronaut.html"


def rect(driver, element_id: str) -> dict:
    return driver.execute_script(
        "return document.getElementById(arguments[0]).getBoundingClientRect().toJSON()", element_id
    )


def one_line(driver, element) -> bool:
    """The element's box is one line of its text high (two lines would be about 2.3 em)."""
    height, font = driver.execute_script(
        "const e = arguments[0]; "
        "return [e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).fontSize)]",
        element,
    )
    return 0 < height < 1.7 * font


def test_page_opens_on_the_first_class(browser, astronaut_page):
    open_page(browser, astronaut_page)
    canvas = browser.find_element("id", "picture")
    assert (
        canvas.get_attribute("data-mode") == "class" and canvas.get_attribute("data-cls") == "560"
    )
    assert browser.find_element("css selector", 'input[value="class"]').is_selected()
    search = browser.find_element("id", "class-search").get_attribute("value")
    assert search == "football helmet (560)"
    assert browser.find_element("id", "bar-label").text.startswith("Z[560] football helmet:")
    assert browser.find_element("id", "colorbar").is_displayed()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_legend_and_colour_bar_fit_1400x1000(browser, astronaut_page):
    """A square photo at 1400×1000: the picture shrinks so that nothing needs scrolling."""
    open_page(browser, astronaut_page, viewport=(1400, 1000))
    browser.execute_script("window.denseReadout.showCell(3, 4)")
    for element_id in ("bar-label", "colorbar", "picture", "cell-top5"):
        box = rect(browser, element_id)
        assert box["top"] >= 0 and box["bottom"] <= 1000 and box["right"] <= 1400, element_id
    browser.find_element("css selector", 'input[value="labels"]').click()
    legend = rect(browser, "legend")
    assert legend["height"] > 0 and legend["top"] >= 0 and legend["bottom"] <= 1000
    assert one_line(browser, browser.find_element("id", "cell-heading"))
    rows = browser.find_elements("css selector", "#cell-top5 li")
    assert len(rows) == 5 and all(one_line(browser, row) for row in rows)


def test_long_class_names_keep_each_top5_row_on_one_line(browser, tmp_path):
    import timm

    model = timm.create_model("resnet18", num_classes=6).eval()
    result = DenseReadout(model)(torch.rand(1, 3, 64, 64))
    names = [f"an unusually long class name number {k}, with a synonym" for k in range(6)]
    page = tmp_path / "long.html"
    page.write_text(readout_page(result, None, names))
    open_page(browser, page, viewport=(1400, 1000))
    browser.execute_script("window.denseReadout.showCell(0, 1)")
    rows = browser.find_elements("css selector", "#cell-top5 li")
    assert len(rows) == 5 and all(one_line(browser, row) for row in rows)
    numbers = [row.find_element("class name", "num").text for row in rows]
    assert all(" · Z " in text for text in numbers)  # "· Z" stays beside the probability
    assert browser.find_element("id", "picture").get_attribute("data-mode") == "labels"
