"""A SOQL subset: a lark LALR grammar, compiled to Python closures over stored records.

Supported: ``SELECT`` fields (incl. parent paths such as ``Account.Name`` / ``Owner.Name``),
``COUNT()`` and ``COUNT(field) [alias]``; ``FROM`` one object; ``WHERE`` with ``= != <> < > <= >= LIKE
IN NOT IN``, ``AND``/``OR``/``NOT`` and parentheses, ``null``, ``true``/``false``, strings, numbers,
date and datetime literals and the date literals ``TODAY``, ``YESTERDAY``, ``TOMORROW``,
``LAST_N_DAYS:n``, ``NEXT_N_DAYS:n``; ``ORDER BY`` (``ASC``/``DESC``, ``NULLS FIRST``/``LAST``); ``LIMIT``;
``OFFSET``. Text comparisons are case-insensitive, as in Salesforce.

Errors are SfError ``MALFORMED_QUERY`` (syntax), ``INVALID_TYPE`` (unknown object), ``INVALID_FIELD``
(unknown column or relationship), ``INVALID_QUERY_FILTER_OPERATOR`` (literal of the wrong type), with
Salesforce's message layout: the query, a caret line, ``ERROR at Row:1:Column:N`` and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from sfsync.emulator.errors import SfError
from sfsync.emulator.ids import normalize
from sfsync.emulator.schema import FieldDef, ObjectDef, Schema, format_datetime, parse_datetime
from sfsync.emulator.store import Store

GRAMMAR = r"""
?start: query
query: _SELECT select_list _FROM NAME where? order? limit? offset?
select_list: select_item ("," select_item)*
?select_item: count_expr | path
count_expr: _COUNT "(" path? ")" alias?
alias: NAME
path: NAME ("." NAME)*
where: _WHERE expr
?expr: and_expr (_OR and_expr)*  -> or_
?and_expr: not_expr (_AND not_expr)* -> and_
?not_expr: _NOT not_expr -> not_
         | atom
?atom: "(" expr ")"
     | path OP value -> compare
     | path _LIKE value -> like
     | path _IN "(" value ("," value)* ")" -> in_
     | path _NOT _IN "(" value ("," value)* ")" -> not_in
value: STRING -> string
     | NUMBER -> number
     | _NULL -> null
     | _TRUE -> true
     | _FALSE -> false
     | DATETIME -> datetime
     | DATE -> date
     | DATE_LITERAL -> date_literal
     | N_DAYS -> n_days
order: _ORDER _BY order_item ("," order_item)*
order_item: path DIRECTION? nulls?
nulls: _NULLS NULLS_POS
limit: _LIMIT INT
offset: _OFFSET INT

_SELECT.2: /select\b/i
_FROM.2: /from\b/i
_WHERE.2: /where\b/i
_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
_LIKE.2: /like\b/i
_IN.2: /in\b/i
_NULL.2: /null\b/i
_TRUE.2: /true\b/i
_FALSE.2: /false\b/i
_ORDER.2: /order\b/i
_BY.2: /by\b/i
_NULLS.2: /nulls\b/i
_LIMIT.2: /limit\b/i
_OFFSET.2: /offset\b/i
_COUNT.2: /count(?=\s*\()/i
DIRECTION.2: /(asc|desc)\b/i
NULLS_POS.2: /(first|last)\b/i
DATE_LITERAL.2: /(today|yesterday|tomorrow)\b/i
N_DAYS.2: /(last|next)_n_days:\d+/i
DATETIME.3: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})/
DATE.3: /\d{4}-\d{2}-\d{2}/
NUMBER: /-?\d+(\.\d+)?/
INT: /\d+/
STRING: /'(\\.|[^'\\])*'/
OP: "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z][A-Za-z0-9_]*/
%import common.WS
%ignore WS
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
_CUSTOM_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. "
    "Please reference your WSDL or the describe call for the appropriate names."
)

Getter = Callable[[dict[str, Any]], Any]
Predicate = Callable[[dict[str, Any]], bool]


def _error(code: str, soql: str, column: int, reason: str) -> SfError:
    """Salesforce's query error layout (query, caret, row/column, reason)."""
    flat = soql.replace("\n", " ")
    return SfError(code, f"\n{flat}\n{' ' * max(column - 1, 0)}^\nERROR at Row:1:Column:{column}\n{reason}")


@dataclass
class Column:
    """One selected field path: ``steps`` are (object, reference field) hops, ``field`` the leaf."""

    label: str
    steps: list[tuple[ObjectDef, FieldDef]]
    field: FieldDef
    target: ObjectDef


@dataclass
class Query:
    """A compiled SOQL query."""

    text: str
    obj: ObjectDef
    columns: list[Column] = field(default_factory=list)
    count_only: bool = False
    aggregate: list[tuple[str, Column | None]] = field(default_factory=list)
    where: Predicate | None = None
    order: list[tuple[Getter, bool, bool]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


class Compiler:
    """Turns a parse tree into a :class:`Query` against ``schema``, resolving records through ``store``."""

    def __init__(self, schema: Schema, store: Store, text: str) -> None:
        self.schema = schema
        self.store = store
        self.text = text
        self.today = datetime.now(UTC).date()

    def compile(self) -> Query:
        """Parse and compile ``self.text``."""
        tree = self._parse()
        parts = {child.data: child for child in tree.children if isinstance(child, Tree)}
        name_tok = next(child for child in tree.children if isinstance(child, Token))
        obj = self.schema.get(str(name_tok))
        if obj is None:
            raise _error(
                "INVALID_TYPE", self.text, name_tok.column or 1,
                f"sObject type '{name_tok}' is not supported. If you are attempting to use a custom object, be "
                "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call "
                "for the appropriate names.",
            )
        query = Query(text=self.text, obj=obj)
        self._select(query, parts["select_list"])
        if "where" in parts:
            query.where = self._predicate(obj, parts["where"].children[0])
        if "order" in parts:
            for item in parts["order"].children:
                column = self._column(obj, item.children[0])
                desc = any(isinstance(c, Token) and c.type == "DIRECTION" and c.lower() == "desc"
                           for c in item.children)
                nulls = next((c for c in item.children if isinstance(c, Tree) and c.data == "nulls"), None)
                nulls_first = (str(nulls.children[0]).lower() == "first") if nulls else not desc
                query.order.append((self._getter(column), desc, nulls_first))
        if "limit" in parts:
            query.limit = int(str(parts["limit"].children[0]))
        if "offset" in parts:
            query.offset = int(str(parts["offset"].children[0]))
        return query

    def _parse(self) -> Tree:
        try:
            return _PARSER.parse(self.text)
        except UnexpectedEOF:
            raise _error("MALFORMED_QUERY", self.text, len(self.text) + 1, "unexpected token: <EOF>") from None
        except UnexpectedToken as exc:
            if exc.token.type == "$END":
                raise _error("MALFORMED_QUERY", self.text, len(self.text) + 1, "unexpected token: <EOF>") from None
            raise _error("MALFORMED_QUERY", self.text, exc.column, f"unexpected token: '{exc.token}'") from None
        except UnexpectedCharacters as exc:
            raise _error("MALFORMED_QUERY", self.text, exc.column,
                         f"unexpected token: '{self.text[exc.pos_in_stream or 0]}'") from None
        except UnexpectedInput as exc:  # pragma: no cover - other lark input errors
            raise _error("MALFORMED_QUERY", self.text, 1, str(exc)) from None

    # ------------------------------------------------------------------ select
    def _select(self, query: Query, select_list: Tree) -> None:
        counts = [item for item in select_list.children if item.data == "count_expr"]
        if counts and len(counts) != len(select_list.children):
            raise _error("MALFORMED_QUERY", self.text, 1,
                         "Field must be grouped or aggregated: " + self._first_path(select_list))
        if counts:
            for n, item in enumerate(counts):
                path = next((c for c in item.children if isinstance(c, Tree) and c.data == "path"), None)
                alias = next((c for c in item.children if isinstance(c, Tree) and c.data == "alias"), None)
                if path is None and len(counts) == 1 and alias is None:
                    query.count_only = True
                    return
                column = self._column(query.obj, path) if path is not None else None
                name = str(alias.children[0]) if alias is not None else f"expr{n}"
                query.aggregate.append((name, column))
            return
        for item in select_list.children:
            query.columns.append(self._column(query.obj, item))

    @staticmethod
    def _first_path(select_list: Tree) -> str:
        for item in select_list.children:
            if item.data == "path":
                return ".".join(str(tok) for tok in item.children)
        return ""

    def _column(self, obj: ObjectDef, path: Tree) -> Column:
        names = [tok for tok in path.children if isinstance(tok, Token)]
        steps: list[tuple[ObjectDef, FieldDef]] = []
        current = obj
        for tok in names[:-1]:
            ref = current.relationships.get(tok.lower())
            if ref is None:
                raise _error(
                    "INVALID_FIELD", self.text, tok.column or 1,
                    f"Didn't understand relationship '{tok}' in field path. If you are attempting to use a custom "
                    "relationship, be sure to append the '__r' after the custom relationship name. Please "
                    "reference your WSDL or the describe call for the appropriate names.",
                )
            steps.append((current, ref))
            target = self.schema.get(ref.reference_to[0])
            assert target is not None
            current = target
        leaf = names[-1]
        fdef = current.field(str(leaf))
        if fdef is None:
            raise _error("INVALID_FIELD", self.text, leaf.column or 1,
                         f"No such column '{leaf}' on entity '{current.name}'. {_CUSTOM_FIELD_HINT}")
        label = ".".join([ref.relationship_name or "" for _, ref in steps] + [fdef.name])
        return Column(label=label, steps=steps, field=fdef, target=current)

    def _getter(self, column: Column) -> Getter:
        by_id = self.store.by_id
        name = column.field.name
        kind = column.field.type
        steps = [ref.name for _, ref in column.steps]
        target = column.target

        def leaf(rec: dict[str, Any]) -> Any:
            if kind == "address":
                return Store._address(target, rec, name)
            if kind == "location":
                return Store._location(target, rec, name)
            return rec.get(name)

        if not steps:
            return leaf

        def follow(rec: dict[str, Any]) -> Any:
            current: dict[str, Any] | None = rec
            for ref in steps:
                ref_id = current.get(ref) if current else None
                found = by_id.get(ref_id) if ref_id else None
                current = found[1] if found else None
                if current is None:
                    return None
            return leaf(current) if current is not None else None

        return follow

    # ------------------------------------------------------------------ where
    def _predicate(self, obj: ObjectDef, node: Tree) -> Predicate:
        kind = node.data
        if kind == "or_":
            parts = [self._predicate(obj, child) for child in node.children]
            return lambda rec: any(p(rec) for p in parts)
        if kind == "and_":
            parts = [self._predicate(obj, child) for child in node.children]
            return lambda rec: all(p(rec) for p in parts)
        if kind == "not_":
            inner = self._predicate(obj, node.children[0])
            return lambda rec: not inner(rec)
        column = self._column(obj, node.children[0])
        getter = self._getter(column)
        if kind == "compare":
            op = str(node.children[1])
            return self._compare(column, getter, op, node.children[2])
        if kind == "like":
            pattern = self._literal(column, node.children[1])
            if not isinstance(pattern, str):
                raise self._type_error(column, node.children[1])
            regex = re.compile(
                "^" + "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern) + "$",
                re.IGNORECASE | re.DOTALL,
            )
            return lambda rec: isinstance(v := getter(rec), str) and regex.match(v) is not None
        values = [self._literal(column, child) for child in node.children[1:]]
        keys = {_fold(v) for v in values}
        if kind == "in_":
            return lambda rec: _fold(getter(rec)) in keys
        return lambda rec: _fold(getter(rec)) not in keys

    def _compare(self, column: Column, getter: Getter, op: str, value_node: Tree) -> Predicate:
        if value_node.data in ("date_literal", "n_days") and column.field.type in ("date", "datetime"):
            start, end = self._date_range(column.field, value_node)
            ranges: dict[str, Predicate] = {
                "=": lambda rec: (v := getter(rec)) is not None and start <= v < end,
                "!=": lambda rec: (v := getter(rec)) is None or not start <= v < end,
                "<>": lambda rec: (v := getter(rec)) is None or not start <= v < end,
                "<": lambda rec: (v := getter(rec)) is not None and v < start,
                "<=": lambda rec: (v := getter(rec)) is not None and v < end,
                ">": lambda rec: (v := getter(rec)) is not None and v >= end,
                ">=": lambda rec: (v := getter(rec)) is not None and v >= start,
            }
            return ranges[op]
        literal = _fold(self._literal(column, value_node))
        if literal is None:
            if op in ("=",):
                return lambda rec: getter(rec) is None
            if op in ("!=", "<>"):
                return lambda rec: getter(rec) is not None
            return lambda rec: False
        if op == "=":
            return lambda rec: _fold(getter(rec)) == literal
        if op in ("!=", "<>"):
            return lambda rec: _fold(getter(rec)) != literal
        compare = {"<": lambda a: a < literal, ">": lambda a: a > literal,
                   "<=": lambda a: a <= literal, ">=": lambda a: a >= literal}[op]
        return lambda rec: (v := _fold(getter(rec))) is not None and compare(v)

    def _date_range(self, fdef: FieldDef, node: Tree) -> tuple[str, str]:
        text = str(node.children[0]).lower()
        today = self.today
        if text == "today":
            first, last = today, today
        elif text == "yesterday":
            first = last = today - timedelta(days=1)
        elif text == "tomorrow":
            first = last = today + timedelta(days=1)
        else:
            n = int(text.split(":")[1])
            if text.startswith("last"):
                first, last = today - timedelta(days=n), today
            else:
                first, last = today + timedelta(days=1), today + timedelta(days=n)
        end = last + timedelta(days=1)
        if fdef.type == "date":
            return first.isoformat(), end.isoformat()
        return (format_datetime(datetime.combine(first, datetime.min.time(), UTC)),
                format_datetime(datetime.combine(end, datetime.min.time(), UTC)))

    def _literal(self, column: Column, node: Tree) -> Any:
        """The literal's value in the stored form of ``column``'s field type."""
        kind = node.data
        fdef = column.field
        raw = str(node.children[0]) if node.children else ""
        if kind == "null":
            return None
        if kind == "string":
            text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), raw[1:-1])
            if fdef.type in ("int", "double", "currency", "percent", "boolean", "date", "datetime"):
                raise self._type_error(column, node)
            if fdef.type in ("id", "reference"):
                return normalize(text) or text
            return text
        if kind in ("true", "false"):
            if fdef.type != "boolean":
                raise self._type_error(column, node)
            return kind == "true"
        if kind == "number":
            if fdef.type not in ("int", "double", "currency", "percent"):
                raise self._type_error(column, node)
            return Decimal(raw) if "." in raw else int(raw)
        if kind == "date":
            if fdef.type == "datetime":
                return format_datetime(datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC))
            if fdef.type != "date":
                raise self._type_error(column, node)
            return raw
        if kind == "datetime":
            if fdef.type != "datetime":
                raise self._type_error(column, node)
            return format_datetime(parse_datetime(raw))
        raise self._type_error(column, node)

    def _type_error(self, column: Column, node: Tree) -> SfError:
        meta_col = node.meta.column if not node.meta.empty else 1
        return _error(
            "INVALID_QUERY_FILTER_OPERATOR", self.text, meta_col,
            f"value of filter criterion for field '{column.field.name}' must be of type {column.field.type} "
            "and should not be enclosed in quotes" if column.field.type != "string" else
            f"value of filter criterion for field '{column.field.name}' must be of type string and should be "
            "enclosed in quotes",
        )


def _fold(value: Any) -> Any:
    """Case-insensitive comparison key for text; other values unchanged."""
    return value.casefold() if isinstance(value, str) else value


def compile_query(schema: Schema, store: Store, text: str) -> Query:
    """Parse and compile a SOQL string (raises SfError on any problem)."""
    return Compiler(schema, store, text).compile()


def execute(query: Query, store: Store, version: str, include_deleted: bool = False
            ) -> tuple[int, list[dict[str, Any]]]:
    """Run a compiled query; returns ``(totalSize, records as REST JSON)``."""
    matched = _matching(query, store, include_deleted)
    if query.count_only:
        return len(matched), []
    if query.aggregate:
        row: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
        for name, column in query.aggregate:
            if column is None:
                row[name] = len(matched)
            else:
                getter = Compiler(store.schema, store, query.text)._getter(column)
                row[name] = sum(1 for rec in matched if getter(rec) is not None)
        return 1, [row]
    return len(matched), [render(query, store, rec, version) for rec in matched]


def _matching(query: Query, store: Store, include_deleted: bool) -> list[dict[str, Any]]:
    where = query.where
    rows = [rec for rec in store.iter_records(query.obj, include_deleted) if where is None or where(rec)]
    for getter, desc, nulls_first in reversed(query.order):
        present = [rec for rec in rows if getter(rec) is not None]
        absent = [rec for rec in rows if getter(rec) is None]
        present.sort(key=_sort_key(getter), reverse=desc)
        rows = absent + present if nulls_first else present + absent
    end = None if query.limit is None else query.offset + query.limit
    return rows[query.offset:end]


def render(query: Query, store: Store, rec: dict[str, Any], version: str) -> dict[str, Any]:
    """One result row: ``attributes`` + selected fields, parent fields nested under relationship names."""
    def attributes(obj: ObjectDef, row: dict[str, Any]) -> dict[str, Any]:
        return {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{row['Id']}"}

    out: dict[str, Any] = {"attributes": attributes(query.obj, rec)}
    for column in query.columns:
        node: dict[str, Any] | None = out
        current: dict[str, Any] | None = rec
        for _, ref in column.steps:
            assert node is not None
            rel = ref.relationship_name or ref.name
            ref_id = current.get(ref.name) if current else None
            found = store.by_id.get(ref_id) if ref_id else None
            current = found[1] if found else None
            if current is None or found is None:
                node.setdefault(rel, None)
                node = None
                break
            child = node.get(rel)
            if child is None:
                child = {"attributes": attributes(found[0], current)}
                node[rel] = child
            node = child
        if node is None or current is None:
            continue
        fdef = column.field
        if fdef.type == "address":
            node[fdef.name] = Store._address(column.target, current, fdef.name)
        elif fdef.type == "location":
            node[fdef.name] = Store._location(column.target, current, fdef.name)
        else:
            node[fdef.name] = current.get(fdef.name)
    return out


def run_flat(query: Query, store: Store, include_deleted: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Header labels and flat value rows of a query (Bulk API 2.0 CSV)."""
    compiler = Compiler(store.schema, store, query.text)
    getters = [compiler._getter(column) for column in query.columns]
    rows = [[g(rec) for g in getters] for rec in _matching(query, store, include_deleted)]
    return [column.label for column in query.columns], rows


def _sort_key(getter: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """A sort key that folds values (case-insensitive text, comparable types) like SOQL's ORDER BY."""
    return lambda rec: _fold(getter(rec))
