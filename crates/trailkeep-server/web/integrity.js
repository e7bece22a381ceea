// The integrity page: each log's latest signed checkpoint (its signature checked here in the
// browser), the server's verifier key, and "verify this event": an inclusion proof checked in the
// browser from the event's own bytes up to the signed checkpoint.

import { get } from "./api.js";
import { h, clear, describeError, field, fmtCount } from "./dom.js";
import { parseCheckpoint, parseVerifierKey, verifyItem, verifyNote } from "./verify.js";

export async function render(main, ctx) {
  document.title = "Integrity · Trailkeep";
  const p = new URLSearchParams(location.search);
  main.append(h("h1", {}, "Integrity"),
    h("p", { class: "lead" }, "Every account has an append-only Merkle-tree log with signed checkpoints. Anyone with the verifier key can check that an event was recorded and never changed — this page does it in your browser."));

  // --- verify an event -----------------------------------------------------------------------
  const id = h("input", { id: "verify-id", class: "mono", value: p.get("event") || "", required: true, spellcheck: "false" });
  const account = h("select", { id: "verify-account" }, h("option", { value: "" }, "(any of my accounts)"),
    ctx.session.accounts.map((a) => h("option", { value: a }, a)));
  account.value = p.get("account") || "";
  const result = h("div", { id: "verify-result", "aria-live": "polite" });
  const form = h("form", { class: "card stack", "aria-labelledby": "verify-title" },
    h("h2", { id: "verify-title" }, "Verify an event"),
    field("Event id", id), field("Account", account),
    h("div", { class: "bar-actions" }, h("button", { type: "submit", id: "verify-submit" }, "Verify")),
    result);
  main.append(form);

  // --- key and checkpoints -----------------------------------------------------------------
  const keyBox = h("section", { class: "card", "aria-labelledby": "key-title" }, h("h2", { id: "key-title" }, "Verifier key"));
  const cpBox = h("section", { class: "card", "aria-labelledby": "cp-title" }, h("h2", { id: "cp-title" }, "Latest signed checkpoints"));
  main.append(keyBox, cpBox);

  let keyText = null;
  try {
    keyText = await get("/v1/log/key");
    keyBox.append(h("pre", { class: "mono wrap", id: "verifier-key" }, keyText.trim()),
      h("p", { class: "hint" }, "Pin this key (e.g. for trailkeep verify --key-file) from a channel you trust; the checks below use the key the server gives."));
  } catch (e) {
    keyBox.append(h("p", { class: "error" }, describeError(e)));
  }

  const verify = async () => {
    clear(result);
    if (!id.value.trim()) return;
    result.append(h("p", { class: "hint" }, "Fetching the event and its inclusion proof…"));
    try {
      const item = await get(`/v1/events/${encodeURIComponent(id.value.trim())}`, { proof: "true", account: account.value || undefined });
      const { steps, verdict } = await verifyItem(item, keyText);
      const text = { verified: "Verified: this event is in the log, unchanged, under a validly signed checkpoint.",
        "hash-only": "Hash path verified (signature not checked in this browser).",
        failed: "Verification FAILED." }[verdict];
      result.replaceChildren(
        h("p", { class: `verdict ${verdict}`, id: "verify-verdict" }, text),
        h("ol", { class: "steps" }, steps.map((s) => h("li", { class: s.ok === true ? "ok" : s.ok === false ? "bad" : "warn" },
          h("span", { class: "mark", "aria-hidden": "true" }, s.ok === true ? "✓" : s.ok === false ? "✗" : "!"),
          h("span", { class: "visually-hidden" }, s.ok === true ? "Passed: " : s.ok === false ? "Failed: " : "Not checked: "), s.text))),
        h("p", { class: "hint" }, `Event in account ${item.account} at position ${item.index}.`));
    } catch (e) {
      result.replaceChildren(h("p", { class: "error", role: "alert" }, describeError(e)));
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    q.set("event", id.value.trim());
    if (account.value) q.set("account", account.value);
    history.replaceState(null, "", `/ui/integrity?${q}`);
    verify();
  });
  if (id.value && keyText) verify();

  try {
    const { logs } = await get("/v1/log");
    const key = keyText ? await parseVerifierKey(keyText) : null;
    const rows = await Promise.all(logs.map(async (l) => {
      try {
        const note = await get(`/v1/log/${encodeURIComponent(l.account)}/checkpoint`);
        const cp = parseCheckpoint(note);
        const sig = key ? await verifyNote(note, key) : "unsupported";
        return { l, cp, sig };
      } catch (e) {
        return { l, error: describeError(e) };
      }
    }));
    cpBox.append(h("table", { class: "list", id: "checkpoints" },
      h("thead", {}, h("tr", {}, ["Account", "Tree size", "Root hash", "Signature"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map(({ l, cp, sig, error }) => h("tr", {},
        h("td", { class: "mono" }, l.account),
        h("td", {}, cp ? fmtCount(cp.size) : ""),
        h("td", { class: "mono wrap" }, cp ? cp.rootB64 : error),
        h("td", {}, sig === "verified" ? "✓ valid" : sig === "unsupported" ? "not checked (no Ed25519 in this browser)" : sig ? "✗ INVALID" : ""))))));
  } catch (e) {
    cpBox.append(h("p", { class: "error" }, describeError(e)));
  }
}
