// Jobs: submit a text file as a long-form job, follow each running job's progress events, download results.

import { clearError, fetchBlobUrl, getJson, readEvents, request, showError } from "./api.js";
import { catalog } from "./catalog.js";

const $ = (id) => document.getElementById(id);
const JOBS_SHOWN = 20;
const watched = new Map(); // job id -> AbortController of its event stream

export function setUpJobs() {
  $("job-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  document.addEventListener("view-shown", (event) => {
    if (event.detail === "view-jobs") listJobs();
  });
}

async function submit() {
  const error = $("job-error");
  clearError(error);
  const form = new FormData();
  const file = $("job-file").files[0];
  if (file) form.append("file", file);
  form.append("voice", $("job-voice").value || catalog.defaultVoice);
  form.append("response_format", $("job-format").value);
  $("job-submit").disabled = true;
  try {
    const job = await getJson("/v1/audio/jobs", { method: "POST", form });
    $("job-form").reset();
    await listJobs();
    watch(job.id);
  } catch (failure) {
    showError(error, failure);
  } finally {
    $("job-submit").disabled = false;
  }
}

async function listJobs() {
  try {
    const list = await getJson(`/v1/audio/jobs?limit=${JOBS_SHOWN}`);
    $("job-table").tBodies[0].replaceChildren(...list.data.map(jobRow));
    $("job-empty").hidden = list.data.length > 0;
    for (const job of list.data) if (!finished(job)) watch(job.id);
  } catch (failure) {
    showError($("job-error"), failure);
  }
}

function finished(job) {
  return ["completed", "failed", "cancelled"].includes(job.status);
}

// The job's Server-Sent Events, each one redrawing its row, until it finishes.
async function watch(id) {
  if (watched.has(id)) return;
  const controller = new AbortController();
  watched.set(id, controller);
  try {
    const response = await request(`/v1/audio/jobs/${encodeURIComponent(id)}/events`, { signal: controller.signal });
    await readEvents(response, (event) => {
      if (event.job && event.job.status) update(event.job);
    });
  } catch (failure) {
    if (failure.name !== "AbortError") showError($("job-error"), failure);
  } finally {
    watched.delete(id);
  }
}

function update(job) {
  const body = $("job-table").tBodies[0];
  const old = body.querySelector(`tr[data-job="${CSS.escape(job.id)}"]`);
  const row = jobRow(job);
  if (old) old.replaceWith(row);
  else body.prepend(row);
  $("job-empty").hidden = true;
}

function jobRow(job) {
  const row = document.createElement("tr");
  row.dataset.job = job.id;
  row.dataset.status = job.status;
  const progress = job.progress;
  const name = cell(job.title || job.id);
  const status = cell(job.error ? `${job.status}: ${job.error.message || job.error}` : job.status);
  const bar = document.createElement("progress");
  bar.max = progress.segments_total || 1;
  bar.value = progress.segments_done;
  bar.setAttribute("aria-label", `Progress of ${job.title || job.id}`);
  const eta = progress.eta_seconds != null ? `, about ${Math.ceil(progress.eta_seconds)} s left` : "";
  const progressCell = cell(` ${progress.segments_done}/${progress.segments_total} segments${eta}`);
  progressCell.prepend(bar);
  const audio = cell(`${(progress.audio_seconds / 60).toFixed(1)} min`);
  const actions = document.createElement("td");
  actions.className = "actions";
  if (job.status === "completed") actions.append(button("Download", `Download ${job.id}`, () => download(job)));
  if (!finished(job)) actions.append(button("Cancel", `Cancel ${job.id}`, () => act(job, "cancel")));
  actions.append(button("Delete", `Delete ${job.id}`, () => act(job, "delete")));
  row.append(name, status, progressCell, audio, actions);
  return row;
}

function cell(text) {
  const element = document.createElement("td");
  element.textContent = text;
  return element;
}

function button(text, label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}

async function download(job) {
  try {
    const link = document.createElement("a");
    link.href = await fetchBlobUrl(`/v1/audio/jobs/${encodeURIComponent(job.id)}/audio`);
    link.download = `${job.title || job.id}.${job.response_format}`;
    link.click();
  } catch (failure) {
    showError($("job-error"), failure);
  }
}

async function act(job, action) {
  clearError($("job-error"));
  const path = `/v1/audio/jobs/${encodeURIComponent(job.id)}`;
  try {
    await request(action === "cancel" ? `${path}/cancel` : path, { method: action === "cancel" ? "POST" : "DELETE" });
    watched.get(job.id)?.abort();
    await listJobs();
  } catch (failure) {
    showError($("job-error"), failure);
  }
}
