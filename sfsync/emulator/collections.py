"""sObject Collections: ``composite/sobjects`` create (POST), update (PATCH), delete (DELETE), retrieve
(GET/POST ``composite/sobjects/{T}``) and upsert (PATCH ``composite/sobjects/{T}/{ExtIdField}``).

Contract: at most 200 records per call (else 400 EXCEEDED_MAX_SIZE_REQUEST); results in request order,
HTTP 200 even when records fail. One call is one transaction: its CDC events share a transactionKey
with increasing sequenceNumber. With ``allOrNone`` and any failure, nothing is committed: failing
records carry their own error, the others ``ALL_OR_NONE_OPERATION_ROLLED_BACK``. Without it, failed
records are skipped and the rest committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from sfsync.emulator.core import Emulator, sf_json
from sfsync.emulator.errors import SfError
from sfsync.emulator.rest import _external_field, _field_list, body_json, emulator, upsert_one, version_of
from sfsync.emulator.schema import ObjectDef
from sfsync.emulator.store import Transaction

MAX_RECORDS = 200
ROLLED_BACK = SfError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


class CollectionRequest(BaseModel):
    """Body of create/update/upsert collection calls."""

    model_config = ConfigDict(extra="ignore")
    all_or_none: bool = Field(default=False, alias="allOrNone")
    records: list[dict[str, Any]]


class RetrieveRequest(BaseModel):
    """Body of a POST retrieve."""

    ids: list[str]
    fields: list[str]


def _parse(body: Any) -> CollectionRequest:
    try:
        request = CollectionRequest.model_validate(body)
    except ValidationError as exc:
        raise SfError("JSON_PARSER_ERROR", f"Invalid collection request: {exc.errors()[0]['msg']}") from None
    _check_size(len(request.records))
    return request


def _check_size(count: int) -> None:
    if count > MAX_RECORDS:
        raise SfError("EXCEEDED_MAX_SIZE_REQUEST", f"Your request exceeded the maximum collection size of "
                      f"{MAX_RECORDS} records.")


def _record_type(emu: Emulator, rec: dict[str, Any]) -> ObjectDef:
    attributes = rec.get("attributes")
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    if not type_name:
        raise SfError("INVALID_TYPE", "When using the sObject Collections API, each record must specify "
                      "attributes.type")
    obj = emu.schema.get(str(type_name))
    if obj is None:
        raise SfError("INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
    return obj


def _run(emu: Emulator, request: Request, items: list[Any], all_or_none: bool, endpoint: str,
         apply: Callable[[Transaction, Any], dict[str, Any]], failed_id: Callable[[Any], str | None]) -> Response:
    """Apply ``apply`` to each item in one transaction and build the per-record results."""
    emu.stats.count_collection(endpoint, len(items))
    tx = emu.store.begin(emu.context(request.scope["state"]))
    results: list[dict[str, Any]] = []
    failed = False
    for item in items:
        mark = len(tx.undo), len(tx.changes)
        try:
            applied = apply(tx, item)
            results.append({"id": applied.pop("id"), "success": True, "errors": [], **applied})
        except SfError as err:
            _undo_since(emu, tx, mark)
            failed = True
            result: dict[str, Any] = {"success": False, "errors": [err.record_error()]}
            item_id = failed_id(item)
            if item_id is not None:
                result = {"id": item_id, **result}
            results.append(result)
    if failed and all_or_none:
        emu.store.rollback(tx)
        for result in results:
            if result["success"]:
                result["success"] = False
                result["errors"] = [ROLLED_BACK.record_error()]
                result.pop("created", None)
    else:
        emu.store.commit(tx)
    return sf_json(results)


def _undo_since(emu: Emulator, tx: Transaction, mark: tuple[int, int]) -> None:
    """Roll back only the writes of the record that just failed."""
    undo_mark, change_mark = mark
    partial = Transaction(tx.ctx, undo=tx.undo[undo_mark:], changes=[])
    emu.store.rollback(partial)
    del tx.undo[undo_mark:]
    del tx.changes[change_mark:]


def _given_id(item: Any) -> str | None:
    if not isinstance(item, dict):
        return str(item) if item is not None else None
    value = item.get("id", item.get("Id"))
    return str(value) if value is not None else None


async def collection(request: Request) -> Response:
    """POST (create), PATCH (update), DELETE (delete) composite/sobjects."""
    emu = emulator(request)
    if request.method == "DELETE":
        raw = request.query_params.get("ids", "")
        ids = [part for part in raw.split(",") if part]
        _check_size(len(ids))
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"

        def delete(tx: Transaction, record_id: str) -> dict[str, Any]:
            return {"id": emu.store.delete(tx, record_id)}

        return _run(emu, request, ids, all_or_none, "DELETE composite/sobjects", delete, _given_id)

    body = _parse(await body_json(request))
    if request.method == "POST":
        def create(tx: Transaction, rec: dict[str, Any]) -> dict[str, Any]:
            return {"id": emu.store.create(tx, _record_type(emu, rec), rec)}

        return _run(emu, request, body.records, body.all_or_none, "POST composite/sobjects", create,
                    lambda _rec: None)

    def update(tx: Transaction, rec: dict[str, Any]) -> dict[str, Any]:
        record_id = _given_id(rec)
        if record_id is None:
            raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        obj = _record_type(emu, rec)
        fields = {k: v for k, v in rec.items() if k not in ("id", "Id")}
        return {"id": emu.store.update(tx, obj, record_id, fields)}

    return _run(emu, request, body.records, body.all_or_none, "PATCH composite/sobjects", update, _given_id)


async def upsert(request: Request) -> Response:
    """PATCH composite/sobjects/{T}/{ExtIdField}: upsert up to 200 records of one type by external id."""
    emu = emulator(request)
    obj = emu.schema.require(request.path_params["sobject"])
    fdef = _external_field(obj, request.path_params["field"])
    body = _parse(await body_json(request))
    keys: list[Any] = []
    for rec in body.records:
        value = next((v for k, v in rec.items() if k.lower() == fdef.name.lower()), None)
        keys.append(str(value).lower() if value is not None else None)
    counts = Counter(k for k in keys if k is not None)

    def apply(tx: Transaction, item: tuple[dict[str, Any], Any]) -> dict[str, Any]:
        rec, key = item
        rec_obj = _record_type(emu, rec) if "attributes" in rec else obj
        if rec_obj.name != obj.name:
            raise SfError("INVALID_TYPE", f"Record type {rec_obj.name} does not match {obj.name}")
        value = next((v for k, v in rec.items() if k.lower() == fdef.name.lower()), None)
        if value is None or value == "":
            raise SfError("MISSING_ARGUMENT", f"{fdef.name} not specified", [fdef.name])
        if counts[key] > 1:
            raise SfError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [fdef.name])
        ids = emu.store.find_unique(obj, fdef.name, value) if fdef.name != "Id" else [value]
        if len(ids) > 1:
            raise SfError("DUPLICATE_EXTERNAL_ID", f"{fdef.name}: more than one record found for external id "
                          f"field: {ids}", [fdef.name])
        created, record_id = upsert_one(emu, tx, obj, fdef, value, rec, ids)
        return {"id": record_id, "created": created}

    def failed_id(item: tuple[dict[str, Any], Any]) -> str | None:
        rec, _ = item
        found = None
        value = next((v for k, v in rec.items() if k.lower() == fdef.name.lower()), None)
        if value is not None and fdef.name != "Id":
            ids = emu.store.find_unique(obj, fdef.name, value)
            found = ids[0] if len(ids) == 1 else None
        return found

    items = list(zip(body.records, keys, strict=True))
    return _run(emu, request, items, body.all_or_none, "PATCH composite/sobjects/{type}/{field}", apply,
                failed_id)


async def retrieve(request: Request) -> Response:
    """GET composite/sobjects/{T}?ids=&fields= or POST with {"ids", "fields"}: records or null per id."""
    emu = emulator(request)
    obj = emu.schema.require(request.path_params["sobject"])
    if request.method == "POST":
        try:
            spec = RetrieveRequest.model_validate(await body_json(request))
        except ValidationError as exc:
            raise SfError("JSON_PARSER_ERROR", f"Invalid retrieve request: {exc.errors()[0]['msg']}") from None
        ids, field_names = spec.ids, spec.fields
    else:
        ids = [p for p in request.query_params.get("ids", "").split(",") if p]
        field_names = [p for p in request.query_params.get("fields", "").split(",") if p]
    if not field_names:
        raise SfError("MISSING_ARGUMENT", "fields must be specified", ["fields"])
    _check_size(len(ids))
    fields = _field_list(obj, ",".join(field_names))
    out: list[dict[str, Any] | None] = []
    for record_id in ids:
        try:
            _, rec = emu.store.lookup(record_id, obj)
        except SfError as err:
            if err.code == "MALFORMED_ID":
                raise
            out.append(None)
            continue
        out.append(emu.store.to_rest(obj, rec, version_of(request), fields))
    return sf_json(out)
