"""OpenAI's wire format, served through the queue: ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/models``. A service written against the ``openai`` SDK changes its ``base_url`` and key.

The body is parsed by ``gateway.wire.openai`` into a ``JobRequest``; ``gateway.api.dropin`` runs
it as a job and waits (or relays its stream); the answer is written back in OpenAI's shape with
aigw's facts in ``x-aigw-*`` headers and an extra ``aigw`` key. Errors leave in OpenAI's shape
(``gateway/api/app.py`` picks it by path).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.api import dropin
from gateway.api.bodies import read_json
from gateway.api.dependencies import Service, Shared
from gateway.errors import ModelNotFoundError
from gateway.wire import openai as wire


def router() -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["openai"])
    routes.add_api_route("/chat/completions", chat_completions, methods=["POST"], response_model=None)
    routes.add_api_route("/embeddings", embeddings, methods=["POST"], response_model=None)
    routes.add_api_route("/models", list_models, methods=["GET"], response_model=None)
    routes.add_api_route("/models/{model_id:path}", get_model, methods=["GET"], response_model=None)
    return routes


async def chat_completions(request: Request, gw: Shared, service: Service) -> Response:
    body = await read_json(request, gw.config.gateway.api)
    job = wire.job_request(body)
    call = dropin.prepare(gw, request, job)
    created = int(time.time())
    if call.job.stream:
        include_usage = wire.stream_options(body)

        def encoder(job_id: str, start: dict[str, Any]) -> dropin.StreamEncoder:
            model = str(start.get("provider_model") or call.asked_model)
            return wire.ChatStreamEncoder(
                job_id=job_id, created=created, model=model, include_usage=include_usage
            )

        return await dropin.stream(gw, service, request, call, encoder)
    view = await dropin.answer(gw, service, call)
    assert view.result is not None
    answer = wire.chat_response(
        job_id=view.id, created=created, model=view.result.provider_model, result=view.result,
        aigw=dropin.facts(view),
    )  # fmt: skip
    return dropin.json_answer(answer, view)


async def embeddings(request: Request, gw: Shared, service: Service) -> Response:
    body = await read_json(request, gw.config.gateway.api)
    job, encoding = wire.embeddings_job_request(body)
    call = dropin.prepare(gw, request, job)
    view = await dropin.answer(gw, service, call)
    assert view.result is not None
    answer = wire.embeddings_response(model=view.result.provider_model, result=view.result, encoding=encoding)
    return dropin.json_answer(answer, view)


async def list_models(gw: Shared, service: Service) -> JSONResponse:
    """The aliases a service may name (provider model names and task tags also work as ``model``)."""
    return JSONResponse(wire.models_list(gw.config.models, created=_started(gw)))


async def get_model(model_id: str, gw: Shared, service: Service) -> JSONResponse:
    """Any name a chat request accepts (an alias, a task tag, ``auto``, a provider model an alias
    serves) is a model here too, so a client that checks its model first finds it."""
    if gw.config.models.alias_for_model(model_id) is None:
        raise ModelNotFoundError(f"unknown model {model_id!r}; GET /v1/models lists the aliases")
    return JSONResponse({"id": model_id, "object": "model", "created": _started(gw), "owned_by": "aigw"})


def _started(gw: Shared) -> int:
    """A stable ``created`` for the aliases: when this API process loaded its config."""
    return gw.started_at
