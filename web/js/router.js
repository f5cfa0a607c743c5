// Hash routes: #/runs, #/run/<id>, #/compare?ids=a,b, #/launch, #/sweeps, #/sweep/<id>. parseRoute / routeHash are
// pure (unit-tested);
// startRouter wires them to the window.

const PAGES = new Set(["runs", "run", "compare", "launch", "sweeps", "sweep"]);
const WITH_ID = new Set(["run", "sweep"]);

/** "#/run/abc?x=1" → {page: "run", id: "abc", params: {x: "1"}}; unknown → the runs page. */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query));
  const page = PAGES.has(parts[0]) ? parts[0] : "runs";
  const route = { page, id: null, params };
  if (WITH_ID.has(page)) {
    if (!parts[1]) return { page: `${page}s`, id: null, params: {} };
    route.id = parts[1];
  }
  if (page === "compare") {
    route.ids = (params.ids || "").split(",").map((s) => s.trim()).filter(Boolean);
  }
  return route;
}

/** The hash for a route: routeHash("run", {id}) → "#/run/<id>"; params become a query (empty ones dropped). */
export function routeHash(page, { id = null, params = {} } = {}) {
  const path = id ? `#/${page}/${encodeURIComponent(id)}` : `#/${page}`;
  const kept = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  if (!kept.length) return path;
  // commas stay readable in ids=a,b
  const query = kept.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v).replace(/%2C/g, ",")}`);
  return `${path}?${query.join("&")}`;
}

/** Call `onRoute(route)` now and on every hash change. */
export function startRouter(onRoute) {
  const fire = () => onRoute(parseRoute(window.location.hash));
  window.addEventListener("hashchange", fire);
  fire();
}
