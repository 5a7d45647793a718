"""The one table: figure, value, bound, ratio (value ÷ bound; ≤ 1 is met)."""

from __future__ import annotations

from pydantic import BaseModel


class Row(BaseModel):
    figure: str
    value: float | None  # None: not measured (pending / failed), see note
    unit: str = "s"
    bound: float | None = None  # None: informational, no bound
    note: str = ""
    lower_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.bound is None:
            return None
        if self.bound == 0:
            return 0.0 if self.value == 0 else float("inf")
        return self.value / self.bound

    @property
    def met(self) -> str:
        if self.value is None:
            return "pending" if self.bound is not None else "-"
        if self.bound is None:
            return "-"
        ok = self.value <= self.bound if self.lower_is_better else self.value >= self.bound
        return "yes" if ok else "NO"


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("calls", "count", "tasks"):
        return f"{v:.0f} {unit}"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "Mbit/s":
        return f"{v:.0f} Mbit/s"
    if unit == "%":
        return f"{v:.1f} %"
    return f"{v:.2f} {unit}"


def render(rows: list[Row]) -> str:
    head = ["figure", "value", "bound", "ratio", "met?", "note"]
    body = []
    for r in rows:
        ratio = r.ratio
        body.append(
            [
                r.figure,
                _num(r.value, r.unit),
                "-" if r.bound is None else _num(r.bound, r.unit),
                "-" if ratio is None else f"{ratio:.2f}",
                r.met,
                r.note,
            ]
        )
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    widths[-1] = 0  # the note column is not padded

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths[:-1]) + "|------|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])
