import json
import subprocess
import sys

import nbformat
import pytest

from tvolib import reports

REPO = reports.REPO


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
    assert reports.params_for(nb, reports.load_params_file(pf), {}) == {"x": 2, "seed": 7}
    assert reports.params_for(nb, reports.load_params_file(pf), {"x": 9})["x"] == 9


def test_secrets_are_refused():
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):
        reports.check_no_secrets({"openai_api_key": "sk-abc"}, "02_x.ipynb")
    for name in ("api_key", "hf_token", "client_secret", "password", "llm-api-key", "AWS_ACCESS_KEY"):
        with pytest.raises(SystemExit, match="looks like a secret"):
            reports.check_no_secrets({name: None}, "02_x.ipynb")          # refused whatever its value
    with pytest.raises(SystemExit, match="'hf_token'"):
        reports.check_no_secrets({"data": {"hf_token": "x"}}, "p.yaml")   # at any depth
    reports.check_no_secrets({"max_tokens": 5, "tokenizer": "x", "data_dir": "x", "secretary": 1}, "02_x.ipynb")
    assert reports.redact_secrets({"a": 1, "api_key": "sk", "d": {"token": "t", "b": 2}}) == {"a": 1, "d": {"b": 2}}


def test_secret_parameter_is_refused_by_the_cli_and_never_reaches_a_report(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"], params="x = 1\nseed = 0\nllm_api_key = None")
    r = run_cli("--notebooks", str(nbs), "--out", str(tmp_path / "out"), "-p", "llm_api_key=sk-123")
    assert r.returncode != 0 and "looks like a secret" in r.stderr
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
    lines = [l for l in r.stdout.splitlines() if "01_slow.ipynb: running" in l]
    assert len(lines) >= 2, r.stdout
    assert any("cell 2/3 (`import time`)" in l for l in lines), lines
    assert lines[-1].split("running ")[1].startswith("0m0") and "s" in lines[-1]


def test_parse_value():
    assert reports.parse_value("None") is None and reports.parse_value("3") == 3
    assert reports.parse_value("../shared/data/twitter2015") == "../shared/data/twitter2015"
    assert reports.parse_value("true") is True


def test_section_key_the_notebook_does_not_declare_is_an_error(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_nb(nbs / "01_a.ipynb", ["print(x)"])
    pf = tmp_path / "p.yaml"
    pf.write_text("x: 2\n01_a:\n  sead: 7\n")          # a typo of seed
    with pytest.raises(SystemExit, match=r"p\.yaml: section '01_a' sets \['sead'\]"):
        reports.params_for(nbs / "01_a.ipynb", reports.load_params_file(pf), {}, source=str(pf))


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_shipped_params_files_only_set_declared_parameters(name):
    """Every section of params/<dataset>.yaml names a notebook and only its declared parameters."""
    pf = REPO / "params" / f"{name}.yaml"
    file_params = reports.load_params_file(pf)
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
    assert reports.default_figure_dir(tmp_path / "out", tmp_path) == "out/figures"
    assert reports.default_figure_dir(tmp_path / "a" / ".." / "out", tmp_path) == "out/figures"
    elsewhere = tmp_path / "elsewhere"
    assert reports.default_figure_dir(tmp_path / "out", elsewhere) == str((tmp_path / "out" / "figures").resolve())


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
    monkeypatch.setattr(reports, "REPO", repo)
    assert reports.git_commit()["dirty"] is False
    (repo / "reports" / "01.json").write_text('{"a": 1}')     # a report written by this run
    assert reports.git_commit()["dirty"] is False
    (repo / "tvolib" / "m.py").write_text("x = 2\n")          # code that is not the commit's
    state = reports.git_commit()
    assert state["dirty"] is True and state["dirty_files"] == ["tvolib/m.py"]
