"""How a mapping check :class:`~sfsync.mappingcheck.rules.Report` is shown.

:func:`problem_lines` is the one text form (``mapping check`` prints it on errors, a role refusing to start
prints and logs the very same lines); :func:`summary_table` is the rich table of a clean check.
"""

from __future__ import annotations

from rich.table import Table as RichTable

from sfsync.mappingcheck.rules import Report


def problem_lines(report: Report) -> list[str]:
    """A heading, then one line per error, then one per warning (``warning: ...``), then skipped sides."""
    lines: list[str] = []
    errors, warnings = report.errors, report.warnings
    if errors:
        lines.append(f"the mapping does not fit the org or the database ({len(errors)} error"
                     f"{'s' if len(errors) != 1 else ''}):")
        lines.extend(f"  {p}" for p in errors)
    lines.extend(f"  warning: {p}" for p in warnings)
    lines.extend(f"  not checked: {s}" for s in report.skipped)
    return lines


def summary_table(report: Report, title: str | None = None) -> RichTable:
    """One row per mapped object: table, field counts per direction, errors, warnings."""
    table = RichTable(title=title)
    for col in ("object", "table", "fields", "to salesforce", "to local", "errors", "warnings", "state"):
        table.add_column(col)
    for o in report.objects:
        state = "[red]errors[/]" if o.errors else "[yellow]warnings[/]" if o.warnings else "[green]ok[/]"
        table.add_row(o.name, o.table, str(o.fields), str(o.to_salesforce), str(o.to_local), str(o.errors),
                      str(o.warnings), state)
    return table
