"""REST v1: one router per resource, wired here."""

from fastapi import APIRouter

from sqd.server.api import alerts, dashboard, events, health, metrics, ops, presets, records, rules, runs, sweeps

api_router = APIRouter()
for module in (health, runs, metrics, records, alerts, rules, presets, sweeps, events, ops, dashboard):
    api_router.include_router(module.router)
