"""The evaluate command's results page in a real browser (headless Chromium): every image
loads, a missing one is reported, and the page renders to a screenshot."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from i2i_jax import evaluate, train

from tiny_configs import tiny_cyclegan_config

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> str:
    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install chromium (.ci/run installs it)")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # Tests may run as root.
            "--disable-gpu",
            "--virtual-time-budget=10000",  # Lets the page load and its script run.
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_every_image_loads_and_a_missing_one_is_reported(tmp_path):
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_cyclegan_config(), workdir)
    output = tmp_path / "results"
    evaluate.evaluate_workdir(workdir, output=str(output))
    page = f"file://{output / 'index.html'}"

    dom = chromium("--dump-dom", page)
    assert len(re.findall(r"<img ", dom)) == 6 * 6  # 6 images a direction, 3 panels each.
    assert 'data-broken-images="0"' in dom

    screenshot = tmp_path / "page.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1000,700", page)
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (700, 1000, 3)
    assert pixels.std() > 10  # Not a blank page: tables and images were drawn.

    # The check can fail: with one PNG gone, the page counts it and says so.
    missing = sorted(os.listdir(output / "images"))[0]
    os.remove(output / "images" / missing)
    dom = chromium("--dump-dom", page)
    assert 'data-broken-images="1"' in dom
    assert "1 images did not load, e.g. images/" + missing in dom
