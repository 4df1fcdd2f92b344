"""The baseline of the ingest benchmark: a bare Starlette endpoint that only parses the
JSON body and answers 202, served by uvicorn with the same settings as hookwise."""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hook(request: Request) -> JSONResponse:
    json.loads(await request.body())
    return JSONResponse({"event_id": "bare"}, status_code=202)


app = Starlette(routes=[Route("/hooks/{source}", hook, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning", lifespan="off",
        server_header=False
    )
