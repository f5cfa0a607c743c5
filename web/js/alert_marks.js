// How alerts are drawn on the charts (run page, compare page) and counted on the runs table: a critical alert
// (a turning point, a critical rule) is a solid red ▼ with a dashed line, a warning (an "instability" the
// detector could not corroborate, a warning rule) a hollow amber ▽ with a dotted line whose hover text says what
// was missing. Pure (no DOM, no Plotly), unit-tested under node.

const STYLES = {
  critical: { color: "#c62828", symbol: "triangle-down", dash: "dash", glyph: "▼" },
  warning: { color: "#e69500", symbol: "triangle-down-open", dash: "dot", glyph: "▽" },
};

/** The drawing style of a severity (anything but "warning" is drawn as critical: info rules are rare). */
export const alertStyle = (severity) => STYLES[severity === "warning" ? "warning" : "critical"];

/** Alerts (rows of GET /alerts) → marks {x, severity, text}; `x(step)` maps a step onto the chart's axis. */
export function alertMarks(alerts, x, { label = "", formatStep = String } = {}) {
  return alerts.filter((a) => a.step != null).map((a) => {
    const severity = a.severity === "warning" ? "warning" : "critical";
    const who = label ? `${label}: ` : "";
    const head = `${alertStyle(severity).glyph} ${who}${a.rule} (${severity}) at step ${formatStep(a.step)}`;
    return { x: x(a.step), severity, text: `${head}<br>${String(a.explanation || "").slice(0, 240)}` };
  });
}

/** Plotly scatter traces of the markers, one per severity, on the hidden 0–1 axis `y2`. */
export function alertTraces(marks) {
  return ["critical", "warning"].map((severity) => {
    const mine = marks.filter((m) => m.severity === severity);
    const style = alertStyle(severity);
    return { type: "scatter", x: mine.map((m) => m.x), y: mine.map(() => 1), yaxis: "y2", mode: "markers",
      name: `alerts (${severity})`, hovertext: mine.map((m) => m.text), hoverinfo: "text", showlegend: false,
      marker: { symbol: style.symbol, size: 11, color: style.color, line: { width: 1.5, color: style.color } },
      cliponaxis: false };
  }).filter((t) => t.x.length);
}

/** Plotly vertical-line shapes, one per mark (named "alert", with the severity). */
export const alertShapes = (marks) => marks.map((m) => ({
  type: "line", xref: "x", yref: "paper", x0: m.x, x1: m.x, y0: 0, y1: 1, name: "alert", severity: m.severity,
  line: { color: alertStyle(m.severity).color, width: 1.5, dash: alertStyle(m.severity).dash },
}));

/** A run summary (GET /summaries) → {critical, warning}; an alert of another severity counts as critical. */
export function severityCounts(summary) {
  const by = (summary && summary.alerts_by_severity) || {};
  const warning = by.warning || 0;
  const total = summary ? summary.alerts || 0 : 0;
  return { critical: Math.max(0, total - warning), warning };
}

/** A summary after a live `alert` event: the total and the per-severity count move together. */
export function countAlert(summary, alert) {
  const by = { ...(summary.alerts_by_severity || {}) };
  by[alert.severity] = (by[alert.severity] || 0) + 1;
  return { ...summary, alerts: (summary.alerts || 0) + 1, alerts_by_severity: by, last_alert: alert };
}
