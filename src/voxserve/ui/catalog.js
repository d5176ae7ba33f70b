// The server's voices, kept in one place and shown in every voice picker (`select[data-voices]`), grouped by
// engine and language, custom voices last.

import { getJson } from "./api.js";

const ENGINE_NAMES = { piper: "Piper", espeak: "eSpeak NG", torch: "Piper (PyTorch)" };

export const catalog = { voices: [], byId: new Map(), defaultVoice: null };

export async function loadVoices() {
  const list = await getJson("/v1/audio/voices");
  catalog.voices = list.data;
  catalog.byId = new Map(list.data.map((voice) => [voice.id, voice]));
  catalog.defaultVoice = list.default;
  for (const select of document.querySelectorAll("select[data-voices]")) fill(select);
  document.dispatchEvent(new CustomEvent("voices-changed"));
}

export function customVoices() {
  return catalog.voices.filter((voice) => voice.type === "custom");
}

function fill(select) {
  const chosen = select.value || catalog.defaultVoice;
  const groups = new Map();
  for (const voice of [...catalog.voices].sort(byGroup)) {
    const label = groupOf(voice);
    if (!groups.has(label)) {
      const group = document.createElement("optgroup");
      group.label = label;
      groups.set(label, group);
    }
    const option = document.createElement("option");
    option.value = voice.id;
    option.textContent = voice.name && voice.name !== voice.id ? `${voice.name} (${voice.id})` : voice.id;
    groups.get(label).append(option);
  }
  select.replaceChildren(...groups.values());
  select.value = catalog.byId.has(chosen) ? chosen : catalog.defaultVoice;
}

function groupOf(voice) {
  if (voice.type === "custom") return "Custom voices";
  const engine = ENGINE_NAMES[voice.engine] || voice.engine;
  const language = (voice.language || "").split(/[-_]/)[0];
  return language ? `${engine} · ${language}` : engine;
}

function rank(voice) {
  if (voice.type === "custom") return 2;
  return voice.engine === "espeak" ? 1 : 0;
}

function byGroup(a, b) {
  return rank(a) - rank(b) || groupOf(a).localeCompare(groupOf(b)) || a.id.localeCompare(b.id);
}
