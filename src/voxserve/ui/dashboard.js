// Dashboard: polls `/diagnostics/live` while shown; throughput, TTFA, queue and CPU over the last minutes, the
// bottleneck findings in words, and the in-process benchmark on demand.

import { clearError, getJson, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const QUEUE_POINTS = 150; // the queue is sampled by the page itself: five minutes of polls

let timer = null;
const queueSeries = [];

export function setUpDashboard() {
  document.addEventListener("view-shown", (event) => {
    clearInterval(timer);
    timer = null;
    if (event.detail === "view-dashboard") {
      poll();
      timer = setInterval(poll, POLL_MS);
    }
  });
  $("bench-run").addEventListener("click", benchmark);
}

async function poll() {
  try {
    const live = await getJson("/diagnostics/live?bucket_s=5");
    clearError($("dash-error"));
    render(live);
  } catch (failure) {
    showError($("dash-error"), failure);
  }
}

function render(live) {
  const window = live.window;
  $("dash-requests").value = String(window.requests + window.errors);
  $("dash-requests").dataset.count = String(window.requests);
  const latest = live.timeline.slice(-2);
  const throughput = latest.reduce((sum, point) => sum + point.audio_s_per_s, 0) / Math.max(latest.length, 1);
  $("dash-throughput").value = throughput.toFixed(2);
  $("dash-ttfa").value = `${ms(window.ttfa_p50_s)} / ${ms(window.ttfa_p95_s)}`;
  $("dash-queue").value = String(live.queue.depth_segments);
  $("dash-cpu").value = live.cpu ? `${live.cpu.process_cores.toFixed(2)} of ${live.cpu.cores}` : "–";
  $("dash-gpu").value = live.gpus.length
    ? live.gpus.map((gpu) => `${gpu.name}: ${gpu.utilization ?? "?"}%`).join(", ")
    : "none";
  queueSeries.push(live.queue.depth_segments);
  if (queueSeries.length > QUEUE_POINTS) queueSeries.shift();
  chart("chart-throughput", live.timeline.map((point) => point.audio_s_per_s), "audio s per s");
  chart("chart-ttfa", live.timeline.map((point) => (point.ttfa_p95_s == null ? null : point.ttfa_p95_s * 1000)), "ms");
  chart("chart-queue", queueSeries, "segments", QUEUE_POINTS);
  chart("chart-cpu", live.timeline.map((point) => point.cpu_cores), "cores");
  $("gpu-chart").hidden = !live.gpus.length;
  if (live.gpus.length) chart("chart-gpu", live.timeline.map((point) => point.gpu_utilization), "%");
  const findings = live.findings.map((finding) => {
    const item = document.createElement("li");
    const summary = document.createElement("strong");
    summary.textContent = `${finding.severity}: ${finding.summary}`;
    item.append(summary, document.createTextNode(` — ${finding.action}`));
    return item;
  });
  if (!findings.length) {
    const item = document.createElement("li");
    item.textContent = "Nothing to report: no request in the window yet.";
    findings.push(item);
  }
  $("dash-findings").replaceChildren(...findings);
}

function ms(seconds) {
  return seconds == null ? "–" : `${Math.round(seconds * 1000)} ms`;
}

// A line over the series (gaps where a point is null), scaled to its own maximum, labelled for screen readers.
// `slots` x positions, the newest at the right edge (a series still filling up starts part way across).
function chart(id, values, unit, slots = values.length) {
  const canvas = $(id);
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const present = values.filter((value) => value != null);
  const top = Math.max(...present, 1e-9);
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#c9d1db";
  context.beginPath();
  context.moveTo(0, height - 0.5);
  context.lineTo(width, height - 0.5);
  context.stroke();
  context.strokeStyle = "#0b5cad";
  context.lineWidth = 2;
  context.beginPath();
  let drawing = false;
  const xOf = (index) => (slots > 1 ? ((slots - values.length + index) / (slots - 1)) * width : width);
  values.forEach((value, index) => {
    if (value == null) {
      drawing = false;
      return;
    }
    const x = xOf(index);
    const y = height - 4 - (value / top) * (height - 16);
    if (drawing) context.lineTo(x, y);
    else context.moveTo(x, y);
    drawing = true;
  });
  context.stroke();
  context.fillStyle = "#0b5cad";
  values.forEach((value, index) => {
    if (value == null) return;
    context.fillRect(xOf(index) - 2, height - 6 - (value / top) * (height - 16), 4, 4);
  });
  context.fillStyle = "#1b1f24";
  context.font = "12px system-ui, sans-serif";
  context.fillText(`max ${formatNumber(present.length ? top : 0)} ${unit}`, 6, 14);
  const last = present.length ? present[present.length - 1] : null;
  canvas.setAttribute("aria-label", last == null ? `no data yet (${unit})` : `latest ${formatNumber(last)} ${unit}`);
}

function formatNumber(value) {
  return value >= 100 ? String(Math.round(value)) : value.toFixed(2);
}

async function benchmark() {
  const button = $("bench-run");
  const result = $("bench-result");
  clearError($("dash-error"));
  button.disabled = true;
  result.replaceChildren(...entry("Status", "running for 5 s…"));
  try {
    const report = await getJson("/diagnostics/benchmark", {
      method: "POST", json: { seconds: 5, concurrency: Number($("bench-concurrency").value), response_format: "wav" },
    });
    result.replaceChildren(
      ...[
        ["Requests", report.requests],
        ["Audio made", `${report.audio_s} s in ${report.wall_s} s (${report.audio_s_per_s} s per s)`],
        ["Real-time factor", report.rtf],
        ["Characters per second", report.chars_per_s],
        ["Latency p50 / p95", `${ms(report.latency_p50_s)} / ${ms(report.latency_p95_s)}`],
        ["TTFA p50", ms(report.ttfa_p50_s)],
        ["Busiest stage", busiest(report.stage_shares)],
      ].flatMap(([name, value]) => entry(name, value)),
    );
  } catch (failure) {
    result.replaceChildren();
    showError($("dash-error"), failure);
  } finally {
    button.disabled = false;
  }
}

function busiest(shares) {
  const [stage, share] = Object.entries(shares).sort((a, b) => b[1] - a[1])[0] || ["–", 0];
  return `${stage} (${Math.round(share * 100)}% of busy time)`;
}

function entry(name, value) {
  const term = document.createElement("dt");
  term.textContent = name;
  const detail = document.createElement("dd");
  detail.textContent = String(value ?? "–");
  return [term, detail];
}
