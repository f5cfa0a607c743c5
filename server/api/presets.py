"""/presets: what POST /runs can launch."""

from __future__ import annotations

from fastapi import APIRouter

from sqd.server import launch
from sqd.server.api.deps import ReadDep
from sqd.server.schemas import PresetPublic

router = APIRouter(tags=["runs"])


@router.get("/presets", response_model=list[PresetPublic], dependencies=[ReadDep])
def list_presets() -> list[PresetPublic]:
    return launch.list_presets()
