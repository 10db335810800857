"""Real-browser check of notebook 06's case-study widget, as a researcher meets it (run by .ci/run
through tests/browser/run.sh, which installs Debian's chromium and the playwright client).

1. JupyterLab: starts a server on 127.0.0.1 with a random token, opens notebooks/06_case_study.ipynb in
   headless Chromium, runs every cell (models missing under runs/ are trained by the notebook itself),
   checks that the widget opens on a case, selects another tweet, checks that the case view changed,
   tags a typed tweet with both models, and checks that no widget or cell error is shown. Screenshot:
   reports/06_case_study_widget.png. Autosave is off and the notebook file is checked unchanged.
2. The HTML copy: runs notebook 06 with the report runner (`python -m tvolib.reports --only 06`, into a
   temporary folder; it reuses the models of step 1) and opens its HTML copy with every host but
   127.0.0.1 unresolvable: the saved widget must render offline and show a case. Screenshot:
   reports/06_case_study_widget_html.png. (``--executed FILE`` checks the HTML copy of FILE instead.)
3. Voilà: serves notebooks/demo.ipynb as `make demo` does (127.0.0.1, a random token), opens the page,
   waits for the case view of notebook 06's two sample models (they come from step 1, or are trained by
   the page), selects another tweet, tags a typed tweet, opens a folder that is no checkpoint (one
   error line, the view stays) and checks that no widget or cell error is shown. Screenshot:
   reports/demo_voila.png.

Exit status 0 when every check passes; otherwise 1, naming the failed check. Bounded in time: each
wait has a limit (``--run-timeout`` for running the notebook, which may train two small models).

    .venv/bin/python tests/browser/check_widget.py [--chromium /usr/bin/chromium] [--skip-lab]
        [--skip-html] [--skip-voila]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/06_case_study.ipynb"
SHOT_LAB = REPO / "reports" / "06_case_study_widget.png"
SHOT_HTML = REPO / "reports" / "06_case_study_widget_html.png"
SHOT_FAILED = REPO / "reports" / "06_case_study_widget_failed.png"   # what the page showed when a check failed
DEMO = "notebooks/demo.ipynb"
SHOT_VOILA = REPO / "reports" / "demo_voila.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]   # no CDN can stand in
WIDGET_ERRORS = ("Error displaying widget", "Error rendering widget", "Failed to load model class",
                 "Loading widget...")
TYPED = "Kevin Durant scores 35 as Suns beat Celtics in Boston"


class CheckFailed(Exception):
    pass


PASSED: list[str] = []


def log(msg: str) -> None:
    print(f"[browser-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)
    PASSED.append(what)
    log(f"ok: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(tmp: Path, token: str, port: int) -> subprocess.Popen:
    """JupyterLab on 127.0.0.1 serving the repository, with its own settings (autosave off, no
    announcements) and runtime folders, so nothing of the user's is read or written."""
    settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    cmd = [str(REPO / ".venv" / "bin" / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={REPO}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           "--ServerApp.jpserver_extensions=jupyter_lsp=False"]   # no .virtual_documents/ in the tree
    if os.geteuid() == 0:   # CI runs as root
        cmd.append("--allow-root")
    out = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"JupyterLab exited with {proc.returncode} (its log follows)")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    log(f"JupyterLab up on 127.0.0.1:{port}")
                    return proc
        except OSError:
            time.sleep(0.5)
    raise CheckFailed("JupyterLab did not answer within 90 s")


def start_voila(tmp: Path, token: str, port: int) -> subprocess.Popen:
    """Voilà serving the demo notebook as `make demo` does, on 127.0.0.1 with a token, with its own
    config and runtime folders."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "voila-runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "voila-config"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    cmd = [str(REPO / ".venv" / "bin" / "voila"), DEMO, "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
           f"--token={token}"]
    out = open(tmp / "voila.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"Voilà exited with {proc.returncode} (its log follows)")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                log(f"Voilà up on 127.0.0.1:{port}")
                return proc
        time.sleep(0.5)
    raise CheckFailed("Voilà did not listen within 60 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def case_text(page) -> str:
    return page.locator(".tvomner-case-view").first.inner_text().strip()


def case_id(text: str) -> str:
    """The tweet id of a case view: the word before "gold:" (the view starts with the image, or
    with "missing" where a tweet's image is absent)."""
    m = re.search(r"(\S+)\s+gold:", text)
    return m.group(1) if m else ""


def no_errors_shown(page, where: str) -> None:
    body = page.locator("body").inner_text()
    shown = [e for e in WIDGET_ERRORS if e in body]
    check(not shown, f"{where}: no widget error shown {shown or ''}".rstrip())
    tracebacks = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                              ":has-text('Traceback')").count()
    check(tracebacks == 0, f"{where}: no cell raised")


def prompts(page) -> list[str]:
    return [p.strip() for p in page.locator(".jp-Cell.jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]


def run_all(page) -> None:
    """Run > Run All Cells; once more if no cell has started within 60 s (a click lost to a busy page)."""
    for attempt in (1, 2):
        page.locator(".lm-MenuBar-item:has-text('Run')").first.click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        t0 = time.time()
        while time.time() - t0 < 60:
            if any(re.search(r"\[(\*|\d+)\]", p) for p in prompts(page)):
                return
            page.wait_for_timeout(1000)
        log(f"no cell started after 'Run All Cells' (try {attempt})")
    raise CheckFailed("'Run All Cells' started no cell")


def wait_for_widget(page, run_timeout: float) -> None:
    """Wait for the case view, saying every 30 s which cell runs (training may take minutes)."""
    t0 = last = time.time()
    while not page.locator(".tvomner-case-view").count():
        if time.time() - t0 > run_timeout:
            raise CheckFailed(f"the widget did not show within {run_timeout:.0f} s of 'Run All Cells'")
        if page.locator(".jp-OutputArea-output:has-text('Traceback')").count():
            raise CheckFailed("a cell raised: " + page.locator(".jp-OutputArea-output:has-text('Traceback')")
                              .first.inner_text()[-600:])
        if time.time() - last > 30:
            ps = prompts(page)
            running = [i for i, p in enumerate(ps) if "*" in p]
            log(f"running code cell {running[0] + 1 if running else '-'} of {len(ps)} ({time.time() - t0:.0f} s)")
            last = time.time()
        page.wait_for_timeout(1000)
    log(f"widget shown after {time.time() - t0:.0f} s")


def lab_check(browser, tmp: Path, run_timeout: float) -> None:
    from playwright.sync_api import Error as PlaywrightError
    nb_path = REPO / NOTEBOOK
    stored = nb_path.read_bytes()
    token, port = secrets.token_hex(16), free_port()
    proc = start_lab(tmp, token, port)
    page = None
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # the project's kernel must start by itself (a kernel-picker dialog means it is not installed)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                               ".jp-Toolbar-kernelStatus", timeout=60_000)
        if page.locator(".jp-Dialog:has-text('Select Kernel')").count():
            raise CheckFailed("JupyterLab asks for a kernel: the project's kernel 'tvomner' is not installed (make install)")
        page.wait_for_function("() => document.querySelector('.jp-Toolbar-kernelName') && "
                               "document.querySelector('.jp-Toolbar-kernelName').textContent.includes('tvomner')",
                               timeout=60_000)
        # the kernel's status reads "Idle" once it is connected (a busy machine may take a while)
        page.get_by_text(re.compile(r"\(tvomner\) \| Idle")).first.wait_for(timeout=120_000)
        log("notebook open on the tvomner kernel; running all cells")
        run_all(page)
        wait_for_widget(page, run_timeout)
        page.locator(".tvomner-case-view").first.scroll_into_view_if_needed()
        page.wait_for_function("() => { const v = document.querySelector('.tvomner-case-view');"
                               " return v && v.innerText.includes('gold:'); }", timeout=30_000)
        first = case_text(page)
        select = page.locator(".tvomner-case-pick select").first
        options = select.locator("option")
        check(options.count() >= 2, f"the tweet picker lists {options.count()} tweets (at least 2)")
        check(select.evaluate("s => s.selectedIndex") == 0 and case_id(first) != ""
              and case_id(first) in options.nth(0).inner_text(),
              f"the widget opens on the first case ({case_id(first)})")
        label = page.locator(".tvomner-case-only").first
        check(label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the filter's label is not cut")
        select.select_option(index=1)
        page.wait_for_function("(old) => { const v = document.querySelector('.tvomner-case-view');"
                               " return v && v.innerText.trim() !== old && v.innerText.includes('gold:'); }",
                               arg=first, timeout=30_000)
        second = case_text(page)
        check(second != first and case_id(second) != "" and case_id(second) in options.nth(1).inner_text(),
              f"selecting another tweet changes the view ({case_id(first)} -> {case_id(second)})")
        # a typed tweet, tagged by both models
        page.locator(".tvomner-typed-text input").first.fill(TYPED)
        page.locator(".tvomner-typed-go").first.click()
        page.wait_for_function("() => { const v = document.querySelector('.tvomner-typed-view');"
                               " return v && /TVOMNER:/.test(v.innerText) && /text-only:/.test(v.innerText)"
                               " || (v && /Error/.test(v.innerText)); }", timeout=run_timeout * 1000)
        typed = page.locator(".tvomner-typed-view").first.inner_text()
        check("TVOMNER:" in typed and "text-only:" in typed, f"the typed tweet is tagged by both models: {typed[:160]!r}")
        check("side inputs:" in typed, f"the typed tweet says which side inputs it had: {typed[-200:]!r}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=run_timeout * 1000)
        check(page.locator(".tvomner-typed-view").first.inner_text() == typed,
              "the typed tweet is tagged once (the click that commits the text does not tag it twice)")
        no_errors_shown(page, "JupyterLab")
        page.locator(".tvomner-case-view").first.scroll_into_view_if_needed()
        page.locator(".tvomner-case-only").first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOT_LAB))
        log(f"screenshot {SHOT_LAB.relative_to(REPO)}")
    except (CheckFailed, PlaywrightError):
        if page is not None:
            page.screenshot(path=str(SHOT_FAILED))
            log(f"screenshot of the failure: {SHOT_FAILED.relative_to(REPO)}")
        raise
    finally:
        stop(proc)
        if nb_path.read_bytes() != stored:   # never leave outputs in the stored notebook
            nb_path.write_bytes(stored)
            raise CheckFailed(f"{NOTEBOOK} was saved by the JupyterLab session (its stored copy is restored)")


def html_check(browser, tmp: Path, executed: Path | None, run_timeout: float) -> None:
    html = tmp / "reports" / "06_case_study.html"
    if executed is None:
        log("running notebook 06 with the report runner")
        cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "tvolib.reports", "--only", "06",
               "--out", str(tmp / "reports"), "--every", "0"]
        try:
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=run_timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the report runner did not finish notebook 06 within {run_timeout:.0f} s")
        check(r.returncode == 0 and html.exists(), "the report runner executes notebook 06 and writes its HTML copy"
              + ("" if r.returncode == 0 else f": {r.stderr[-1500:]}"))
    else:
        sys.path.insert(0, str(REPO))
        from tvolib.runs.notebook import html_export
        if not executed.exists():
            raise CheckFailed(f"{executed} is missing")
        html_export(executed, html)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(html.as_uri(), timeout=60_000)
    page.wait_for_selector(".tvomner-case-view", timeout=60_000)
    page.locator(".tvomner-case-view").first.scroll_into_view_if_needed()
    first = case_text(page)
    check("gold:" in first, f"the HTML copy shows the saved widget offline, opened on a case ({case_id(first)})")
    no_errors_shown(page, "HTML copy")
    page.screenshot(path=str(SHOT_HTML))
    log(f"screenshot {SHOT_HTML.relative_to(REPO)}")


def voila_check(browser, tmp: Path, run_timeout: float) -> None:
    from playwright.sync_api import Error as PlaywrightError
    token, port = secrets.token_hex(16), free_port()
    t0 = time.time()
    proc = start_voila(tmp, token, port)
    page = None
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/?token={token}", wait_until="commit", timeout=60_000)
        # the page renders once the notebook has run (it trains the two sample models when runs/ lacks them)
        page.wait_for_function("() => { const v = document.querySelector('.tvomner-case-view');"
                               " return v && v.innerText.includes('gold:') ||"
                               " document.querySelector('.tvomner-demo-error'); }", timeout=run_timeout * 1000)
        status = page.locator(".tvomner-demo-status").first.inner_text()
        check(not page.locator(".tvomner-demo-error").count() and "TVOMNER" in status and "text-only" in status,
              f"the Voilà page opens notebook 06's two models: {status[:200]!r}")
        log(f"page shown {time.time() - t0:.0f} s after starting Voilà")
        first = case_text(page)
        select = page.locator(".tvomner-case-pick select").first
        check(select.locator("option").count() >= 2 and case_id(first) != "", f"the page opens on a case ({case_id(first)})")
        select.select_option(index=1)
        page.wait_for_function("(old) => { const v = document.querySelector('.tvomner-case-view');"
                               " return v && v.innerText.trim() !== old && v.innerText.includes('gold:'); }",
                               arg=first, timeout=30_000)
        second = case_text(page)
        check(case_id(second) not in ("", case_id(first)), f"picking another tweet changes the view "
                                                            f"({case_id(first)} -> {case_id(second)})")
        page.locator(".tvomner-typed-text input").first.fill(TYPED)
        page.locator(".tvomner-typed-go").first.click()
        page.wait_for_function("() => { const v = document.querySelector('.tvomner-typed-view');"
                               " return v && (/TVOMNER:/.test(v.innerText) && /text-only:/.test(v.innerText)"
                               " || /Error/.test(v.innerText)); }", timeout=120_000)
        typed = page.locator(".tvomner-typed-view").first.inner_text()
        check("TVOMNER:" in typed and "text-only:" in typed, f"the typed tweet is tagged by both models: {typed[:160]!r}")
        check("side inputs:" in typed, f"the typed tweet says which side inputs it had: {typed[-200:]!r}")
        voila_errors(page)
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOT_VOILA), full_page=True)
        log(f"screenshot {SHOT_VOILA.relative_to(REPO)}")
        # a folder that is no checkpoint: one error line, and the models shown stay
        page.locator(".tvomner-demo-folder input").first.fill("runs/no-such-run/best")
        page.locator(".tvomner-demo-load").first.click()
        page.wait_for_selector(".tvomner-demo-error", timeout=30_000)
        err = page.locator(".tvomner-demo-error").first.inner_text()
        check("no such checkpoint folder" in err and case_text(page) == second,
              f"a folder that is no checkpoint is one line in the page, the view stays: {err[:120]!r}")
        voila_errors(page)
        log(f"Voilà check done in {time.time() - t0:.0f} s")
    except (CheckFailed, PlaywrightError):
        if page is not None:
            page.screenshot(path=str(SHOT_FAILED), full_page=True)
            log(f"screenshot of the failure: {SHOT_FAILED.relative_to(REPO)}")
        raise
    finally:
        stop(proc)


def voila_errors(page) -> None:
    body = page.locator("body").inner_text()
    shown = [e for e in WIDGET_ERRORS + ("There was an error when executing cell", "Traceback") if e in body]
    check(not shown, f"Voilà: no widget or cell error shown {shown or ''}".rstrip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable (default: %(default)s)")
    ap.add_argument("--run-timeout", type=float, default=1200, help="seconds allowed for running the notebook "
                    "and for tagging a typed tweet (default: %(default)s)")
    ap.add_argument("--executed", type=Path, default=None, help="an executed notebook 06 whose HTML copy is "
                    "checked (default: notebook 06 run now by the report runner)")
    ap.add_argument("--skip-lab", action="store_true", help="no JupyterLab")
    ap.add_argument("--skip-html", action="store_true", help="no HTML copy")
    ap.add_argument("--skip-voila", action="store_true", help="no Voilà page")
    args = ap.parse_args(argv)
    from playwright.sync_api import Error as PlaywrightError, sync_playwright
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tvomner-browser-") as d, sync_playwright() as p:
        tmp = Path(d)
        try:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS + OFFLINE)
            try:
                if not args.skip_lab:
                    lab_check(browser, tmp, args.run_timeout)
                if not args.skip_html:
                    html_check(browser, tmp, args.executed, args.run_timeout)
                if not args.skip_voila:
                    voila_check(browser, tmp, args.run_timeout)
            finally:
                browser.close()
        except (CheckFailed, PlaywrightError) as e:
            log(f"FAILED: {e}")
            for name in ("jupyterlab.log", "voila.log"):
                if (tmp / name).exists():
                    print(f"--- {name}", (tmp / name).read_text()[-4000:], sep="\n", file=sys.stderr)
            print(f"browser-check: {len(PASSED)} passed, 1 failed")
            return 1
    log(f"all checks passed in {time.time() - t0:.0f} s")
    print(f"browser-check: {len(PASSED)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
