// The REST client: JSON in and out, the bearer token on every call when signed in, errors as ApiError with the
// server's `detail` (a string, or the 422 list of {loc, msg}). A 401 also tells the page to show how to sign in.

import { getToken } from "./auth.js";

const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, detail, method, path) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.method = method;
    this.path = path;
  }
}

export async function request(method, path, body = undefined) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message})`, method, path);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text.slice(0, 300) };
  }
  if (!resp.ok) {
    const detail = data && data.detail !== undefined ? data.detail : `HTTP ${resp.status}`;
    if (resp.status === 401) {
      window.dispatchEvent(new CustomEvent("sqd:unauthorized", { detail: { method, path, detail } }));
    }
    throw new ApiError(resp.status, detail, method, path);
  }
  return data;
}

const q = (params) => {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => sp.append(k, x));
    else sp.append(k, String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : "";
};
const enc = encodeURIComponent;

export const api = {
  whoami: () => request("GET", "/whoami"),
  runs: (filter) => request("GET", `/runs${q(filter)}`),
  run: (id) => request("GET", `/runs/${enc(id)}`),
  keys: (id) => request("GET", `/runs/${enc(id)}/keys`),
  metrics: (id, keys, maxPoints, start = null, end = null) => request("GET",
    `/runs/${enc(id)}/metrics${q({ keys: keys.join(","), max_points: maxPoints, start, end })}`),
  epochs: (id) => request("GET", `/runs/${enc(id)}/epochs`),
  evaluations: (id) => request("GET", `/runs/${enc(id)}/evaluations`),
  samples: (id) => request("GET", `/runs/${enc(id)}/samples`),
  logs: (id, tail = 300) => request("GET", `/runs/${enc(id)}/logs${q({ tail })}`),
  alerts: (runId, limit = 200) => request("GET", `/alerts${q({ run_id: runId, limit })}`),
  summaries: (ids, keys) => request("GET", `/summaries${q({ run_id: ids.join(","), keys: keys.join(",") })}`),
  presets: () => request("GET", "/presets"),
  launch: (body) => request("POST", "/runs", body),
  cancel: (id) => request("POST", `/runs/${enc(id)}/cancel`, { reason: "cancelled from the dashboard" }),
  updateRun: (id, body) => request("PATCH", `/runs/${enc(id)}`, body),
  deleteRun: (id, hard = false) => request("DELETE", `/runs/${enc(id)}${q({ hard: hard ? "true" : "" })}`),
  restoreRun: (id) => request("POST", `/runs/${enc(id)}/restore`),
  metricKeys: (ids) => request("GET", `/keys${q({ run_id: ids.join(",") })}`),
  sweeps: (limit = 100) => request("GET", `/sweeps${q({ limit })}`),
  sweep: (id) => request("GET", `/sweeps/${enc(id)}`),
  sweepMetrics: (id, keys, maxPoints) => request("GET",
    `/sweeps/${enc(id)}/metrics${q({ keys: keys.join(","), max_points: maxPoints })}`),
  sweepAlerts: (id) => request("GET", `/sweeps/${enc(id)}/alerts`),
  builtinSweeps: () => request("GET", "/sweeps/builtin"),
  createSweep: (body) => request("POST", "/sweeps", body),
  cancelSweep: (id) => request("POST", `/sweeps/${enc(id)}/cancel`, { reason: "sweep cancelled from the dashboard" }),
};
