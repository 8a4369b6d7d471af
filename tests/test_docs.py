"""README's numbers are generated from the run folders."""

import json

import pandas as pd
import pytest

from xcal_core.docs import generated_sections, update_readme


def _fake_repo(tmp_path):
    ref = tmp_path / "papermill_runs" / "reference"
    for nb, minutes, verdicts in (("00_quickstart", 0.5, ["holds", "fails"]), ("01_x", 2.25, ["inconclusive"])):
        d = ref / f"{nb}__abc"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"notebook": nb, "profile": "workshop", "status": "completed",
                                                     "minutes": minutes, "seed": 0}))
        pd.DataFrame([{"claim_id": f"C{i}", "paper": "p", "statement": "s", "expected": "e", "observed": "o",
                       "verdict": v, "reason": "" if v == "holds" else "r"} for i, v in enumerate(verdicts)]
                     ).to_csv(d / "claims.csv", index=False)
    (ref / "make_run.json").write_text(json.dumps({"git_sha": "abcdef123", "minutes": 12.34, "cold_cache": True,
                                                   "n_runs": 2, "n_failed": 0, "machine": "2 CPU cores"}))
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    cell = {"cell_type": "markdown", "metadata": {}, "source": "# 00 · Title\n\nStory.\n\n1. read a reliability diagram;\n2. more\n"}
    (nbs / "00_quickstart.ipynb").write_text(json.dumps({"cells": [cell]}))
    return tmp_path


def test_generated_sections_and_check(tmp_path):
    root = _fake_repo(tmp_path)
    s = generated_sections(root)
    assert "| `00_quickstart` | read a reliability diagram | 0.5 | 1 | 1 | 0 |" in s["reference-table"]
    assert "| `01_x` |  | 2.2 | 0 | 0 | 1 |" in s["reference-table"] or "| `01_x` |  | 2.3 | 0 | 0 | 1 |" in s["reference-table"]
    assert "| **all** | | 2.8 | 1 | 1 | 1 |" in s["reference-table"]
    assert "commit `abcdef1`" in s["make-run"] and "12.3 minutes" in s["make-run"] and "empty model cache" in s["make-run"]
    assert "no seeds summary" in s["seeds-table"]
    assert "latest run from" not in s["make-run"]  # an old record: one batch, no install time
    readme = root / "README.md"
    readme.write_text("intro\n<!-- begin generated: make-run -->\ntyped by hand: 9.9 minutes\n<!-- end generated: make-run -->\nend\n")
    assert update_readme(readme, root, check=True) == ["make-run"]  # stale: a typed number
    assert "9.9" in readme.read_text()  # check does not write
    assert update_readme(readme, root) == ["make-run"]
    assert update_readme(readme, root, check=True) == []
    assert "12.3 minutes" in readme.read_text() and readme.read_text().endswith("end\n")
    readme.write_text("<!-- begin generated: nope -->\nx\n<!-- end generated: nope -->\n")
    with pytest.raises(ValueError, match="'nope' has no generator"):
        update_readme(readme, root)


def test_readme_numbers_match_the_committed_runs():
    """README's generated sections equal what the committed reference run and seeds summary give
    (regenerate with `python -m xcal_core.docs`; make run and make seeds do it)."""
    assert update_readme(check=True) == []


def test_seeds_table_says_when_the_seeds_summary_is_older_than_the_reference(tmp_path):
    root = _fake_repo(tmp_path)
    summary = root / "papermill_runs" / "seeds_summary"
    summary.mkdir(parents=True)
    rows = [{"notebook": "01_x", "claim_id": "C0", "verdict": "mixed", "seeds": 5}]
    pd.DataFrame(rows).to_csv(summary / "scoreboard.csv", index=False)
    s = generated_sections(root)["seeds-table"]
    assert "Out of date" not in s and "Over 5 seeds" in s and "| `01_x` | 1 | 0 | 0 | 0 | 1 |" in s
    rows[0]["claim_id"] = "C_old"  # the reference's 01_x tests C0, the summary an older claim
    pd.DataFrame(rows).to_csv(summary / "scoreboard.csv", index=False)
    s = generated_sections(root)["seeds-table"]
    assert "Out of date" in s and "1 of the reference run's 1 claims" in s


def test_claims_that_change_between_seeds_are_listed_each_with_its_counts(tmp_path):
    root = _fake_repo(tmp_path)
    assert "no seeds summary" in generated_sections(root)["seeds-changing"]
    summary = root / "papermill_runs" / "seeds_summary"
    summary.mkdir(parents=True)
    rows = [{"notebook": "01_x", "claim_id": "C0", "verdict": "mixed", "seeds": 5, "holds": 2, "fails": 2,
             "inconclusive": 1},
            {"notebook": "01_x", "claim_id": "C9", "verdict": "holds", "seeds": 5, "holds": 5, "fails": 0,
             "inconclusive": 0}]
    pd.DataFrame(rows).to_csv(summary / "scoreboard.csv", index=False)
    s = generated_sections(root)["seeds-changing"]
    assert "| `01` | C0 | 2 | 2 | 1 | inconclusive |" in s  # the reference run's 01_x C0 is inconclusive
    assert "C9" not in s  # a claim with one verdict in every seed is in the per-notebook table only
    pd.DataFrame(rows[1:]).to_csv(summary / "scoreboard.csv", index=False)
    assert generated_sections(root)["seeds-changing"] == "No claim changes its verdict between seeds.\n"


def test_make_run_line_gives_cold_and_warm_times_and_the_install(tmp_path):
    root = _fake_repo(tmp_path)
    cold = {"git_sha": "aaaaaaa1", "minutes": 15.8, "cold_cache": True, "shipped_checkpoints": True, "n_runs": 7,
            "n_failed": 0, "n_skipped": 0, "started": "t1", "machine": "2 CPU cores, no GPU", "install_minutes": 1.6}
    warm = {**cold, "git_sha": "bbbbbbb2", "minutes": 14.2, "cold_cache": False, "started": "t2"}
    del warm["install_minutes"]
    rec = root / "papermill_runs" / "reference" / "make_run.json"
    rec.write_text(json.dumps({**warm, "records": {"cold": cold, "warm": warm}}))
    line = generated_sections(root)["make-run"]
    assert "Produced by `make run` at commit `bbbbbbb` on 2 CPU cores, no GPU (7 runs, 0 failed)." in line
    assert ("From an empty model cache and the shipped workshop checkpoints, notebooks 00-06 took 15.8 minutes "
            "(commit `aaaaaaa`, 0 failed).") in line
    assert ("From a warm model cache (models already trained) and the shipped workshop checkpoints, notebooks "
            "00-06 took 14.2 minutes (commit `bbbbbbb`") in line
    assert "took 1.6 minutes." in line and line.index("15.8") < line.index("14.2")
    # a resumed batch (every run reused) refreshed the reference: it is named, and its 0.0 minutes are no time
    resumed = {**warm, "git_sha": "ccccccc3", "minutes": 0.01, "n_skipped": 7, "started": "t3"}
    rec.write_text(json.dumps({**resumed, "records": {"cold": cold, "warm": warm}}))
    line = generated_sections(root)["make-run"]
    assert "commit `ccccccc` on 2 CPU cores, no GPU (7 runs, 0 failed; 7 reused from an earlier" in line
    assert "0.0 minutes" not in line and "15.8 minutes" in line and "14.2 minutes" in line
