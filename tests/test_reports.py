import json
import os
import subprocess
import sys

import nbformat
import pytest

from tvolib import reports
from tvolib.runs import notebook
from tvolib.runs.params import (check_no_secrets, load_params_file, parse_value, redact_command, redact_secrets,
                                secret_name, secret_value)

REPO = notebook.REPO


def make_nb(path, source_cells, params="x = 1\nseed = 0"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})] + \
        [nbformat.v4.new_code_cell(s) for s in source_cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tvolib.reports", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_data_notebook_report(tmp_path):
    r = run_cli("--only", "01", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for ext in ("ipynb", "html", "json"):
        assert (tmp_path / f"01_data.{ext}").exists()
    meta = json.loads((tmp_path / "01_data.json").read_text())
    assert meta["status"] == "ok" and meta["seed"] == 42
    assert meta["packages"]["torch"] and "commit" in meta["git"]
    assert set(meta["data_checksums"]) >= {"data_dir/train.txt", "data_dir/test.txt", "captions"}
    nb = nbformat.read(str(tmp_path / "01_data.ipynb"), as_version=4)
    text = json.dumps([c.get("outputs") for c in nb.cells if c.cell_type == "code"])
    assert "| PER |" in text and "image/png" in text


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_ok.ipynb", ["print(x)"])
    make_nb(nbs / "02_bad.ipynb", ["y = 2", "raise ValueError('boom ' + str(x))"])
    make_nb(nbs / "03_never.ipynb", ["print('never')"])
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "x=5")
    assert r.returncode == 1
    assert "02_bad.ipynb: cell 3 (`raise ValueError" in r.stderr and "ValueError: boom 5" in r.stderr
    assert (tmp_path / "out" / "02_bad.ipynb").exists()           # partial copy kept
    assert not (tmp_path / "out" / "03_never.ipynb").exists()     # the run stopped
    assert json.loads((tmp_path / "out" / "02_bad.json").read_text())["status"] == "failed"
    summary = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert "| [01_ok.ipynb](01_ok.html) | ok |" in summary and "| [02_bad.ipynb](02_bad.html) | failed |" in summary
    # fix the notebook, rerun it alone: its row turns ok, the other rows stay
    make_nb(nbs / "02_bad.ipynb", ["y = 2"])
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--only", "02", "-p", "x=6")
    assert r.returncode == 0, r.stderr
    summary = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert "| [01_ok.ipynb](01_ok.html) | ok |" in summary and "x=5" in summary
    assert "| [02_bad.ipynb](02_bad.html) | ok |" in summary and "x=6" in summary and "03_never" not in summary


def test_params_file_sections_and_cli_precedence(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print('x =', x)"])
    pf = tmp_path / "p.yaml"
    pf.write_text("x: 2\nunknown: 3\n01_a:\n  seed: 7\n")
    nb = nbs / "01_a.ipynb"
    assert reports.params_for(nb, load_params_file(pf), {}) == {"x": 2, "seed": 7}
    assert reports.params_for(nb, load_params_file(pf), {"x": 9})["x"] == 9


SECRET_NAMES = ("api_key", "hf_token", "client_secret", "password", "llm-api-key", "AWS_ACCESS_KEY", "openaiApiKey",
                "OPENAI_KEY", "private_key", "api-token", "auth", "Authorization", "db_passwd", "GITHUB_TOKEN",
                "HFTOKEN", "APIKEY", "slackBotToken", "credentials", "llm.api.key", "x-api-key", "Secret")
PLAIN_NAMES = ("max_tokens", "tokenizer", "data_dir", "secretary", "author", "keyword", "monkey", "tagger_lr",
               "knowledge_source", "llm_base_url", "image_weights", "text_encoder")
SECRET_VALUES = ("sk-proj-abc123DEF456", "sk-1234", "ghp_abcdefgh12345678", "github_pat_11ABC", "xoxb-1234-5678",
                 "AKIAIOSFODNN7EXAMPLE", "hf_AbCdEfGhIjKlMn", "AIzaSyA1234567890abcdefghijklmnop",
                 "glpat-abcdefgh", "Bearer sk-abcdef1234", "https://llm.example/v1?api_key=abc",
                 "q8Zr4Lw2Xn7Kp0Tb5Vy9Hs3Jd6Fm1Gc", "-----BEGIN RSA PRIVATE KEY-----", ["x", {"k": "ghp_abcdefgh12345678"}])
PLAIN_VALUES = ("../shared/data/captions/blip2_twitter2015.json", "sentence-transformers/all-MiniLM-L6-v2",
                "tvomner+pgim.wo-VAE", "0123456789abcdef0123456789abcdef01234567", "sk", "task-1", "skip",
                "https://api.openai.com/v1", "hf_hub", "runs/experiments/visual/twitter2017", 3, None, [1, 2],
                "efficientnet_lite0", "noun_chunks_en_core_web_sm_3_8_0_v2")


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_name_that_looks_like_a_credential_is_refused_in_any_spelling(name):
    assert secret_name(name)
    with pytest.raises(SystemExit, match="looks like a secret"):
        check_no_secrets({name: None}, "02_x.ipynb")                      # refused whatever its value
    with pytest.raises(SystemExit, match=f"p.yaml: data: parameter '{name}'"):
        check_no_secrets({"data": {name: "x"}}, "p.yaml")                # at any depth
    assert redact_secrets({"a": 1, name: "v", "d": {name: "t", "b": 2}}) == {"a": 1, "d": {"b": 2}}


@pytest.mark.parametrize("value", SECRET_VALUES, ids=str)
def test_a_value_that_looks_like_a_credential_is_refused_and_never_shown(value):
    assert secret_value(value)
    with pytest.raises(SystemExit, match="value of parameter 'llm_model' looks like a secret") as e:
        check_no_secrets({"data": {"llm_model": value}}, "p.yaml")
    assert str(value) not in str(e.value)
    assert redact_secrets({"llm_model": value, "x": 1}) == {"llm_model": "<redacted>", "x": 1}


def test_plain_names_and_values_pass():
    for name in PLAIN_NAMES:
        assert not secret_name(name), name
    for value in PLAIN_VALUES:
        assert not secret_value(value), value
    check_no_secrets({n: v for n, v in zip(PLAIN_NAMES, PLAIN_VALUES)}, "02_x.ipynb")
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):               # the message says where keys go
        check_no_secrets({"openai_api_key": "sk-abc"}, "02_x.ipynb")


def test_the_recorded_command_line_is_redacted():
    argv = ["-m", "tvolib.reports", "-p", "openaiApiKey=sk-abc123", "-p", "x=ghp_abcdefgh12345678", "-p", "seed=3",
            "--api-key", "plain-looking", "--out", "reports/x", "hf_AbCdEfGhIjKlMn"]
    cmd = redact_command(argv)
    assert cmd == ("-m tvolib.reports -p openaiApiKey=<redacted> -p x=<redacted> -p seed=3 --api-key <redacted> "
                   "--out reports/x <redacted>")


def test_secret_parameter_is_refused_by_the_cli_and_never_reaches_a_report(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"], params="x = 1\nseed = 0\nllm_api_key = None\nllm_model = 'm'")
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "llm_api_key=sk-123")
    assert r.returncode != 0 and "looks like a secret" in r.stderr
    # names no notebook declares, in other spellings: refused as secrets before anything else, silently for
    # their values
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "openaiApiKey=sk-abc1",
                "-p", "OPENAI_KEY=sk-abc2", "-p", "private_key=sk-abc3")
    assert r.returncode != 0 and "'openaiApiKey' looks like a secret" in r.stderr and "sk-abc" not in r.stderr
    # a declared name with a secret value
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "llm_model=ghp_abcdefgh12345678")
    assert r.returncode != 0 and "value of parameter 'llm_model' looks like a secret" in r.stderr
    assert "ghp_" not in r.stderr and not (tmp_path / "out").exists()
    pf = tmp_path / "p.yaml"
    pf.write_text("x: 2\n01_a:\n  openai_api_key: sk-123\n")
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--params", str(pf))
    assert r.returncode != 0 and "openai_api_key" in r.stderr and "sk-123" not in r.stderr
    assert not (tmp_path / "out").exists()
    # a notebook's own secret-looking default is left out of its report record
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--every", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "out" / "01_a.json").read_text())
    assert "llm_api_key" not in rec["parameters"] and "x" in rec["parameters"]


def test_params_file_keys_no_notebook_declares_are_errors(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"])
    make_nb(nbs / "02_b.ipynb", ["print(y)"], params="y = 1\nd = {}")
    ok = {"x": 2, "d": {"k": 1}, "01_a": {"seed": 3}, "02_b": {"y": 4}}
    reports.check_params_file(ok, reports.find_notebooks(nbs), "p.yaml")
    for bad, msg in (({"sead": 1}, r"p\.yaml: key 'sead' is not declared by any notebook"),
                     ({"01_aa": {"x": 1}}, r"p\.yaml: section '01_aa' is not declared by any notebook"),
                     ({"01_a": 3}, r"section '01_a' must be a mapping")):
        with pytest.raises(SystemExit, match=msg):
            reports.check_params_file(bad, reports.find_notebooks(nbs), "p.yaml")
    # through the command line: one line, nothing run, even with --only on another notebook
    pf = tmp_path / "p.yaml"
    pf.write_text("y: 2\nxx: 3\n")
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--params", str(pf), "--only", "02")
    assert r.returncode != 0 and "key 'xx' is not declared by any notebook" in r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_params_file_is_a_one_line_error(tmp_path):
    r = run_cli("--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    assert r.stderr.strip() == f"{tmp_path / 'nope.yaml'}: parameters file not found"


def test_live_line_names_notebook_elapsed_time_and_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_slow.ipynb", ["import time\ntime.sleep(4)", "print('done')"])
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--every", "1")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "01_slow.ipynb: running" in l]
    assert len(lines) >= 2, r.stderr
    assert any("cell 2/3 (`import time`)" in l for l in lines), lines
    assert lines[-1].split("running ")[1].startswith("0m0") and "s" in lines[-1]


def test_unknown_command_line_parameter_is_a_one_line_error(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"])
    make_nb(nbs / "02_b.ipynb", ["print(y)"], params="y = 1")
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "sead=3", "-p", "x=2")
    assert r.returncode != 0 and not (tmp_path / "out").exists()
    assert r.stderr.strip() == ("command line: -p sead: not declared by the parameters cell of any selected "
                                "notebook (01_a, 02_b)")
    # declared only by a notebook left out with --only: an error too
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--only", "01", "-p", "y=2")
    assert r.returncode != 0 and "-p y: not declared" in r.stderr and not (tmp_path / "out").exists()


def test_parse_value():
    assert parse_value("None") is None and parse_value("3") == 3
    assert parse_value("data/twitter2015") == "data/twitter2015"
    assert parse_value("true") is True


def test_section_key_the_notebook_does_not_declare_is_an_error(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"])
    pf = tmp_path / "p.yaml"
    pf.write_text("x: 2\n01_a:\n  sead: 7\n")          # a typo of seed
    with pytest.raises(SystemExit, match=r"p\.yaml: section '01_a' sets \['sead'\]"):
        reports.params_for(nbs / "01_a.ipynb", load_params_file(pf), {}, source=str(pf))


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_shipped_params_files_only_set_declared_parameters(name):
    """Every section of params/<dataset>.yaml names a notebook and only its declared parameters."""
    pf = REPO / "params" / f"{name}.yaml"
    file_params = load_params_file(pf)
    reports.check_params_file(file_params, reports.find_notebooks(REPO / "notebooks"), str(pf))
    nbs = {nb.stem: nb for nb in reports.find_notebooks(REPO / "notebooks")}
    sections = [k for k, v in file_params.items() if isinstance(v, dict) and k[:2].isdigit()]
    assert sections and set(sections) <= set(nbs)
    for stem in sections:
        p = reports.params_for(nbs[stem], file_params, {}, source=str(pf))
        assert set(file_params[stem]) <= set(p)
    assert reports.params_for(nbs["04_train_tvomner"], file_params, {})["knowledge_source"] == "tweet_files"


def test_figure_dir_is_given_relative_to_the_kernels_directory(tmp_path):
    # the executed copy and its record must not carry this machine's absolute paths
    assert notebook.default_figure_dir(tmp_path / "out", tmp_path) == "out/figures"
    assert notebook.default_figure_dir(tmp_path / "a" / ".." / "out", tmp_path) == "out/figures"
    elsewhere = tmp_path / "elsewhere"
    assert notebook.default_figure_dir(tmp_path / "out", elsewhere) == str((tmp_path / "out" / "figures").resolve())


def test_git_state_ignores_the_reports_folder_but_not_the_code(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "tvolib").mkdir()
    (repo / "reports" / "01.json").write_text("{}")
    (repo / "tvolib" / "m.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    monkeypatch.setattr(notebook, "REPO", repo)
    assert notebook.git_commit()["dirty"] is False
    (repo / "reports" / "01.json").write_text('{"a": 1}')     # a report written by this run
    assert notebook.git_commit()["dirty"] is False
    (repo / "tvolib" / "m.py").write_text("x = 2\n")          # code that is not the commit's
    state = notebook.git_commit()
    assert state["dirty"] is True and state["dirty_files"] == ["tvolib/m.py"]


def test_a_run_from_a_changed_working_tree_records_the_patch_and_the_machine(tmp_path, monkeypatch):
    """Provenance of a dirty tree carries the diff against its commit and the new files, so the
    code that ran can be rebuilt; every record names the processor and torch's CPU kernels."""
    import subprocess
    import tvolib.runs.notebook as N
    repo = tmp_path / "r"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
    git("init", "-q")
    (repo / "m.py").write_text("x = 1\n")
    git("add", "m.py")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "one")
    monkeypatch.setattr(N, "REPO", repo)
    clean = N.git_commit()
    assert clean["dirty"] is False and "diff" not in clean
    (repo / "m.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 3\n")
    dirty = N.git_commit()
    assert dirty["dirty"] is True and "-x = 1" in dirty["diff"] and "+x = 2" in dirty["diff"]
    assert dirty["untracked"] == ["new.py"]
    m = N.machine()
    assert m["cpu_capability"] and m["cores"] >= 1


def test_notebooks_run_two_at_a_time_after_those_they_read_from():
    """``--jobs``: a notebook starts only after the selected notebooks it reads from (04 after 02 and
    03, 06 after 04); after a failure nothing new starts."""
    import threading
    import time
    from pathlib import Path
    from tvolib.reports import run_in_order
    from tvolib.runs.notebook import NotebookFailed
    names = ["01_data", "02_textual_features", "03_visual_features", "04_train_tvomner", "05_ablations",
             "06_case_study", "07_run"]
    plans = [(Path(f"{n}.ipynb"), {}) for n in names]
    events, lock, live, most = [], threading.Lock(), [0], [0]

    def run(nb, p):
        with lock:
            events.append(("start", nb.stem[:2]))
            live[0] += 1
            most[0] = max(most[0], live[0])
        time.sleep(0.05)
        with lock:
            events.append(("end", nb.stem[:2]))
            live[0] -= 1
        return {}

    assert run_in_order(plans, run, jobs=2) is None
    pos = {e: i for i, e in enumerate(events)}
    assert pos[("start", "04")] > max(pos[("end", "02")], pos[("end", "03")])
    assert pos[("start", "06")] > pos[("end", "04")] and pos[("start", "07")] > pos[("end", "02")]
    assert most[0] == 2 and len(events) == 14
    # 04 alone (02 and 03 not selected) starts at once; a failure stops what has not started
    events.clear()

    def fail_02(nb, p):
        events.append(nb.stem[:2])
        if nb.stem.startswith("02"):
            raise NotebookFailed("02_textual_features.ipynb: cell 3 raised ValueError: x")
        time.sleep(0.05)
        return {}

    assert "cell 3" in run_in_order(plans[:4], fail_02, jobs=1)
    assert events == ["01", "02"]
    events.clear()
    assert run_in_order([plans[3]], fail_02, jobs=2) is None and events == ["04"]


def test_kernels_run_without_progress_bars_unless_the_user_wants_them(tmp_path, monkeypatch):
    """transformers' "Loading weights" bars would stay in every executed notebook; a user's own
    setting wins, and the runner's environment is as before afterwards."""
    make_nb(tmp_path / "env.ipynb", ["import os\nprint('bars:', os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'))"])
    for user, shown in ((None, "bars: 1"), ("0", "bars: 0")):
        if user is None:
            monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", user)
        notebook.run_notebook(tmp_path / "env.ipynb", tmp_path / "out", {}, tmp_path, html=False, every=None)
        nb = nbformat.read(str(tmp_path / "out" / "env.ipynb"), as_version=4)
        assert shown in json.dumps([c.get("outputs") for c in nb.cells])
        assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == user
