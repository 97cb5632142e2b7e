"""The app's page in a real headless Chromium (Playwright), as a person uses it: on the tiny
model, upload the bundled subject's photos, learn a few steps, generate side by side, see
the three videos and the weight curve; a bad upload shows its error; a second job waits
in the queue.

Needs the app extra, Playwright and Chromium (``/usr/bin/chromium``, Debian's ``chromium``
package; ``.ci/run`` installs both). Outside CI a machine without them skips these tests;
in CI (``CI=true``) their absence is a failure. Set ``CUSTOMCRAFTER_SCREENSHOTS=DIR`` to
keep the page's screenshots there, and ``CUSTOMCRAFTER_APP_BASE=shapes`` to run on the
shapes model (the README's screenshots:
``CUSTOMCRAFTER_APP_BASE=shapes CUSTOMCRAFTER_SCREENSHOTS=docs/images pytest
tests/test_app_page.py -k side_by_side``).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from customcrafter.shapes.world import SUBJECTS_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAR = sorted(str(p) for p in (SUBJECTS_DIR / "striped-star").glob("*.png"))
BASE = os.environ.get("CUSTOMCRAFTER_APP_BASE", "tiny")
#: a few training steps and sampling steps: on the tiny model, or enough of the shapes recipe
#: for the screenshots to show the subject
FAST, SAMPLING_STEPS = {
    "tiny": (
        {
            "max-train-steps": "4",
            "num-class-images": "2",
            "class-sampling-steps": "2",
            "checkpointing-steps": "2",
            "train-frames": "2",
            "validation-prompts": "a <new1> star, moving left",
            "validation-inference-steps": "2",
            "validation-num-frames": "2",
        },
        "3",
    ),
    "shapes": (
        {
            "max-train-steps": "150",
            "checkpointing-steps": "150",
            "validation-prompts": "a <new1> star moving left on a purple background",
            "validation-steps": "50",
        },
        "25",
    ),  # fmt: skip
}[BASE]


def _requirements() -> str | None:
    try:
        import gradio  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[app,test]')"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt-get install chromium)"
    return None


missing = _requirements()
if missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"the browser tests cannot run in CI: {missing}")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing is not None, reason=missing or ""),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "customcrafter.cli", "app", "--base", BASE, "--device", "cpu",
         "--output-dir", str(folder / "out"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"the app did not start:\n{process.stdout.read()}") from None
            time.sleep(0.5)
    yield url, folder
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app[0], wait_until="networkidle")  # the page's first requests answered
    yield page
    page.close()


def _shot(page, name: str, app) -> None:
    folder = Path(os.environ.get("CUSTOMCRAFTER_SCREENSHOTS") or app[1] / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _text(page, elem_id: str, value: str) -> None:
    """Type ``value`` into a text box, as a person would (replacing what is there)."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.click()
    box.press("Control+A")
    box.press_sequentially(value)


def _learn_form(page, name: str, photos: list[str], steps: dict) -> None:
    from playwright.sync_api import expect

    page.locator("#photos input[type=file]").set_input_files(photos)
    _text(page, "subject-name", name)
    _text(page, "class-word", "star")
    page.locator("#advanced").get_by_text("advanced").first.click()
    for key, value in steps.items():
        _text(page, f"adv-{key}", value)
        page.keyboard.press("Tab")
        expect(page.locator(f"#adv-{key} input, #adv-{key} textarea").first).to_have_value(value)


def test_learn_then_generate_side_by_side(page, app):
    from playwright.sync_api import expect

    _learn_form(page, "star", STAR, FAST)
    expect(page.locator("#instance-prompt textarea, #instance-prompt input").first).to_have_value(
        "a <new1> star"
    )
    page.locator("#learn").click()
    steps = FAST["max-train-steps"]
    expect(page.locator("#learn-status")).to_contain_text(
        f"learnt in {steps} steps", timeout=900_000
    )
    expect(page.locator("#subjects")).to_contain_text("learnt")
    expect(page.locator("#learn-samples img")).to_be_visible()  # the last samples' sheet
    page.locator("#advanced").get_by_text("advanced").first.click()  # folded for the picture
    _shot(page, "learn", app)

    page.get_by_role("tab", name="Generate").click()
    page.locator("#subject input").click()
    page.get_by_role("option", name="star").click()
    _text(page, "prompt", "a <new1> star moving left")
    _text(page, "steps", SAMPLING_STEPS)
    page.keyboard.press("Tab")
    k = page.locator("#k input[type=number]")
    k.click()
    k.press("Control+A")
    k.press_sequentially("1" if BASE == "tiny" else "5")  # 3 steps on tiny; the paper's k
    k.press("Enter")
    page.locator("#side-by-side input").check()
    page.locator("#generate").click()
    for i in range(3):
        expect(page.locator(f"#video-{i} video")).to_be_visible(timeout=180_000)
    expect(page.locator("#weight-curve img")).to_be_visible()
    expect(page.locator("#downloads")).to_contain_text(".gif")
    _shot(page, "side-by-side", app)

    page.get_by_role("tab", name="Score").click()
    page.locator("#scored-video input").click()
    page.get_by_role("option", name=re.compile("star-0-dwvs.mp4")).click()
    page.locator("#score").click()
    expect(page.locator("#scores")).to_contain_text("flow_magnitude", timeout=60_000)
    expect(page.locator("#scores")).to_contain_text("a <new1> star moving left")


def test_a_bad_upload_shows_what_is_wrong(page, app, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "holiday.png"
    bad.write_text("this is not an image")
    _learn_form(page, "broken", [*STAR[:3], str(bad)], FAST)
    page.locator("#learn").click()
    expect(page.get_by_text(re.compile("'holiday.png' could not be read"))).to_be_visible()
    assert not (app[1] / "out" / "subjects" / "broken" / "photos").exists()


def test_a_second_job_waits_in_the_queue(page, app):
    from playwright.sync_api import expect

    long = {**FAST, "max-train-steps": "400", "checkpointing-steps": "100"}
    _learn_form(page, "slow", STAR, long)
    page.locator("#learn").click()
    expect(page.locator("#learn-status")).to_contain_text("training: step", timeout=120_000)

    page.get_by_role("tab", name="Score").click()
    page.locator("#score").click()  # a second job on the device
    expect(page.locator("#scores")).to_contain_text(re.compile(r"queue: ?1/"), timeout=30_000)

    page.get_by_role("tab", name="Learn").click()
    page.locator("#stop").click()
    expect(page.locator("#learn-status")).to_contain_text("stopped", timeout=120_000)


def test_a_bundled_subject_fills_the_form(page):
    from playwright.sync_api import expect

    page.locator("#bundled input").click()
    page.get_by_role("option", name="smiley").click()
    expect(page.locator("#subject-name textarea, #subject-name input").first).to_have_value(
        "smiley"
    )
    expect(page.locator("#instance-prompt textarea, #instance-prompt input").first).to_have_value(
        "a <new1> circle"
    )
    expect(page.locator("#photos").get_by_role("row")).to_have_count(5)  # its five photos
