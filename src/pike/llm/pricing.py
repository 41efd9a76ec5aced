"""Token usage -> dollars, from a packaged CSV that a user file can override.

The table a run starts with is frozen into its store (`snapshot`) so its reported costs never change
when the packaged prices do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path

from .base import ConfigError

PACKAGED = "prices.csv"


@dataclass(frozen=True)
class PriceRow:
    pattern: str
    input_per_mtok: float  # USD per million input tokens
    output_per_mtok: float


class PriceTable:
    def __init__(self, rows: list[PriceRow], sources: list[str] | None = None) -> None:
        self.rows: list[PriceRow] = []
        self.sources = list(sources or [])
        self.unpriced: set[str] = set()  # models priced at 0 because no row matched (warning flag)
        self.extend(rows)

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The packaged table, with `override`'s rows replacing same-pattern rows and adding new ones."""
        text = resources.files(__package__).joinpath(PACKAGED).read_text(encoding="utf-8")
        table = cls(parse_csv(text, f"pike/llm/{PACKAGED}"), [f"packaged:{PACKAGED}"])
        if override is not None:
            path = Path(override)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read price override {path}: {exc}") from exc
            table.extend(parse_csv(text, str(path)))
            table.sources.append(str(path))
        return table

    def extend(self, rows: list[PriceRow]) -> None:
        index = {r.pattern.lower(): i for i, r in enumerate(self.rows)}
        for row in rows:
            i = index.get(row.pattern.lower())
            if i is None:
                index[row.pattern.lower()] = len(self.rows)
                self.rows.append(row)
            else:
                self.rows[i] = row

    def snapshot(self) -> dict:
        return {
            "sources": list(self.sources),
            "rows": [[r.pattern, r.input_per_mtok, r.output_per_mtok] for r in self.rows],
        }

    @classmethod
    def from_snapshot(cls, data: dict) -> PriceTable:
        rows = [PriceRow(str(p), float(i), float(o)) for p, i, o in data["rows"]]
        return cls(rows, data.get("sources", []))

    # --- lookup ---------------------------------------------------------------------------------
    def lookup(self, model: str) -> tuple[float, float] | None:
        """(input, output) USD per million tokens, or None when no row matches.

        An exact pattern wins; otherwise the longest matching glob, and on a tie the later row (so an
        override file beats the packaged table).
        """
        name = model.lower()
        best: PriceRow | None = None
        for row in self.rows:
            pattern = row.pattern.lower()
            if pattern == name:
                return row.input_per_mtok, row.output_per_mtok
            if fnmatchcase(name, pattern) and (best is None or len(pattern) >= len(best.pattern)):
                best = row
        return None if best is None else (best.input_per_mtok, best.output_per_mtok)

    def price(self, model: str, *, required: bool = True) -> tuple[float, float]:
        """Like `lookup`, but an unknown model is a ConfigError when `required` (a USD budget is set),
        else it costs 0 and is remembered in `unpriced` so reports can say costs are unknown."""
        found = self.lookup(model)
        if found is not None:
            return found
        if required:
            raise ConfigError(
                f"no price for model {model!r}: a USD budget needs one. Add a row "
                f"'{model},<input USD/Mtok>,<output USD/Mtok>' to a CSV and pass it: --set llm.prices_file=FILE."
            )
        self.unpriced.add(model)
        return 0.0, 0.0

    def cost(self, model: str, in_tokens: int, out_tokens: int, *, required: bool = True) -> float:
        pin, pout = self.price(model, required=required)
        return cost_of(pin, pout, in_tokens, out_tokens)


def cost_of(input_per_mtok: float, output_per_mtok: float, in_tokens: int, out_tokens: int) -> float:
    return (in_tokens * input_per_mtok + out_tokens * output_per_mtok) / 1e6


def parse_csv(text: str, where: str) -> list[PriceRow]:
    """Rows of `pattern,input,output`; '#' comment lines and a header row are skipped."""
    rows = []
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for lineno, fields in enumerate(csv.reader(io.StringIO("\n".join(lines))), 1):
        fields = [f.strip() for f in fields]
        if lineno == 1 and fields and fields[0].lower() in ("model", "pattern"):
            continue
        if len(fields) != 3:
            raise ConfigError(f"{where}: expected 'model,input_usd_per_mtok,output_usd_per_mtok', got {fields}")
        try:
            pin, pout = float(fields[1]), float(fields[2])
        except ValueError:
            raise ConfigError(f"{where}: prices must be numbers, got {fields}") from None
        if pin < 0 or pout < 0:
            raise ConfigError(f"{where}: negative price in {fields}")
        rows.append(PriceRow(fields[0], pin, pout))
    return rows
