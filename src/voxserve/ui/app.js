// The page: tabs (a WAI-ARIA tab list: arrow keys, Home and End move between views), the API key, and each
// view's module.

import { ApiError, apiKey, setApiKey } from "./api.js";
import { loadVoices } from "./catalog.js";
import { setUpDashboard } from "./dashboard.js";
import { setUpJobs } from "./jobs.js";
import { setUpLive } from "./live.js";
import { setUpSpeak } from "./speak.js";
import { setUpVoices } from "./voices.js";

const tabs = [...document.querySelectorAll('[role="tab"]')];

function select(tab) {
  for (const other of tabs) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
  }
  document.dispatchEvent(new CustomEvent("view-shown", { detail: tab.getAttribute("aria-controls") }));
}

for (const tab of tabs) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(tab);
    const next = {
      ArrowRight: tabs[(index + 1) % tabs.length],
      ArrowLeft: tabs[(index - 1 + tabs.length) % tabs.length],
      Home: tabs[0],
      End: tabs[tabs.length - 1],
    }[event.key];
    if (next) {
      event.preventDefault();
      select(next);
      next.focus();
    }
  });
}

const keyInput = document.getElementById("api-key");
const keyStatus = document.getElementById("key-status");

async function refresh() {
  try {
    await loadVoices();
    keyStatus.textContent = apiKey() ? "Key in use." : "";
  } catch (error) {
    keyStatus.textContent = error instanceof ApiError && error.status === 401
      ? "This server requires an API key."
      : `Voices could not be loaded: ${error.message}`;
  }
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  keyInput.value = "";
  refresh();
});
document.getElementById("key-forget").addEventListener("click", () => {
  setApiKey("");
  refresh();
});

setUpSpeak();
setUpLive();
setUpVoices(refresh);
setUpJobs();
setUpDashboard();
refresh();
