"""Amazon SageMaker's container contract: `GET /ping` and `POST /invocations`.

SageMaker checks `/ping` without credentials, so it is public (200 when ready,
503 before). `/invocations` follows text-embeddings-inference's rule for
SageMaker: a /predict body is predicted and a /rerank body reranked (see
`tei.root`). SageMaker does not pass the caller's Authorization header on to
the container, so leave `api_key` unset there: the endpoint's IAM policy is the
guard.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from slipstream.server.api.operations import ReadyResponse, readiness
from slipstream.server.api.tei import PredictOrRerank, PredictOrRerankOperation, predict_or_rerank
from slipstream.server.errors import INFERENCE_ERRORS, error_specs


@get("/ping", summary="Ready (SageMaker's health check)", opt={"public": True}, responses=error_specs(503))
async def ping(request: Request[Any, Any, Any]) -> ReadyResponse:
    """200 once every group is warmed up, 503 before and while shutting down, as /ready."""
    return readiness(request)


@post(
    "/invocations",
    status_code=200,
    summary="Predict or rerank, by the body (SageMaker)",
    responses=INFERENCE_ERRORS,
    operation_class=PredictOrRerankOperation,
)
async def invocations(request: Request[Any, Any, Any]) -> Response[PredictOrRerank]:
    """SageMaker's inference route, as TEI serves it: a /predict body or a /rerank body."""
    return await predict_or_rerank(request)


ROUTES = [ping, invocations]
