"""What every router's handlers take: the runtime, the caller (an admin key), the real-time side."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clearance.api.auth import authenticate
from clearance.runtime import Runtime
from clearance.store import Principal
from clearance.triggered.runtime import RealTime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def realtime_of(request: Request) -> RealTime:
    return runtime_of(request).realtime


async def admin(request: Request) -> Principal:
    return await authenticate(request, runtime_of(request), admin=True)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
RealTimeDep = Annotated[RealTime, Depends(realtime_of)]
Admin = Annotated[Principal, Depends(admin)]
