"""The explainer page's size and open time per model: writes each page (freshly initialised weights,
the first digits image, at the model's natural input size) and opens it in headless Chromium.

    python scripts/bench_explain.py [--models lenet5 resnet20 ...] [--repeat 3] [--keep DIR]

Two open times, medians of --repeat fresh tabs: the page's own clock from navigation start to its
last drawn element, and the wall time the browser driver waits from asking for the file to that
moment. The issue's bound is under 20 MB and under 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cnnzoo import explain
from cnnzoo.models.registry import model_info

MODELS = ["lenet5", "resnet20", "googlenet", "vgg16", "alexnet", "resnet50"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", metavar="DIR", help="write the pages here (default: a temporary directory)")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium is None or sync_playwright is None:
        print("needs Chromium (apt-get install chromium) and playwright (pip install playwright)", file=sys.stderr)
        return 2
    folder = Path(args.keep or tempfile.mkdtemp(prefix="cnnzoo-explain-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{'model':<12}{'input':>8}{'page MB':>10}{'write s':>9}{'page s':>9}{'wall s':>9}  (median of {args.repeat})"
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        for name in args.models:
            out = folder / f"{name}.html"
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                if explain.main(["--model", name, "--output", str(out)]) != 0:
                    return 1
            written = time.perf_counter() - start
            times, walls = [], []
            for _ in range(args.repeat):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                start = time.perf_counter()
                page.goto(out.as_uri())
                page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                walls.append(time.perf_counter() - start)
                times.append(float(page.get_attribute("body", "data-ready-ms")) / 1000)
                page.close()
            size = out.stat().st_size / 2**20
            side = model_info(name).input_size
            print(
                f"{name:<12}{side:>5}x{side:<3}{size:>9.1f}{written:>9.1f}{statistics.median(times):>9.2f}"
                f"{statistics.median(walls):>9.2f}"
            )
        browser.close()
    if not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
