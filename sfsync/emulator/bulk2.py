"""Bulk API 2.0 query jobs as simple-salesforce's ``sf.bulk2.<Object>.query/query_all/download`` use them.

``POST jobs/query`` compiles and runs the SOQL at once (a snapshot at job creation) and answers with
state ``UploadComplete``; the next ``GET jobs/query/{id}`` reports ``JobComplete``. Results are CSV pages
of ``maxRecords`` rows with ``Sforce-Locator`` (the next page, or ``null``) and
``Sforce-NumberOfRecords`` headers. Values: null = empty field, booleans ``true``/``false``, datetimes
``2024-01-01T00:00:00.000Z``, parent fields as dotted columns (``Account.Name``).
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from sfsync.emulator.core import Emulator, sf_json
from sfsync.emulator.errors import SfError, not_found
from sfsync.emulator.ids import make_id
from sfsync.emulator.rest import body_json, emulator, version_of
from sfsync.emulator.schema import format_datetime, now_utc
from sfsync.emulator.soql import compile_query, run_flat

DELIMITERS = {"COMMA": ",", "TAB": "\t", "SEMICOLON": ";", "PIPE": "|", "CARET": "^", "BACKQUOTE": "`"}
_job_numbers = itertools.count(1)


class QueryJobRequest(BaseModel):
    """Body of ``POST jobs/query``."""

    model_config = ConfigDict(extra="ignore")
    operation: str = "query"
    query: str
    column_delimiter: str = Field(default="COMMA", alias="columnDelimiter")
    line_ending: str = Field(default="LF", alias="lineEnding")


@dataclass
class QueryJob:
    """A query job and its materialised result."""

    id: str
    operation: str
    object: str
    created: str
    api_version: str
    delimiter: str
    line_ending: str
    header: list[str]
    rows: list[list[Any]]
    state: str = "UploadComplete"
    polled: bool = field(default=False)

    def info(self, user_id: str) -> dict[str, Any]:
        """The job info JSON."""
        return {
            "id": self.id, "operation": self.operation, "object": self.object, "createdById": user_id,
            "createdDate": self.created, "systemModstamp": self.created, "state": self.state,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
            "jobType": "V2Query", "lineEnding": self.line_ending, "columnDelimiter": self.delimiter,
            "numberRecordsProcessed": len(self.rows) if self.state == "JobComplete" else 0, "retries": 0,
            "totalProcessingTime": 0,
        }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, dict):
        text = ", ".join(format(v, "f") if isinstance(v, Decimal) else str(v) for v in value.values() if v is not None)
    elif isinstance(value, str) and len(value) == 28 and value.endswith("+0000") and value[10] == "T":
        text = value[:-5] + "Z"
    else:
        text = str(value)
    return '"' + text.replace('"', '""') + '"'


def _job(emu: Emulator, request: Request) -> QueryJob:
    job = emu.jobs.get(request.path_params["job_id"])
    if not isinstance(job, QueryJob):
        raise not_found("The requested resource does not exist")
    return job


async def query_jobs(request: Request) -> Response:
    """POST jobs/query (create) and GET jobs/query (list)."""
    emu = emulator(request)
    user = request.scope["state"]["session"].user_id
    if request.method == "GET":
        jobs = [job.info(user) for job in emu.jobs.values() if isinstance(job, QueryJob)]
        return sf_json({"done": True, "records": jobs, "nextRecordsUrl": None})
    try:
        spec = QueryJobRequest.model_validate(await body_json(request))
    except ValidationError as exc:
        raise SfError("INVALIDJOB", f"Invalid job request: {exc.errors()[0]['msg']}") from None
    if spec.operation not in ("query", "queryAll"):
        raise SfError("INVALIDJOB", f"Invalid operation: {spec.operation}")
    if spec.column_delimiter not in DELIMITERS or spec.line_ending not in ("LF", "CRLF"):
        raise SfError("INVALIDJOB", "Invalid columnDelimiter or lineEnding")
    compiled = compile_query(emu.schema, emu.store, spec.query)
    if compiled.count_only or compiled.aggregate:
        raise SfError("INVALIDJOB", "Aggregate queries are not supported by Bulk API 2.0 query jobs")
    header, rows = run_flat(compiled, emu.store, include_deleted=spec.operation == "queryAll")
    job = QueryJob(id=make_id("750", next(_job_numbers)), operation=spec.operation, object=compiled.obj.name,
                   created=format_datetime(now_utc()), api_version=version_of(request),
                   delimiter=spec.column_delimiter, line_ending=spec.line_ending, header=header, rows=rows)
    emu.jobs[job.id] = job
    return sf_json(job.info(user))


async def query_job(request: Request) -> Response:
    """GET (state), PATCH (abort) and DELETE jobs/query/{id}."""
    emu = emulator(request)
    job = _job(emu, request)
    user = request.scope["state"]["session"].user_id
    if request.method == "DELETE":
        del emu.jobs[job.id]
        return Response(status_code=204)
    if request.method == "PATCH":
        body = await body_json(request)
        if not isinstance(body, dict) or body.get("state") != "Aborted":
            raise SfError("INVALIDJOBSTATE", "Only the Aborted state can be set on a query job")
        if job.state in ("JobComplete", "Failed"):
            raise SfError("INVALIDJOBSTATE", f"Job is already {job.state}")
        job.state = "Aborted"
        return sf_json(job.info(user))
    if job.state == "UploadComplete":
        job.state = "JobComplete"
    return sf_json(job.info(user))


async def query_results(request: Request) -> Response:
    """GET jobs/query/{id}/results?maxRecords=&locator=: one CSV page."""
    emu = emulator(request)
    job = _job(emu, request)
    if job.state != "JobComplete":
        raise SfError("INVALIDJOBSTATE", f"Job is in state {job.state}, results are not available yet")
    try:
        size = int(request.query_params.get("maxRecords", "50000"))
        locator = request.query_params.get("locator")
        start = int(base64.b64decode(locator).decode()) if locator else 0
    except ValueError:
        raise SfError("INVALIDLOCATOR", "invalid locator or maxRecords") from None
    if size <= 0:
        raise SfError("INVALIDLOCATOR", "maxRecords must be positive")
    page = job.rows[start:start + size]
    sep = DELIMITERS[job.delimiter]
    newline = "\r\n" if job.line_ending == "CRLF" else "\n"
    lines = [sep.join('"' + h + '"' for h in job.header)]
    lines.extend(sep.join(_cell(v) for v in row) for row in page)
    end = start + len(page)
    next_locator = base64.b64encode(str(end).encode()).decode() if end < len(job.rows) else "null"
    return Response(newline.join(lines) + newline, media_type="text/csv; charset=UTF-8",
                    headers={"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(page))})
