// Playing audio while it streams in: 16-bit PCM through Web Audio (each piece scheduled right after the one
// before), or a compressed stream through Media Source where the browser can append it (MP3, AAC); anything
// else plays once it is whole.

const START_DELAY_S = 0.05; // a little headroom so the first piece is not scheduled in the past
export const PCM_RATE_HZ = 24000; // `pcm` is OpenAI's: 24 kHz s16le mono, whatever the voice's own rate

export class PcmPlayer {
  constructor(sampleRate = PCM_RATE_HZ) {
    this.sampleRate = sampleRate;
    this.context = new AudioContext();
    this.nextAt = 0;
    this.firstAt = null;
    this.samples = 0;
    this.leftover = null;
    this.sources = new Set();
  }

  async start() {
    await this.context.resume();
  }

  get state() {
    return this.context.state;
  }

  // Seconds of audio decoded and scheduled so far.
  get decodedSeconds() {
    return this.samples / this.sampleRate;
  }

  // Where playback is, in seconds from the first sample (negative before it starts).
  get position() {
    return this.firstAt === null ? -1 : this.context.currentTime - this.firstAt;
  }

  push(bytes) {
    let data = bytes;
    if (this.leftover) {
      data = new Uint8Array(this.leftover.length + bytes.length);
      data.set(this.leftover);
      data.set(bytes, this.leftover.length);
      this.leftover = null;
    }
    if (data.length % 2) {
      this.leftover = data.slice(data.length - 1);
      data = data.subarray(0, data.length - 1);
    }
    if (!data.length) return;
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    const count = data.length / 2;
    const buffer = this.context.createBuffer(1, count, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) channel[i] = view.getInt16(2 * i, true) / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.nextAt, this.context.currentTime + START_DELAY_S);
    if (this.firstAt === null) this.firstAt = at;
    source.start(at);
    this.nextAt = at + buffer.duration;
    this.samples += count;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.context.close();
  }
}

const STREAMABLE = { mp3: "audio/mpeg", aac: "audio/aac" };

// Compressed audio into an <audio> element: appended as it arrives where Media Source takes the format,
// else set as one blob at the end.
export class MediaPlayer {
  constructor(element, format) {
    this.element = element;
    this.format = format;
    this.pieces = [];
    this.mime = STREAMABLE[format];
    this.streaming = Boolean(this.mime && window.MediaSource && MediaSource.isTypeSupported(this.mime));
    this.pending = [];
    this.ended = false;
    if (this.streaming) {
      this.source = new MediaSource();
      this.ready = new Promise((resolve) => this.source.addEventListener("sourceopen", resolve, { once: true }));
      element.src = URL.createObjectURL(this.source);
      this.ready.then(() => {
        this.buffer = this.source.addSourceBuffer(this.mime);
        this.buffer.mode = "sequence";
        this.buffer.addEventListener("updateend", () => this.drain());
        this.drain();
      });
    }
  }

  async start() {
    if (this.streaming) this.element.play().catch(() => {});
  }

  get state() {
    return this.element.paused ? "paused" : "running";
  }

  get decodedSeconds() {
    return Number.isFinite(this.element.duration) ? this.element.duration : 0;
  }

  get position() {
    return this.element.currentTime;
  }

  push(bytes) {
    this.pieces.push(bytes);
    if (this.streaming) {
      this.pending.push(bytes);
      this.drain();
    }
  }

  drain() {
    if (!this.buffer || this.buffer.updating) return;
    if (this.pending.length) {
      this.buffer.appendBuffer(this.pending.shift());
    } else if (this.ended && this.source.readyState === "open") {
      this.source.endOfStream();
    }
  }

  end() {
    this.ended = true;
    if (this.streaming) {
      this.drain();
      return;
    }
    this.element.src = URL.createObjectURL(new Blob(this.pieces, { type: mimeOf(this.format) }));
    this.element.play().catch(() => {});
  }

  stop() {
    this.element.pause();
  }
}

export function mimeOf(format) {
  return {
    mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", wav: "audio/wav", pcm: "audio/wav",
    m4b: "audio/mp4",
  }[format] || "application/octet-stream";
}

// 16-bit mono PCM wrapped in a WAV header, so a streamed PCM response can be downloaded and played anywhere.
export function wavBlob(pieces, sampleRate) {
  const length = pieces.reduce((total, piece) => total + piece.length, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, value) => [...value].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + length, true);
  text(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true);
  header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, length, true);
  return new Blob([header, ...pieces], { type: "audio/wav" });
}

export function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}
