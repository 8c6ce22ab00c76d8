"""Numbers in the prose of the notebooks whose claims were corrected (issue 33) are computed or checked:
each number a markdown cell states is registered below with how it is known -- a value the code computes
(a recipe constant, a shipped file, a measurement), the test that checks it, or why it is not a claim (a
value to try in an exercise). A new number in the prose fails this test until it is registered.

Runtimes ("**Runtime:** about N s") are left to tests/test_project.py (tools/quote_runtimes.py)."""
import inspect
import re

import nbformat
import pytest
from conftest import ROOT

import elm_lite as el
from elm_lite import capstone, metrics, owndata
from elm_lite.recipes import ELM_RECOMMENDED, EMBEDDING_RECIPE, EMBEDDING_TOY
from elm_lite.results import load_results


def prose_numbers(path) -> set[str]:
    """The numbers the markdown cells state, outside code, formulas, links, headings, names (CIFAR-10-LT,
    ResNet-32, 8-D, 2-core), list numbers, years and cross-references (notebook 04, section 2)."""
    found = set()
    for cell in nbformat.read(path, as_version=4).cells:
        text = cell.source
        if cell.cell_type != "markdown" or text.startswith("## References"):
            continue
        for pattern, flags in ((r"```.*?```", re.S), (r"`[^`]*`", 0), (r"\$\$.*?\$\$", re.S), (r"\$[^$]*\$", 0),
                               (r"\]\([^)]*\)", 0), (r"https?://\S+", 0), (r"^#+ .*$", re.M),
                               (r"^\*\*(Runtime|Previous|Back to):\*\*.*$", re.M), (r"^\s*\d+\. ", re.M),
                               (r"\[\d\d ·", 0), (r"\(\d\)", 0), (r"\b(?:19|20)\d\d\b", 0),
                               (r"\b(?:CIFAR-\d+|ResNet-\d+|\d+-(?:core|D|d)\b)", 0),
                               (r"\b(?:notebooks?|sections?|exercises?|panels?|tasks?|parts?|issue|appendix)\s+\d+"
                                r"(?:\s*(?:-|and|,|or)\s*\d+)*", re.I)):
            text = re.sub(pattern, " ", text, flags=flags)
        numbers = re.finditer(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:\s*%)?", text)
        found |= {m.group(0).rstrip(",").replace(" ", "") for m in numbers}
    return found


def _shot_default(name: str) -> int:
    return inspect.signature(metrics.shot_split).parameters[name].default


def _counts():
    return el.longtail_counts(EMBEDDING_TOY["n_max"], EMBEDDING_TOY["n_classes"], EMBEDDING_TOY["rho"])


def _gpu_run():
    return load_results("cifar_lt_gpu.json")["runs"][0]


def _mean_of(rows: list[dict], method: str) -> float:
    return sum(r["balanced_accuracy"] for r in rows if r["method"] == method) / sum(r["method"] == method for r in rows)


def _problem(moves: str) -> dict:
    return next(p for _, m, p, _ in capstone.REWEIGHTING_PROBLEMS if m == moves)


CLAIMS = "tests/test_notebook_claims.py"
# notebook -> {number as the prose writes it: a function whose value, formatted as the prose does, is that
# number; or a string: the test that checks it, or why it is no claim}
REGISTRY = {
    "03_embeddings.ipynb": {
        "0": "definition: the spread of a perfectly tight cluster is 0 (tests/test_metrics.py)",
        "0.1": f"{CLAIMS}::test_notebook_03_training_accuracy_reveal (the head's test spread)",
        "1.2": "tests/test_shipped_results.py::test_real_image_tail_is_not_diffuse_as_notebook_03_says",
        "5": lambda: _counts()[-1],
        "8": lambda: EMBEDDING_TOY["n_classes"],
        "10": "exercise: a value of rho to try",
        "16": lambda: EMBEDDING_TOY["dim"],
        "50": lambda: _gpu_run()["counts"][-1],
        "83": lambda: _gpu_run()["counts"][-2],
        "120": lambda: _gpu_run()["recipe"]["epochs"],
        "500": lambda: EMBEDDING_TOY["n_max"],
        "5,000": lambda: f"{_gpu_run()['counts'][0]:,}",
    },
    "04_embedding_margins.ipynb": {
        "0": "the ends of the delta_max range trained (the cell's grid)",
        "0.1": lambda: ELM_RECOMMENDED["temperature"],
        "0.25": f"{CLAIMS}::test_notebook_04_validation_choice_reveal (flat from 0.25 to 2)",
        "0.5": lambda: ELM_RECOMMENDED["delta_max"],
        "1": "the ends of the delta_max range trained, and the temperature to try in exercise 3",
        "2": f"{CLAIMS}::test_notebook_04_validation_choice_reveal (the grid's end)",
        "5": lambda: _counts()[-1],
        "6": "tests/test_shipped_results.py::test_margin_study_doc_quotes_only_intervals_the_study_computed (6 seeds)",
        "95%": "the margin study's interval level (docs/margin_study.md, checked with it)",
        "128": lambda: EMBEDDING_RECIPE["batch_size"],
        "500": lambda: EMBEDDING_TOY["n_max"],
        "1,028": lambda: f"{_counts().sum():,}",
    },
    "07_what_to_use.ipynb": {
        **{n: "notebook numbers (the method map's 'taught in' column)" for n in ("02", "03", "04", "05")},
        "1": "ddof = 1, the sample standard deviation (metrics.mean_sd, tests/test_metrics.py)",
        "1%": lambda: f"{100 * capstone.bayes_balanced_error(_problem('overlap down (separation 4)')):.0f}%",
        "29%": lambda: f"{100 * capstone.bayes_balanced_error(_problem('overlap up (separation 2)')):.0f}%",
        "1.5": "exercise: a separation to try",
        "2": lambda: _problem("overlap up (separation 2)")["separation"],
        "4": lambda: _problem("overlap down (separation 4)")["separation"],
        "3": lambda: EMBEDDING_TOY["separation"],
        "5": lambda: _counts()[-1],
        "8": lambda: EMBEDDING_TOY["n_classes"],
        "10": lambda: el.make_toy(**_problem("rarest 5 -> 10 (n_max 1000)"), seed=0).counts[-1],
        "16": lambda: EMBEDDING_TOY["dim"],
        "20": lambda: _shot_default("few"),
        "100": lambda: _shot_default("many"),
        "25": "exercise: a value of rho to try (and rho = 25 of section 4's variants)",
        "30": lambda: EMBEDDING_RECIPE["epochs"],
        "32": lambda: _problem("dimension 16 -> 32")["dim"],
        "50": lambda: _gpu_run()["counts"][-1],
        "83": lambda: _gpu_run()["counts"][-2],
        "120": lambda: _gpu_run()["recipe"]["epochs"],
        "200": lambda: load_results("cifar10_lt_gpu_table_200ep.json")["epochs"],
        "1000": lambda: _problem("rarest 5 -> 10 (n_max 1000)")["n_max"],
        "12,406": lambda: f"{sum(_gpu_run()['counts']):,}",
        "07": "this notebook's number (title, Colab link, the method map's 'taught in' column)",
        "0": "digit 0, digits-lt's largest class (owndata.digits_lt)",
        "9": "digit 9, digits-lt's rarest class (owndata.digits_lt)",
        "140": lambda: int(owndata.digits_lt().counts[0]),
        "64": lambda: owndata.digits_lt().x_train.shape[1],
        "1,600": lambda: f"{load_results('cifar10_lt_features.json')['features']['n_centroids'] * 4:,}",
        "41%": lambda: f"{100 * load_results('cifar10_lt_features.json')['methods']['ce']['test']['mean']:.0f}%",
        "35%": lambda: f"{100 * _mean_of(load_results('cifar10_lt_cpu.json')['rows'], 'CE'):.0f}%",
        "15": lambda: inspect.signature(metrics.expected_calibration_error).parameters["n_bins"].default,
        **{n: "tests/test_real_rungs.py::test_focal_weight_balancing_and_ece_on_the_real_rungs (the real rungs' "
              "ECE column; 0.1 also there: digits-lt's methods near it)" for n in ("0.03", "0.2", "0.3", "0.45")},
        "0.1": "tests/test_capstone.py::test_capstone_calibration_reading (the ECE below which probabilities are "
               "usable as they are; CE's ECE after temperature scaling)",
        "0.8": "what calibration means: an example in a definition, not a measurement",
        "80%": "what calibration means: an example in a definition, not a measurement",
        **{n: "an arXiv identifier of a reference (docs/references.md)"
           for n in ("1710.09412", "2203.14197", "2309.10019")},
        **{n: "a published figure quoted with its source in the method map, not re-run by the course"
           for n in ("47.18%", "51.98%", "68.67%", "71.25%", "77.97%", "79.75%", "79.81%")},
    },
    "A1_engineering.ipynb": {
        "128": lambda: load_results("cifar_lt_gpu.json")["runs"][0]["recipe"]["batch_size"],
    },
    "workshop.ipynb": {
        "0": "the ends of the tau slider (elm_lite.workshop.TAUS)",
        "1": "tau = 1, the strength whose reading tests/test_workshop.py checks",
        "5": "tests/test_workshop.py::test_one_set_of_seeds_and_one_la_number_per_page (5 seeds)",
        "20": "the talk's length (docs/teachers.md's plan)",
        "100": "the imbalance of panel 2 (elm_lite.workshop.RHOS)",
    },
}


def _same(value, number: str) -> bool:
    if isinstance(value, str):
        return value == number
    return float(number.replace(",", "")) == pytest.approx(float(value), abs=1e-9)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_number_in_the_prose_is_computed_or_checked(name):
    registered = REGISTRY[name]
    found = prose_numbers(ROOT / "notebooks" / name)
    assert found <= set(registered), f"{name}: register how these numbers are known: {sorted(found - set(registered))}"
    for number, how in registered.items():
        if callable(how):
            assert _same(how(), number), f"{name}: the prose says {number}, the code gives {how()}"
        elif "::" in how:                                   # the named test exists
            path, test = how.split(" ")[0].split("::")
            assert f"def {test}(" in (ROOT / path).read_text(), how
