// Formatting for tables and labels. Pure (no DOM), unit-tested under node.

const NON_FINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A JSON number as the API sends it: NaN and ±inf travel as the strings "NaN", "Infinity", "-Infinity". */
export function toNumber(v) {
  if (typeof v === "number") return v;
  if (typeof v === "string" && v in NON_FINITE) return NON_FINITE[v];
  if (v === null || v === undefined) return NaN;
  const n = Number(v);
  return n;
}

/** A metric value for a table cell: 4 significant digits, small/large in exponent form, NaN/inf spelled out. */
export function formatValue(v) {
  const x = toNumber(v);
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "+inf";
  if (x === -Infinity) return "−inf";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2).replace("e+", "e");
  if (Number.isInteger(x)) return String(x);
  return String(Number(x.toPrecision(4)));
}

/** 1234567 → "1,234,567" (steps, counts). */
export function formatInt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Seconds → "42 s", "3 min 05 s", "2 h 07 min", "3 d 4 h". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Run duration: finished − started, or now − started while it runs; "–" before it starts. */
export function runDuration(run, nowSeconds) {
  if (!run || run.started_at == null) return null;
  const end = run.finished_at != null ? run.finished_at : nowSeconds;
  return Math.max(0, end - run.started_at);
}

/** Epoch seconds → "2025-01-31 14:05" in local time, or "14:05:09" when it is today. */
export function formatTime(epochSeconds, now = new Date()) {
  if (epochSeconds === null || epochSeconds === undefined) return "–";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth()
    && d.getDate() === now.getDate();
  if (sameDay) return `${hm}:${pad(d.getSeconds())}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

/** Epoch seconds → "5 s ago", "3 min ago", … for "updated" hints. */
export function formatAgo(epochSeconds, nowSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "–";
  return `${formatDuration(Math.max(0, nowSeconds - epochSeconds))} ago`;
}

export const STATUSES = ["queued", "running", "cancelling", "finished", "failed", "cancelled"];
export const LIVE_STATUSES = new Set(["queued", "running", "cancelling"]);

/** Step and epoch as the runs table shows them: "12,000 / 7". */
export function formatProgress(run) {
  const step = run.last_step == null ? "–" : formatInt(run.last_step);
  const total = run.steps != null ? ` of ${formatInt(run.steps)}` : "";
  const epoch = run.last_epoch == null ? "" : ` · ep ${run.last_epoch}`;
  return `${step}${total}${epoch}`;
}

/** A 422 `loc` (["body", "overrides", "optim", "lr_g"]) → the field it names ("overrides.optim.lr_g"). */
export function locName(loc) {
  const parts = (loc || []).map(String);
  return (parts[0] === "body" || parts[0] === "query" ? parts.slice(1) : parts).join(".");
}

/** An API error detail (a string, or a 422 list of {loc, msg}) → one readable line. */
export function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => {
      const where = locName(e.loc);
      return where ? `${where}: ${e.msg}` : String(e.msg);
    }).join("; ");
  }
  return JSON.stringify(detail);
}
