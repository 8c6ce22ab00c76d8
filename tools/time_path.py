"""A dry run of the teacher's guide's lecture plans and 90-minute path: each notebook executed top to
bottom with its defaults (nbclient, as *Run All* does in class), every cell's compute seconds recorded and
summed per section; presenting time *estimated* from each section's content; the result written to
``docs/path_timing.json``, which the teacher's guide quotes (tests/test_teachers_guide.py checks the quotes).

    python tools/time_path.py            # about 5 minutes on the course's 2-core VM while it was busy
    python tools/time_path.py --replan   # after changing PATH, PLANS or an assumption: no notebook is run

Compute is measured. Reading and discussion are not: the estimate is the sections' Markdown words at
:data:`WORDS_PER_MINUTE` (presenting and discussing prose is slower than reading it alone), plus
:data:`PROMPT_MINUTES` per *Predict, then reveal* prompt and :data:`OUTPUT_MINUTES` per cell output
shown -- planning assumptions, labelled as such.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "path_timing.json"
# the 90-minute path: notebook -> sections presented live (the rest is reading for after class)
PATH = {
    "01_long_tail_problem": [3, 4],
    "02_logit_margins": [2, 3, 4],
    "03_embeddings": [2],
    "04_embedding_margins": [1, 3],
    "05_elm": [1, 2],
    "07_what_to_use": [2, 5],
}
# the path the guide had before this dry run (reported for comparison: it did not fit)
PREVIOUS_PATH = {"01_long_tail_problem": [1, 3, 4], "02_logit_margins": [2, 3, 4, 5], "03_embeddings": [2, 4],
                 "04_embedding_margins": [1, 2, 3], "05_elm": [1, 2], "07_what_to_use": [2, 4, 5]}
# the lecture plans of the teacher's guide: meeting -> [(notebook, sections)] ("setup": the notebook's
# introduction and setup cells, before section 1); their minutes come from the same dry run
PLANS = {
    "six": [[("01_long_tail_problem", ["setup", 1, 2, 3, 4, 5])], [("02_logit_margins", ["setup", 1, 2, 3, 4, 5, 6])],
            [("03_embeddings", ["setup", 1, 2, 3, 4, 5, 6])], [("04_embedding_margins", ["setup", 1, 2, 3, 4, 5])],
            [("05_elm", ["setup", 1, 2, 3, 4, 5])], [("07_what_to_use", ["setup", 1, 2, 3, 4, 5])]],
    "four": [[("01_long_tail_problem", ["setup", 1, 2, 3, 4, 5]), ("02_logit_margins", ["setup", 1, 2, 3])],
             [("02_logit_margins", [4, 5, 6]), ("03_embeddings", ["setup", 1, 2, 3, 4, 5, 6]),
              ("04_embedding_margins", ["setup", 1])],
             [("04_embedding_margins", [2, 3, 4, 5]), ("05_elm", ["setup", 1, 2, 3])],
             [("05_elm", [4, 5]), ("07_what_to_use", ["setup", 1, 2, 3, 4, 5])]],
}
WORDS_PER_MINUTE = 100      # assumption: prose and formulas presented in class (reading aloud is ~130)
PROMPT_MINUTES = 3.0        # assumption: one "Predict, then reveal" question, asked, voted, discussed, revealed
OUTPUT_MINUTES = 1.0        # assumption: one cell's output (a figure, a table) shown and read together
SECTION = re.compile(r"^## (\d+)\.", re.M)
HEADING = re.compile(r"^## ", re.M)


def sections_of(nb) -> list[tuple[str, object]]:
    """``[(section, piece)]`` in notebook order: each code cell, and each Markdown cell cut at its ``## ``
    headings; ``section`` is ``"setup"`` before section 1, the number as text inside numbered sections,
    ``"end"`` from the first unnumbered heading after them (summary, exercises, references)."""
    out, current = [], "setup"
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            out.append((current, cell))
            continue
        starts = [m.start() for m in HEADING.finditer(cell.source)]
        for start, stop in zip([0] + starts, starts + [len(cell.source)]):
            chunk = cell.source[start:stop]
            if HEADING.match(chunk):
                m = SECTION.match(chunk)
                current = m.group(1) if m else (current if current == "setup" else "end")
            if chunk.strip():
                out.append((current, chunk))
    return out


def compute_seconds(cell) -> float:
    """A cell's compute time from nbclient's timing record (execute_input -> execute_reply)."""
    t = cell.metadata.get("execution", {})
    if "iopub.execute_input" not in t or "shell.execute_reply" not in t:
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(t["shell.execute_reply"].replace("Z", "+00:00"))
            - parse(t["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()


def reading_minutes(per_section: dict, sections) -> float:
    """Estimated minutes to present ``sections``: their words at :data:`WORDS_PER_MINUTE`, plus
    :data:`PROMPT_MINUTES` per prompt and :data:`OUTPUT_MINUTES` per output shown."""
    live = [per_section[str(k)] for k in sections]
    return sum(s["words"] / WORDS_PER_MINUTE + s["prompts"] * PROMPT_MINUTES + s["outputs"] * OUTPUT_MINUTES
               for s in live)


def plan_meetings(plan: list, notebooks: dict) -> list[dict]:
    """Each meeting of a plan: its parts, the compute seconds of its sections (measured), its reading and
    discussion minutes (estimated), and the total in minutes."""
    out = []
    for parts in plan:
        compute = sum(notebooks[stem]["per_section"][str(k)]["compute_s"] for stem, secs in parts for k in secs)
        reading = sum(reading_minutes(notebooks[stem]["per_section"], secs) for stem, secs in parts)
        out.append({"parts": parts, "compute_s": round(compute, 1), "reading_min_estimated": round(reading, 1),
                    "minutes": round(reading + compute / 60)})
    return out


def time_notebook(stem: str) -> dict:
    """Run notebook ``stem`` top to bottom (its defaults); per section: compute seconds, words, prompts,
    outputs shown."""
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    nb = nbformat.read(path, 4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - start
    per_section: dict[str, dict] = {}
    for section, piece in sections_of(nb):
        s = per_section.setdefault(section, {"compute_s": 0.0, "words": 0, "prompts": 0, "outputs": 0})
        if isinstance(piece, str):
            s["words"] += len(re.findall(r"\w+", piece))
            s["prompts"] += piece.count("Predict, then reveal")
        else:
            s["compute_s"] += compute_seconds(piece)
            s["outputs"] += bool(piece.outputs)
    return {"run_all_s": round(wall, 1), "compute_s_whole": round(sum(s["compute_s"] for s in per_section.values()), 1),
            "per_section": {k: {**v, "compute_s": round(v["compute_s"], 2)} for k, v in per_section.items()}}


def path_summary(notebooks: dict, path: dict) -> dict:
    """A path (:data:`PATH`), notebook by notebook: its sections' compute (measured) and reading minutes
    (estimated)."""
    out = {}
    for stem, presented in path.items():
        live = [notebooks[stem]["per_section"][str(k)] for k in presented]
        out[stem] = {"sections": presented, "compute_s": round(sum(s["compute_s"] for s in live), 1),
                     "reading_min_estimated": round(reading_minutes(notebooks[stem]["per_section"], presented), 1),
                     **{key: sum(s[key] for s in live) for key in ("words", "prompts", "outputs")}}
    return out


def path_minutes(summary: dict) -> int:
    """A path's minutes: presenting (estimated) plus compute (measured), over its notebooks."""
    return round(sum(r["reading_min_estimated"] + r["compute_s"] / 60 for r in summary.values()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replan", action="store_true", help="keep the measured sections of docs/path_timing.json, "
                   "recompute the path and the plans (after changing PATH, PLANS or an assumption)")
    args = p.parse_args()
    if args.replan:
        result = json.loads(OUT.read_text())
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                             f"(load average {os.getloadavg()[0]:.1f} at the start: other work shared the cores)",
                  "date": datetime.date.today().isoformat(),
                  "how": "python tools/time_path.py (nbclient, each notebook with its defaults, top to bottom)",
                  "notebooks": {stem: time_notebook(stem) for stem in sorted({s for m in PLANS["six"] for s, _ in m}
                                                                            | set(PATH))}}
    result["assumptions"] = {"words_per_minute": WORDS_PER_MINUTE, "minutes_per_prompt": PROMPT_MINUTES,
                             "minutes_per_output": OUTPUT_MINUTES}
    result["path"] = path_summary(result["notebooks"], PATH)
    result["path_minutes"] = path_minutes(result["path"])
    result["previous_path_minutes"] = path_minutes(path_summary(result["notebooks"], PREVIOUS_PATH))
    result["plans"] = {name: plan_meetings(plan, result["notebooks"]) for name, plan in PLANS.items()}
    for stem, r in result["path"].items():
        print(f"path {stem:22s} sections {r['sections']}: compute {r['compute_s']:5.1f} s, reading estimated "
              f"{r['reading_min_estimated']:5.1f} min ({r['words']} words, {r['prompts']} prompts, "
              f"{r['outputs']} outputs)")
    print(f"path total: {result['path_minutes']} min (the previous path: {result['previous_path_minutes']} min)")
    for name, meetings in result["plans"].items():
        print(f"{name} meetings: " + ", ".join(f"{m['minutes']} min" for m in meetings))
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
