"""Model registry endpoints: upload and publish (admin), the device's model (device token), files."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from beeaudio.collector.auth import (
    Principal,
    get_principal,
    require_admin,
    require_own_device,
    require_reader,
)
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.http_errors import error_responses
from beeaudio.collector.registry import ModelCheck, model_path, models_dir, store_upload
from beeaudio.collector.schemas import DeviceModelOut, ModelListed, ModelOut, PublishIn, PublishOut
from beeaudio.collector.store.devices import hive_of_device
from beeaudio.collector.store.models import get_model, list_models, model_for_hive, publish
from beeaudio.collector.uploads import spool_upload
from beeaudio.core.wire import API_PREFIX, MODELS_PATH

router = APIRouter(prefix=API_PREFIX, tags=["models"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _etag(sha256: str) -> str:
    return f'"{sha256}"'


def _matches(request: Request, sha256: str) -> bool:
    header = request.headers.get("if-none-match", "")
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return _etag(sha256) in tags or "*" in tags


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(401, 403, 408, 413, 422),
)
async def post_model(
    request: Request, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """Upload a ``.beemodel`` (raw body, or multipart field ``file``). It streams to a file (the admin token
    is checked before the first byte is read), is verified, loaded and self-tested in a child process,
    and only then kept; a refused bundle is a 422 that says why, and leaves no file behind."""
    settings = context.settings
    upload = await spool_upload(
        request=request, folder=models_dir(context.data_dir), max_bytes=settings.max_model_bytes
    )
    check = ModelCheck(
        enabled=settings.model_check,
        timeout_s=settings.model_check_timeout_seconds,
        memory_limit_mb=settings.model_check_memory_mb,
        python=settings.model_check_python,
    )
    try:
        return await run_in_threadpool(
            store_upload,
            engine=context.engine,
            data_dir=context.data_dir,
            upload=upload,
            check=check,
            now_ms=context.clock_ms(),
        )
    finally:
        upload.unlink(missing_ok=True)


@router.get("/models", response_model=list[ModelListed], responses=error_responses(401, 403))
async def get_models(
    _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> list[dict[str, Any]]:
    return await run_in_threadpool(list_models, engine=context.engine)


@router.post(
    "/models/{model_id}/publish",
    response_model=PublishOut,
    responses=error_responses(401, 403, 404, 413, 422),
)
async def post_publish(
    model_id: str,
    body: PublishIn,
    _: Principal = Depends(require_admin),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Publish a model to one hive (``hive_id``) or to all hives (``hive_id`` null)."""
    return await run_in_threadpool(
        publish, engine=context.engine, model_id=model_id, hive_id=body.hive_id, now_ms=context.clock_ms()
    )


@router.get(
    "/devices/{device_id}/model",
    response_model=DeviceModelOut,
    responses={
        204: {"description": "nothing published for this device's hive"},
        304: {"description": "unchanged"},
        **error_responses(401, 403, 404, 422),
    },
)
async def get_device_model(
    device_id: str,
    request: Request,
    principal: Principal = Depends(get_principal),
    context: AppContext = Depends(get_context),
) -> Any:
    """Which bundle the device should run, with ``ETag: "<sha256>"``; 304 on a matching If-None-Match."""
    require_own_device(principal=principal, device_id=device_id)
    hive_id = await run_in_threadpool(hive_of_device, engine=context.engine, device_id=device_id)
    model = await run_in_threadpool(model_for_hive, engine=context.engine, hive_id=hive_id)
    if model is None:
        return Response(status_code=204)
    headers = {"ETag": _etag(model["sha256"]), "Cache-Control": "no-cache"}
    if _matches(request, model["sha256"]):
        return Response(status_code=304, headers=headers)
    body = {
        "model_id": model["model_id"],
        "model_name": model["model_name"],
        "model_version": model["model_version"],
        "sha256": model["sha256"],
        "size": model["size"],
        "download_url": f"{MODELS_PATH}/{model['model_id']}/file",
    }
    return JSONResponse(body, headers=headers)


@router.get(
    "/models/{model_id}/file",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "unchanged"},
        **error_responses(401, 403, 404, 410, 422),
    },
)
async def get_model_file(
    model_id: str,
    request: Request,
    principal: Principal = Depends(get_principal),
    context: AppContext = Depends(get_context),
) -> Any:
    """The bundle bytes. A device may download only the model published for its hive."""
    if principal.role == "device":
        # Checked before the model is looked up, so a device cannot probe which model ids exist.
        assert principal.hive_id is not None
        current = await run_in_threadpool(model_for_hive, engine=context.engine, hive_id=principal.hive_id)
        if current is None or current["model_id"] != model_id:
            raise HTTPException(403, "a device may download only the model published for its hive")
    stored = await run_in_threadpool(get_model, engine=context.engine, model_id=model_id)
    path, model = model_path(data_dir=context.data_dir, stored=stored), stored.info
    if not path.is_file():
        raise HTTPException(410, f"the file of model {model_id!r} is missing from the data folder")
    headers = {"ETag": _etag(model["sha256"])}
    if _matches(request, model["sha256"]):
        return Response(status_code=304, headers=headers)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{model['model_name']}-{model['model_version']}.beemodel",
        headers=headers,
    )
