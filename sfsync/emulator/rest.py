"""REST API handlers under ``/services/data/vXX.X/``: versions, describe, records, upsert, query, limits.

Status codes and bodies follow Salesforce: create 201 ``{"id","success","errors"}``; update/delete 204;
upsert by external id 201 ``created: true`` / 200 ``created: false`` (v46.0+; 204 on older versions) /
300 with the matching record URLs; errors are ``[{"message","errorCode","fields"}]``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sfsync.emulator.core import MAX_VERSION, MIN_VERSION, Emulator, parse_json, sf_json
from sfsync.emulator.errors import SfError, not_found
from sfsync.emulator.ids import normalize
from sfsync.emulator.schema import FieldDef, ObjectDef, format_datetime, parse_datetime
from sfsync.emulator.soql import compile_query, execute

_SEASONS = ("Winter", "Spring", "Summer")


def emulator(request: Request) -> Emulator:
    """The Emulator behind this app."""
    return request.app.state.emulator


def version_of(request: Request) -> str:
    """The request's API version (validated by the middleware)."""
    return str(request.scope["state"]["version"])


async def body_json(request: Request) -> Any:
    """The parsed JSON body (JSON_PARSER_ERROR when malformed)."""
    return parse_json(await request.body())


def _release_label(version: int) -> str:
    offset = version - 59
    return f"{_SEASONS[offset % 3]} '{24 + offset // 3}"


async def versions(request: Request) -> Response:
    """GET /services/data: every supported API version."""
    out = []
    for number in range(int(MIN_VERSION), int(MAX_VERSION) + 1):
        out.append({"label": _release_label(number), "url": f"/services/data/v{number}.0", "version": f"{number}.0"})
    return sf_json(out)


async def resources(request: Request) -> Response:
    """GET /services/data/vXX.X: the resources of a version."""
    base = f"/services/data/v{version_of(request)}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
    return sf_json({name: f"{base}/{name}" for name in names})


async def limits(request: Request) -> Response:
    """GET limits: DailyApiRequests and a few other allowances."""
    emu = emulator(request)
    maximum = emu.config.api_limit
    return sf_json({
        "DailyApiRequests": {"Max": maximum, "Remaining": max(maximum - emu.api_used, 0)},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000 - len(emu.jobs)},
        "DailyStreamingApiEvents": {"Max": 1000000, "Remaining": 1000000},
        "DataStorageMB": {"Max": 1024, "Remaining": 1024},
        "HourlyPublishedStandardVolumePlatformEvents": {"Max": 100000, "Remaining": 100000},
    })


async def describe_global(request: Request) -> Response:
    """GET sobjects: the global describe."""
    emu = emulator(request)
    version = version_of(request)
    return sf_json({"encoding": "UTF-8", "maxBatchSize": 200,
                    "sobjects": [obj.global_entry(version) for obj in emu.schema.objects.values()]})


def _object(request: Request) -> ObjectDef:
    return emulator(request).schema.require(request.path_params["sobject"])


async def sobject_root(request: Request) -> Response:
    """GET sobjects/{T}: basic info; POST sobjects/{T}: create a record."""
    emu = emulator(request)
    obj = _object(request)
    if request.method == "GET":
        return sf_json({"objectDescribe": obj.global_entry(version_of(request)), "recentItems": []})
    return await _create(request, emu, obj, await body_json(request))


async def _create(request: Request, emu: Emulator, obj: ObjectDef, body: Any) -> Response:
    if not isinstance(body, dict):
        raise SfError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
    tx = emu.store.begin(emu.context(request.scope["state"]))
    try:
        record_id = emu.store.create(tx, obj, body)
    except SfError:
        emu.store.rollback(tx)
        raise
    emu.store.commit(tx)
    return sf_json({"id": record_id, "success": True, "errors": []}, status=201)


async def describe(request: Request) -> Response:
    """GET sobjects/{T}/describe."""
    emu = emulator(request)
    obj = _object(request)
    return sf_json(obj.describe(version_of(request), emu.schema.children(obj.name)))


def _field_list(obj: ObjectDef, raw: str | None) -> list[str] | None:
    if not raw:
        return None
    names = []
    for part in raw.split(","):
        fdef = obj.field(part.strip())
        if fdef is None:
            raise SfError("INVALID_FIELD", f"No such column '{part.strip()}' on entity '{obj.name}'. If you are "
                          "attempting to use a custom field, be sure to append the '__c' after the custom field "
                          "name. Please reference your WSDL or the describe call for the appropriate names.")
        names.append(fdef.name)
    return names


async def record(request: Request) -> Response:
    """GET/PATCH/DELETE sobjects/{T}/{id}; POST sobjects/{T}/Id (create)."""
    emu = emulator(request)
    obj = _object(request)
    raw_id = request.path_params["record_id"]
    if request.method == "POST":
        fdef = obj.field(raw_id)
        if fdef is None or not (fdef.external_id or fdef.name == "Id"):
            raise SfError("METHOD_NOT_ALLOWED", "HTTP Method 'POST' not allowed. Allowed are GET,PATCH,DELETE",
                          status=405)
        return await _create(request, emu, obj, await body_json(request))
    if request.method == "GET":
        if normalize(raw_id) is None and not (len(raw_id) in (15, 18) and raw_id.isalnum()):
            raise not_found(f"Provided external ID field does not exist or is not accessible: {raw_id}")
        _, rec = emu.store.lookup(raw_id, obj)
        fields = _field_list(obj, request.query_params.get("fields"))
        return sf_json(emu.store.to_rest(obj, rec, version_of(request), fields))
    tx = emu.store.begin(emu.context(request.scope["state"]))
    try:
        if request.method == "PATCH":
            body = await body_json(request)
            if not isinstance(body, dict):
                raise SfError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
            emu.store.update(tx, obj, raw_id, body)
        else:
            emu.store.delete(tx, raw_id, obj)
    except SfError:
        emu.store.rollback(tx)
        raise
    emu.store.commit(tx)
    return Response(status_code=204)


def _external_field(obj: ObjectDef, name: str) -> FieldDef:
    fdef = obj.field(name)
    if fdef is None or not (fdef.external_id or fdef.id_lookup):
        raise not_found(f"Provided external ID field does not exist or is not accessible: {name}")
    return fdef


def _matches(emu: Emulator, obj: ObjectDef, fdef: FieldDef, value: str) -> list[str]:
    if fdef.name == "Id":
        normal = normalize(value)
        found = emu.store.by_id.get(normal) if normal else None
        return [normal] if normal and found and not found[1]["IsDeleted"] else []
    if fdef.name not in emu.store.unique[obj.name]:
        return [rec["Id"] for rec in emu.store.iter_records(obj) if rec.get(fdef.name) == value]
    return emu.store.find_unique(obj, fdef.name, value)


def _multiple(version: str, obj: ObjectDef, ids: list[str]) -> Response:
    return sf_json([f"/services/data/v{version}/sobjects/{obj.name}/{i}" for i in ids], status=300)


async def by_external_id(request: Request) -> Response:
    """GET/PATCH/DELETE sobjects/{T}/{Field}/{value}: read, upsert or delete by external id."""
    emu = emulator(request)
    obj = _object(request)
    version = version_of(request)
    fdef = _external_field(obj, request.path_params["field"])
    value = request.path_params["value"]
    ids = _matches(emu, obj, fdef, value)
    if len(ids) > 1:
        return _multiple(version, obj, ids)
    if request.method == "GET":
        if not ids:
            raise not_found()
        _, rec = emu.store.lookup(ids[0], obj)
        return sf_json(emu.store.to_rest(obj, rec, version, _field_list(obj, request.query_params.get("fields"))))
    tx = emu.store.begin(emu.context(request.scope["state"]))
    try:
        if request.method == "DELETE":
            if not ids:
                raise not_found()
            emu.store.delete(tx, ids[0], obj)
            emu.store.commit(tx)
            return Response(status_code=204)
        body = await body_json(request)
        if not isinstance(body, dict):
            raise SfError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
        created, record_id = upsert_one(emu, tx, obj, fdef, value, body, ids,
                                        update_only=request.query_params.get("updateOnly") == "true")
    except SfError:
        emu.store.rollback(tx)
        raise
    emu.store.commit(tx)
    result = {"id": record_id, "success": True, "errors": [], "created": created}
    if float(version) < 46.0:
        if created:
            result.pop("created")
            return sf_json(result, status=201)
        return Response(status_code=204)
    return sf_json(result, status=201 if created else 200)


def upsert_one(emu: Emulator, tx: Any, obj: ObjectDef, fdef: FieldDef, value: Any, body: dict[str, Any],
               ids: list[str], update_only: bool = False) -> tuple[bool, str]:
    """Apply one upsert by ``fdef`` = ``value`` to the single match in ``ids`` (or create); (created, id)."""
    body = {k: v for k, v in body.items() if k != "attributes"}
    for key in list(body):
        if key.lower() == fdef.name.lower():
            if fdef.name != "Id" and body[key] is not None and str(body[key]).lower() != str(value).lower():
                raise SfError("INVALID_FIELD", f"The value of {fdef.name} in the request body doesn't match the "
                              "external ID in the URL", [fdef.name])
            del body[key]
    if ids:
        return False, emu.store.update(tx, obj, ids[0], body)
    if fdef.name == "Id" or update_only:
        raise not_found()
    body[fdef.name] = value
    return True, emu.store.create(tx, obj, body)


def _window(request: Request) -> tuple[datetime, datetime]:
    try:
        start = parse_datetime(request.query_params["start"].replace(" ", "+"))
        end = parse_datetime(request.query_params["end"].replace(" ", "+"))
    except (KeyError, ValueError):
        raise SfError("INVALID_REPLICATION_DATE", "start and end must be ISO-8601 datetimes") from None
    start = start.replace(second=0, microsecond=0)
    end = end.replace(second=0, microsecond=0)
    if end <= start:
        raise SfError("INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate by more than one "
                      "minute")
    if start < datetime.now(UTC) - timedelta(days=30):
        raise SfError("INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
    return start, end


async def updated(request: Request) -> Response:
    """GET sobjects/{T}/updated?start&end: ids of records modified in the window (minute precision)."""
    emu = emulator(request)
    obj = _object(request)
    start, end = _window(request)
    low, high = format_datetime(start), format_datetime(end)
    ids = [rec["Id"] for rec in emu.store.iter_records(obj) if low <= rec["SystemModstamp"] < high]
    return sf_json({"ids": ids, "latestDateCovered": high})


async def deleted(request: Request) -> Response:
    """GET sobjects/{T}/deleted?start&end: records deleted in the window."""
    emu = emulator(request)
    obj = _object(request)
    start, end = _window(request)
    low, high = format_datetime(start), format_datetime(end)
    rows = [{"id": rec["Id"], "deletedDate": rec["_deleted_at"]}
            for rec in emu.store.iter_records(obj, include_deleted=True)
            if rec["IsDeleted"] and low <= rec["_deleted_at"] < high]
    earliest = min((row["deletedDate"] for row in rows), default=low)
    return sf_json({"deletedRecords": rows, "earliestDateAvailable": earliest, "latestDateCovered": high})


def _batch_size(request: Request) -> int:
    options = request.headers.get("sforce-query-options", "")
    for part in options.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), 200), 2000)
    return 2000


async def query(request: Request) -> Response:
    """GET query|queryAll?q=SOQL, and GET query/{locator} (queryMore).

    Pages hold ``batchSize`` rows (``Sforce-Query-Options``, 200..2000, default 2000), fixed per cursor.
    """
    emu = emulator(request)
    version = version_of(request)
    include_deleted = request.url.path.split("/")[4] == "queryAll"
    locator = request.path_params.get("locator")
    if locator:
        cursor_id, _, offset_text = locator.rpartition("-")
        cursor = emu.cursors.get(cursor_id)
        if cursor is None or not offset_text.isdigit() or int(offset_text) > len(cursor[0]):
            raise SfError("INVALID_QUERY_LOCATOR", "invalid query locator")
        rows, size = cursor
        return sf_json(_page(emu, version, include_deleted, cursor_id, rows, int(offset_text), len(rows), size))
    soql = request.query_params.get("q")
    if not soql:
        raise SfError("MALFORMED_QUERY", "A query string must be provided.")
    emu.stats.count_query(soql)
    compiled = compile_query(emu.schema, emu.store, soql)
    total, rows = execute(compiled, emu.store, version, include_deleted)
    size = _batch_size(request)
    if len(rows) <= size:
        return sf_json({"totalSize": total, "done": True, "records": rows})
    cursor_id = "01g" + secrets.token_hex(8)[:15]
    if len(emu.cursors) >= emu.config.cursor_limit:
        emu.cursors.pop(next(iter(emu.cursors)))
    emu.cursors[cursor_id] = (rows, size)
    return sf_json(_page(emu, version, include_deleted, cursor_id, rows, 0, total, size))


def _page(emu: Emulator, version: str, include_deleted: bool, cursor_id: str, rows: list[dict[str, Any]],
          offset: int, total: int, size: int) -> dict[str, Any]:
    end = offset + size
    page: dict[str, Any] = {"totalSize": total, "done": end >= len(rows), "records": rows[offset:end]}
    if end < len(rows):
        kind = "queryAll" if include_deleted else "query"
        page["nextRecordsUrl"] = f"/services/data/v{version}/{kind}/{cursor_id}-{end}"
    else:
        emu.cursors.pop(cursor_id, None)
    return page
