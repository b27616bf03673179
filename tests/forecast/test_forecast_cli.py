"""``rewarm forecast fit`` / ``predict``: the pinned JSON, the table, --csv/--plot/--sweep, and every refusal (exit 2,
no traceback, the runs and the difference named)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rewarm.cli import main
from tests.forecast.synth import RECIPES, write_curve, write_run
from tests.forecast.test_fit import curves, schedules


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    for i, name in enumerate(["cos-1x", "cos-half", "constant"]):
        write_run(root, name, RECIPES[name], noise=0.002, seed=i)
    return root


@pytest.fixture(scope="module")
def fitted(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FIT.json of the three study runs, fitted on their first half through the command (no intervals)."""
    import contextlib
    import io

    fit = tmp_path_factory.mktemp("fit") / "FIT.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["forecast", "fit", *map(str, sorted(study.iterdir())), "--out", str(fit), "--anneal", "momentum",
                     "--until-fraction", "0.5", "--no-intervals"])
    assert code == 0 and "up (upstream)" in out.getvalue() and "down (downstream)" in out.getvalue(), out.getvalue()
    return fit


def config_file(tmp_path: Path, extra: list[str]) -> Path:
    from rewarm import config as rc
    from tests.forecast.synth import config

    path = tmp_path / "recipe.yaml"
    path.write_text(rc.to_yaml(config(extra)))
    return path


def test_fit_and_predict_curves_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit = tmp_path / "FIT.json"
    code, out, _ = run(capsys, "forecast", "fit", "--curves", *curves(tmp_path, "momentum", ["constant", "cosine", "two-stage"]),
                       "--out", fit, "--anneal", "momentum")
    assert code == 0 and "loss (downstream): L0=" in out and "RMSE" in out and fit.is_file()
    lr_csv = tmp_path / "wsd.csv"
    lr_csv.write_text("step,lr\n" + "".join(f"{t},{float(lr)!r}\n" for t, lr in enumerate(schedules()["wsd"])))
    code, out, err = run(capsys, "forecast", "predict", fit, "--lr-csv", lr_csv, "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["runs"] and [r["name"] for r in doc["runs"]] == ["wsd"]
    sets = doc["runs"][0]["sets"]
    assert list(sets) == ["loss"] and set(sets["loss"]) == {"final_loss", "low", "high", "curve"}
    assert [p[0] for p in sets["loss"]["curve"]] == list(range(240))  # every step of the file
    assert sets["loss"]["low"] <= sets["loss"]["final_loss"] <= sets["loss"]["high"]


def test_fit_run_dirs_and_predict_a_config_and_a_sweep(fitted: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    fit = fitted
    recipe = config_file(tmp_path, [*RECIPES["wsd"], "run.name=wsd"])
    code, out, _ = run(capsys, "forecast", "predict", fit, recipe, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["runs"][0]["name"] == "wsd" and list(doc["runs"][0]["sets"]) == ["up", "down"]
    assert [p[0] for p in doc["runs"][0]["sets"]["down"]["curve"]] == list(range(0, 201, 10))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("grid:\n  schedule.max_lr: [1.0e-3, 3.0e-3]\n  schedule.name: [cosine, wsd]\n")
    code, out, _ = run(capsys, "forecast", "predict", fit, recipe, "--sweep", sweep, "--csv", tmp_path / "f.csv",
                       "--plot", tmp_path / "f.png")
    rows = out.splitlines()[1:]
    assert code == 0 and len(rows) == 4
    objectives = [float(r.split()[1]) for r in rows]
    assert objectives == sorted(objectives)  # sorted by the objective (downstream final loss)
    assert (tmp_path / "f.png").stat().st_size > 0 and len((tmp_path / "f.csv").read_text().splitlines()) == 1 + 4 * 2 * 21


def refused(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and "Traceback" not in err and err.startswith("error: "), (code, out, err)
    return err


def test_runs_that_cannot_share_a_fit_are_refused(study: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = sorted(study.iterdir())
    for name, extra, words in [
        ("tok", ["model.tokenizer=/nonexistent/other-tokenizer"], "different tokenizer"),
        ("vals", ["data.val.up.max_tokens=999"], "different validation sets"),
        ("base", ["model.name_or_path=/nonexistent/other-base", "model.tokenizer=/nonexistent/tiny-base"],
         "different base model"),
    ]:
        odd = write_run(tmp_path, name, extra)
        err = refused(capsys, "forecast", "fit", *runs[:2], odd, "--out", tmp_path / "F.json")
        assert words in err and name in err and runs[0].name in err, err
    err = refused(capsys, "forecast", "fit", runs[0], "--out", tmp_path / "F.json", "--until-step", "30")
    assert "8 measured losses for 14 free parameters" in err


def test_predict_refusals(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit = fitted
    other = config_file(tmp_path, ["model.name_or_path=/nonexistent/other-base"])
    assert "/nonexistent/other-base" in refused(capsys, "forecast", "predict", fit, other)
    new_set = config_file(tmp_path, ["data.val.extra.paths=[/nonexistent/x.jsonl]"])
    assert "extra, which the fit has not seen" in refused(capsys, "forecast", "predict", fit, new_set)
    doc = json.loads(fit.read_text())
    doc["version"] = "rewarm-forecast-fit/0"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert "version 'rewarm-forecast-fit/0'" in refused(capsys, "forecast", "predict", old, other)


def test_a_poor_fit_is_flagged_and_shown_by_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("constant", "cosine", "two-stage"):  # flat noise: nothing for the law to explain
        lrs = schedules()[name]
        paths.append(write_curve(tmp_path / f"{name}.csv", lrs, {t: 3.0 + 0.05 * rng.standard_normal()
                                                                  for t in range(8, 241, 8)}))
    fit = tmp_path / "FIT.json"
    code, _, err = run(capsys, "forecast", "fit", "--curves", *paths, "--out", fit, "--anneal", "momentum",
                       "--no-intervals")
    assert code == 0 and "warning: loss:" in err and "RMSE" in err
    assert json.loads(fit.read_text())["warnings"]
    lr_csv = write_curve(tmp_path / "c.csv", schedules()["wsd"], {})
    code, out, err = run(capsys, "forecast", "predict", fit, "--lr-csv", lr_csv, "--json")
    assert code == 0 and "is flagged" in err and json.loads(out)["runs"]
