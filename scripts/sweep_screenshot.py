"""Screenshot of a sweep's page (how docs/img/sweep.png was taken): headless Chromium, 1440 px wide, after the
cells, the results table and the parallel coordinates have drawn.

    SQD_URL=… SQD_TOKEN=… .venv/bin/python scripts/sweep_screenshot.py SWEEP_ID [OUT.png] [--metric final_fid]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "web"))
from live_stack import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from sqd.settings import get_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_id")
    parser.add_argument("out", nargs="?", default="docs/img/sweep.png")
    parser.add_argument("--height", type=int, default=0, help="clip to this many pixels from the top (0: all)")
    parser.add_argument("--metric", default="final_modes", help="what the parallel coordinates are coloured by")
    args = parser.parse_args()
    settings = get_settings()
    token = settings.token.get_secret_value() if settings.token else ""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{settings.resolved_url}/?token={token}#/sweep/{args.sweep_id}?metric={args.metric}")
        page.wait_for_selector("#page[data-ready=true]", timeout=60_000)
        section = page.locator(".sweep-section", has_text="Parallel coordinates")
        section.scroll_into_view_if_needed()
        page.wait_for_function("() => { const p = document.querySelector('.parcoords'); return p && p.data; }",
                               timeout=120_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        clip = {"x": 0, "y": 0, "width": 1440, "height": args.height} if args.height else None
        page.screenshot(path=args.out, full_page=True, clip=clip)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
