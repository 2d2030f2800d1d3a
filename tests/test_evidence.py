"""lab/evidence.py and `wsrl evidence`: claim verdicts by the 2-standard-error rule, the
generated blocks of docs/results.md, and that the committed document regenerates from the
committed results packages."""

from pathlib import Path

import pytest

from learner.cli import main
from lab.evidence import (
    claims_block,
    difference,
    fill_document,
    forgetting_curves,
    package_blocks,
    shares_pretraining,
    verdict,
)
from lab.plots import read_results, summarize

REPO = Path(__file__).resolve().parents[1]
TIDY = "experiment,task,method,variant,seed,warmup_steps,step,pretraining,pretraining_readiness"

# Two seeds per method, evaluations at steps 0, 10, 20; WSRL warms up for 10 steps.
SCORES = {
    ("wsrl", 10): {0: [100, 100, 100], 1: [100, 100, 80]},
    ("calql", 0): {0: [100, 0, 0], 1: [100, 20, 0]},
    ("wsrl_no_warmup", 0): {0: [100, 0, 60], 1: [100, 40, 90]},
    ("rlpd", 0): {0: [0, 40, 100], 1: [0, 60, 100]},
}


def write_package(directory: Path, readiness=lambda seed: "settled") -> Path:
    """`readiness(seed)`: the readiness verdict of that seed's pre-training."""
    directory.mkdir(parents=True)
    lines = [TIDY + ",normalized_score"]
    diag = [TIDY + ",offline_td_error,offline_q_mean,kl_policy_offline"]
    for (method, warmup), seeds in SCORES.items():
        for seed, values in seeds.items():
            for step, value in zip((0, 10, 20), values):
                pretraining = "" if method == "rlpd" else f"calql-seed{seed}"  # RLPD starts from scratch
                ready = readiness(seed) if pretraining else ""
                lines.append(f"x,pointmass-goal,{method},{method},{seed},{warmup},{step},{pretraining},{ready},{value}")
            if method in ("wsrl", "wsrl_no_warmup"):
                for step in (0, 10, 20):
                    td = 1.0 + seed + step / 10.0
                    diag.append(f"x,pointmass-goal,{method},{method},{seed},{warmup},{step},calql-seed{seed},{readiness(seed)},{td},-{td},"
                                f"{step / 100.0}")
    (directory / "results.csv").write_text("\n".join(lines) + "\n")
    (directory / "diagnostics.csv").write_text("\n".join(diag) + "\n")
    return directory


@pytest.mark.parametrize("diffs, kind, expected", [
    ([(5.0, 2.0), (1.0, 1.0)], "beats", "supported"),        # 5 > 2*2 on one measure, none behind
    ([(4.0, 2.0), (1.0, 1.0)], "beats", "not decided"),      # exactly 2 SE is not beyond
    ([(-5.0, 2.0), (0.0, 0.0)], "beats", "contradicted"),
    ([(5.0, 2.0), (-3.0, 1.0)], "beats", "not decided"),     # ahead on one, behind on the other
    ([(0.0, 0.0), (0.0, 0.0)], "beats", "not decided"),
    ([(1.0, 0.0), (0.0, 0.0)], "beats", "supported"),        # every seed the same: SE 0
    ([(-2.0, 3.0), (0.0, 4.0)], "matches", "supported"),     # -2 - 6 = -8 > -10; 0 - 8 > -10
    ([(-2.0, 5.0), (0.0, 1.0)], "matches", "not decided"),   # -2 - 10 = -12
    ([(-15.0, 2.0), (0.0, 1.0)], "matches", "contradicted"),  # -15 + 4 < -10
    ([(float("nan"), 1.0), (1.0, 0.1)], "beats", "not decided"),
])
def test_verdict_two_standard_error_rule(diffs, kind, expected):
    assert verdict(diffs, kind) == expected


def test_differences_paired_and_unpaired_by_hand(tmp_path):
    groups = {g.method: g for g in summarize(read_results(write_package(tmp_path / "p")))["pointmass-goal"]}
    wsrl, calql, rlpd = groups["wsrl"], groups["calql"], groups["rlpd"]
    assert wsrl.seed_final == [100.0, 80.0] and calql.seed_final == [0.0, 0.0]
    assert shares_pretraining(wsrl, calql) and not shares_pretraining(wsrl, rlpd)
    # Paired final: per-seed differences 100, 80 -> mean 90, SE = std([100, 80], ddof=1) / sqrt(2) = 10.
    assert difference(wsrl, calql, "seed_final", paired=True) == pytest.approx((90.0, 10.0))
    # Unpaired final vs RLPD (100, 100): -10 and hypot(10, 0).
    assert difference(wsrl, rlpd, "seed_final", paired=False) == pytest.approx((-10.0, 10.0))
    # Fine-tuning AUC of WSRL seed 1 from step 10: trapezoid of (100, 80) over 10 steps = 90.
    assert wsrl.seed_finetune_auc == pytest.approx([100.0, 90.0])
    # CalQL (no warmup) over the whole run: seed 0 (50 + 0)/2 = 25, seed 1 (60 + 10)/2 = 35.
    assert calql.seed_finetune_auc == pytest.approx([25.0, 35.0])
    block = claims_block(list(groups.values()))
    rows = {line.split(" | ")[1]: line for line in block.splitlines()[2:]}
    # Fine-tuning AUC, paired: 100 - 25 = 75 and 90 - 35 = 55 -> 65 ± 10.
    assert rows["wsrl - calql (paired)"].endswith("| 90.0 ± 10.0 | 65.0 ± 10.0 | **supported** |")
    # Warmup: final 100 - 60 = 40, 80 - 90 = -10 -> 15 ± 25 (within 2 SE); fine-tuning AUC
    # 100 - 40 = 60, 90 - 67.5 = 22.5 -> 41.25 ± 18.75 (beyond 2 SE) -> supported.
    assert rows["wsrl - wsrl_no_warmup (paired)"].endswith("| 15.0 ± 25.0 | 41.2 ± 18.8 | **supported** |")
    # RLPD (45 and 55 fine-tuning AUC): final -10 ± 10 -> -10 - 2 * 10 < -10, not shown
    # non-inferior; -10 + 20 > -10, not contradicted either.
    assert "| wsrl - rlpd (unpaired) | -10.0 ± 10.0 | 45.0 ± 7.1 | **not decided** |" in block


def test_no_verdict_from_a_pretraining_that_had_not_settled(tmp_path):
    unsettled = write_package(tmp_path / "u", readiness=lambda seed: "settled" if seed == 0 else "still moving")
    rows = {line.split(" | ")[1]: line for line in claims_block(summarize(read_results(unsettled))["pointmass-goal"]).splitlines()[2:]}
    # the same differences as above; the verdict is withheld and says why
    assert rows["wsrl - calql (paired)"].endswith("| 90.0 ± 10.0 | 65.0 ± 10.0 | **not decided: wsrl's pre-training still moving in 1 of 2 seeds** |")
    assert rows["wsrl - rlpd (unpaired)"].endswith("**not decided: wsrl's pre-training still moving in 1 of 2 seeds** |")
    # a package from before readiness was recorded (no column) decides nothing either
    old = tmp_path / "old"
    old.mkdir()
    for name in ("results.csv", "diagnostics.csv"):
        text = (write_package(tmp_path / f"src-{name}") / name).read_text().splitlines()
        (old / name).write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 8) for line in text) + "\n")
    block = claims_block(summarize(read_results(old))["pointmass-goal"])
    assert "**not decided: wsrl's pre-training readiness not recorded**" in block and "supported" not in block


def test_forgetting_curves_count_from_the_warmup_end(tmp_path):
    records = read_results(write_package(tmp_path / "p"))
    steps, mean, se = forgetting_curves(records, "wsrl", "offline_td_error")
    # WSRL's warmup ends at 10: rows at env steps 10, 20 become fine-tuning steps 0, 10.
    assert steps.tolist() == [0, 10]
    assert mean.tolist() == pytest.approx([2.5, 3.5])  # seeds 0 and 1: 1 + seed + step/10
    assert se.tolist() == pytest.approx([0.5, 0.5])
    steps, mean, _ = forgetting_curves(records, "wsrl_no_warmup", "kl_policy_offline")
    assert steps.tolist() == [0, 10, 20] and mean.tolist() == pytest.approx([0.0, 0.1, 0.2])


def test_document_blocks_rewrite_and_check(tmp_path, capsys):
    package = write_package(tmp_path / "x")
    blocks, figures = package_blocks(package)
    assert sorted(blocks) == ["x:pointmass-goal:claims", "x:pointmass-goal:forgetting", "x:pointmass-goal:scores"]
    assert list(figures) == ["forgetting-pointmass-goal.png"] and figures["forgetting-pointmass-goal.png"][:4] == b"\x89PNG"
    doc = tmp_path / "results.md"
    doc.write_text("# R\n\n<!-- generated: x:pointmass-goal:claims -->\nold\n<!-- end generated -->\n\nprose stays\n")
    assert main(["evidence", str(package), "--doc", str(doc), "--check"]) == 1
    assert "stale block: x:pointmass-goal:claims" in capsys.readouterr().out
    assert main(["evidence", str(package), "--doc", str(doc), "--figures", str(tmp_path / "fig")]) == 0
    text = doc.read_text()
    assert "**supported**" in text and text.endswith("prose stays\n") and "old" not in text
    assert (tmp_path / "fig" / "forgetting-pointmass-goal.png").is_file()
    assert main(["evidence", str(package), "--doc", str(doc), "--check"]) == 0
    # A number edited by hand is caught.
    doc.write_text(text.replace("90.0 ± 10.0", "95.0 ± 10.0"))
    assert main(["evidence", str(package), "--doc", str(doc), "--check"]) == 1
    # Adjacent empty blocks are filled one by one (an empty body must not swallow the next marker).
    doc.write_text("<!-- generated: x:pointmass-goal:scores -->\n<!-- end generated -->\n\n"
                   "<!-- generated: x:pointmass-goal:claims -->\n<!-- end generated -->\n")
    new, changed = fill_document(doc.read_text(), blocks)
    assert changed == ["x:pointmass-goal:scores", "x:pointmass-goal:claims"]
    assert new.count("<!-- end generated -->") == 2 and new.index("| method | warmup") < new.index("| claim |")
    with pytest.raises(ValueError, match="'x:pointmass-goal:typo': no such generated block"):
        fill_document("<!-- generated: x:pointmass-goal:typo -->\n\n<!-- end generated -->", blocks)


def test_committed_results_regenerate_from_the_committed_packages():
    packages = sorted(str(p) for p in (REPO / "docs" / "results").glob("evidence-*") if (p / "results.csv").is_file())
    assert packages, "docs/results/ has no committed results package"
    text = (REPO / "docs" / "results.md").read_text()
    blocks = {}
    for package in packages:
        blocks.update(package_blocks(package)[0])
    new, changed = fill_document(text, blocks)
    assert changed == [], f"docs/results.md is stale in {changed}: run `wsrl evidence {' '.join(packages)} --doc docs/results.md`"
    # Every claim block of every package is shown in the document.
    assert all(f"<!-- generated: {name} -->" in text for name in blocks if name.endswith(":claims"))
    assert new == text
