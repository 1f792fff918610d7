"""A real browser for the tests: Debian's chromium, driven by Selenium through Debian's
chromedriver, headless, offline (Selenium Manager is never asked to download a driver).

Each `Browser` is its own profile (cookies, cache) with its own download directory: two of
them are two people. A download is waited for as an event: the finished file appearing in
the directory (Chrome writes a hidden temporary file, then `NAME.crdownload`, and renames it
to NAME when done), with a deadline. Chrome may also reserve NAME early with an empty file
(seen for a second download of the same name, `NAME (1).zip`), so a file counts as
finished only once it has bytes and no partial file is left beside it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (.ci/run installs them)"
DOWNLOAD_DEADLINE_SECONDS = 30.0
PARTIAL_SUFFIX = ".crdownload"
_POLL_SECONDS = 0.05


def require_chromium() -> None:
    """Fail (never skip) when the browser is not installed: these tests are the proof."""
    for program in (CHROMIUM, CHROMEDRIVER):
        assert program.is_file(), f"{program} is missing: {INSTALL}"


@dataclass
class Browser:
    driver: WebDriver
    downloads: Path
    seen: set[str] = field(default_factory=set)

    def wait_for_download(self, deadline_seconds: float = DOWNLOAD_DEADLINE_SECONDS) -> Path:
        """The next file the browser finishes downloading (one it had not finished before)."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            files = list(self.downloads.iterdir())
            writing = any(not _finished(path.name) for path in files)
            finished = sorted(
                path
                for path in files
                if path.name not in self.seen and _finished(path.name) and _size(path) > 0
            )
            if finished and not writing:
                self.seen.add(finished[0].name)
                return finished[0]
            present = sorted(path.name for path in files)
            assert time.monotonic() < deadline, (
                f"no download finished in {deadline_seconds} s; {self.downloads} holds {present}"
            )
            time.sleep(_POLL_SECONDS)

    def emulate_phone(self, width: int = 390, height: int = 844) -> None:
        """A phone's viewport (a headless window cannot be narrower than 500 pixels)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def quit(self) -> None:
        self.driver.quit()


def _finished(name: str) -> bool:
    # Chrome writes into a hidden temporary file (.org.chromium.Chromium.XXXX), then
    # NAME.crdownload, and renames that to NAME once every byte is there (over the empty
    # file it may have reserved NAME with). No download of these tests is empty: a zip has
    # at least its end record.
    return not name.startswith(".") and not name.endswith(PARTIAL_SUFFIX)


def _size(path: Path) -> int:
    """0 for a file gone meanwhile (an empty reservation Chrome removed)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def open_browser(directory: Path, *, width: int = 1000, height: int = 900) -> Browser:
    """A fresh profile in `directory` (its downloads in `directory/downloads`)."""
    require_chromium()
    downloads = directory / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={directory / 'profile'}",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            # Safe Browsing would look the file up online (there is no network here).
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    return Browser(driver, downloads)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
