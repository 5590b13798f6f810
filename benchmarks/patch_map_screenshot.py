"""Screenshot of a patch map page in headless Chromium: one point clicked, another hovered.

    python benchmarks/patch_map_screenshot.py runs/patch_map.html docs/figures/patch_map.png \\
        --click 0 --hover 1

Points are indices into the page's points (``read_map_page(page)["points"]``); by
default the point nearest the centre of the plot is clicked and its first neighbour
hovered. Needs selenium and chromium + chromium-driver (as the page tests).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser_support import CHROMIUM_FLAGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--click", type=int, default=None)
    parser.add_argument("--hover", type=int, default=None)
    parser.add_argument("--size", default="1400,900")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in [*CHROMIUM_FLAGS, f"--window-size={args.size}"]:
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver") or shutil.which("chromium-driver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(args.page.resolve().as_uri())
        while driver.execute_script("return document.body.dataset.ready") != "true":
            time.sleep(0.2)
        click = args.click if args.click is not None else _central_point(driver)
        data = driver.execute_script(
            "return JSON.parse(document.getElementById('patch-map-data').textContent).neighbours"
        )
        hover = args.hover if args.hover is not None else int(data[click][1])
        for index, press in ((click, True), (hover, False)):
            at = driver.execute_script("return window.patchMap.screenPosition(arguments[0])", index)
            actions = ActionBuilder(driver)
            actions.pointer_action.move_to_location(round(at["x"]), round(at["y"]))
            if press:
                actions.pointer_action.click()
            actions.perform()
        time.sleep(0.5)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.png))
        print(f"clicked point {click}, hovering point {hover}; wrote {args.png}")
    finally:
        driver.quit()


def _central_point(driver) -> int:
    return int(
        driver.execute_script(
            """const c = document.getElementById("map").getBoundingClientRect();
            const n = JSON.parse(document.getElementById('patch-map-data').textContent)
                .coords.length;
            let best = 0, bestD = Infinity;
            for (let i = 0; i < n; i++) {
              const p = window.patchMap.screenPosition(i);
              const d = (p.x - c.left - c.width / 2) ** 2 + (p.y - c.top - c.height / 2) ** 2;
              if (d < bestD) { bestD = d; best = i; }
            }
            return best;"""
        )
    )


if __name__ == "__main__":
    main()
