"""The OpenAPI 3.0 description of /api/v1, written by hand next to the routes it describes.

A test checks that every route appears here with its methods and that nothing here is missing
from the app, so the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

from typing import Any

from webapp.history import query

JSON = "application/json"
ERROR_TEXT = {
    400: "The request was not valid; the message says what to change.",
    401: "No valid token: send 'Authorization: Bearer <token>'.",
    403: "The token lacks the scope this route needs.",
    404: "Nothing with that id.",
    409: "The request conflicts with what is stored or loaded (e.g. deleting the active point).",
    410: "The prediction was deleted; its number is never given to another.",
    413: "The upload is too large or holds too many slices.",
    415: "A file is not a PNG, JPEG or DICOM image.",
    422: "A file is damaged or cannot be used (e.g. a DICOM that is not CT).",
    500: "The prediction failed; nothing was stored.",
    503: "No model is loaded, or the job queue (Redis) cannot be reached.",
}


def document(version: str) -> dict[str, Any]:
    """The whole document; `version` is the app's."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ctstroke brain-CT stroke classifier API",
            "version": version,
            "description": (
                "Research software, not for clinical use. Every error, on every route (unknown "
                "paths and wrong methods included), is JSON: "
                '{"error": {"code": ..., "message": ...}}. Datetimes are ISO 8601 in UTC.'
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from 'flask tokens create NAME --scope read|write'.",
                }
            },
            "schemas": SCHEMAS,
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(
    summary: str,
    scope: str | None,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    *,
    parameters: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: its success responses, its errors, and 401/403 when it needs a token."""
    statuses = (*errors, 401, 403) if scope else errors
    responses = dict(ok)
    for status in sorted(set(statuses)):
        responses[str(status)] = _json(_ref("Error"), ERROR_TEXT[status])
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if scope:
        operation["description"] = f"Needs a token with the `{scope}` scope."
        operation["x-scope"] = scope
    else:
        operation["security"] = []
    if parameters:
        operation["parameters"] = list(parameters)
    if body:
        operation["requestBody"] = body
    return operation


def _param(
    where: str, name: str, schema: dict[str, Any], text: str, required: bool = False
) -> dict[str, Any]:
    return {
        "in": where,
        "name": name,
        "required": where == "path" or required,
        "schema": schema,
        "description": text,
    }


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
UNIT = {"type": "number", "minimum": 0, "maximum": 1}
PREDICTION_ID = _param("path", "prediction_id", INT, "A stored prediction's id.")
BUNDLE_ID = _param("path", "bundle_id", STR, "A bundle's id (hash of its files).")
FILTER_TEXT = {
    "q": "Text in the name, a slice's file name or the note.",
    "label": "Only this label.",
    "uncertain": "Only (un)certain results.",
    "review": "Review state.",
    "since": "Made on or after this day.",
    "until": "Made on or before this day.",
    "bundle": "Made by this bundle id.",
    "job": "Made by this job.",
    "sort": "Order (newest first by default).",
}


def _filter(name: str, text: str) -> dict[str, Any]:
    """One history filter, with what it accepts read from the definitions the query checks."""
    if name in query.CHOICES:
        schema = {"type": "string", "enum": list(query.CHOICES[name])}
    elif name in query.DATES:
        schema = {"type": "string", "format": "date"}
    else:
        return _param("query", name, STR, text)
    return _param("query", name, schema, f"{text} Any other value is refused with 400.")


HISTORY_FILTERS = tuple(_filter(name, text) for name, text in FILTER_TEXT.items())
UPLOAD = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "PNG, JPEG or DICOM slices, or zips of them (a zip is a study)."},
        "study": {"type": "boolean", "default": False,
                  "description": "true: the files are slices of one study (one prediction)."},
        "threshold": {**UNIT, "description": "Label with this threshold instead of the active."},
        "operating_point": {"type": "string",
                            "description": "Label with this named point (not with threshold)."},
        "cam": {"type": "boolean", "default": False,
                "description": "Also make each slice's Grad-CAM (adds cam_url, faithfulness)."},
        "wait": {"type": "boolean", "default": True,
                 "description": "false: answer 202 with the job at once and predict on the job "
                                "queue; poll the job's URL (not with cam=true)."},
    },
}  # fmt: skip
LEVEL = {"type": "string", "enum": ["slice", "patient"]}

PATHS: dict[str, Any] = {
    "/predict": {
        "post": _op(
            "Predict uploaded slices (now, or on the job queue) and store the result(s)",
            "write",
            {
                "201": _json(
                    {"oneOf": [_ref("Prediction"), _ref("PredictionBatch")]},
                    "The stored prediction; several files without study=true give a batch.",
                ),
                "202": _json(_ref("Job"), "wait=false: the job, queued (Location: its URL)."),
            },
            (400, 413, 415, 422, 500, 503),
            body={"required": True, "content": {"multipart/form-data": {"schema": UPLOAD}}},
        )
    },
    "/jobs/{job_id}": {
        "get": _op(
            "A prediction job: queued, running, done (with its results) or failed",
            "read",
            {"200": _json(_ref("Job"), "The job.")},
            (404,),
            parameters=(_param("path", "job_id", STR, "A job's id (from 202's Location)."),),
        )
    },
    "/predictions": {
        "get": _op(
            "Stored predictions, filtered like the history page, paged",
            "read",
            {"200": _json(_ref("PredictionPage"), "One page of results.")},
            (400,),
            parameters=(
                _param("query", "page", {"type": "integer", "minimum": 1, "default": 1}, "Page."),
                _param(
                    "query",
                    "per_page",
                    {"type": "integer", "minimum": 1, "maximum": 100, "default": 25},
                    "Results per page.",
                ),
                *HISTORY_FILTERS,
            ),
        )
    },
    "/predictions/{prediction_id}": {
        "get": _op(
            "One stored prediction with its slices and provenance",
            "read",
            {"200": _json(_ref("Prediction"), "The prediction.")},
            (404, 410),
            parameters=(PREDICTION_ID,),
        ),
        "delete": _op(
            "Delete a prediction and its stored files",
            "write",
            {"204": {"description": "Deleted."}},
            (404, 410),
            parameters=(PREDICTION_ID,),
        ),
    },
    "/predictions/{prediction_id}/cam.png": {
        "get": _op(
            "The heat map of one slice as a PNG (made on first request, then cached)",
            "read",
            {"200": {"description": "RGB heat map.", "content": {"image/png": {}}}},
            (400, 404, 409, 410, 503),
            parameters=(
                PREDICTION_ID,
                _param(
                    "query",
                    "slice",
                    {"type": "integer", "minimum": 0, "default": 0},
                    "Slice position, 0-based.",
                ),
                _param(
                    "query",
                    "method",
                    {
                        "type": "string",
                        "default": "gradcam",
                        "enum": ["gradcam", "gradcam++", "eigencam"],
                    },
                    "CAM method.",
                ),
            ),
        )
    },
    "/models": {
        "get": _op(
            "Bundles this deployment knows and which is loaded",
            "read",
            {"200": _json(_ref("ModelList"), "The bundles.")},
        )
    },
    "/models/{bundle_id}": {
        "get": _op(
            "A bundle's model card, OOF metrics and operating points per level",
            "read",
            {"200": _json(_ref("ModelDetail"), "The bundle.")},
            (404,),
            parameters=(BUNDLE_ID,),
        )
    },
    "/models/{bundle_id}/metrics": {
        "get": _op(
            "Counts and rates (95% Wilson intervals) on the bundle's OOF data at a threshold",
            "read",
            {"200": _json(_ref("ThresholdMetrics"), "The figures.")},
            (400, 404),
            parameters=(
                BUNDLE_ID,
                _param("query", "threshold", UNIT, "Scores at or above it are stroke.", True),
                _param("query", "level", {**LEVEL, "default": "slice"}, "Slices or patients."),
                _param(
                    "query",
                    "prevalence",
                    {
                        "type": "number",
                        "exclusiveMinimum": True,
                        "minimum": 0,
                        "exclusiveMaximum": True,
                        "maximum": 1,
                    },
                    "Also give PPV and NPV at this share of stroke.",
                ),
            ),
        )
    },
    "/models/{bundle_id}/operating-points": {
        "post": _op(
            "Save a named threshold for a level, optionally making it active",
            "write",
            {"201": _json(_ref("SavedPoint"), "The saved point.")},
            (400, 404, 409),
            parameters=(BUNDLE_ID,),
            body={"required": True, "content": {JSON: {"schema": _ref("NewPoint")}}},
        )
    },
    "/models/{bundle_id}/operating-points/{name}": {
        "delete": _op(
            "Delete an operating point saved in this deployment (audited)",
            "write",
            {"204": {"description": "Deleted; results labelled with it keep its name."}},
            (400, 404, 409),
            parameters=(
                BUNDLE_ID,
                _param("path", "name", STR, "The saved point's name."),
                _param("query", "level", LEVEL, "Its level.", True),
            ),
        )
    },
    "/models/{bundle_id}/operating-points/{name}/activate": {
        "post": _op(
            "Label new results with a saved point or one of the bundle's own",
            "write",
            {"200": _json(_ref("SavedPoint"), "The point, now active.")},
            (400, 404),
            parameters=(BUNDLE_ID, _param("path", "name", STR, "The operating point's name.")),
            body={"required": True, "content": {JSON: {"schema": _ref("LevelBody")}}},
        )
    },
    "/health": {
        "get": _op(
            "Whether a model is loaded and the database answers",
            None,
            {
                "200": _json(_ref("Health"), "Both fine."),
                "503": _json(
                    _ref("Health"), "No model that can predict as configured, or no database."
                ),
            },
        )
    },
    "/openapi.json": {
        "get": _op(
            "This document", None, {"200": _json({"type": "object"}, "OpenAPI 3.0 document.")}
        )
    },
}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


NULL_STR, NULL_NUM = {"type": "string", "nullable": True}, {"type": "number", "nullable": True}
WHEN = {"type": "string", "format": "date-time"}
STRINGS = {"type": "array", "items": STR}
WARNINGS = {
    "type": "array",
    "items": _ref("Warning"),
    "description": "What the output must be read with: not_for_clinical_use (always), "
    "synthetic_model, not_head_ct.",
}
CAVEATS = {
    "not_for_clinical_use": {**BOOL, "description": "Always true: research software."},
    "model_synthetic_only": {
        **BOOL,
        "nullable": True,
        "description": "The model that made it (or will) was trained on "
        "synthetic phantoms only; null: not recorded.",
    },
    "warnings": WARNINGS,
}
PREDICTION_FIELDS = {
    **CAVEATS,
    "looks_like_head_ct": {**BOOL, "description": "false: a slice does not look like an axial "
                                                  "head CT (a warning says which and why)."},
    "id": INT, "public_id": STR, "version": INT, "url": STR,
    "kind": {"type": "string", "enum": ["slice", "study"]}, "name": STR,
    "score": NUM, "label": {"type": "string", "enum": ["Normal", "Stroke"]}, "threshold": NUM,
    "operating_point": STR, "uncertain": BOOL, "uncertain_reasons": STRINGS,
    "aggregation": NULL_STR, "order_by": NULL_STR, "slice_count": INT, "review": NULL_STR,
    "true_label": NULL_STR, "note": STR, "job_id": NULL_STR, "provenance": _ref("Provenance"),
}  # fmt: skip
POINT_FIELDS = {
    "name": STR, "level": LEVEL, "source": STR, "policy": STR, "threshold": NUM,
    "half_width": NUM, "metrics": {"type": "object"}, "active": BOOL, "created_by": STR,
    "created_at": WHEN, "activated_at": {**WHEN, "nullable": True},
}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {"error": _object({"code": STR, "message": STR}, ("code", "message"))}, ("error",)
    ),
    "Warning": _object({"code": STR, "message": STR}, ("code", "message")),
    "Provenance": _object(
        {
            "bundle_id": STR,
            "bundle_name": STR,
            "preprocessing": {"type": "object"},
            "app_version": STR,
            "created_at": WHEN,
            "content_sha256": STR,
        }
    ),
    "Slice": _object(
        {
            "position": INT,
            "name": STR,
            "file_format": STR,
            "content_sha256": STR,
            "probability": NUM,
            "fold_probabilities": {"type": "array", "items": NUM},
            "fold_std": NUM,
            "view_std": NUM,
            "label": STR,
            "uncertain": BOOL,
            "uncertain_reasons": STRINGS,
            "faithfulness": {
                "type": "object",
                "nullable": True,
                "description": "Per CAM method: drop_top, drop_random, probability.",
            },
            "cam_url": {"type": "string", "description": "Present once a Grad-CAM was made."},
            "looks_like_head_ct": BOOL,
            "input_warning": {**NULL_STR, "description": "Why it does not look like a head CT."},
        }
    ),
    "PredictionSummary": _object(PREDICTION_FIELDS),
    "Prediction": _object(
        {**PREDICTION_FIELDS, "slices": {"type": "array", "items": _ref("Slice")}}
    ),
    "PredictionBatch": _object(
        {"predictions": {"type": "array", "items": _ref("Prediction")}}, ("predictions",)
    ),
    "Job": _object(
        {
            "id": STR,
            "url": STR,
            "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
            "mode": {"type": "string", "enum": ["slice", "study", "batch"]},
            "total": INT,
            "done": INT,
            "error": NULL_STR,
            "created_at": WHEN,
            "updated_at": {**WHEN, "nullable": True},
            "predictions": {
                "type": "array",
                "items": _object({"id": INT, "url": STR, "warnings": WARNINGS}),
                "description": "The stored results, once the job is done.",
            },
            **CAVEATS,
        }
    ),
    "PredictionPage": _object(
        {
            "items": {"type": "array", "items": _ref("PredictionSummary")},
            "page": INT,
            "per_page": INT,
            "pages": INT,
            "total": INT,
        }
    ),
    "ModelList": _object(
        {
            "items": {
                "type": "array",
                "items": _object(
                    {
                        "id": STR,
                        "url": STR,
                        "name": STR,
                        "backbone": STR,
                        "registered_at": {**WHEN, "nullable": True},
                        "active": BOOL,
                        "synthetic_only": {
                            **BOOL,
                            "nullable": True,
                            "description": "Trained on synthetic phantoms only; null: not "
                            "recorded (registered before it was).",
                        },
                    }
                ),
            },
            "active_id": NULL_STR,
        }
    ),
    "ModelDetail": _object(
        {
            "id": STR,
            "name": STR,
            "active": BOOL,
            "metrics": {"type": "object"},
            "card": {"type": "object"},
            "operating_points": {
                "type": "object",
                "additionalProperties": _ref("LevelPoints"),
                "description": "Keyed by level: slice, patient.",
            },
        }
    ),
    "LevelPoints": _object(
        {
            "active": _object(
                {
                    "name": STR,
                    "threshold": NUM,
                    "half_width": NUM,
                    "source": {"type": "string", "enum": ["bundle", "deployment"]},
                }
            ),
            "bundle": {"type": "array", "items": {"type": "object"}},
            "saved": {"type": "array", "items": _ref("SavedPoint")},
        }
    ),
    "SavedPoint": _object(POINT_FIELDS),
    "NewPoint": _object(
        {"name": STR, "threshold": UNIT, "level": LEVEL, "activate": {**BOOL, "default": False}},
        ("name", "threshold", "level"),
    ),
    "LevelBody": _object({"level": LEVEL}, ("level",)),
    "ThresholdMetrics": _object(
        {
            "bundle_id": STR,
            "level": LEVEL,
            "aggregation": NULL_STR,
            "metrics": _object(
                {
                    "threshold": NUM,
                    "tp": INT,
                    "fp": INT,
                    "tn": INT,
                    "fn": INT,
                    "sensitivity": NULL_NUM,
                    "specificity": NULL_NUM,
                    "ppv": NULL_NUM,
                    "npv": NULL_NUM,
                    "accuracy": NULL_NUM,
                    "f1": NULL_NUM,
                    "ci95": {"type": "object"},
                    "n": INT,
                    "prevalence_data": NUM,
                    "at_prevalence": _object({"prevalence": NUM, "ppv": NULL_NUM, "npv": NULL_NUM}),
                }
            ),
        }
    ),
    "Health": _object(
        {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "model_loaded": BOOL,
            "model_error": {**NULL_STR, "description": "Why no model is loaded (null if one is)."},
            "bundle_id": NULL_STR,
            "inference": {
                **_object(
                    {
                        "backend": {"type": "string", "enum": ["torch", "onnx", "openvino"]},
                        "precision": {"type": "string", "enum": ["f32", "bf16", "mixed", "int8"]},
                        "backend_note": {
                            **STR,
                            "description": "Why it differs from what was configured.",
                        },
                    }
                ),
                "nullable": True,
                "description": "What computes this worker's predictions (null if nothing can).",
            },
            "database": BOOL,
            "version": STR,
        }
    ),
}
