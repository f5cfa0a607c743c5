// Which series each chart shows (DESIGN.md metric keys). Pure, unit-tested under node.

export const G_COLOR = "#0072B2";
export const D_COLOR = "#D55E00";

/** The run page's charts. `gl`: WebGL (per-step series, long); others are SVG (a point per checkpoint). */
export const RUN_CHARTS = [
  {
    id: "stability", title: "S · angle between successive weights (rad, log)", log: true, gl: true, traces: [
      { key: "angle/G", label: "G per step", color: G_COLOR },
      { key: "angle/D", label: "D per step", color: D_COLOR },
      { key: "angle_epoch/G", label: "G per epoch", color: G_COLOR, dash: "dot", markers: true },
      { key: "angle_epoch/D", label: "D per epoch", color: D_COLOR, dash: "dot", markers: true },
    ],
  },
  { id: "quality", title: "Q · quality (mean detector probability)", traces: [
    { key: "eval/quality", label: "Q", color: "#009E73", markers: true }] },
  { id: "diversity", title: "D · diversity (James–Stein entropy, nats)", ceiling: true, traces: [
    { key: "eval/diversity", label: "D", color: "#CC79A7", markers: true },
    { key: "eval/diversity_plugin", label: "plug-in", color: "#999999", dash: "dot", markers: true }] },
  { id: "fid", title: "FID (lower is better)", traces: [
    { key: "eval/fid", label: "FID", color: "#332288", markers: true }] },
  { id: "losses", title: "Losses", gl: true, traces: [
    { key: "loss/D", label: "D", color: D_COLOR },
    { key: "loss/G", label: "G", color: G_COLOR }] },
];

/** What the compare page overlays, one chart per key, one trace per run. */
export const COMPARE_CHARTS = [
  { key: "angle/G", title: "S · angle/G (rad, log)", log: true, gl: true },
  { key: "angle/D", title: "S · angle/D (rad, log)", log: true, gl: true },
  { key: "eval/quality", title: "Q · quality", markers: true },
  { key: "eval/diversity", title: "D · diversity (nats)", markers: true, ceiling: true },
  { key: "eval/fid", title: "FID", markers: true },
  { key: "loss/D", title: "loss/D", gl: true },
  { key: "loss/G", title: "loss/G", gl: true },
];

/** The summary columns of the runs table. */
export const SUMMARY_KEYS = ["eval/quality", "eval/diversity", "eval/fid"];

export const RUN_CHART_KEYS = RUN_CHARTS.flatMap((c) => c.traces.map((t) => t.key));

/** Keys the run has that no fixed chart shows (user metrics, grad norms, modes covered…), sorted; the system
 * metrics (`sys/…`) have their own tab. */
export function otherKeys(keys) {
  const shown = new Set(RUN_CHART_KEYS);
  return keys.filter((k) => !shown.has(k) && !k.startsWith(SYS_PREFIX)).sort();
}

export const SYS_PREFIX = "sys/";

/** The System tab's charts (units as sqd.trainer.system_metrics writes them); `gpu`: one trace per GPU. */
export const SYSTEM_CHARTS = [
  { id: "sys-gpu-util", title: "GPU utilisation (%)", gpu: "util" },
  { id: "sys-gpu-mem", title: "GPU memory used (GiB)", gpu: "mem_used" },
  { id: "sys-gpu-power", title: "GPU power (W)", gpu: "power" },
  { id: "sys-gpu-temp", title: "GPU temperature (°C)", gpu: "temp" },
  { id: "sys-cpu", title: "Process CPU (% of one core)", key: "sys/cpu" },
  { id: "sys-rss", title: "Process memory, RSS (GiB)", key: "sys/rss" },
  { id: "sys-step-time", title: "Step time (ms)", key: "sys/step_time" },
  { id: "sys-samples", title: "Samples per second", key: "sys/samples_per_s" },
];

const GPU_KEY = /^sys\/gpu(\d+)\/(\w+)$/;

/** The System charts that have data among `keys`: [{chart, traces: [{key, label}]}], GPUs in index order. */
export function systemCharts(keys) {
  const gpus = new Map();
  for (const k of keys) {
    const m = GPU_KEY.exec(k);
    if (m) gpus.set(k, { index: Number(m[1]), metric: m[2] });
  }
  return SYSTEM_CHARTS.map((chart) => {
    const traces = chart.gpu
      ? [...gpus.entries()].filter(([, g]) => g.metric === chart.gpu).sort((a, b) => a[1].index - b[1].index)
        .map(([key, g]) => ({ key, label: `GPU ${g.index}` }))
      : keys.includes(chart.key) ? [{ key: chart.key, label: chart.title }] : [];
    return { chart, traces };
  }).filter((c) => c.traces.length);
}

// modes of the evaluation datasets: 10³ stacked digits (SPEC §7), 10,177 CelebA identities (SPEC §1)
const MODES_BY_DATASET = { stacked_digits: 1000, celeba: 10177 };
const MODES_BY_PROFILE = { digits: 1000, faces: 10177 };

/**
 * m, the number of modes the diversity is measured over, so the D chart can draw its ceiling ln m: from an
 * evaluation that reports it (`modes_total`), else from the run's dataset or evaluation profile; null if unknown.
 */
export function modeCount(run, evaluations = []) {
  for (const e of evaluations) {
    const m = e.metrics && (e.metrics.modes_total ?? e.metrics["eval/modes_total"]);
    if (typeof m === "number" && m > 1) return m;
  }
  const cfg = (run && run.config) || {};
  return MODES_BY_DATASET[cfg.dataset && cfg.dataset.name] || MODES_BY_PROFILE[cfg.eval && cfg.eval.profile] || null;
}
