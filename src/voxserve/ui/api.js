// Calls to the voxserve API from the page: the key the user typed (session storage only), errors as the
// server's OpenAI error message, and Server-Sent Events read from a fetch body (EventSource cannot send a key).

const KEY_STORAGE = "voxserve.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(message, status, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// `fetch` with the key; a non-2xx answer throws `ApiError` carrying the server's own message.
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`the server could not be reached (${error.message})`, 0);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      return new ApiError(body.error.message, response.status, body.error.code);
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return new ApiError(`${response.status} ${response.statusText}`, response.status);
}

// Each `data:` event of an SSE body, parsed as JSON, handed to `onEvent` as it arrives.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) await onEvent(JSON.parse(data));
    }
  }
}

// The error an event stream ends with (`{"type": "error", "error": {...}}`) as an `ApiError`.
export function streamError(event) {
  const error = event.error || event;
  return new ApiError(error.message || "the stream failed", 0, error.code || null);
}

export function showError(element, error) {
  element.textContent = error.message;
  element.hidden = false;
}

export function clearError(element) {
  element.textContent = "";
  element.hidden = true;
}

// A blob downloaded with the key (a plain link cannot carry one), as an object URL.
export async function fetchBlobUrl(path) {
  const response = await request(path);
  return URL.createObjectURL(await response.blob());
}
