// The event detail panel: the whole item as a collapsible JSON tree. Every value can be added to
// the query (+) or excluded from it (−).

import { get } from "./api.js";
import { h, fmtTime } from "./dom.js";

/** A query term that matches `value` at `path` (an event's dotted path). */
export function term(path, value) {
  if (typeof value === "number" || typeof value === "boolean") return `${path}:${value}`;
  const s = String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  return `${path}:"${s}"`;
}

/** `q` with `t` added (AND) or excluded (-), without repeating a term already there. */
export function refine(q, t, exclude) {
  const add = exclude ? `-${t}` : t;
  const trimmed = (q || "").trim();
  if (!trimmed) return add;
  if (trimmed.split(/\s+AND\s+/).includes(add)) return trimmed;
  return `${trimmed} AND ${add}`;
}

function valueNode(path, value, onRefine) {
  const shown = value === null ? "null" : typeof value === "string" ? value : JSON.stringify(value);
  const cls = value === null ? "null" : typeof value;
  const parts = [h("span", { class: `v ${cls}` }, shown)];
  if (path && value !== null && shown.length <= 2000) {
    const t = term(path, value);
    parts.push(
      h("button", { type: "button", class: "refine add", title: `Add ${t} to the query`,
        "aria-label": `Add ${t} to the query`, dataset: { term: t }, onclick: () => onRefine(t, false) }, "+"),
      h("button", { type: "button", class: "refine exclude", title: `Exclude ${t}`,
        "aria-label": `Exclude ${t} from the query`, dataset: { term: t }, onclick: () => onRefine(t, true) }, "−"),
    );
  }
  return parts;
}

/** A collapsible tree of `value`; `path` is the query path of `value` ("" for the root). */
function tree(key, value, path, onRefine, depth) {
  const label = key === null ? null : h("span", { class: "k" }, key);
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const summary = h("summary", {}, label, h("span", { class: "brace" },
      Array.isArray(value) ? ` [${entries.length}]` : ` {${entries.length}}`));
    const list = h("ul", {});
    for (const [k, v] of entries) {
      // Array elements are searched by the array's path.
      const childPath = Array.isArray(value) ? path : path ? `${path}.${k}` : k;
      list.append(h("li", {}, tree(k, v, childPath, onRefine, depth + 1)));
    }
    return h("details", { open: depth < 3 }, summary, list);
  }
  return h("div", { class: "leaf" }, label, label ? ": " : null, valueNode(path, value, onRefine));
}

/**
 * Renders `item` (an API item) into `panel`. `actions`: {onRefine(term, exclude), onClose,
 * timelineHref, verifyHref}.
 */
export function renderDetail(panel, item, actions) {
  const e = item.event || {};
  panel.replaceChildren();
  const close = h("button", { type: "button", class: "secondary", id: "detail-close", onclick: actions.onClose }, "Close");
  panel.append(
    h("div", { class: "detail-head" },
      h("h2", { id: "detail-title", tabindex: "-1" }, e.action || "event"),
      close),
    h("p", { class: "hint" }, `${fmtTime(e.eventTime)} UTC · account ${item.account} · #${item.index}`),
    item.derived?.description ? h("p", { class: "description" }, item.derived.description) : null,
    h("div", { class: "detail-actions" },
      e.target?.id ? h("a", { href: actions.timelineHref, "data-nav": true, class: "button secondary", id: "open-timeline" }, "Object timeline") : null,
      h("a", { href: actions.verifyHref, "data-nav": true, class: "button secondary", id: "verify-event" }, "Verify this event")),
  );
  const root = h("div", { class: "json", id: "detail-json" });
  root.append(tree(null, e, "", actions.onRefine, 0));
  const meta = h("p", { class: "hint" }, "Account: ",
    valueNode("account", item.account, actions.onRefine), ` · received ${fmtTime(item.receivedAt)} UTC`);
  const scopes = h("div", { class: "scopes", id: "detail-scopes" });
  panel.append(meta, scopes, root);
  if (e.target?.id) {
    get("/ui/scopes", { targetId: e.target.id })
      .then(({ parents }) => {
        if (!parents.length) return;
        scopes.append(h("h3", {}, "Part of"), h("ul", {}, parents.map((id) =>
          h("li", { class: "leaf" }, h("span", { class: "k" }, scopeLabel(id)), " ",
            valueNode("scope", id, actions.onRefine)))));
      })
      .catch(() => {});
  }
}

/** "project proj-7" for a CRN's service instance, else the id's last segment. */
function scopeLabel(id) {
  const parts = id.split(":");
  if (id.startsWith("crn:") && parts.length >= 10) {
    if (!parts[8] && !parts[9]) return `instance ${parts[7]}`;
    return `${parts[8] || "resource"} ${parts[9].split("/").pop() || parts[9]}`;
  }
  return id.split("/").filter(Boolean).pop() || id;
}
