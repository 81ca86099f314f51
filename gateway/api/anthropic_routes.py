"""Anthropic's Messages API, served through the queue: ``/v1/messages`` and
``/v1/messages/count_tokens``. A service written against the ``anthropic`` SDK changes its
``base_url`` and key (sent as ``x-api-key``, which aigw accepts like a bearer token).

The body is parsed by ``gateway.wire.anthropic``; ``gateway.api.dropin`` runs the job and waits
(or relays its stream event by event); errors leave in Anthropic's shape (``gateway/api/app.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.api import dropin
from gateway.api.bodies import read_json
from gateway.api.dependencies import Service, Shared
from gateway.chat import tokens_for_size
from gateway.wire import anthropic as wire


def router() -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["anthropic"])
    routes.add_api_route("/messages", messages, methods=["POST"], response_model=None)
    routes.add_api_route("/messages/count_tokens", count_tokens, methods=["POST"], response_model=None)
    return routes


async def messages(request: Request, gw: Shared, service: Service) -> Response:
    job = wire.job_request(await read_json(request, gw.config.gateway.api))
    call = dropin.prepare(gw, request, job)
    if call.job.stream:
        input_tokens = tokens_for_size(call.job.size_bytes())

        def encoder(job_id: str, start: dict[str, Any]) -> dropin.StreamEncoder:
            model = str(start.get("provider_model") or call.asked_model)
            return wire.MessagesStreamEncoder(job_id=job_id, model=model, input_tokens=input_tokens)

        return await dropin.stream(gw, service, request, call, encoder)
    view = await dropin.answer(gw, service, call)
    assert view.result is not None
    answer = wire.message_response(
        job_id=view.id, model=view.result.provider_model, result=view.result, aigw=dropin.facts(view)
    )
    return dropin.json_answer(answer, view)


async def count_tokens(request: Request, gw: Shared, service: Service) -> JSONResponse:
    """An estimate made here (about 4 characters a token: no tokenizer is downloaded), so nothing
    leaves the machine to count; ``x-aigw-estimate: true`` says so."""
    job = wire.count_tokens_request(await read_json(request, gw.config.gateway.api))
    gw.config.models.resolve_alias(job.model or "auto", None)  # an unknown model is a 404 here too
    body = wire.count_tokens_response(tokens_for_size(job.size_bytes()))
    return JSONResponse(body, headers={"x-aigw-estimate": "true"})
