// Voices: register a custom voice from a file or the microphone, list and delete custom voices, and convert a
// recording to a voice, the result beside the original.

import { clearError, getJson, request, showError } from "./api.js";
import { catalog, customVoices } from "./catalog.js";

const $ = (id) => document.getElementById(id);

let recorded = null; // the microphone recording, a Blob
let recorder = null;

export function setUpVoices(reloadVoices) {
  $("voice-form").addEventListener("submit", (event) => {
    event.preventDefault();
    register(reloadVoices);
  });
  $("voice-record").addEventListener("click", toggleRecording);
  $("voice-file").addEventListener("change", () => {
    recorded = null;
    $("voice-recording").hidden = true;
  });
  $("convert-form").addEventListener("submit", (event) => {
    event.preventDefault();
    convert();
  });
  $("convert-file").addEventListener("change", () => {
    const file = $("convert-file").files[0];
    if (file) $("convert-original").src = URL.createObjectURL(file);
  });
  document.addEventListener("voices-changed", () => listVoices(reloadVoices));
}

async function toggleRecording() {
  const button = $("voice-record");
  if (recorder) {
    recorder.stop();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      recorded = new Blob(chunks, { type: recorder.mimeType });
      recorder = null;
      $("voice-file").value = "";
      $("voice-recording").src = URL.createObjectURL(recorded);
      $("voice-recording").hidden = false;
      button.textContent = "Record from microphone";
      $("voice-status").textContent = "Recorded. Register it, or record again.";
    });
    recorder.start();
    button.textContent = "Stop recording";
    $("voice-status").textContent = "Recording… speak for at least a few seconds.";
  } catch (error) {
    showError($("voice-error"), new Error(`the microphone is not available: ${error.message}`));
  }
}

async function register(reloadVoices) {
  const error = $("voice-error");
  const status = $("voice-status");
  clearError(error);
  const form = new FormData();
  form.append("name", $("voice-name").value);
  const file = $("voice-file").files[0];
  if (file) form.append("file", file);
  else if (recorded) form.append("file", recorded, "microphone.webm");
  status.textContent = "Analysing the recording…";
  $("voice-register").disabled = true;
  try {
    const voice = await getJson("/v1/audio/voices", { method: "POST", form });
    status.textContent = `Registered "${voice.name}" as ${voice.id}.`;
    $("voice-form").reset();
    recorded = null;
    $("voice-recording").hidden = true;
    await reloadVoices();
  } catch (failure) {
    status.textContent = "";
    showError(error, failure);
  } finally {
    $("voice-register").disabled = false;
  }
}

function listVoices(reloadVoices) {
  const voices = customVoices();
  const rows = voices.map((voice) => {
    const row = document.createElement("tr");
    row.dataset.voice = voice.id;
    const cells = [voice.name, voice.id, `${voice.reference_seconds.toFixed(1)} s`, "…"].map((text) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      return cell;
    });
    const actions = document.createElement("td");
    actions.className = "actions";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete voice ${voice.name}`);
    remove.addEventListener("click", () => deleteVoice(voice, reloadVoices));
    actions.append(remove);
    row.append(...cells, actions);
    showPitch(voice.id, cells[3]);
    return row;
  });
  $("voice-table").tBodies[0].replaceChildren(...rows);
  $("voice-empty").hidden = voices.length > 0;
}

async function showPitch(id, cell) {
  try {
    const voice = await getJson(`/v1/audio/voices/${encodeURIComponent(id)}`);
    const f0 = voice.features?.f0_median_hz;
    cell.textContent = f0 ? `${Math.round(f0)} Hz` : "–";
  } catch {
    cell.textContent = "–";
  }
}

async function deleteVoice(voice, reloadVoices) {
  clearError($("voice-error"));
  try {
    await request(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
    $("voice-status").textContent = `Deleted "${voice.name}".`;
    await reloadVoices();
  } catch (failure) {
    showError($("voice-error"), failure);
  }
}

async function convert() {
  const error = $("convert-error");
  const status = $("convert-status");
  clearError(error);
  const form = new FormData();
  const file = $("convert-file").files[0];
  if (file) form.append("file", file);
  form.append("voice", $("convert-voice").value || catalog.defaultVoice);
  form.append("response_format", "wav");
  form.append("stream", "false");
  status.textContent = "Converting…";
  $("convert-button").disabled = true;
  try {
    const response = await request("/v1/audio/conversions", { method: "POST", form });
    $("convert-result").src = URL.createObjectURL(await response.blob());
    status.textContent = "Converted: play both to compare.";
  } catch (failure) {
    status.textContent = "";
    showError(error, failure);
  } finally {
    $("convert-button").disabled = false;
  }
}
