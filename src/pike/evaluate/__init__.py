"""The evaluator. "Evaluator step N" in its modules' docstrings is step N of docs/architecture.md,
"The evaluator's protocol"; the pipeline's order of stages is in :mod:`pike.evaluate.pipeline`."""
