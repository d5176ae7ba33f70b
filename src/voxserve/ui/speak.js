// Speak: one request as Server-Sent Events (audio deltas, word timestamps, then the request's timing), played
// as it arrives, its words highlighted as they are spoken, its time drawn as a waterfall.

import { clearError, readEvents, request, showError, streamError } from "./api.js";
import { MediaPlayer, PCM_RATE_HZ, PcmPlayer, base64Bytes, mimeOf, wavBlob } from "./audio.js";

const MAX_WATERFALL_ROWS = 120;
const SMALL_SPAN = 0.005; // of the whole request: such spans are drawn only for a stage's first

const $ = (id) => document.getElementById(id);

let current = null; // { controller, player, frame }

export function setUpSpeak() {
  $("speak-form").addEventListener("submit", (event) => {
    event.preventDefault();
    speak();
  });
  $("speak-stop").addEventListener("click", stop);
}

function stop() {
  if (!current) return;
  current.controller.abort();
  current.player?.stop();
  cancelAnimationFrame(current.frame);
  current = null;
}

async function speak() {
  stop();
  const status = $("speak-status");
  const error = $("speak-error");
  const download = $("speak-download");
  clearError(error);
  download.hidden = true;
  $("speak-words").replaceChildren();
  $("speak-waterfall").replaceChildren();
  const format = $("speak-format").value;
  const text = $("speak-text").value;
  const body = {
    model: "tts-1", input: text, voice: $("speak-voice").value, response_format: format,
    speed: Number($("speak-speed").value), stream_format: "sse", timestamps: "word",
  };
  const controller = new AbortController();
  const session = { controller, player: null, frame: 0 };
  current = session;
  const sentAt = performance.now();
  status.textContent = "Speaking…";
  $("speak-audio").hidden = format === "pcm";
  try {
    const response = await request("/v1/audio/speech", { method: "POST", json: body, signal: controller.signal });
    const player = format === "pcm" ? new PcmPlayer() : new MediaPlayer($("speak-audio"), format);
    session.player = player;
    await player.start();
    const pieces = [];
    const words = [];
    let firstByteMs = null;
    let done = null;
    highlight(session, words);
    await readEvents(response, (event) => {
      if (event.type === "speech.audio.delta") {
        const bytes = base64Bytes(event.audio);
        firstByteMs ??= performance.now() - sentAt;
        pieces.push(bytes);
        player.push(bytes);
      } else if (event.type === "speech.audio.timestamps") {
        words.push(...showWords(event.words, text));
      } else if (event.type === "speech.audio.done") {
        done = event;
      } else if (event.type === "error") {
        throw streamError(event);
      }
    });
    if (format !== "pcm") player.end();
    if (!done) throw new Error("the stream ended before the server finished");
    const blob = format === "pcm" ? wavBlob(pieces, PCM_RATE_HZ) : new Blob(pieces, { type: mimeOf(format) });
    download.href = URL.createObjectURL(blob);
    download.download = `voxserve-speech.${format === "pcm" ? "wav" : format}`;
    download.hidden = false;
    drawWaterfall(done.timing);
    const audioS = done.usage.audio_seconds;
    const decoded = await decodedSeconds(player, format);
    status.textContent =
      `${audioS.toFixed(2)} s of audio; first audio ${ms(done.timing.time_to_first_audio_s)} at the server, ` +
      `${Math.round(firstByteMs)} ms here; whole request ${ms(done.timing.total_s)}.`;
    status.dataset.audioSeconds = String(audioS);
    status.dataset.decodedSeconds = String(decoded);
    status.dataset.playback = player.state;
  } catch (failure) {
    if (failure.name === "AbortError") {
      status.textContent = "Stopped.";
      return;
    }
    status.textContent = "";
    showError(error, failure);
  }
}

async function decodedSeconds(player, format) {
  if (format === "pcm" || !player.streaming) return player.decodedSeconds;
  const element = player.element;
  if (!Number.isFinite(element.duration)) {
    await new Promise((resolve) => element.addEventListener("durationchange", resolve, { once: true }));
  }
  return player.decodedSeconds;
}

function ms(seconds) {
  return seconds == null ? "–" : `${Math.round(seconds * 1000)} ms`;
}

// Each timed word as a span of the input text; returns `{span, start, end}` for the highlighter.
function showWords(timed, text) {
  const line = $("speak-words");
  return timed.map((word) => {
    const span = document.createElement("span");
    span.textContent = text.slice(word.char_start, word.char_end) || word.text;
    line.append(span, " ");
    return { span, start: word.start, end: word.end };
  });
}

function highlight(session, words) {
  const tick = () => {
    const at = session.player ? session.player.position : -1;
    for (const word of words) word.span.classList.toggle("spoken", at >= word.start && at < word.end);
    session.frame = requestAnimationFrame(tick);
  };
  session.frame = requestAnimationFrame(tick);
}

// Every span the server recorded for the request, on one time axis, and a mark where the first audio left.
function drawWaterfall(timing) {
  const list = $("speak-waterfall");
  const total = Math.max(timing.total_s, 1e-6);
  const seen = new Set();
  const shown = timing.spans.filter((span) => {
    const first = !seen.has(span.stage);
    seen.add(span.stage);
    return first || span.duration_s / total >= SMALL_SPAN;
  });
  const rows = shown.slice(0, MAX_WATERFALL_ROWS).map((span) =>
    row(spanLabel(span), span.stage, span.start_s / total, span.duration_s / total, span.duration_s),
  );
  if (timing.time_to_first_audio_s != null) {
    rows.push(row("first audio", "ttfa", timing.time_to_first_audio_s / total, 0, timing.time_to_first_audio_s));
  }
  rows.push(row("total", "total", 0, 1, timing.total_s));
  list.replaceChildren(...rows);
}

function spanLabel(span) {
  if (span.segment != null) return `${span.stage} #${span.segment + 1}`;
  if (span.stage === "model" && span.chars != null) return `model, ${span.chars} chars${span.window ? " (window)" : ""}`;
  return span.stage;
}

function row(label, stage, start, width, seconds) {
  const item = document.createElement("li");
  item.dataset.stage = stage;
  const name = document.createElement("span");
  name.textContent = label;
  const track = document.createElement("span");
  track.className = "track";
  const bar = document.createElement("span");
  bar.className = `bar ${stage}`;
  bar.style.left = `${(start * 100).toFixed(2)}%`;
  if (width > 0) bar.style.width = `${(width * 100).toFixed(2)}%`;
  track.append(bar);
  const duration = document.createElement("span");
  duration.className = "duration";
  duration.textContent = `${(seconds * 1000).toFixed(1)} ms`;
  item.append(name, track, duration);
  return item;
}
