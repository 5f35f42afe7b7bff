"""A model upload streamed to a file in the data folder as it arrives: never whole in memory.

The body is either the raw ``.beemodel`` or a multipart form with a ``file`` field. Either way it is
written, chunk by chunk, to ``<models>/.upload-<random>.tmp`` (the folder the bundle is kept in, so the
final rename is atomic), counting bytes: past ``max_bytes`` the file is removed and the answer is 413.
The request gate has authenticated the admin before the first byte was read and times every chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

#: How much of a multipart file part is copied at a time.
COPY_CHUNK = 1024 * 1024


async def spool_upload(*, request: Request, folder: Path, max_bytes: int) -> Path:
    """Write the upload to a new temporary file in ``folder`` and return its path (the caller removes
    it). 413 over ``max_bytes``, 422 for a multipart form without a ``file``."""
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as out:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                await _spool_form(request=request, out=out, max_bytes=max_bytes)
            else:
                await _spool(chunks=request.stream(), out=out, max_bytes=max_bytes)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


async def _spool(*, chunks: AsyncIterator[bytes], out: BinaryIO, max_bytes: int) -> int:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"model upload larger than {max_bytes} bytes")
        if chunk:
            # A slow disk must not stall the event loop (other devices' requests).
            await run_in_threadpool(out.write, chunk)
    return size


async def _spool_form(*, request: Request, out: BinaryIO, max_bytes: int) -> None:
    # Starlette's parser keeps a file part in memory up to 1 MB and then on disk, never whole in RAM.
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "file: a multipart upload needs a file field named 'file'")
        await _spool(chunks=_parts(upload), out=out, max_bytes=max_bytes)
    finally:
        await form.close()


async def _parts(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(COPY_CHUNK):
        yield chunk
