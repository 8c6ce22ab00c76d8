"""The teacher's guide (docs/teachers.md) quotes its dry run (docs/path_timing.json, tools/time_path.py):
each meeting's minutes in the 4- and 6-meeting plans, the 90-minute path's sections and minutes; its
JupyterHub recipe uses real nbgrader commands."""
import json
import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import time_path  # noqa: E402  (tools/ is no package)

GUIDE = (ROOT / "docs" / "teachers.md").read_text()
TIMING = json.loads((ROOT / "docs" / "path_timing.json").read_text())


def _table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after ``heading``."""
    rest = GUIDE[GUIDE.index(heading):]
    rows = re.findall(r"^\|(.+)\|$", rest[:rest.index("\n\n", rest.index("\n|"))], flags=re.M)
    return [[c.strip() for c in r.split("|")] for r in rows[2:]]


def test_dry_run_covers_the_plans_and_the_path():
    assert TIMING["machine"] and TIMING["assumptions"]["words_per_minute"] == time_path.WORDS_PER_MINUTE
    for plan in ("six", "four"):
        assert [m["parts"] for m in TIMING["plans"][plan]] == [[[s, list(k)] for s, k in m]
                                                               for m in time_path.PLANS[plan]]
    assert {s: r["sections"] for s, r in TIMING["path"].items()} == time_path.PATH


def test_plans_quote_the_dry_run():
    for heading, plan in (("### Six meetings", "six"), ("### Four meetings", "four")):
        rows = [r for r in _table(heading) if r[0] != "project"]
        assert [int(r[2]) for r in rows] == [m["minutes"] for m in TIMING["plans"][plan]], heading
        for row, meeting in zip(rows, time_path.PLANS[plan]):
            for stem, sections in meeting:      # "02 sections 4-6" or "03 intro, sections 1-6"
                numbers = [k for k in sections if k != "setup"]
                wanted = f"{stem[:2]} {'intro, ' if 'setup' in sections else ''}section" + \
                         (f"s {numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else f" {numbers[0]}")
                assert wanted in row[1], (heading, row[1], wanted)
            assert row[3] and row[4], f"{heading}: meeting {row[0]} needs prerequisites and learning goals"


def test_ninety_minute_path_quotes_the_dry_run():
    rows = _table("## One 90-minute slot")
    assert [r[1][:2] for r in rows] == [s[:2] for s in time_path.PATH]
    end = 0
    for row, r in zip(rows, TIMING["path"].values()):
        listed = [int(k) for k in re.findall(r"\d+", row[1].split("(")[0])[1:]]
        if "-" in row[1].split("(")[0]:
            listed = list(range(listed[0], listed[-1] + 1))
        assert listed == r["sections"], (row[1], r["sections"])
        assert f"{r['reading_min_estimated']:.0f} min + {r['compute_s']:.0f} s" in row[3], (row[3], r)
        start, stop = map(int, row[0].split("-"))
        assert start == end and stop > start
        end = stop
    assert end == TIMING["path_minutes"] <= 85, "the path must leave time to start notebooks and for questions"
    for key in ("path_minutes", "previous_path_minutes"):
        assert f"**{TIMING[key]} minutes**" in GUIDE, key


def test_jupyterhub_recipe_uses_real_nbgrader_commands():
    from nbgrader.apps.nbgraderapp import NbGraderApp
    recipe = GUIDE[GUIDE.index("## Graded assignments with nbgrader"):]
    used = re.findall(r"^nbgrader (\w+)", recipe, flags=re.M)
    assert {"release_assignment", "collect", "autograde", "generate_feedback"} <= set(used)
    assert set(used) <= set(NbGraderApp.subcommands), set(used) - set(NbGraderApp.subcommands)
    assert "make assignments" in recipe
