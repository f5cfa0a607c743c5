// Alert drawing logic (web/js/alert_marks.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { alertMarks, alertShapes, alertStyle, alertTraces, countAlert, severityCounts }
  from "../../../web/js/alert_marks.js";

const alerts = [
  { id: 1, rule: "instability", severity: "warning", step: 100,
    explanation: "Not a turning point: no angle jump within 4 epochs. Instability at step 90: …" },
  { id: 2, rule: "turning point", severity: "critical", step: 300, explanation: "Turning point at step 280: …" },
  { id: 3, rule: "stalled", severity: "critical", step: null, explanation: "no new step" },
];

test("criticals are solid red with a dashed line, warnings hollow amber with a dotted one", () => {
  const marks = alertMarks(alerts, (s) => s / 100);
  assert.deepEqual(marks.map((m) => [m.x, m.severity]), [[1, "warning"], [3, "critical"]]);
  assert.match(marks[0].text, /^▽ instability \(warning\) at step 100<br>Not a turning point: no angle jump/);
  assert.match(marks[1].text, /^▼ turning point \(critical\)/);
  const [critical, warning] = alertTraces(marks);
  assert.equal(critical.marker.symbol, "triangle-down");
  assert.equal(warning.marker.symbol, "triangle-down-open");
  assert.deepEqual(warning.hovertext, [marks[0].text]);
  const shapes = alertShapes(marks);
  assert.deepEqual(shapes.map((s) => [s.name, s.x0, s.line.dash]), [["alert", 1, "dot"], ["alert", 3, "dash"]]);
  assert.equal(shapes[0].line.color, alertStyle("warning").color);
  assert.notEqual(shapes[0].line.color, shapes[1].line.color);
});

test("a label names the run on the compare page; no alerts, no traces", () => {
  assert.match(alertMarks([alerts[1]], (s) => s, { label: "seed 3" })[0].text, /^▼ seed 3: turning point/);
  assert.deepEqual(alertTraces([]), []);
});

test("runs-table counts per severity, live events keep them in step", () => {
  assert.deepEqual(severityCounts({ alerts: 3, alerts_by_severity: { critical: 1, warning: 2 } }),
    { critical: 1, warning: 2 });
  assert.deepEqual(severityCounts({ alerts: 2 }), { critical: 2, warning: 0 }); // an older server
  assert.deepEqual(severityCounts(undefined), { critical: 0, warning: 0 });
  const after = countAlert({ alerts: 1, alerts_by_severity: { critical: 1 } }, alerts[0]);
  assert.deepEqual(severityCounts(after), { critical: 1, warning: 1 });
  assert.equal(after.last_alert, alerts[0]);
});
