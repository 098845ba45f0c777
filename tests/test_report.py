"""report.html: self-contained, rendered by a real headless Chromium, plots and numbers on the page.

Chromium is Debian's `chromium` package (`.ci/run` installs it); without it the browser tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_usage_error
from onecycle_cli.display import fmt_num
from onecycle_cli.suggest import RULES


def chromium() -> str:
    for name in ("chromium", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary (apt-get install chromium): the HTML report is not rendered")


def render(page: Path, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran, as headless Chromium sees it opened from disk."""
    r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
                        "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True)
    assert r.returncode == 0 and "<body" in r.stdout, r.stderr[-2000:]
    return r.stdout


def images_loaded(dom: str) -> int:
    m = re.search(r'<body[^>]*data-images-loaded="(\d+)"', dom)
    assert m, "the page's script never reported its images"
    return int(m.group(1))


def self_contained(page: str) -> None:
    """Nothing that a browser would fetch: no external src/href, stylesheet or font."""
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_a_train_runs_report_shows_its_plots_and_numbers_in_chromium(cli, tiny_runs, tmp_path):
    run = shutil.copytree(tiny_runs["onecycle"], tmp_path / tiny_runs["onecycle"].name)
    r = cli("report", run)
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == str(run / "report.html")
    page = (run / "report.html").read_text()
    self_contained(page)
    dom = render(run / "report.html", tmp_path)
    pngs = sorted(p.name for p in run.glob("*.png"))
    # the curves and schedule, and the interpretation's confusion matrix and top losses
    assert pngs == ["confusion.png", "curves.png", "schedule.png", "top_losses.png"]
    assert images_loaded(dom) == len(pngs)  # every PNG embedded, and every one decodes
    assert "Interpretation: the final model on the validation set" in dom
    for name, images, correct, accuracy in (r.split(",") for r in (run / "per_class.csv").read_text().splitlines()[1:]):
        assert f'<td>{name}</td><td class="num">{images}</td><td class="num">{correct}</td>' in dom
    # the epoch table, formatted as the terminal's, and the summary's numbers
    summary = tiny_runs["summaries"]["onecycle"]
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert len(rows) == 2
    for row in rows:
        for value in row[4:6]:  # train_loss, valid_loss
            assert f'<td class="num">{fmt_num(float(value))}</td>' in dom
        # the accuracy in percent, with the terminal's digits: 0.859375 there, 85.9375% here
        assert f'<td class="num">{100 * float(row[6]):.4f}%</td>' in dom
    final, best = summary["final"]["accuracy"], summary["best"]
    assert f"<th>final accuracy</th><td>{100 * final:.2f}%</td>" in dom  # as the README and onecycle runs quote it
    assert f"<th>best accuracy</th><td>{100 * best['accuracy']:.2f}% (epoch {best['epoch']})</td>" in dom
    assert fmt_num(final) not in dom  # the fraction the terminal's epoch table prints is not repeated
    assert "<th>status</th><td>completed</td>" in dom
    assert "<td>max_lr</td><td>0.05</td>" in dom  # the settings, from config.yaml
    assert "onecycle (fastai)" in dom


def test_a_find_runs_report_lists_the_suggestions(cli, tiny_runs, tmp_path):
    run = shutil.copytree(tiny_runs["find"], tmp_path / tiny_runs["find"].name)
    assert cli("report", run).code == 0
    dom = render(run / "report.html", tmp_path)
    assert images_loaded(dom) == 1  # lr_find.png
    suggestions = tiny_runs["summaries"]["find"]["suggestions"]
    assert set(suggestions) == set(RULES)
    for name, s in suggestions.items():
        assert f"{s['lr']:.3e}" in dom and name in dom
    assert "floor (used)" in dom


def test_a_comparisons_report_shows_the_overlay_and_both_runs(cli, tiny_runs, tmp_path):
    r = cli("compare", tiny_runs["onecycle"], tiny_runs["constant"], "--runs-dir", tmp_path / "out", "--json")
    assert r.code == 0, r.stderr
    out = Path(r.json()["run_dir"])
    page = (out / "report.html").read_text()
    self_contained(page)
    dom = render(out / "report.html", tmp_path)
    assert images_loaded(dom) == 1  # compare.png
    assert "<td>schedule.name</td>" in dom
    for key in ("onecycle", "constant"):
        assert tiny_runs[key].name in dom
        assert f"{100 * tiny_runs['summaries'][key]['final']['accuracy']:.2f}%" in dom
    # `onecycle report` rewrites it from the comparison's own files
    (out / "report.html").unlink()
    assert cli("report", out).code == 0 and "<td>schedule.name</td>" in (out / "report.html").read_text()


def test_report_writes_for_whatever_a_dead_run_left(cli, tiny_runs, tmp_path):
    # killed before its first record: a config.yaml and nothing else
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(tiny_runs["onecycle"] / "config.yaml", early)
    assert cli("report", early).code == 0
    page = (early / "report.html").read_text()
    assert "incomplete" in page and "<td>max_lr</td><td>0.05</td>" in page
    # a summary cut short, a half-written metrics line, an unparsable config: still a page
    broken = shutil.copytree(tiny_runs["onecycle"], tmp_path / "broken")
    (broken / "summary.json").write_text('{"status": "runn')
    (broken / "config.yaml").write_text("data: [unclosed\n")
    with open(broken / "metrics.csv", "a") as f:
        f.write("2,24,0.01")
    assert cli("report", broken).code == 0
    page = (broken / "report.html").read_text()
    assert "unreadable" in page and "config.yaml cannot be read" in page
    # schedule.png, curves.png and the interpretation's confusion.png, top_losses.png: views of files that survived
    assert page.count('<img src="data:image/png;base64,') == len(list(broken.glob("*.png"))) == 4
    # a summary that says running, held by nobody: the page says crashed
    crashed = shutil.copytree(tiny_runs["onecycle"], tmp_path / "crashed")
    summary = json.loads((crashed / "summary.json").read_text())
    (crashed / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    assert cli("report", crashed).code == 0
    assert '<span class="status crashed">crashed</span>' in (crashed / "report.html").read_text()


def test_report_refuses_what_is_not_a_run(cli, tmp_path):
    assert_usage_error(cli("report", "nowhere"), "nowhere", "no such run directory")
    (tmp_path / "empty").mkdir()
    assert_usage_error(cli("report", "empty"), "not a onecycle run directory")


def test_report_and_plot_take_a_run_id_under_the_runs_root_as_compare_does(cli, tiny_runs, tmp_path):
    root = tmp_path / "elsewhere"
    run = shutil.copytree(tiny_runs["onecycle"], root / tiny_runs["onecycle"].name)
    for how in ({"env": {"ONECYCLE_RUNS": str(root)}}, {"args": ("--runs-dir", root)}):
        for name in ("report.html", "curves.png", "schedule.png"):
            (run / name).unlink()
        r = cli("report", run.name, *how.get("args", ()), env=how.get("env"))
        assert r.code == 0, r.stderr
        assert r.stdout.strip() == str(run / "report.html") and (run / "report.html").is_file()
        r = cli("plot", run.name, *how.get("args", ()), env=how.get("env"))
        assert r.code == 0, r.stderr
        assert r.stdout.split() == [str(run / name) for name in ("schedule.png", "curves.png", "confusion.png")]
        assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the runs root a train run writes to by default, ./runs, as for compare
    shutil.copytree(run, tmp_path / "runs" / run.name)
    assert cli("report", run.name).stdout.strip() == str(Path("runs") / run.name / "report.html")
    # a path still means the path, and an id that is no run there is refused in one line naming the root
    assert cli("plot", run, "--runs-dir", tmp_path / "nowhere").code == 0
    for command in ("report", "plot"):
        assert_usage_error(cli(command, "20990101-000000-train-gone", "--runs-dir", root),
                           "20990101-000000-train-gone: no such run directory", f"a run id under {root}")
    (root / "notes").mkdir()
    assert_usage_error(cli("plot", "notes", "--runs-dir", root), "notes: not a onecycle run directory")
