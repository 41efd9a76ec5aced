"""The knobs of an offline variant (compile mode, precision, CUDA graph, layout, backend flags) as typed
fields: what the store's ``variants`` table holds for each offline solution, so that nothing learns a
variant's knobs from its display name."""

from __future__ import annotations

from dataclasses import dataclass

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
# The knobs' names, in the order they are joined into a variant's display name.
KNOB_ORDER = ("channels_last", "cudnn_benchmark", "tf32", "bf16_autocast", "fp16_autocast",
              *(f"compile:{m}" for m in COMPILE_MODES), "cuda_graph")
AUTOCAST = {"bf16_autocast": "bf16", "fp16_autocast": "fp16"}  # knob -> the autocast dtype's short name
FLAGS = ("channels_last", "cudnn_benchmark", "tf32", "cuda_graph")  # on/off knobs, also column names


@dataclass(frozen=True)
class VariantKnobs:
    compile_mode: str | None = None  # torch.compile mode; None: not compiled
    autocast: str | None = None  # "bf16", "fp16"; None: no autocast
    tf32: bool = False
    cuda_graph: bool = False
    channels_last: bool = False  # memory layout of 4-D/5-D tensors
    cudnn_benchmark: bool = False

    @classmethod
    def of(cls, knobs: tuple[str, ...] | list[str]) -> "VariantKnobs":
        """From the knobs' names (``variants.KNOB_ORDER``); ValueError on a name that is not a knob."""
        fields: dict = {}
        for k in knobs:
            if k not in KNOB_ORDER:
                raise ValueError(f"not an offline variant knob: {k!r}")
            if k.startswith("compile:"):
                fields["compile_mode"] = k.removeprefix("compile:")
            elif k in AUTOCAST:
                fields["autocast"] = AUTOCAST[k]
            else:
                fields[k] = True
        return cls(**fields)

    @property
    def names(self) -> tuple[str, ...]:
        """The knobs' names, in KNOB_ORDER (empty: eager)."""
        on = {k for k in FLAGS if getattr(self, k)}
        on |= {k for k, short in AUTOCAST.items() if short == self.autocast}
        if self.compile_mode:
            on.add(f"compile:{self.compile_mode}")
        return tuple(k for k in KNOB_ORDER if k in on)

    @property
    def name(self) -> str:
        """The display name: the knobs joined by ``+``, or ``eager``."""
        return "+".join(self.names) or "eager"

    @property
    def precision(self) -> str:
        """The narrowest floating format the variant computes in: fp16, bf16, tf32 or fp32."""
        return self.autocast or ("tf32" if self.tf32 else "fp32")

    @property
    def only_compile(self) -> bool:
        """torch.compile of the Model and nothing else: the program of the compile baseline of its mode."""
        return self.compile_mode is not None and self.names == (f"compile:{self.compile_mode}",)
