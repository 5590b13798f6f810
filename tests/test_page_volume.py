"""The readout page of a clip or volume: its payload, and its slider in a real browser.

The payload's ``K×t×h×w`` scores are ``DenseReadout(model)(x).scores[0]`` (float16
rounding), its per-cell top-5 are those of each frame's cells, its pictures the input
frames at the centre of each grid step. In headless Chromium moving the slider shows
that frame: the label, the picture, and a hovered cell's top class as the payload says.
Browser tests skip, with the reason, where Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from browser_support import headless_chromium
from dense_readout import DenseReadout
from dense_readout.page import read_page, readout_page
from dense_readout.volumes import grid_pictures, volume_page


@pytest.fixture(scope="module")
def volume_readout():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv3d(1, 6, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()  # fmt: skip
    x = torch.randn(1, 1, 9, 17, 17)
    return net, x, DenseReadout(net)(x)


def test_payload_scores_are_the_readouts_frame_by_frame(volume_readout):
    _, x, result = volume_readout
    data = read_page(volume_page(result, x, list("abcde"), slice_axis="slice"))
    t, h, w = result.grid_size
    assert data["grid"] == [t, h, w] == [4, 8, 8]
    for step in range(t):
        z = result.scores[0, :, step].detach().numpy()
        assert np.all(np.abs(data["scores"][:, step] - z) <= 2.0**-11 * np.abs(z) + 2.0**-24)
        cells = data["cells"]["classes"][step * h * w : (step + 1) * h * w]
        expected = result.scores[0, :, step].topk(5, dim=0).indices.permute(1, 2, 0)
        assert cells == expected.reshape(-1, 5).tolist()
    assert data["slices"]["input_index"] == [i for i, _ in grid_pictures(x, t)] == [1, 3, 5, 7]
    assert data["scores"].shape == (5, 4, 8, 8) and data["slices"]["axis"] == "slice"


def test_an_image_page_has_no_slices():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    data = read_page(readout_page(DenseReadout(model.eval())(torch.rand(1, 3, 32, 32))))
    assert "slices" not in data and data["grid"] == [8, 8] and data["scores"].shape == (4, 8, 8)


webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
browser = pytest.fixture(scope="module")(headless_chromium)


def _open(driver, path) -> None:
    driver.set_window_size(1200, 900)
    driver.get(path.as_uri())
    for _ in range(200):
        if driver.execute_script("return document.body.dataset.ready") == "true":
            return
        driver.implicitly_wait(0.05)
    raise AssertionError("the page never finished drawing")


def _hover(driver, u: int, v: int, grid: tuple[int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "picture")
    size, (h, w) = canvas.size, grid
    x = (v + 0.5) * size["width"] / w - size["width"] / 2
    y = (u + 0.5) * size["height"] / h - size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, round(x), round(y)).perform()


def _picture(driver) -> np.ndarray:
    data = driver.execute_script(
        "const c = document.getElementById('picture');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
    )
    return np.array(data, dtype=np.uint8)


def test_the_slider_shows_the_chosen_frames_cells(volume_readout, tmp_path, browser):
    from selenium.webdriver.common.keys import Keys

    _, x, result = volume_readout
    path = tmp_path / "volume.html"
    path.write_text(volume_page(result, x, list("abcde"), slice_axis="slice"), encoding="utf-8")
    data = read_page(path)
    t, h, w = data["grid"]
    top1 = np.array([row[0] for row in data["cells"]["classes"]]).reshape(t, h, w)
    # a cell whose top class differs between the first and the last frame
    u, v = map(int, np.argwhere(top1[0] != top1[t - 1])[0])
    _open(browser, path)
    assert browser.find_element("id", "slice-control").is_displayed()
    value = browser.find_element("id", "slice-value")
    assert value.text == f"1 of {t} (input slice {data['slices']['input_index'][0]})"
    browser.find_element("css selector", 'input[name="mode"][value="plain"]').click()

    def shown_top_class() -> int:
        _hover(browser, u, v, (h, w))
        item = browser.find_element("css selector", "#cell-top5 li")
        return int(item.get_attribute("data-class"))

    assert shown_top_class() == top1[0, u, v]
    first_picture = _picture(browser)  # the plain slice, with the same cell outlined
    slider = browser.find_element("id", "slice")
    slider.send_keys(Keys.END)  # the range input's own keys: to its last step
    canvas = browser.find_element("id", "picture")
    assert canvas.get_attribute("data-slice") == str(t - 1)
    assert value.text == f"{t} of {t} (input slice {data['slices']['input_index'][-1]})"
    assert shown_top_class() == top1[t - 1, u, v] != top1[0, u, v]
    heading = browser.find_element("id", "cell-heading").text
    assert heading == f"cell row {u + 1}, column {v + 1} of {h}×{w}, slice {t} of {t}"
    assert not np.array_equal(_picture(browser), first_picture)  # another input slice
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
