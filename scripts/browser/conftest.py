"""Fixtures for the console's browser tests: Debian's Chromium driven by Playwright, a seeded
granulo started by scripts/browser/run (its address and seed in the environment), and a
screenshot of every open page when a test fails."""

import datetime as dt
import json
import os
import pathlib
import re

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("GRANULO_BROWSER_CHROMIUM", "/usr/bin/chromium")
# Headless as root on a machine without a GPU or an outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEZONE = "Europe/London"
VIEWPORT = {"width": 1280, "height": 860}


def pytest_configure(config):
    if not os.environ.get("GRANULO_BROWSER_BASE"):
        raise pytest.UsageError("run the browser tests with scripts/browser/run (it starts and seeds granulo)")
    expect.set_options(timeout=10_000)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class Env:
    """Where the server is and what was seeded."""

    def __init__(self):
        self.base = os.environ["GRANULO_BROWSER_BASE"]
        self.out = pathlib.Path(os.environ.get("GRANULO_BROWSER_OUT", "target/browser"))
        self.bin = os.environ.get("GRANULO_BROWSER_BIN", "target/debug/granulo")
        self.backend = os.environ.get("GRANULO_BROWSER_BACKEND", "sqlite")
        with open(os.environ["GRANULO_BROWSER_SEED"]) as f:
            self.seed = json.load(f)
        self.screenshots = self.out / "screenshots"
        self.failures = self.out / "failures"
        for d in (self.screenshots, self.failures):
            d.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def env():
    return Env()


class Api:
    """The HTTP API as the seeded technologist, to change things while a page is open."""

    def __init__(self, env):
        self.base = env.base
        self.http = requests.Session()
        # A new connection per call: the server closes idle ones between tests, and a POST sent
        # on a connection as it closes would fail for nothing.
        self.http.headers["Connection"] = "close"
        tech = env.seed["tech"]
        r = self.http.post(f"{self.base}/api/v1/auth/login", json=tech, timeout=30)
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        self.din_seq = 500_000 + env.seed["din_seq"]

    def post(self, path, body):
        r = self.http.post(self.base + path, json=body, timeout=30)
        assert r.status_code in (200, 201), f"POST {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def supplier_unit(self, abo="O", rhd="negative", hours_ago=0.5):
        """A quarantined supplier unit collected `hours_ago` (it expires 24 h after)."""
        self.din_seq += 1
        collected = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(
            minutes=round(hours_ago * 60)
        )
        return self.post(
            "/api/v1/units",
            {
                "source": {"type": "external", "supplier": "Regional centre", "din": f"B123426{self.din_seq:06d}",
                           "abo": abo, "rhd": rhd, "collected_at": collected.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "cmv": "negative"},
                "product_code": "E9999V00", "volume_ml": 250, "granulocyte_count": 5e10,
            },
        )


@pytest.fixture(scope="session")
def api(env):
    return Api(env)


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    # Playwright gives every launch a fresh, temporary user-data directory.
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="session")
def tech_state(browser, env):
    """The browser state (the session cookie) of one sign-in of the seeded technologist through
    the form, shared by the tests that only read pages; the tests of signing in and out, and of
    CSRF, open sessions of their own."""
    ctx = browser.new_context(base_url=env.base, timezone_id=TIMEZONE, locale="en-GB")
    page = ctx.new_page()
    page.goto("/console/login")
    page.locator("#username").fill(env.seed["tech"]["username"])
    page.locator("#password").fill(env.seed["tech"]["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/board$"))
    state = ctx.storage_state()
    ctx.close()
    return state


@pytest.fixture
def new_context(request, browser, env):
    """Opens browser contexts (each a fresh profile: no cookies, no cache); closes them after the
    test, first saving a screenshot of each open page if the test failed."""
    opened = []

    def make(**kwargs):
        options = {"base_url": env.base, "timezone_id": TIMEZONE, "locale": "en-GB", "viewport": VIEWPORT}
        options.update(kwargs)
        ctx = browser.new_context(**options)
        ctx.set_default_timeout(15_000)
        opened.append(ctx)
        return ctx

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for i, ctx in enumerate(opened):
        if failed:
            for j, page in enumerate(ctx.pages):
                try:
                    page.screenshot(path=str(env.failures / f"{request.node.name}-{i}-{j}.png"), full_page=True)
                except Exception:  # noqa: BLE001 - a page that cannot be captured must not hide the failure
                    pass
        ctx.close()
