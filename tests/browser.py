"""A real headless browser for the web pages we produce: Debian's chromium driven through chromedriver.

Nothing is mocked: pages are loaded over real HTTP (a local S3 server or a static file server), their
scripts run, and tests read pixels back from screenshots or canvases. Chromium is started with the
flags that keep it off the network it cannot reach here (no background networking, no component
updates), in a fresh profile per browser.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (390, 844)
DESKTOP = (1440, 900)


def available() -> str | None:
    """Why no browser can run here, or None."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (packaging/bootstrap.sh test installs it)"
    return None


@contextlib.contextmanager
def browser(profile: Path, size: tuple[int, int] = DESKTOP) -> Iterator[Any]:
    """A Selenium WebDriver on headless chromium with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    profile.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(*size)
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """Serve a folder over HTTP on 127.0.0.1; yields the base URL (with a trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
