// Live text: a WebSocket session (`/v1/audio/speech/stream`); what the user types is appended as it is typed,
// and the server speaks each sentence once it is complete. Audio arrives as binary PCM frames.

import { ApiError, apiKey, clearError, showError } from "./api.js";
import { catalog } from "./catalog.js";
import { PcmPlayer } from "./audio.js";

const $ = (id) => document.getElementById(id);

let socket = null;
let player = null;
let sent = 0; // characters of the text box already sent

export function setUpLive() {
  $("live-connect").addEventListener("click", connect);
  $("live-close").addEventListener("click", () => socket?.close(1000));
  $("live-flush").addEventListener("click", () => send({ type: "input_text.flush" }));
  $("live-end").addEventListener("click", () => send({ type: "input_text.end" }));
  $("live-cancel").addEventListener("click", () => {
    send({ type: "response.cancel" });
    resetPlayer();
  });
  $("live-text").addEventListener("input", appendTyped);
  $("live-voice").addEventListener("change", () => {
    send({ type: "session.update", session: { voice: $("live-voice").value, response_format: "pcm" } });
    resetPlayer();
  });
}

function connect() {
  if (socket) return;
  clearError($("live-error"));
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const protocols = ["voxserve"];
  // A browser cannot set headers on a WebSocket: the key travels as a subprotocol.
  if (apiKey()) protocols.push(`voxserve-key.${apiKey()}`);
  socket = new WebSocket(`${scheme}://${location.host}/v1/audio/speech/stream`, protocols);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    send({ type: "session.update", session: { voice: $("live-voice").value || catalog.defaultVoice, response_format: "pcm" } });
    connected(true);
  });
  socket.addEventListener("message", (event) => {
    if (event.data instanceof ArrayBuffer) {
      player ??= startPlayer();
      player.push(new Uint8Array(event.data));
    } else {
      onEvent(JSON.parse(event.data));
    }
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    connected(false);
    if (event.code !== 1000 && event.code !== 1005 && $("live-error").hidden) {
      showError($("live-error"), new ApiError(`the connection closed (code ${event.code})`, 0));
    }
  });
}

function startPlayer() {
  const created = new PcmPlayer();
  created.start();
  return created;
}

function resetPlayer() {
  player?.stop();
  player = null;
}

function connected(open) {
  $("live-status").textContent = open ? "Connected: type, and the server speaks each finished sentence." : "Not connected.";
  $("live-connect").disabled = open;
  for (const id of ["live-flush", "live-end", "live-cancel", "live-close", "live-text"]) $(id).disabled = !open;
  if (open) {
    sent = $("live-text").value.length;
    $("live-text").focus();
  }
}

function send(event) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(event));
}

// Only text added at the end can be sent: what was spoken cannot be unsaid. An edit earlier in the box moves the
// mark back, and the next sentence starts from there.
function appendTyped() {
  const text = $("live-text").value;
  if (text.length < sent) sent = text.length;
  if (text.length > sent) {
    send({ type: "input_text.append", text: text.slice(sent) });
    sent = text.length;
  }
}

function onEvent(event) {
  const list = $("live-segments");
  if (event.type === "segment.started") {
    const item = document.createElement("li");
    item.textContent = event.text;
    item.dataset.response = event.response_id;
    item.dataset.segment = event.segment;
    for (const other of list.querySelectorAll("li.playing")) other.classList.remove("playing");
    item.classList.add("playing");
    list.append(item);
  } else if (event.type === "segment.done") {
    const item = list.querySelector(`li[data-response="${CSS.escape(event.response_id)}"][data-segment="${event.segment}"]`);
    item?.classList.remove("playing");
  } else if (event.type === "done") {
    for (const other of list.querySelectorAll("li.playing")) other.classList.remove("playing");
    $("live-status").textContent = `Spoken: ${event.usage?.audio_seconds?.toFixed?.(2) ?? "?"} s of audio (${event.status}).`;
  } else if (event.type === "error") {
    showError($("live-error"), new ApiError(event.error?.message || "the session failed", 0, event.error?.code));
  }
}
