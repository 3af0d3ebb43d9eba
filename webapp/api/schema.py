"""The OpenAPI 3 description of the API, kept by hand next to the views it
describes (tests/test_api_fuzz.py fuzzes every operation against it)."""
from __future__ import annotations

from distributor import plots
from distributor.exports import FORMATS
from distributor.models import Job, Machine, TaskSet
from distributor.results import TEST_KEYS, VERDICTS
from webapp.downloads import CONTENT_TYPES

ERROR = {"$ref": "#/components/schemas/Error"}
# A slot's health as GET /api/slots and GET /api/status give it.
_SLOT = {"type": "object", "properties": {
    "target": {"type": "string"}, "slot": {"type": "integer"},
    "health": {"type": "string", "enum": ["healthy", "suspect", "quarantined", "maintenance"]},
    "cause": {"type": "string"}, "failures_in_a_row": {"type": "integer"},
    "next_check": {"type": "string", "nullable": True, "format": "date-time"},
    "since": {"type": "string", "nullable": True, "format": "date-time"}}}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    words = {400: "Invalid input: each field at fault names its problem", 401: "Not authenticated",
             403: "Not allowed (staff only, or not the owner)", 404: "No such object", 405: "Method not allowed",
             409: "Not in a state that allows it (the job has ended)",
             413: "The request is larger than a task-set file may be", 415: "Unsupported content type"}
    return {str(code): {"description": words[code], **_json(ERROR)} for code in (401, *codes)}


def _id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PAGING = [
    _query("page", {"type": "integer", "minimum": 1}, "page number, from 1"),
    _query("page_size", {"type": "integer", "minimum": 1, "maximum": 500}, "rows per page (default 50)"),
]

OPTIONS = {
    "target": {"type": "string", "nullable": True, "description": "target pool name (default: the default target)"},
    "name": {"type": "string", "maxLength": 200},
    "offset": {"type": "integer", "minimum": 0, "description": "skip this many variants"},
    "tries": {"type": "integer", "minimum": 1, "maximum": 100, "nullable": True,
              "description": "attempts before a task-set is bad"},
    "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "description": "higher runs first"},
    "admission": {"type": "object", "nullable": True, "additionalProperties": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                  "description": "admission-control goal sent with OPTIMIZE"},
    "monitors": {"type": "array", "items": {"type": "string"}},
    "notify": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 2000},
               "description": "http(s) URLs POSTed a JSON document when the job ends, or e-mail addresses "
                              "(where the site's mail is set up) sent it"},
    "time_limit": {"type": "integer", "minimum": 1, "maximum": 30 * 86400, "nullable": True,
                   "description": "wall-clock seconds a task-set may run before its target counts as failed "
                                  "(default: from the task-set's own task model)"},
    "notify_bad": {"type": "boolean", "description": "also tell the notify addresses when task-sets turn bad: "
                                                     "at most one message a minute, with the count since the last"},
}

def _submission_body(file_field: str, file_schema: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": [file_field],
            "properties": {file_field: file_schema, "filename": {"type": "string", "maxLength": 255}, **OPTIONS}}


SUBMISSION_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "description": "the task-set file as a JSON object (spec) or as text (file), with the job's options",
            "oneOf": [
                _submission_body("spec", {"type": "object", "description": "the task-set file (DESIGN §4)"}),
                _submission_body("file", {"type": "string", "description": "the file's text: JSON, YAML or Genode XML"}),
            ],
        }},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"},
                           **{k: {"type": "string"} for k in OPTIONS}},
        }},
    },
}

PROGRESS = {"type": "object", "properties": {
    **{k: {"type": "integer"} for k in ("total", "queued", "running", "finished", "bad", "cancelled")},
    "percent": {"type": "number"},
    "rate_per_min": {"type": "number", "nullable": True, "description": "task-sets per minute, recently"},
    "eta_s": {"type": "number", "nullable": True, "description": "seconds until the job ends at that rate"},
}}

JOB = {"type": "object", "required": ["id", "name", "state", "target", "progress", "links"], "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "state": {"type": "string", "enum": Job.State.values},
    "target": {"type": "string"}, "owner": {"type": "string", "nullable": True}, "source_name": {"type": "string"},
    "variant_count": {"type": "integer"}, "offset": {"type": "integer"}, "tries": {"type": "integer"},
    "priority": {"type": "integer"}, "admission": {"type": "object", "nullable": True},
    "time_limit_s": {"type": "integer", "nullable": True},
    "monitors": {"type": "array", "items": {"type": "string"}}, "notify_bad": {"type": "boolean"},
    "notify": {"type": "array", "items": {"type": "object", "properties": {
        "url": {"type": "string"}, "event": {"type": "string", "enum": ["job.ended", "taskset.bad"]}, "state": {"type": "string", "enum": ["waiting", "pending", "sent", "failed"]},
        "attempts": {"type": "integer"}, "sent_at": {"type": "string", "nullable": True},
        "last_error": {"type": "string"}}}},
    "created_at": {"type": "string", "format": "date-time"},
    "started_at": {"type": "string", "format": "date-time", "nullable": True},
    "ended_at": {"type": "string", "format": "date-time", "nullable": True},
    "progress": PROGRESS,
    "contents": {"type": "array", "description": "GET /jobs/{job_id} only: the binaries and boot images the job "
                 "runs, by checksum (named at submission, or at first use for one uploaded later)",
                 "items": {"type": "object", "properties": {
                     "kind": {"type": "string", "enum": ["binary", "image"]}, "name": {"type": "string"},
                     "sha256": {"type": "string"}, "size": {"type": "integer"},
                     "named_at": {"type": "string", "format": "date-time"},
                     "upload": {"type": "string", "enum": ["current", "replaced", "removed"],
                                "description": "what its upload names now"},
                     "stored": {"type": "boolean", "description": "false once purge --contents removed it"}}}},
    "links": {"type": "object", "properties": {
        "self": {"type": "string"}, "page": {"type": "string"}, "tasksets": {"type": "string"},
        "exports": {"type": "object", "properties": {fmt: {"type": "string"} for fmt in FORMATS}}}},
}}

TASKSET = {"type": "object", "required": ["id", "job", "variant", "state"], "properties": {
    "id": {"type": "integer"}, "job": {"type": "integer"}, "variant": {"type": "integer"},
    "state": {"type": "string", "enum": TaskSet.State.values},
    "outcome": {"type": "string", "nullable": True, "enum": [*TaskSet.Outcome.values, None]},
    "attempts": {"type": "integer"}, "losses": {"type": "integer"}, "last_error": {"type": "string"},
    "machine": {"type": "integer", "nullable": True},
    "first_miss": {"type": "object", "nullable": True, "description": "the earliest miss (docs/outcomes.md)",
                   "properties": {"task": {"type": "integer"}, "job": {"type": "integer"},
                                  "kind": {"type": "string"}, "at_ms": {"type": "integer"}}},
    "started_at": {"type": "string", "nullable": True}, "ended_at": {"type": "string", "nullable": True},
    "analysis": {"type": "object", "nullable": True}, "url": {"type": "string"},
}}

LABEL_FILTERS = [
    _query("test", {"type": "string", "enum": list(TEST_KEYS)},
           "with verdict: only task-sets for which this test (verdict: the overall one) said verdict"),
    _query("verdict", {"type": "string", "enum": list(VERDICTS)}, "with test: yes, no, unknown or na (not applicable)"),
    _query("exact", {"type": "string", "enum": ["0", "1", "true", "false"]},
           "1: only the test's exact verdicts (verdict yes or no)"),
    _query("disagrees", {"type": "string", "enum": ["0", "1", "true", "false"]},
           "1: only task-sets whose overall verdict contradicts the measured outcome"),
]


def _by_outcome(cell: dict) -> dict:
    return {"type": "object", "description": "measured outcome → test → verdict",
            "properties": {o: {"type": "object", "properties": {t: cell for t in TEST_KEYS}}
                           for o in TaskSet.Outcome.values}}


SERIES_COUNT = {"type": "object", "properties": {"schedulable": {"type": "integer"}, "of": {"type": "integer"}}}
RESULTS = {"type": "object", "required": ["finished", "labelled", "agreement", "schedulability", "plots"], "properties": {
    "job": {"type": "integer"}, "campaign": {"type": "integer"},
    "started": {"type": "integer", "description": "task-sets started; the figures cover the finished ones"},
    "as_of": {"type": "string", "format": "date-time", "description": "the moment the figures are of (they are "
              "stored, computed once per state of the job's results)"},
    "current": {"type": "boolean", "description": "false: a running job's figures of a few seconds ago"},
    "finished": {"type": "integer"}, "labelled": {"type": "integer", "description": "finished, with labels, no error"},
    "disagree": {"type": "integer", "description": "finished sets whose overall verdict contradicts the measurement"},
    "disagree_exact": {"type": "integer"},
    "tests": {"type": "object", "additionalProperties": {"type": "string"}},
    "agreement": _by_outcome({"type": "object", "properties": {v: {"type": "integer"} for v in VERDICTS}}),
    "agreement_exact": _by_outcome({"type": "object", "properties": {v: {"type": "integer"} for v in ("yes", "no")}}),
    "schedulability": {"type": "array", "description": "utilisation bins: per series (measured, rta, edf, "
                       "simulation, verdict) how many sets were (said to be) schedulable of how many",
                       "items": {"type": "object", "properties": {
                           "utilisation_from": {"type": "number"}, "utilisation_to": {"type": "number"},
                           **{series: SERIES_COUNT for series in ("measured", "rta", "edf", "simulation", "verdict")}}}},
    "tasksets": {"nullable": True, "description": "a job's: the API listing of each cell's task-sets",
                 **_by_outcome({"type": "object", "properties": {v: {"type": "string"} for v in VERDICTS}})},
    "disagree_tasksets": {"type": "string", "nullable": True},
    "tasksets_page": {"type": "string", "description": "a campaign's: its task-set list on the web"},
    "plots": {"type": "object", "properties": {name: {"type": "string"} for name in plots.PLOTS},
              "description": "each plot's SVG address"},
}}


CAMPAIGN_OPTION = {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}
CAMPAIGN = {"type": "object", "required": ["id", "name", "kind", "state", "level"], "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"type": "string", "enum": ["random", "grow"]},
    "state": {"type": "string", "enum": ["running", "finished", "stopped"]}, "level": {"type": "integer"},
    "target": {"type": "string"}, "owner": {"type": "string", "nullable": True}, "seed": {"type": "integer"},
    "last_error": {"type": "string"}, "created_at": {"type": "string"}, "ended_at": {"type": "string", "nullable": True},
    "url": {"type": "string"}, "page": {"type": "string"}, "params": {"type": "object"},
    "levels": {"type": "array", "items": {"type": "object", "properties": {
        "level": {"type": "integer"}, "job": {"type": "integer", "nullable": True},
        "job_state": {"type": "string", "nullable": True}, "sets": {"type": "integer"},
        "candidates": {"type": "integer"}, "finished": {"type": "integer"},
        "schedulable": {"type": "integer", "description": "task-sets that finished schedulable"},
        "successful": {"type": "integer", "deprecated": True, "description": "the old name of schedulable"},
        "progress": {"type": "object", "nullable": True}, "job_url": {"type": "string", "nullable": True}}}},
}}
CAMPAIGN_BODY = {"type": "object", "required": ["kind", "seed"], "properties": {
    "kind": {"type": "string", "enum": ["random", "grow"]},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, "name": {"type": "string", "maxLength": 200},
    "target": {"type": "string"},
    **{key: CAMPAIGN_OPTION for key in ("tasks", "utilisation", "periods", "distribution", "pkg", "count", "jobs",
                                        "priorities", "singles", "max_size", "max_per_level", "quota", "arg1",
                                        "priority", "deadline", "period", "offset", "numberofjobs", "criticaltime",
                                        "caps", "cores", "coreoffset")}},
    "description": "the options of `manage.py campaign random|grow` by name (docs/campaigns.md), as text or numbers"}


TARGET_FIELDS = {
    "name": {"type": "string", "maxLength": 63, "description": "1-63 letters, digits, '.', '_' or '-'"},
    "kind": {"type": "string", "description": "a session kind: simso, stdio, genode, board, qemu, or a site's own"},
    "settings": {"type": "object", "description": "the kind's settings (README: Targets); unknown keys are refused"},
    "addresses": {"type": "array", "items": {"type": "string"}, "description": "host:port per machine slot"},
    "host": {"type": "string", "maxLength": 63, "description": "the distributor host whose cluster runs the pool"},
    "is_default": {"type": "boolean", "description": "the pool of submissions that name none (one pool is)"},
}
TARGET = {"type": "object", "required": ["id", "name", "kind"], "properties": {
    "id": {"type": "integer"}, **TARGET_FIELDS, "capacity": {"type": "integer", "nullable": True},
    "created_at": {"type": "string"}, "url": {"type": "string"}}}
TARGET_BODY = {"type": "object", "additionalProperties": False, "properties": TARGET_FIELDS}
UPLOAD = {"type": "object", "required": ["name", "sha256", "size"], "properties": {
    "name": {"type": "string"}, "sha256": {"type": "string"}, "size": {"type": "integer"},
    "uploaded_at": {"type": "string"}, "uploaded_by": {"type": "string", "nullable": True},
    "replaced": {"type": "boolean", "description": "after an upload: an upload of that name was replaced"}}}
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "sha256"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "sha256": {"type": "string", "description": "the file's SHA-256 (64 hex digits): a mismatch stores nothing"},
        "name": {"type": "string", "description": "default: the file's name"}}}}}}
MACHINE = {"type": "object", "required": ["id", "target", "slot", "state"], "properties": {
    "id": {"type": "integer"}, "target": {"type": "string"}, "slot": {"type": "integer"}, "host": {"type": "string"},
    "address": {"type": "string"}, "state": {"type": "string", "enum": Machine.State.values},
    "live": {"type": "boolean"}, "stop_mode": {"type": "string", "enum": Machine.StopMode.values},
    "reboot_requested": {"type": "boolean"}, "activity": {"type": "string"},
    "current": {"type": "object", "nullable": True, "properties": {
        "taskset": {"type": "integer"}, "job": {"type": "integer"}, "variant": {"type": "integer"},
        "since": {"type": "string", "nullable": True}}},
    "tasksets_done": {"type": "integer"}, "target_boots": {"type": "integer"},
    **{key: {"type": "string", "nullable": True} for key in ("heartbeat_at", "launched_at", "started_at", "stopped_at")},
    "last_error": {"type": "string"}, "url": {"type": "string"}, "page": {"type": "string"}}}


def _uploads(kind: str, plural: str) -> dict:
    return {
        "get": {"operationId": f"list{plural}", "summary": f"{kind.capitalize()}s by name", "parameters": PAGING,
                "responses": {"200": {"description": f"a page of {kind}s", **_json(_listing({"$ref": "#/components/schemas/Upload"}))},
                              **_errors(400, 404)}},
        "post": {"operationId": f"upload{plural}",
                 "summary": f"Upload a {kind} (staff), streamed and checked against the client's sha256; "
                            "one of the same name is replaced",
                 "requestBody": UPLOAD_BODY,
                 "responses": {"201": {"description": "stored", **_json({"$ref": "#/components/schemas/Upload"})},
                               "200": {"description": "stored, replacing one of that name",
                                       **_json({"$ref": "#/components/schemas/Upload"})},
                               **_errors(400, 403, 413, 415)}},
    }


def _listing(item: dict) -> dict:
    return {"type": "object", "required": ["count", "page", "pages", "results"], "properties": {
        "count": {"type": "integer"}, "page": {"type": "integer"}, "pages": {"type": "integer"},
        "results": {"type": "array", "items": item}}}


def _name(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": what,
            "schema": {"type": "string", "minLength": 1, "maxLength": 63}}


ETM_MODEL = {"type": "object", "description": "a model as sessions.etm reads it (docs/etm.md)",
             "required": ["packages", "default"], "properties": {
                 "name": {"type": "string"}, "version": {"type": "integer"}, "note": {"type": "string"},
                 "statistic": {"type": "string", "enum": ["max", "mean"]},
                 "packages": {"type": "object", "additionalProperties": {"type": "object"}},
                 "default": {"type": "object"}}}
ETM_SUMMARY = {"type": "object", "properties": {
    "name": {"type": "string"}, "version": {"type": "integer", "nullable": True}, "calibrated": {"type": "boolean"},
    "target": {"type": "string", "nullable": True}, "packages": {"type": "array", "items": {"type": "string"}},
    "targets": {"type": "array", "items": {"type": "string"}, "description": "targets whose etm setting names it"}}}
ETM_PATHS = {
    "/etms": {
        "get": {"operationId": "listEtms", "summary": "Execution-time models: each one's newest version",
                "responses": {"200": {"description": "models", **_json({"type": "object", "properties": {
                    "results": {"type": "array", "items": ETM_SUMMARY}}})}, **_errors()}},
        "post": {"operationId": "importEtm", "summary": "Store a model document as the next version of its name, "
                                                         "typed in (staff)",
                 "requestBody": {"required": True, **_json({"type": "object", "additionalProperties": False,
                                                            "required": ["document"], "properties": {
                                                                "name": {"type": "string", "maxLength": 63},
                                                                "document": ETM_MODEL}})},
                 "responses": {"201": {"description": "the stored version", **_json({"type": "object"})},
                               **_errors(400, 403, 415)}}},
    "/etms/{name}": {"get": {
        "operationId": "showEtm", "summary": "A model: its versions (newest first) with provenance and figures",
        "parameters": [_name("name", "model name")],
        "responses": {"200": {"description": "the model", **_json(ETM_SUMMARY)}, **_errors(404)}}},
    "/etms/{name}/export": {"get": {
        "operationId": "exportEtm", "summary": "A version's document, as etm import reads it",
        "parameters": [_name("name", "model name"),
                       _query("version", {"type": "integer", "minimum": 1}, "default: the newest")],
        "responses": {"200": {"description": "the document", **_json(ETM_MODEL)}, **_errors(400, 404)}}},
    "/etms/{name}/fit": {"post": {
        "operationId": "fitEtm", "summary": "Fit the next version from finished jobs' uninterrupted EXIT "
                                            "task-jobs (staff)",
        "parameters": [_name("name", "model name")],
        "requestBody": {"required": True, **_json({"type": "object", "additionalProperties": False,
                                                   "required": ["jobs"], "properties": {
                                                       "jobs": {"type": "array", "minItems": 1, "maxItems": 100,
                                                                "items": {"type": "integer", "minimum": 1}}}})},
        "responses": {"201": {"description": "{name, version, calibrated, target, jobs, packages}",
                              **_json({"type": "object"})}, **_errors(400, 403, 415)}}},
    "/etms/{name}/calibrate": {"post": {
        "operationId": "calibrateEtm",
        "summary": "Submit a calibration job to a target; when it ends its measurements become the next "
                   "version of the model (staff). Follow the job; then GET /etms/{name}",
        "parameters": [_name("name", "model name")],
        "requestBody": {"required": True, **_json({"type": "object", "additionalProperties": False,
                                                   "required": ["target", "pkg", "args"], "properties": {
                                                       "target": {"type": "string"},
                                                       "pkg": {"oneOf": [{"type": "string"},
                                                                         {"type": "array",
                                                                          "items": {"type": "string"}}]},
                                                       "args": {"type": "string", "description": "A:B inclusive"},
                                                       "jobs": {"type": "integer", "minimum": 1, "maximum": 10000},
                                                       "period": {"type": "integer", "minimum": 1}}})},
        "responses": {"202": {"description": "{calibration, job, name, target}", **_json({"type": "object"})},
                      **_errors(400, 403, 415)}}},
    "/jobs/{job_id}/relabel": {"post": {
        "operationId": "relabelJob", "summary": "Recompute a job's analytic labels with a stored model "
                                                "(default: its target's); owner or staff",
        "parameters": [_id("job_id")],
        "requestBody": {"required": False, **_json({"type": "object", "additionalProperties": False,
                                                    "properties": {"etm": {"type": "string"}}})},
        "responses": {"200": {"description": "{job, relabelled, etm: [{name, version}]}",
                              **_json({"type": "object"})}, **_errors(400, 403, 404, 415)}}},
}


def schema(base_url: str) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Distributor API", "version": "1",
                 "description": "Submit task-set files, follow jobs, read results and control the machines. "
                                "Authenticate with `Authorization: Bearer <token>` (create tokens on your profile "
                                "page) or a logged-in session (with the CSRF token for POST). Errors are "
                                "`{\"errors\": {field: message}}` with a 4xx status."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["errors"], "properties": {
                    "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                    "file_errors": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}}}},
                "Job": JOB, "TaskSet": TASKSET, "Campaign": CAMPAIGN, "Target": TARGET, "Upload": UPLOAD,
                "Machine": MACHINE, "Results": RESULTS,
            },
        },
        "paths": {
            **ETM_PATHS,
            "/openapi.json": {"get": {"operationId": "schema", "summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3 schema", **_json({"type": "object"})},
                                                    **_errors()}}},
            "/check": {"post": {
                "operationId": "check", "summary": "Validate a task-set file and options; store nothing",
                "requestBody": SUBMISSION_BODY,
                "responses": {"200": {"description": "valid", **_json({"type": "object", "properties": {
                    "valid": {"type": "boolean"}, "variant_count": {"type": "integer"}, "format": {"type": "string"},
                    "tasksets": {"type": "integer"}, "runs": {"type": "integer"}}})},
                    **_errors(400, 413, 415)}}},
            "/jobs": {
                "get": {"operationId": "listJobs", "summary": "Jobs, newest first",
                        "parameters": [_query("state", {"type": "string", "enum": Job.State.values}, "only jobs in this state"),
                                       _query("owner", {"type": "string"}, "only jobs this user submitted (user name)"),
                                       *PAGING],
                        "responses": {"200": {"description": "a page of jobs", **_json(_listing({"$ref": "#/components/schemas/Job"}))},
                                      **_errors(400, 404)}},
                "post": {"operationId": "submitJob", "summary": "Submit a task-set file as a job",
                         "requestBody": SUBMISSION_BODY,
                         "responses": {"201": {"description": "queued", **_json({"$ref": "#/components/schemas/Job"})},
                                       **_errors(400, 413, 415)}},
            },
            "/jobs/{job_id}": {"get": {
                "operationId": "getJob", "summary": "A job's state, progress, rate, ETA, export links and contents",
                "parameters": [_id("job_id")],
                "responses": {"200": {"description": "the job", **_json({"$ref": "#/components/schemas/Job"})}, **_errors(404)}}},
            "/jobs/{job_id}/cancel": {"post": {
                "operationId": "cancelJob", "summary": "Stop handing out the job's task-sets (owner or staff); with "
                                                       "now, also stop its running ones, which end cancelled",
                "parameters": [_id("job_id")],
                "requestBody": {"required": False, **_json({"type": "object", "additionalProperties": False, "properties": {
                    "now": {"type": "boolean", "description": "also stop the running task-sets (default false: they finish)"}}})},
                "responses": {"200": {"description": "cancelled (false: nothing left to change)", **_json({"type": "object", "properties": {
                    "cancelled": {"type": "boolean"}, "job": {"$ref": "#/components/schemas/Job"}}})},
                    **_errors(400, 403, 404, 415)}}},
            "/jobs/{job_id}/priority": {"post": {
                "operationId": "setJobPriority", "summary": "Move a job that has not ended in the queue (owner or staff)",
                "parameters": [_id("job_id")],
                "requestBody": {"required": True, **_json({"type": "object", "required": ["priority"],
                                                           "additionalProperties": False,
                                                           "properties": {"priority": OPTIONS["priority"]}})},
                "responses": {"200": {"description": "the job", **_json({"$ref": "#/components/schemas/Job"})},
                              **_errors(400, 403, 404, 409, 415)}}},
            "/jobs/{job_id}/resubmit": {"post": {
                "operationId": "resubmitJob", "summary": "Queue a copy of the job",
                "parameters": [_id("job_id")],
                "responses": {"201": {"description": "the new job", **_json({"$ref": "#/components/schemas/Job"})}, **_errors(404)}}},
            "/jobs/{job_id}/tasksets": {"get": {
                "operationId": "listTaskSets", "summary": "A job's task-sets by variant",
                "parameters": [_id("job_id"),
                               _query("state", {"type": "string", "enum": TaskSet.State.values}, "only this state"),
                               _query("outcome", {"type": "string", "enum": TaskSet.Outcome.values}, "only this outcome"),
                               *LABEL_FILTERS, *PAGING],
                "responses": {"200": {"description": "a page of task-sets", **_json(_listing({"$ref": "#/components/schemas/TaskSet"}))},
                              **_errors(400, 404)}}},
            "/jobs/{job_id}/results": {"get": {
                "operationId": "getJobResults",
                "summary": "The job page's results: the agreement matrix (measured outcome against each test's "
                           "verdict, all and exact only), the schedulability bins with counts, the plots' SVGs",
                "parameters": [_id("job_id")],
                "responses": {"200": {"description": "the figures", **_json({"$ref": "#/components/schemas/Results"})},
                              **_errors(404)}}},
            "/jobs/{job_id}/export/{format}": {"get": {
                "operationId": "exportJob",
                "summary": "A job's export, the same bytes as its page's link: taskjobs-csv and tasksets-csv "
                           "(docs/exports.md lists the columns) stream as they are read; sqlite is one file",
                "parameters": [_id("job_id"), {"name": "format", "in": "path", "required": True,
                                               "schema": {"type": "string", "enum": list(FORMATS)}}],
                "responses": {"200": {"description": "the export, as an attachment", "content": {
                    media: {"schema": {"type": "string", "format": "binary"}}
                    for media in dict.fromkeys(kind.split(";")[0] for kind in CONTENT_TYPES.values())}},
                    **_errors(404)}}},
            "/tasksets/{taskset_id}": {"get": {
                "operationId": "getTaskSet", "summary": "A task-set's result: tasks, task-jobs, attempts",
                "parameters": [_id("taskset_id")],
                "responses": {"200": {"description": "the task-set", **_json({"allOf": [{"$ref": "#/components/schemas/TaskSet"}, {
                    "type": "object", "properties": {"tasks": {"type": "array", "items": {"type": "object"}},
                                                     "taskjobs": {"type": "array", "items": {"type": "object"}},
                                                     "taskjobs_truncated": {"type": "boolean"},
                                                     "attempts": {"type": "array", "items": {"type": "object"}}}}]})},
                              **_errors(404)}}},
            "/campaigns": {
                "get": {"operationId": "listCampaigns", "summary": "Campaigns, newest first", "parameters": PAGING,
                        "responses": {"200": {"description": "a page of campaigns",
                                              **_json(_listing({"$ref": "#/components/schemas/Campaign"}))},
                                      **_errors(400, 404)}},
                "post": {"operationId": "startCampaign", "summary": "Start a random or growing campaign",
                         "requestBody": {"required": True, **_json(CAMPAIGN_BODY)},
                         "responses": {"201": {"description": "started, its first level submitted",
                                               **_json({"$ref": "#/components/schemas/Campaign"})},
                                       **_errors(400, 415)}},
            },
            "/campaigns/{campaign_id}": {"get": {
                "operationId": "getCampaign", "summary": "A campaign's options, levels, their jobs and progress",
                "parameters": [_id("campaign_id")],
                "responses": {"200": {"description": "the campaign", **_json({"$ref": "#/components/schemas/Campaign"})},
                              **_errors(404)}}},
            "/campaigns/{campaign_id}/results": {"get": {
                "operationId": "getCampaignResults", "summary": "The same figures over every level of a campaign",
                "parameters": [_id("campaign_id")],
                "responses": {"200": {"description": "the figures", **_json({"$ref": "#/components/schemas/Results"})},
                              **_errors(404)}}},
            "/campaigns/{campaign_id}/stop": {"post": {
                "operationId": "stopCampaign", "summary": "Stop a campaign (owner or staff); with cancel_level (the "
                                                          "default) its level's job is cancelled too",
                "parameters": [_id("campaign_id")],
                "requestBody": {"required": False, **_json({"type": "object", "additionalProperties": False,
                                                            "properties": {"cancel_level": {"type": "boolean"}}})},
                "responses": {"200": {"description": "stopped (false: it was not running)", **_json({"type": "object"})},
                              **_errors(400, 403, 404, 415)}}},
            "/campaigns/{campaign_id}/continue": {"post": {
                "operationId": "continueCampaign", "summary": "A stopped campaign continues where it stopped "
                                                              "(owner or staff)",
                "parameters": [_id("campaign_id")],
                "responses": {"200": {"description": "continued (false: it was not stopped)", **_json({"type": "object"})},
                              **_errors(400, 403, 404, 415)}}},
            "/targets": {
                "get": {"operationId": "listTargets", "summary": "Target pools, the default first", "parameters": PAGING,
                        "responses": {"200": {"description": "a page of targets",
                                              **_json(_listing({"$ref": "#/components/schemas/Target"}))},
                                      **_errors(400, 404)}},
                "post": {"operationId": "createTarget",
                         "summary": "Create a pool (staff), checked as the target form and `target add` check it",
                         "requestBody": {"required": True, **_json({**TARGET_BODY, "required": ["name", "kind"]})},
                         "responses": {"201": {"description": "created", **_json({"$ref": "#/components/schemas/Target"})},
                                       **_errors(400, 403, 415)}},
            },
            "/targets/{target_id}": {
                "get": {"operationId": "getTarget", "summary": "A target pool", "parameters": [_id("target_id")],
                        "responses": {"200": {"description": "the target", **_json({"$ref": "#/components/schemas/Target"})},
                                      **_errors(404)}},
                **{method: {"operationId": f"editTarget{method.capitalize()}",
                            "summary": "Change the given fields of a pool (staff); the others stay",
                            "parameters": [_id("target_id")],
                            "requestBody": {"required": True, **_json(TARGET_BODY)},
                            "responses": {"200": {"description": "the target", **_json({"$ref": "#/components/schemas/Target"})},
                                          **_errors(400, 403, 404, 415)}} for method in ("patch", "post")},
            },
            "/binaries": _uploads("task binary", "Binaries"),
            "/images": _uploads("boot image", "BootImages"),
            "/machines": {"get": {
                "operationId": "listMachines", "summary": "Machines, newest first",
                "parameters": [_query("state", {"type": "string", "enum": Machine.State.values}, "only this state"),
                               _query("target", {"type": "string"}, "only this target pool (its name)"),
                               _query("live", {"type": "string", "enum": ["true", "false"]}, "only live (or ended) ones"),
                               *PAGING],
                "responses": {"200": {"description": "a page of machines", **_json(_listing({"$ref": "#/components/schemas/Machine"}))},
                              **_errors(400, 404)}}},
            "/machines/{machine_id}": {"get": {
                "operationId": "getMachine", "summary": "A machine: state, its task-set, orders, counters",
                "parameters": [_id("machine_id")],
                "responses": {"200": {"description": "the machine", **_json({"$ref": "#/components/schemas/Machine"})},
                              **_errors(404)}}},
            "/machines/{machine_id}/{action}": {"post": {
                "operationId": "orderMachine",
                "summary": "drain: finish the current task-set, then stop; kill: stop now, the task-set back in the "
                           "queue untouched (staff)",
                "parameters": [_id("machine_id"), {"name": "action", "in": "path", "required": True,
                                                   "schema": {"type": "string", "enum": ["drain", "kill"]}}],
                "responses": {"200": {"description": "ordered", **_json({"type": "object", "properties": {
                    "action": {"type": "string"}, "machine": {"$ref": "#/components/schemas/Machine"}}})},
                    **_errors(400, 403, 404, 409, 415)}}},
            "/status": {"get": {
                "operationId": "status", "summary": "busy/idle/halted, machines and the queue",
                "responses": {"200": {"description": "status", **_json({"type": "object", "properties": {
                    "state": {"type": "string", "enum": ["busy", "idle", "halted"]}, "max_machines": {"type": "integer"},
                    "cap": {"type": "integer"}, "halted": {"type": "boolean"},
                    "hosts": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"},
                        "health": {"type": "string", "enum": ["ok", "drained", "faulty", "silent"]},
                        "alive": {"type": "boolean"}, "drained": {"type": "boolean"},
                        "faults": {"type": "array", "description": "the targets this host cannot run, and why",
                                   "items": {"type": "object", "properties": {
                                       "target": {"type": "string"}, "cause": {"type": "string"},
                                       "seen_at": {"type": "string", "format": "date-time"},
                                       "faults_in_a_row": {"type": "integer", "description": "probes that met it"},
                                       "retry_at": {"type": "string", "format": "date-time", "nullable": True,
                                                    "description": "when one machine tries the host again"}}}},
                        "capacity": {"type": "integer"}, "machines": {"type": "integer"},
                        "heartbeat_age_s": {"type": "number", "nullable": True}}}},
                    "machines": {"type": "array", "items": {"type": "object"}},
                    "jobs": {"type": "array", "items": {"type": "object"}},
                    "slots": {"type": "array", "items": _SLOT}}})}, **_errors()}}},
            "/audit": {"get": {
                "operationId": "audit", "summary": "The audit trail, newest first: every operator action with "
                                                   "who (a user, or cli:<login>), when and what changed (staff)",
                "parameters": [
                    {"name": "since", "in": "query", "required": False,
                     "description": "YYYY-MM-DD or an ISO date-time: only actions from then on",
                     "schema": {"type": "string"}},
                    {"name": "action", "in": "query", "required": False, "description": "e.g. max, kill, reboot",
                     "schema": {"type": "string"}},
                    {"name": "actor", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": {"description": "the actions", **_json({"type": "object", "properties": {
                    "limit": {"type": "integer"},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                        "actor": {"type": "string"}, "action": {"type": "string"}, "subject": {"type": "string"},
                        "changes": {"type": "object"}}}}}})}, **_errors(400, 403)}}},
            "/slots": {"get": {
                "operationId": "slots", "summary": "Each pool slot's health (healthy, suspect, quarantined, "
                                                   "maintenance) with its cause: slots with a record or a live machine",
                "responses": {"200": {"description": "the slots", **_json({"type": "object", "properties": {
                    "slots": {"type": "array", "items": _SLOT}}})}, **_errors()}}},
            "/slots/{target}/{index}": {"post": {
                "operationId": "setSlotHealth", "summary": "Put a slot into maintenance (its machine finishes its "
                                                           "task-set, then stops) or back in service (staff)",
                "parameters": [{"name": "target", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}],
                "requestBody": {"required": True, **_json({"type": "object", "required": ["health"],
                                                           "additionalProperties": False, "properties": {
                    "health": {"type": "string", "enum": ["maintenance", "healthy"]},
                    "cause": {"type": "string", "maxLength": 1000}}})},
                "responses": {"200": {"description": "the slot", **_json({"type": "object"})},
                              **_errors(400, 403, 404)}}},
            "/distributor": {"post": {
                "operationId": "setMaxMachines", "summary": "Set the machine count, 1..cap (staff)",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["max_machines"],
                                                           "additionalProperties": False,
                                                           "properties": {"max_machines": {"type": "integer", "minimum": 1}}})},
                "responses": {"200": {"description": "the new status", **_json({"type": "object"})}, **_errors(400, 403)}}},
            "/distributor/{action}": {"post": {
                "operationId": "control", "summary": "kill all, shut down all, resume, reboot all (staff)",
                "parameters": [{"name": "action", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": ["kill", "shutdown", "resume", "reboot"]}}],
                "responses": {"200": {"description": "done", **_json({"type": "object"})}, **_errors(403, 404)}}},
        },
    }
