"""The dashboard and the report in a real headless Chromium (Debian's), driven by Playwright, while a
search runs with the default workers: the running trial's curves appear on the study's page and its
diagnosis in its note before it ends, the learning-curves figure fits its card, no page is wider than a
1366 px window, the report names its metric and settings.

CI installs Chromium and Playwright (.ci/run) and sets SE_CCA_CI=1, so there this test cannot skip.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import optuna
import pytest

from search.trial_curves import curves_of

pytestmark = pytest.mark.e2e  # processes, servers or a browser

WIDTH = 1366
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def chromium() -> str:
    """Debian's Chromium, with Playwright to drive it; in CI their absence is a failure, not a skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("SE_CCA_CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium and `pip install -e '.[test]'`")
        pytest.skip("no chromium or playwright here (CI installs both)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def study_ready(url: str):
    try:
        study = optuna.load_study(study_name="t", storage=url)
    except Exception:  # noqa: BLE001 - no file, no tables or no study yet: it is being created
        return None
    return study if "identity" in study.user_attrs else None


# The learning-curves figure on the study's page: its two subplot titles apart, its legend inside the
# figure, the figure inside its card.
FIGURE_LAYOUT = """() => {
  const plot = Array.from(document.querySelectorAll(".js-plotly-plot"))
    .find(p => p.textContent.includes("learning curves"));
  if (!plot) return null;
  const box = plot.getBoundingClientRect();
  const card = (plot.closest(".MuiCard-root") || plot.parentElement).getBoundingClientRect();
  const legend = plot.querySelector(".legend").getBoundingClientRect();
  const titles = Array.from(plot.querySelectorAll(".annotation-text")).map(a => a.getBoundingClientRect());
  return {titles_overlap: titles.length < 2 || titles[0].right > titles[1].left,
          legend_inside: legend.bottom <= box.bottom + 1 && legend.right <= box.right + 1,
          in_card: box.right <= card.right + 1, box: [box.width, box.height], card: card.width};
}"""


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_live_curves_and_page_widths_in_a_real_browser(tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 't.db'}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    search = subprocess.Popen([sys.executable, "-m", "tests.slow_run", "--study-name", "t", "--storage", url,
                               "--dataset", "synthetic", "--train-subset", "200", "--val-size", "200",
                               "--no-compile", "--trials", "2", "--epochs-range", "4", "4",  # default workers
                               "--pruner", "none"],  # epochs of 6 s or more: the test watches a running trial
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**env, "SLOW_EPOCH_S": "6"}, cwd=tmp_path)
    dashboard = None
    try:
        wait_for(lambda: study_ready(url), 120, "the study to be created")
        dashboard = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--study-name", "t",
                                      "--storage", url, "--port", str(free_port())],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        banner = dashboard.stdout.readline()
        study_page = banner.split(": ")[-1].strip()
        assert "/dashboard/studies/" in study_page, banner + dashboard.stderr.read()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(study_page)
            # While trial 0 runs, its curves appear on the study's page (the dashboard reloads every 10 s).
            legend = "trial 0 (baseline config, running)"
            page.wait_for_function(f"document.body.textContent.includes({legend!r})", timeout=60_000)
            layout = page.evaluate(FIGURE_LAYOUT)
            assert layout and not layout["titles_overlap"] and layout["legend_inside"] and layout["in_card"], layout
            # The running trial's note carries its diagnosis once it has two epochs, before it ends.
            page.goto(f"{study_page}/trials?numbers=0")
            page.wait_for_function("document.body.textContent.includes('Fit diagnosis')", timeout=60_000)
            running = optuna.load_study(study_name="t", storage=url).trials[0]
            assert running.state == optuna.trial.TrialState.RUNNING
            assert search.wait(timeout=180) == 0, search.stdout.read()
            page.goto(study_page)
            page.reload()
            page.wait_for_function("document.body.textContent.includes('(best so far)')", timeout=30_000)
            assert page_width(page) <= WIDTH
            for trial in optuna.load_study(study_name="t", storage=url).trials:
                page.goto(f"{study_page}/trials?numbers={trial.number}")
                page.wait_for_function("document.body.textContent.includes('test accuracy')", timeout=30_000)
                assert page_width(page) <= WIDTH, f"trial {trial.number}'s page overflows"
                assert len(curves_of(trial)["eval_loss"]) == 4
            assert not errors, errors
            # The report: offline, names its metric and the study's settings, fits the window.
            report = tmp_path / "report.html"
            subprocess.run([sys.executable, "-m", "search", "report", "--study-name", "t", "--storage", url, "-o",
                            str(report)], check=True, env=env, capture_output=True)
            page.goto(report.as_uri())
            text = page.inner_text("body")
            assert "best calibrated held-out loss" in text and "data set" in text and "synthetic" in text
            assert page_width(page) <= WIDTH
            browser.close()
    finally:
        for proc in (search, dashboard):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
