"""Headless Chromium for the page tests (tests/test_browser.py, tests/test_attack_page.py).

``browser`` is a module-scoped fixture body: import it into a test module as a fixture
with ``browser = pytest.fixture(scope="module")(headless_chromium)``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

# the network is closed: without these flags Chromium's own connections fail noisily
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _executable(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def headless_chromium() -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium with performance logs; skips without one."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = _executable("chromium", "chromium-browser", "google-chrome")
    driver_path = _executable("chromedriver", "chromium-driver")
    if chromium is None or driver_path is None:
        pytest.skip("no headless browser: install chromium and chromium-driver (apt-get)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, "--window-size=1200,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def requests_made(driver: Any) -> list[str]:
    """URLs of every request the page started since the last call (DevTools Network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Resize the window so that the page's viewport (innerWidth × innerHeight) is this size."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == [
        width,
        height,
    ]
