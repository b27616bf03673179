"""`compare` on run directories built by hand: figures written, table values equal to the CSVs', labels
from the distinguishing config keys, forgetting / adaptation from the losses when not logged."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from rewarm.study import report
from rewarm.study.cli import compare_main
from rewarm.study.compare import compare_runs
from rewarm.study.plots import PALETTE, moving_average, plot_val_loss, robust_top, run_style
from rewarm.study.runs import label_runs, load_run, load_runs, read_metrics, summarize
from tests.study.helpers import metrics_rows, write_csv, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """report.md -> {section heading: rows of its first table (cells stripped, header included)}."""
    tables: dict[str, list[list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("|") and not line.startswith("|---"):
            tables.setdefault(section, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return tables


def expected(rows: list[dict], val_set: str) -> dict[str, float]:
    """The values a report must show, computed from the rows written to metrics.csv."""
    losses = [r[f"val/{val_set}/loss"] for r in rows if f"val/{val_set}/loss" in r]
    ppls = [r[f"val/{val_set}/ppl"] for r in rows if f"val/{val_set}/ppl" in r]
    return {"start": losses[0], "final": losses[-1], "best": min(losses), "final_ppl": ppls[-1], "best_ppl": min(ppls)}


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Three runs (max LR 1.5e-4, 3e-4, 6e-4) and their comparison in <tmp>/out (made once: figures take time)."""
    root = tmp_path_factory.mktemp("cmp")
    runs = [write_run(root / "runs" / "lr", f"max_lr-{lr}", max_lr=lr) for lr in (1.5e-4, 3e-4, 6e-4)]
    assert compare_runs(runs, root / "out") == root / "out" / "report.md"
    return runs, root / "out"


def test_compare_writes_figures_and_a_report_embedding_them(compared: tuple[list[Path], Path]) -> None:
    _, out = compared
    text = (out / "report.md").read_text()
    figures = sorted((out / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"val_loss_prose.png", "val_loss_code.png", "tradeoff_prose_code.png", "lr.png", "train_loss.png"} <= names
    for png in figures:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"](figures/{png.name})" in text  # embedded by a path relative to report.md


def test_table_values_equal_the_csv_values(compared: tuple[list[Path], Path]) -> None:
    three_runs, out = compared
    text = (out / "report.md").read_text()
    tables = md_tables(text)
    for val_set, role, change in (("prose", "upstream", "forgetting"), ("code", "downstream", "adaptation")):
        table = tables[f"Validation set `{val_set}` ({role})"]
        assert table[0] == [
            "#",
            "run",
            "start loss",
            "final loss",
            "best loss",
            "best at tokens",
            "final ppl",
            "best ppl",
            change,
        ]
        for row, run_dir, lr in zip(table[1:], three_runs, (1.5e-4, 3e-4, 6e-4), strict=True):
            e = expected(metrics_rows(20, lr, 5, True), val_set)
            delta = e["final"] - e["start"] if role == "upstream" else e["start"] - e["final"]
            assert row[1] == f"`{run_dir.name}`"
            assert row[2:5] == [f"{e['start']:.4f}", f"{e['final']:.4f}", f"{e['best']:.4f}"]
            assert row[6:] == [f"{e['final_ppl']:.2f}", f"{e['best_ppl']:.2f}", f"{delta:+.4f}"]
    runs_table = tables["Runs"]
    assert runs_table[0][3:] == ["steps", "tokens", "final LR", "forgetting prose", "adaptation code"]
    assert [r[3:5] for r in runs_table[1:]] == [["20", "5,120"]] * 3


def test_summary_csv_holds_the_csv_values_exactly(compared: tuple[list[Path], Path]) -> None:
    with (compared[1] / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for row in rows:
        lr = {"max_lr-0.00015": 1.5e-4, "max_lr-0.0003": 3e-4, "max_lr-0.0006": 6e-4}[row["run"]]
        e = expected(metrics_rows(20, lr, 5, True), row["set"])
        assert float(row["final_loss"]) == e["final"] and float(row["best_loss"]) == e["best"]
        assert float(row["start_loss"]) == e["start"] and float(row["final_ppl"]) == e["final_ppl"]
        assert float(row["tokens"]) == 20 * 256
        assert float(row["final_lr"]) == pytest.approx(lr * 0.1)


def test_labels_come_from_the_distinguishing_config_keys(tmp_path: Path, three_runs: list[Path]) -> None:
    # min_lr differs too, but one-to-one with max_lr: left out
    assert [r.label for r in load_runs(three_runs)] == ["max_lr=1.5e-4", "max_lr=3e-4", "max_lr=6e-4"]
    scratch = write_run(tmp_path / "more", "scratch", ["model.init=scratch"])
    replay = write_run(
        tmp_path / "more",
        "replay",
        ["data.train.prose.paths=[p/train.jsonl]", "data.train.prose.weight=0.05", "data.train.code.weight=0.95"],
    )
    labels = [r.label for r in load_runs([three_runs[1], scratch, replay])]
    # init and train have a clear mode (2 of 3 runs): a run shows only where it departs from it; the run
    # that departs nowhere shows all its distinguishing keys
    assert labels == ["init=pretrained, train=code", "init=scratch", "train=code:95%+prose:5%"]


def test_identical_configs_are_labelled_by_directory(tmp_path: Path) -> None:
    runs = [load_run(write_run(tmp_path, n)) for n in ("a", "b")]
    assert label_runs(runs) == ["a", "b"]
    seeds = [load_run(write_run(tmp_path / "s", f"seed{i}", [f"run.seed={i}"])) for i in (0, 1)]
    assert label_runs(seeds) == ["seed=0", "seed=1"]


def test_given_labels_win(three_runs: list[Path]) -> None:
    runs = load_runs(three_runs, labels={three_runs[0].name: "half LR"})
    assert [r.label for r in runs] == ["half LR", "max_lr=3e-4", "max_lr=6e-4"]
    text = report.render([summarize(r) for r in runs], {}, title="t")
    assert "— half LR" in text


def test_forgetting_and_adaptation_from_the_losses_when_not_logged(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "plain", max_lr=6e-4, with_columns=False)
    s = summarize(load_run(run_dir))
    rows = metrics_rows(20, 6e-4, 5, False)
    up, down = expected(rows, "prose"), expected(rows, "code")
    assert s.forgetting == {"prose": up["final"] - up["start"]}
    assert s.adaptation == {"code": down["start"] - down["final"]}


def test_logged_forgetting_columns_are_used(tmp_path: Path) -> None:
    rows = metrics_rows(20, 3e-4, 5, True)
    rows[-1]["forgetting/prose"] = 0.5  # deliberately not final - start
    run_dir = write_run(tmp_path, "logged", rows=rows)
    assert summarize(load_run(run_dir)).forgetting == {"prose": 0.5}


def test_metrics_reader_merges_repeated_steps_and_skips_repeated_headers(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "step,tokens,train/loss,val/a/loss\n"
        "0,0,,3.0\n1,10,2.9,\n2,20,2.8,\n"
        "step,tokens,train/loss,val/a/loss\n"  # appended after a resume from step 1
        "2,20,2.7,\n3,30,2.6,2.5\n"
    )
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[2] == {"step": 2.0, "tokens": 20.0, "train/loss": 2.7}
    assert "train/loss" not in rows[0] and rows[3]["val/a/loss"] == 2.5


def test_compare_command_accepts_a_sweep_directory(three_runs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert compare_main([str(three_runs[0].parent), "--out", str(out), "--title", "LR sweep"]) == 0
    printed = capsys.readouterr().out
    assert "max_lr=3e-4" in printed and str(out / "report.md") in printed
    assert (out / "report.md").read_text().startswith("# LR sweep")
    assert compare_main([str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_a_far_off_start_does_not_flatten_the_loss_axis(tmp_path: Path, three_runs: list[Path]) -> None:
    assert robust_top([3.0, 3.0, 3.1, 8.3], [3.2, 3.3, 3.4, 4.0]) == 4.0
    assert robust_top([3.0, 3.0], [3.5, 2.0]) == 3.5
    rows = metrics_rows(20, 3e-4, 5, True)
    for r in rows:
        if "val/prose/loss" in r:
            r["val/prose/loss"] += 5.0 * math.exp(-r["step"])  # a from-scratch-like start
    far = write_run(tmp_path / "x", "far", ["model.init=scratch"], rows=rows)
    path = plot_val_loss(load_runs([*three_runs, far]), "prose", "upstream", tmp_path / "prose.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_moving_average() -> None:
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 1) == [2.0, 4.0]


def test_run_styles_stay_distinct_past_the_palette() -> None:
    styles = [run_style(i) for i in range(3 * len(PALETTE))]
    assert len({(s["color"], s["linestyle"]) for s in styles}) == len(styles)


def test_csv_written_by_the_helpers_has_empty_cells(tmp_path: Path) -> None:
    """Guard of the fixture itself: validation columns are empty between evaluations, as the trainer writes."""
    write_csv(tmp_path / "m.csv", metrics_rows(20, 3e-4, 5, True))
    lines = (tmp_path / "m.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["step", "tokens"]
    assert lines[2].split(",")[header.index("val/prose/loss")] == ""
