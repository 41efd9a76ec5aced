"""PIKE: PyTorch Inference Kernel Evolution.

``pike.optimize(model, example_inputs)`` searches for a faster, verified version of a live module;
``pike.load(run_dir, model)`` applies a stored result to a model instance (see ``pike.api``).
"""

__version__ = "0.1.0"
__all__ = ["optimize", "load", "Result", "PikeError"]


def __getattr__(name: str):
    # Imported on first use: the command line and the evaluator's processes need none of it.
    if name in __all__:
        from pike import api

        return getattr(api, name)
    raise AttributeError(f"module 'pike' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
