"""The scale engine: many runs at once (:mod:`.many`, stacked and fused losses), full-scale CIFAR-LT runs
with run identity, checkpoints and resume, DDP (:mod:`.fullscale`), whole tables (:mod:`.table`) and the
speed ladder (:mod:`.ladder`). It imports the teaching core (data, models, losses, train, metrics) and is
never imported by it (``tests/test_project.py`` holds the rule); the layers on top (experiments, widgets,
the CLI) use both.
"""
