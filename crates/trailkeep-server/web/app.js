// The shell of the single-page UI: who is signed in, the sign-in page, navigation, and which
// page module renders the current URL. Every page keeps its whole state in the URL, so any page
// can be shared or reloaded.

import { api, get, setCsrf, whenSignedOut } from "./api.js";
import { h, clear, toast, describeError, field } from "./dom.js";
import * as search from "./search.js";
import * as views from "./views.js";
import * as timeline from "./timeline.js";
import * as integrity from "./integrity.js";

const main = document.getElementById("main");
let session = null;
let current = null;

const pages = {
  search: search,
  views: views,
  alerts: views,
  timeline: timeline,
  integrity: integrity,
};

function pageName() {
  const p = location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  return pages[p] ? p : "search";
}

export function navigate(href, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  render();
}

async function render() {
  if (current?.leave) current.leave();
  current = null;
  if (!session) return renderSignIn();
  const name = pageName();
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === name || (name === "alerts" && a.dataset.page === "views") || (name === "timeline" && a.dataset.page === "search"))
      a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(main);
  if (!session.can.read) {
    document.title = "Trailkeep";
    main.append(h("section", { class: "card", id: "cannot-read" }, h("h1", {}, "Nothing to show for this key"),
      h("p", {}, `The key “${session.key.name}” has the role ${session.key.role}: it may send events but not read them. Sign in with a reader, manager or admin key to search.`)));
    return;
  }
  const mod = pages[name];
  current = mod;
  try {
    await mod.render(main, { session, navigate });
  } catch (e) {
    main.append(h("p", { class: "error", role: "alert" }, describeError(e)));
  }
}

function showShell(on) {
  document.getElementById("top").hidden = !on;
  if (on) {
    const who = document.getElementById("who");
    who.textContent = `${session.key.name} · ${session.key.role}`;
    who.title = `key ${session.key.id}; accounts: ${session.allAccounts ? "all" : session.accounts.join(", ")}`;
  }
}

function renderSignIn(message) {
  showShell(false);
  clear(main);
  document.title = "Sign in · Trailkeep";
  const key = h("input", {
    type: "password",
    id: "signin-key",
    name: "key",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
  });
  const error = h("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = h(
    "form",
    { class: "signin card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Trailkeep"),
    h("p", {}, "Use an API key. What the key's role and accounts allow is what you will see."),
    field("API key", key),
    error,
    h("button", { type: "submit", id: "signin-submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      session = await api("POST", "/ui/session", { body: { key: key.value } });
      setCsrf(session.csrfToken);
      showShell(true);
      if (pageName() === "signin" || location.pathname === "/ui/signin") history.replaceState(null, "", "/ui/search");
      render();
    } catch (e) {
      error.textContent = describeError(e);
      key.focus();
    }
  });
  main.append(form);
  key.focus();
}

async function signOut() {
  try {
    await api("DELETE", "/ui/session");
  } catch (e) {
    toast(describeError(e), "error");
  }
  session = null;
  setCsrf(null);
  if (current?.leave) current.leave();
  current = null;
  renderSignIn("You are signed out.");
}

async function start() {
  // A resource the Content-Security-Policy blocked is a bug: counted (the browser tests check it)
  // and shown.
  document.addEventListener("securitypolicyviolation", (ev) => {
    const n = Number(document.documentElement.dataset.cspViolations || 0) + 1;
    document.documentElement.dataset.cspViolations = String(n);
    toast(`Blocked by the content security policy: ${ev.violatedDirective} ${ev.blockedURI}`, "error");
  });
  // Anything unexpected is shown, not swallowed.
  window.addEventListener("error", (ev) => toast(`Error: ${ev.message}`, "error"));
  window.addEventListener("unhandledrejection", (ev) => {
    const m = describeError(ev.reason);
    if (m) toast(`Error: ${m}`, "error");
  });
  whenSignedOut(() => {
    if (!session) return;
    session = null;
    if (current?.leave) current.leave();
    current = null;
    renderSignIn("Your session has ended (the key was revoked or the session expired). Sign in again.");
  });
  document.getElementById("signout").addEventListener("click", signOut);
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-nav]");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", render);
  try {
    const s = await get("/ui/session");
    if (s.signedIn) {
      session = s;
      setCsrf(s.csrfToken);
      showShell(true);
    }
  } catch (e) {
    toast(describeError(e), "error");
  }
  render();
}

start();
