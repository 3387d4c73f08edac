"""Take the README's two screenshots of the Dagster UI: the asset graph, and the champion
comparison of the last evaluation.

Run it after the demo (or any run that evaluated a bundle), against that Dagster instance:

    .venv/bin/python scripts/screenshots.py --dagster-home dagster_home --out docs/images

It starts ``llmops-dagster dev`` on a free port over ``--dagster-home`` (the other settings come
from the environment, as for the demo), waits until the UI answers, drives Debian's Chromium
headless with Playwright and writes

- ``asset-graph.png``: the global asset lineage (``/asset-groups``);
- ``champion-comparison.png``: the ``champion_comparison`` check of ``rag_evaluation``
  (``/assets/rag_evaluation?view=checks&checkDetail=champion_comparison``, the UI's own route
  for a check), with its comparison table opened (the UI shows markdown metadata behind a
  "[Show Markdown]" link).

Then it stops the UI (SIGINT to its process group, as ``llmops-dagster dev`` expects).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1600, "height": 1000}
GRAPH_PATH = "/asset-groups"
GRAPH_NODES = '[class*="assetNodeBox"], [class*="AssetNodeBox"], [class*="collapsedGroupNodeBox"]'
CHECK_PATH = "/assets/rag_evaluation?view=checks&checkDetail=champion_comparison"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ui(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until ``url/server_info`` answers 200; fails with the log's tail if the UI exits first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"llmops-dagster dev exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"the UI did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def take(url: str, out: Path, timeout_s: float) -> list[Path]:
    from playwright.sync_api import sync_playwright

    timeout_ms = timeout_s * 1000
    graph_png, check_png = out / "asset-graph.png", out / "champion-comparison.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)

            page.goto(f"{url}{GRAPH_PATH}")
            # Nodes are drawn once the code location has loaded and the layout is computed: an
            # asset's box (full or zoomed-out) or a collapsed group's (Dagster 1.13 CSS modules).
            page.locator(GRAPH_NODES).first.wait_for(timeout=timeout_ms)
            page.wait_for_timeout(1500)  # the zoom-to-fit animation
            # Several groups open collapsed; the graph's settings menu (the cog) expands them all,
            # so the picture shows every asset rather than six group boxes.
            # The cog is one of the graph's small buttons at the bottom right; which one is not
            # named in the DOM, so try them until the menu item shows.
            expand = page.locator("text=Expand all groups >> visible=true")
            corner = [
                b for b in page.locator("button").all()
                if (box := b.bounding_box()) and box["x"] > VIEWPORT["width"] - 100
                and box["y"] > VIEWPORT["height"] / 2
            ]  # fmt: skip
            for button in corner:
                button.click()
                page.wait_for_timeout(600)
                if expand.count():
                    break
                page.keyboard.press("Escape")
                page.wait_for_timeout(600)
            expand.first.click()
            page.keyboard.press("Escape")  # close the menu before the picture
            page.wait_for_timeout(2500)  # re-layout and zoom-to-fit
            page.screenshot(path=graph_png)

            page.goto(f"{url}{CHECK_PATH}")
            page.get_by_text("Latest execution").first.wait_for(timeout=timeout_ms)
            row = page.locator("tr").filter(
                has=page.locator("td").get_by_text("comparison", exact=True)
            )
            row.get_by_text("[Show Markdown]").first.click(timeout=timeout_ms)
            page.get_by_role("dialog").first.wait_for(timeout=timeout_ms)
            page.wait_for_timeout(500)  # the dialog's opening transition
            page.screenshot(path=check_png)
        finally:
            browser.close()
    return [graph_png, check_png]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dagster-home",
        type=Path,
        required=True,
        help="DAGSTER_HOME holding the runs to show (e.g. dagster_home)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    args = parser.parse_args()  # fmt: skip

    sys.path.insert(0, str(ROOT))  # this checkout's package, whatever the venv has installed
    from llmops_dagster.config import child_env
    from llmops_dagster.services.dagster_dev import stop_dagster_daemon

    home = args.dagster_home.resolve()
    if not (home / "dagster.yaml").is_file():
        sys.exit(f"--dagster-home {home}: no dagster.yaml there (run the demo first)")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = Path(sys.executable).with_name("llmops-dagster")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "dev.log"
        with log.open("w") as output:
            proc = subprocess.Popen(
                [str(cli) if cli.exists() else "llmops-dagster", "dev", "--port", str(port)],
                cwd=ROOT,
                env=child_env(DAGSTER_HOME=str(home)),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one below
            )
        try:
            wait_for_ui(url, proc, log, args.timeout)
            written = take(url, args.out, args.timeout)
        finally:
            stop_dagster_daemon(proc, grace_s=60)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
