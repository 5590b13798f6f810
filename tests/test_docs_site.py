"""The documentation site (mkdocs.yml): strict build, API entries, offline, real browser.

The site is built once per module with ``mkdocs build --strict`` into a temporary
folder; the tests skip when the ``docs`` extra is not installed. Set
``DOCS_SITE_SCREENSHOTS=1`` to refresh the committed screenshots in docs/figures.
"""

from __future__ import annotations

import functools
import html
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browser_support import headless_chromium
from conftest import REPO

browser = pytest.fixture(scope="module")(headless_chromium)

# the public subpackages whose every public name gets an entry on the site
SUBPACKAGES = [
    "adapters", "compare", "lrp", "patches", "attacks", "page",
    "quantus", "captum", "gradcam", "registry", "export", "pseudo_labels", "viz",
]  # fmt: skip
# public single-file modules a user imports (each has its reference page)
MODULES = [
    "localization", "volumes", "images", "preprocessing", "pretrained", "classes",
    "imagenet", "validation",
]  # fmt: skip
# dense_readout.experiments has no __all__ of its own either: its modules' names
EXPERIMENT_MODULES = [
    "synthetic_symbols", "synthetic", "synthetic_recipes", "synthetic_data",
    "synthetic_metrics", "synthetic_train", "synthetic_evaluate", "figures",
    "coco_annotations", "coco_features", "coco",
]  # fmt: skip
# dense_readout.evaluation has no __all__ of its own: its public names are its modules'
EVALUATION_MODULES = [
    "datasets", "box_layouts", "protocol", "metrics", "thresholds",
    "runner", "batches", "state", "distributed", "reports",
]  # fmt: skip
# Public classes and functions whose docstring has no runnable example yet: this list
# may only shrink (test_examples_ratchet fails when a listed name gains one).
MISSING_EXAMPLES = REPO / "docs" / "reference" / "missing_examples.txt"
FAILED_BUILD: list[str] = []


def public_names() -> dict[str, object]:
    """Every public name, ``module.name`` -> object."""
    modules = {"dense_readout": None}
    modules |= {f"dense_readout.{name}": None for name in SUBPACKAGES + MODULES}
    modules |= {f"dense_readout.experiments.{name}": None for name in EXPERIMENT_MODULES}
    modules |= {f"dense_readout.evaluation.{name}": None for name in EVALUATION_MODULES}
    names: dict[str, object] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            names[f"{module_name}.{name}"] = getattr(module, name)
    errors = importlib.import_module("dense_readout.errors")  # classes only, no __all__
    for name, value in vars(errors).items():
        if inspect.isclass(value) and value.__module__ == errors.__name__:
            names[f"dense_readout.errors.{name}"] = value
    return names


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: ``$DOCS_SITE`` if set (a folder ``make docs`` wrote), else built here."""
    if os.environ.get("DOCS_SITE"):
        return Path(os.environ["DOCS_SITE"]).resolve()
    for package in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(package, reason="the docs extra is not installed")
    if FAILED_BUILD:  # a failed module fixture is retried per test: fail fast instead
        pytest.fail(FAILED_BUILD[0])
    out = tmp_path_factory.mktemp("site") / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0 or "WARNING" in done.stderr:
        FAILED_BUILD.append(f"mkdocs build --strict failed:\n{done.stderr[-4000:]}")
        pytest.fail(FAILED_BUILD[0])
    return out


def anchors(site: Path) -> dict[str, Path]:
    """Every mkdocstrings heading id in the API pages -> the page it is on."""
    found = {}
    for page in sorted((site / "reference").glob("*.html")):
        for anchor in re.findall(r'<h\d id="(dense_readout[\w.]*)"', page.read_text("utf-8")):
            found[anchor] = page
    return found


def entry(page: Path, anchor: str) -> str:
    """The HTML of one entry: from its heading to the next heading of its level or above."""
    text = page.read_text("utf-8")
    match = re.search(rf'<h(\d) id="{re.escape(anchor)}"', text)
    assert match is not None, anchor
    level = int(match[1])
    end = re.compile(rf"<h[1-{level}][ >]").search(text, match.end())
    return text[match.start() : end.start() if end else len(text)]


def test_every_public_name_has_an_entry(site):
    """Each public name is documented under a public path of the same object or where it is defined."""
    names = public_names()
    documented = anchors(site)
    paths_of: dict[int, set[str]] = {}
    for path, value in names.items():
        paths_of.setdefault(id(value), set()).add(path)
        if inspect.isclass(value) or inspect.isfunction(value):  # the defining module's path
            paths_of[id(value)].add(f"{value.__module__}.{value.__qualname__}")
    missing = [p for p, v in names.items() if not paths_of[id(v)] & documented.keys()]
    assert not missing, f"public names without an API entry: {missing}"
    assert len(names) > 150  # the enumeration itself found the package's names


def test_entries_have_signature_summary_and_example(site):
    documented = anchors(site)
    without_example = set(MISSING_EXAMPLES.read_text("utf-8").split())
    for path, value in public_names().items():
        if not (inspect.isclass(value) or inspect.isfunction(value)) or path not in documented:
            continue  # constants; aliases documented under their other public path
        body = entry(documented[path], path)
        if not (inspect.isclass(value) and issubclass(value, BaseException)):
            assert "doc-signature" in body, f"{path}: no signature"  # (errors take a message)
        summary = (inspect.getdoc(value) or "").split("\n", 1)[0]
        summary = re.sub(r"(?::\w+)+:`[^`]*`", "", summary)  # Sphinx roles render as short names
        words = re.findall(r"[A-Za-z]{3,}", summary)[:5]
        text = html.unescape(re.sub(r"<[^>]+>", " ", body))
        assert words and all(word in text for word in words), f"{path}: no summary"
        if path not in without_example:
            assert "&gt;&gt;&gt; " in body, f"{path}: no example rendered"


def test_examples_ratchet():
    """The list of names without an example only shrinks: a listed name that has one fails."""
    names = public_names()
    listed = MISSING_EXAMPLES.read_text("utf-8").split()
    assert listed == sorted(set(listed))
    unknown = [p for p in listed if p not in names]
    assert not unknown, f"not public names any more, remove them: {unknown}"
    fixed = [p for p in listed if ">>>" in (inspect.getdoc(names[p]) or "")]
    assert not fixed, (
        f"these have an example now, remove them from {MISSING_EXAMPLES.name}: {fixed}"
    )


def test_site_is_offline(site):
    """No page loads a script, style sheet or font from another host."""
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        assert not external.search(page.read_text("utf-8")), page
    for sheet in site.rglob("*.css"):
        assert not re.search(r"url\((['\"]?)(?:https?:)?//", sheet.read_text("utf-8")), sheet
    assert (site / "search" / "search_index.js").is_file()  # the offline plugin's index


def test_nav_holds_every_page_and_the_changelog_matches_the_version(site):
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").glob("*.md")}
    pages |= {
        p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs/reference").glob("*.md")
    }
    config = (REPO / "mkdocs.yml").read_text("utf-8")
    in_nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?([\w/.-]+\.md)$", config, re.M))
    assert pages <= in_nav, f"pages missing from the nav in mkdocs.yml: {sorted(pages - in_nav)}"
    pyproject = (REPO / "pyproject.toml").read_text("utf-8")  # (no tomllib on Python 3.10)
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)[1]
    releases = re.findall(r"^## \[(\d[^\]]*)\]", (REPO / "CHANGELOG.md").read_text("utf-8"), re.M)
    assert releases[0] == version, (releases, version)
    assert "DenseReadoutCAM" in (site / "reference" / "gradcam.html").read_text("utf-8")


def test_subfolder_pages_have_no_untested_examples():
    """tests/test_docs.py runs docs/*.md; pages in subfolders must not hide Python examples."""
    for page in (REPO / "docs").rglob("*.md"):
        if page.parent != REPO / "docs":
            assert "```python" not in page.read_text("utf-8"), page


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def network_log(driver) -> tuple[list[str], list[str]]:
    """URLs requested, and requests that failed or answered >= 400, since the last call."""
    urls, failed = [], []
    for item in driver.get_log("performance"):
        message = json.loads(item["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(params["request"]["url"])
        if message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(params.get("errorText", "failed"))
        if message["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(params["response"]["url"])
    return urls, failed


def screenshot(driver, name: str, tmp_path: Path) -> None:
    driver.save_screenshot(str(tmp_path / name))
    if os.environ.get("DOCS_SITE_SCREENSHOTS"):
        driver.save_screenshot(str(REPO / "docs" / "figures" / name))


def test_pages_load_without_failed_requests(browser, served, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1400, 900)  # wide enough for Material's navigation column
    for path, shot in [
        ("/index.html", "site_home.png"),
        ("/reference/dense_readout.html#dense_readout.DenseReadout", "site_api_densereadout.png"),
    ]:
        network_log(browser)  # drop the log so far
        browser.get(served + path)
        WebDriverWait(browser, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        urls, failed = network_log(browser)
        assert failed == [], (path, failed)
        assert urls and all(u.startswith((served, "data:", "blob:")) for u in urls), urls
        assert browser.title.endswith("dense-readout"), browser.title
        assert browser.get_log("browser") == [], path  # no script errors
        screenshot(browser, shot, tmp_path)


def test_search_finds_dense_readout_cam(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served + "/index.html")
    query = WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "input[data-md-component='search-query']")
    )
    WebDriverWait(browser, 20).until(  # the index has loaded: the box takes input
        lambda d: d.execute_script("return !arguments[0].disabled", query)
    )
    browser.find_element(By.TAG_NAME, "body").send_keys("/")  # Material's search shortcut
    WebDriverWait(browser, 20).until(lambda d: query.is_displayed())
    query.send_keys("DenseReadoutCAM")
    results = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item") or None
    )
    texts = " ".join(r.text for r in results)
    assert "DenseReadoutCAM" in texts, texts[:500]
    links = [r.find_element(By.TAG_NAME, "a").get_attribute("href") for r in results]
    assert any("reference/gradcam.html" in link for link in links), links
