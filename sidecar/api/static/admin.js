// The admin page's decisions: each form posts JSON to the same authenticated API as any client,
// with the token entered once for this browser session (sessionStorage: gone when the session
// ends, never in the page's source, a cookie or a URL).
"use strict";

const TOKEN_KEY = "gepa-sidecar-admin-token";
const FLASH_KEY = "gepa-sidecar-flash";

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function say(text, failed) {
  const flash = document.getElementById("flash");
  flash.textContent = text;
  flash.className = failed ? "failed" : "done";
}

function showTokenState() {
  const state = document.getElementById("token-state");
  state.textContent = token() ? "Token set for this browser session." : "No token set.";
  document.getElementById("forget-token").hidden = !token();
}

function bodyOf(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.name === "token") continue;
    if (field.dataset.kind === "bool") {
      body[field.name] = field.checked;
    } else if (field.value.trim() !== "") {
      body[field.name] = field.dataset.kind === "int" ? Number(field.value) : field.value.trim();
    }
  }
  return body;
}

async function decide(form) {
  if (!token()) {
    say("Enter the admin token first (SIDECAR_ADMIN_TOKEN).", true);
    document.getElementById("admin-token").focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const response = await fetch(form.dataset.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: JSON.stringify(bodyOf(form)),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      sessionStorage.setItem(FLASH_KEY, `v${answer.version} ${form.dataset.done}.`);
      window.location.reload();
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
    }
    say(`Refused (${response.status}): ${answer.detail || response.statusText}`, true);
  } catch (error) {
    say(`The sidecar did not answer: ${error}`, true);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const tokenForm = document.getElementById("token-form");
  tokenForm.hidden = false;
  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("admin-token");
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    showTokenState();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });
  showTokenState();
  for (const form of document.querySelectorAll("form.decision")) {
    form.hidden = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      decide(form);
    });
  }
  const flash = sessionStorage.getItem(FLASH_KEY);
  if (flash) {
    sessionStorage.removeItem(FLASH_KEY);
    say(flash, false);
  }
});
