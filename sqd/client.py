"""A small REST client for the SQD server (scripts, notebooks, `sqd runs ls`, `sqd metrics get`).

    from sqd.client import Client
    with Client() as sqd:                     # SQD_URL / SQD_TOKEN, else http://127.0.0.1:8765
        run = sqd.create_run("my script", tags=["baseline"])
        sqd.log_metrics(run["id"], [("loss/D", 0, 0.7), ("loss/G", 0, 1.2)])
        sqd.finish(run["id"])                 # else it stays "running"
        series = sqd.metrics(run["id"], keys=["loss/D"], max_points=500)["series"]["loss/D"]
        best = sqd.runs(filter="tag = baseline and eval/fid < 50", sort="eval/fid")

Values come back as floats, NaN and ±inf included (the server sends them as strings).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sqd.errors import SQDError
from sqd.settings import Settings, get_settings

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
INGEST_CHUNK = 100_000  # the server's limit per request
PointLike = tuple[str, int, float] | tuple[str, int, float, int | None] | dict[str, Any]


class ClientError(SQDError):
    """The server answered with an error; `status` and `detail` are what it said."""

    def __init__(self, method: str, path: str, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"{method} {path}: {status} {detail}")


def _number(v: Any) -> Any:
    return NON_FINITE.get(v, v) if isinstance(v, str) else v


def _numbers(obj: Any) -> Any:
    """The strings "NaN" / "Infinity" / "-Infinity" back to floats inside lists and dicts of numbers."""
    if isinstance(obj, list):
        return [_number(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _number(v) for k, v in obj.items()}
    return obj


def _wire(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _point(p: PointLike, now: float) -> tuple[str, int, float | str, int | None, float]:
    """(key, step, value as sent, epoch, wall_time) of a tuple or a {key, step, value, epoch?, wall_time?} dict."""
    if isinstance(p, dict):
        return (p["key"], int(p["step"]), _wire(float(p["value"])), p.get("epoch"),
                float(p.get("wall_time", now)))
    return p[0], int(p[1]), _wire(float(p[2])), p[3] if len(p) > 3 else None, now  # type: ignore[misc]


@dataclass
class Event:
    """One Server-Sent Event: `event` is points | evaluation | alert | run | reset."""

    id: str | None
    event: str
    data: Any


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 settings: Settings | None = None):
        settings = settings or get_settings()
        self.url = (url or settings.resolved_url).rstrip("/")
        secret = token or (settings.token.get_secret_value() if settings.token is not None else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        full = f"/api/v1{path}"
        try:
            resp = self.http.request(method, full, **kwargs)
        except httpx.HTTPError as exc:
            raise SQDError(f"{method} {self.url}{full}: cannot reach the server ({exc})") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ClientError(method, full, resp.status_code, detail)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # runs
    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/health"))

    def runs(self, status: Iterable[str] | None = None, q: str | None = None, limit: int = 50, offset: int = 0,
             filter: str | None = None, sort: str | None = None, view: str = "active") -> dict[str, Any]:
        """A page of runs: `filter` in the filter language (`config.lr >= 1e-3 and eval/fid < 50`), `sort` by fields
        ('-' for descending), `view` active | archived | all | deleted."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, "view": view}
        if status:
            params["status"] = list(status)
        params.update({k: v for k, v in (("q", q), ("filter", filter), ("sort", sort)) if v})
        return dict(self._json("GET", "/runs", params=params))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/runs/{run_id}"))

    def create_run(self, name: str = "", config: dict[str, Any] | None = None, run_id: str | None = None,
                   tags: Iterable[str] = (), notes: str = "", started_at: float | None = None) -> dict[str, Any]:
        """An external run that this script feeds with log_metrics; end it with `finish` (or it stays running)."""
        body = {"name": name, "config": config or {}, "tags": list(tags), "notes": notes,
                **({"id": run_id} if run_id else {}), **({"started_at": started_at} if started_at is not None else {})}
        return dict(self._json("POST", "/runs", json=body))

    def update_run(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """PATCH any of name, status ("finished" | "failed"), error, finished_at, tags (replacing the list), notes,
        archived."""
        return dict(self._json("PATCH", f"/runs/{run_id}", json=fields))

    def finish(self, run_id: str, status: str = "finished", error: str | None = None,
               finished_at: float | None = None) -> dict[str, Any]:
        """End a run this script fed: finished, or failed with an error message."""
        fields: dict[str, Any] = {"status": status}
        fields.update({k: v for k, v in (("error", error), ("finished_at", finished_at)) if v is not None})
        return self.update_run(run_id, **fields)

    def archive(self, run_id: str, archived: bool = True) -> dict[str, Any]:
        return self.update_run(run_id, archived=archived)

    def delete(self, run_id: str, hard: bool = False) -> dict[str, Any]:
        """Soft delete (recoverable with `restore` until gc); `hard=True` erases the run and all its data now."""
        return dict(self._json("DELETE", f"/runs/{run_id}", params={"hard": "true"} if hard else {}))

    def restore(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/runs/{run_id}/restore"))

    def gc(self, older_than_s: float = 0.0) -> dict[str, Any]:
        """Erase for good the runs soft-deleted at least `older_than_s` ago."""
        return dict(self._json("POST", "/runs/gc", json={"older_than_s": older_than_s}))

    def summaries(self, run_ids: Iterable[str], keys: Iterable[str]) -> list[dict[str, Any]]:
        """Per run: the latest value of each key and the alert count (what the runs table shows)."""
        params = {"run_id": ",".join(run_ids), "keys": ",".join(keys)}
        rows = self._json("GET", "/summaries", params=params)["data"]
        for row in rows:
            for latest in row["latest"].values():
                latest["value"] = _number(latest["value"])
        return list(rows)

    def launch(self, preset: str, overrides: dict[str, Any] | None = None, name: str = "",
               steps: int | None = None) -> dict[str, Any]:
        body = {"preset": preset, "overrides": overrides or {}, "name": name,
                **({"steps": steps} if steps else {})}
        return dict(self._json("POST", "/runs", json=body))

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> dict[str, Any]:
        return dict(self._json("POST", f"/runs/{run_id}/cancel", json={"reason": reason}))

    def presets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/presets"))

    # metrics
    def log_metrics(self, run_id: str, points: Iterable[PointLike]) -> dict[str, int]:
        """Store points given as (key, step, value[, epoch]) tuples or dicts; returns received/stored totals. They
        travel column-wise per key (`{"series": {key: {step, value, epoch, wall_time}}}`), INGEST_CHUNK a request;
        a point without a wall_time gets the time of this call."""
        total = {"received": 0, "stored": 0}
        now = time.time()
        series: dict[str, dict[str, list[Any]]] = {}
        count = 0
        for p in points:
            key, step, value, epoch, wall = _point(p, now)
            cols = series.get(key)
            if cols is None:
                cols = series[key] = {"step": [], "value": [], "epoch": [], "wall_time": []}
            cols["step"].append(step)
            cols["value"].append(value)
            cols["epoch"].append(epoch)
            cols["wall_time"].append(wall)
            count += 1
            if count == INGEST_CHUNK:
                self._send(run_id, series, total)
                series, count = {}, 0
        if series:
            self._send(run_id, series, total)
        return total

    def _send(self, run_id: str, series: dict[str, dict[str, list[Any]]], total: dict[str, int]) -> None:
        body = orjson.dumps({"series": series})  # several times faster than json for long number lists
        ack = self._json("POST", f"/runs/{run_id}/metrics", content=body,
                         headers={"Content-Type": "application/json"})
        total["received"] += ack["received"]
        total["stored"] += ack["stored"]

    def metrics(self, run_id: str, keys: Iterable[str] | None = None, max_points: int = 1000,
                start: int | None = None, end: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"max_points": max_points}
        if keys is not None:
            params["keys"] = ",".join(keys)
        params.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
        out = self._json("GET", f"/runs/{run_id}/metrics", params=params)
        for series in out["series"].values():
            for name in ("value", "min", "max"):
                series[name] = _numbers(series[name])
        return dict(out)

    def keys(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/runs/{run_id}/keys")["data"])

    def export(self, run_id: str, format: str = "csv", keys: Iterable[str] | None = None) -> str:
        params = {"format": format, **({"keys": ",".join(keys)} if keys is not None else {})}
        return self._request("GET", f"/runs/{run_id}/export", params=params).text

    # sweeps
    def sweeps(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        return dict(self._json("GET", "/sweeps", params={"limit": limit, "offset": offset}))

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sweeps/{sweep_id}"))

    def create_sweep(self, preset: str | Iterable[str], grid: dict[str, list[Any]] | None = None,
                     seeds: int = 1, **fields: Any) -> dict[str, Any]:
        """A sweep of `preset` (or several) × `grid` × `seeds`; other fields as POST /sweeps takes them
        (name, configs, overrides, steps, max_concurrent, confirm)."""
        presets = {"preset": preset} if isinstance(preset, str) else {"presets": list(preset)}
        body = {**presets, "grid": grid or {}, "seeds": seeds, **{k: v for k, v in fields.items() if v is not None}}
        return self.post_sweep(body)

    def post_sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /sweeps with a body as it takes it (e.g. a built-in sweep's `request`)."""
        return dict(self._json("POST", "/sweeps", json=body))

    def cancel_sweep(self, sweep_id: str, reason: str = "sweep cancelled by user") -> dict[str, Any]:
        return dict(self._json("POST", f"/sweeps/{sweep_id}/cancel", json={"reason": reason}))

    def sweep_results(self, sweep_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sweeps/{sweep_id}/results"))

    def export_sweep(self, sweep_id: str, format: str = "csv") -> str:
        return self._request("GET", f"/sweeps/{sweep_id}/results", params={"format": format}).text

    def builtin_sweeps(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sweeps/builtin"))

    # evaluations, alerts, samples
    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._json("GET", f"/runs/{run_id}/evaluations")["data"]
        for row in rows:
            row["metrics"] = _numbers(row["metrics"])
        return list(rows)

    def alerts(self, run_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"run_id": run_id} if run_id else {})}
        return list(self._json("GET", "/alerts", params=params)["data"])

    def sample_png(self, run_id: str, step: int) -> bytes:
        return self._request("GET", f"/runs/{run_id}/samples/{step}.png").content

    def put_sample(self, run_id: str, step: int, png: bytes) -> dict[str, Any]:
        """Store a sample grid (PNG) at `step`: it joins the run's sample timeline (importers use this)."""
        return dict(self._json("PUT", f"/runs/{run_id}/samples/{step}.png", content=png,
                               headers={"Content-Type": "image/png"}))

    def events(self, run_ids: Iterable[str] | None = None, last_event_id: str | None = None,
               timeout: float | None = None, sweep: str | None = None,
               on_open: Callable[[], object] | None = None) -> Iterator[Event]:
        """Follow the live stream (blocking generator) of some runs, or of a sweep's; keep-alives are skipped.
        `on_open` is called once the server has taken the stream's position: every change committed after that
        call is delivered, so a script can subscribe first and then start what it wants to watch."""
        params: dict[str, Any] = {"run_id": list(run_ids)} if run_ids else {}
        if sweep is not None:
            params["sweep"] = sweep
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", "/api/v1/events", params=params, headers=headers,
                              timeout=httpx.Timeout(timeout, connect=10.0)) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ClientError("GET", "/api/v1/events", resp.status_code, resp.text)
            if on_open is not None:
                on_open()
            yield from parse_sse(resp.iter_lines())


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(event_id, kind, json.loads("\n".join(data)))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
