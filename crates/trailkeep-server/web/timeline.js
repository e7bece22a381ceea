// The object timeline: every event of one target.id, oldest first, with what changed.

import { get } from "./api.js";
import { h, fmtTime } from "./dom.js";
import { searchHref } from "./search.js";

function show(v) {
  if (v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

export async function render(main) {
  const p = new URLSearchParams(location.search);
  const target = p.get("target") || "";
  const account = p.get("account") || "";
  document.title = "Object timeline · Trailkeep";
  main.append(h("h1", {}, "Object timeline"));
  if (!target) {
    main.append(h("p", {}, "Open an event and choose “Object timeline”."));
    return;
  }
  const t = await get(`/v1/objects/${encodeURIComponent(target)}/timeline`, { account: account || undefined });
  const o = t.object || {};
  main.append(
    h("section", { class: "card" },
      h("h2", { id: "object-name" }, o.name || "(unnamed object)", o.deleted ? h("span", { class: "pill outcome-failure" }, " deleted") : null),
      h("p", { class: "mono wrap" }, target),
      h("p", { class: "hint" }, `${o.type || ""} · account ${t.account} · ${t.events.length} event${t.events.length === 1 ? "" : "s"}${t.truncated ? " (only the newest are listed)" : ""} · `,
        h("a", { href: searchHref({ q: `target.id:"${target.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`, account: t.account, from: "" }), "data-nav": true }, "search these events"))));
  const list = h("ol", { class: "timeline", id: "timeline" });
  for (const it of t.events) {
    const e = it.event || {};
    const d = it.derived || {};
    const changes = d.changes || [];
    list.append(h("li", { class: `tl-${d.class || "info"}` },
      h("div", { class: "tl-head" },
        h("span", { class: "mono nowrap" }, `${fmtTime(e.eventTime)} UTC`),
        h("span", { class: `pill outcome-${(e.outcome || "").toLowerCase()}` }, e.outcome || ""),
        h("strong", {}, d.description || e.action)),
      h("div", { class: "hint" }, `${e.action} by ${e.initiator?.name || e.initiator?.id || "?"}`),
      changes.length ? h("table", { class: "changes" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Attribute"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
        h("tbody", {}, changes.map((c) => h("tr", {}, h("td", { class: "mono" }, c.attribute),
          h("td", { class: "mono" }, c.sensitive ? "(sensitive)" : show(c.old)),
          h("td", { class: "mono" }, c.sensitive ? "(sensitive)" : show(c.new)))))) : null));
  }
  main.append(list);
}
