// Views and alerts: the saved views (open one as a search), alert rules on a view with their
// channels (create and edit), and an alert's history.

import { get, post, patch, del } from "./api.js";
import { h, clear, toast, fmtTime, describeError, field } from "./dom.js";
import { searchHref } from "./search.js";

const WINDOWS = ["30s", "1m", "5m", "15m", "30m", "1h", "6h", "12h", "24h"];

export async function render(main, ctx) {
  const p = new URLSearchParams(location.search);
  if (location.pathname.startsWith("/ui/alerts") && p.get("id")) return renderAlert(main, ctx, p.get("id"));
  document.title = "Views & alerts · Trailkeep";
  const canManage = ctx.session.can.manage;
  const [{ views }, { alerts }] = await Promise.all([get("/v1/views"), get("/v1/alerts")]);
  const byId = Object.fromEntries(views.map((v) => [v.id, v]));
  main.append(h("h1", {}, "Views & alerts"));

  const vt = h("table", { class: "list", id: "views-table" },
    h("caption", {}, "Saved views"),
    h("thead", {}, h("tr", {}, ["Name", "Account", "Query", "Window", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, views.map((v) => h("tr", { dataset: { id: v.id } },
      h("td", {}, h("a", { href: searchHref({ q: v.query, account: v.account, from: `now-${v.window}` }), "data-nav": true }, v.name)),
      h("td", { class: "mono" }, v.account),
      h("td", { class: "mono" }, v.query || "(every event)"),
      h("td", {}, v.window),
      h("td", { class: "actions" },
        canManage ? h("button", { type: "button", class: "secondary", dataset: { view: v.id },
          onclick: () => alertDialog(ctx, { view: v }) }, "Add alert") : null,
        canManage ? h("button", { type: "button", class: "secondary danger", "aria-label": `Delete view ${v.name}`,
          onclick: async () => {
            if (!confirm(`Delete the view “${v.name}”?`)) return;
            try { await del(`/v1/views/${v.id}`); ctx.navigate(location.pathname + location.search, { replace: true }); }
            catch (e) { toast(describeError(e), "error"); }
          } }, "Delete") : null)))));
  main.append(views.length ? vt : h("p", { class: "hint" }, "No views yet. On the search page, “Save as view” keeps the current search."));

  const at = h("table", { class: "list", id: "alerts-table" },
    h("caption", {}, "Alert rules"),
    h("thead", {}, h("tr", {}, ["Name", "View", "Condition", "Channels", "Renotify"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, alerts.map((a) => h("tr", { dataset: { id: a.id } },
      h("td", {}, h("a", { href: `/ui/alerts?id=${encodeURIComponent(a.id)}`, "data-nav": true }, a.name)),
      h("td", {}, byId[a.viewId]?.name || a.viewId),
      h("td", {}, describeCondition(a.condition)),
      h("td", {}, a.channels.map((c) => c.type).join(", ")),
      h("td", {}, a.renotify || "once")))));
  main.append(h("h2", {}, "Alerts"), alerts.length ? at : h("p", { class: "hint" }, "No alert rules yet. Add one on a view."));
}

function describeCondition(c) {
  const what = c.type === "absence" ? `fewer than ${c.threshold}` : `at least ${c.threshold}`;
  return c.window ? `${what} matching events in ${c.window}` : `every matching event`;
}

function channelFields(existing) {
  const type = h("select", { id: "channel-type" },
    ["webhook", "slack", "pagerduty", "email"].map((t) => h("option", { value: t }, t)));
  const target = h("input", { id: "channel-url", placeholder: "https://hooks.example/…" });
  const secret = h("input", { id: "channel-secret", type: "password", autocomplete: "off" });
  const secretField = field("Secret or routing key", secret, "Webhook HMAC secret or PagerDuty routing key");
  type.value = existing?.type || "webhook";
  if (existing?.type === "email") target.value = existing.to.join(", ");
  else if (existing?.url && existing.url !== "********") target.value = existing.url;
  const sync = () => {
    target.placeholder = type.value === "email" ? "ops@example.com, sec@example.com" : "https://hooks.example/…";
    secretField.hidden = !(type.value === "webhook" || type.value === "pagerduty");
  };
  type.addEventListener("change", sync);
  sync();
  const value = () => {
    const t = type.value;
    if (t === "email") return { type: t, to: target.value.split(",").map((s) => s.trim()).filter(Boolean) };
    if (t === "webhook") return { type: t, url: target.value.trim(), secret: secret.value };
    if (t === "pagerduty") return { type: t, url: target.value.trim(), routingKey: secret.value };
    return { type: t, url: target.value.trim() };
  };
  return { nodes: [field("Channel", type), field("Channel address (URL, or e-mail addresses)", target), secretField], value };
}

/** The create/edit form of a rule; `rule` absent: a new rule on `view`. */
function alertForm(ctx, { view, rule }, onDone) {
  const name = h("input", { id: "alert-name", required: true, value: rule?.name || (view ? `${view.name} alert` : "") });
  const type = h("select", { id: "alert-type" }, h("option", { value: "presence" }, "Presence: at least N events"),
    h("option", { value: "absence" }, "Absence: fewer than N events"));
  type.value = rule?.condition.type || "presence";
  const threshold = h("input", { id: "alert-threshold", type: "number", min: "1", value: rule?.condition.threshold ?? 1, required: true });
  const win = h("select", { id: "alert-window" }, h("option", { value: "" }, "(each event)"), WINDOWS.map((w) => h("option", { value: w }, w)));
  win.value = rule ? rule.condition.window || "" : "5m";
  const renotify = h("input", { id: "alert-renotify", value: rule?.renotify || "", placeholder: "1h (empty: once per firing)" });
  const keep = rule ? h("input", { type: "checkbox", id: "alert-keep-channels", checked: true }) : null;
  const ch = channelFields(rule?.channels[0]);
  const error = h("p", { class: "error", role: "alert", id: "alert-error" });
  const form = h("form", { class: "stack", id: "alert-form" },
    field("Name", name), field("Condition", type), field("Threshold (N)", threshold), field("Window", win),
    keep ? h("label", { class: "toggle" }, keep, " Keep the current channels (their secrets are not shown again)") : null,
    ch.nodes, field("Renotify every", renotify), error,
    h("div", { class: "bar-actions" }, h("button", { type: "submit", id: "alert-save" }, rule ? "Save changes" : "Create alert")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      name: name.value.trim(),
      condition: { type: type.value, threshold: Number(threshold.value), ...(win.value ? { window: win.value } : {}) },
      renotify: renotify.value.trim() || null,
    };
    if (!keep?.checked) body.channels = [ch.value()];
    try {
      const saved = rule ? await patch(`/v1/alerts/${rule.id}`, body) : await post("/v1/alerts", { ...body, viewId: view.id, renotify: body.renotify || undefined });
      onDone(saved);
    } catch (e) {
      error.textContent = [describeError(e), ...e.details.map((d) => `${d.path}: ${d.reason}`)].join(" — ");
    }
  });
  return form;
}

function alertDialog(ctx, target) {
  const dlg = h("dialog", { class: "card", "aria-labelledby": "alert-dialog-title" });
  const form = alertForm(ctx, target, (saved) => {
    dlg.close();
    toast(`Alert “${saved.name}” saved.`);
    ctx.navigate(`/ui/alerts?id=${encodeURIComponent(saved.id)}`);
  });
  dlg.append(h("h2", { id: "alert-dialog-title" }, `New alert on “${target.view.name}”`), form,
    h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel"));
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  dlg.querySelector("#alert-name").focus();
}

async function renderAlert(main, ctx, id) {
  const rule = await get(`/v1/alerts/${encodeURIComponent(id)}`);
  document.title = `${rule.name} · Alerts · Trailkeep`;
  const [view, hist] = await Promise.all([
    get(`/v1/views/${encodeURIComponent(rule.viewId)}`).catch(() => null),
    get(`/v1/alerts/${encodeURIComponent(id)}/history`),
  ]);
  main.append(
    h("p", {}, h("a", { href: "/ui/views", "data-nav": true }, "← Views & alerts")),
    h("h1", { id: "alert-title" }, rule.name),
    h("p", {}, `On view `, view ? h("a", { href: searchHref({ q: view.query, account: view.account, from: `now-${view.window}` }), "data-nav": true }, view.name) : rule.viewId,
      ` · ${describeCondition(rule.condition)} · channels: ${rule.channels.map((c) => c.type).join(", ")}`),
  );
  const cols = h("div", { class: "two-col" });
  if (ctx.session.can.manage) {
    cols.append(h("section", { class: "card", "aria-labelledby": "edit-title" }, h("h2", { id: "edit-title" }, "Edit"),
      alertForm(ctx, { rule }, (saved) => {
        toast(`Alert “${saved.name}” saved.`);
        ctx.navigate(`/ui/alerts?id=${encodeURIComponent(saved.id)}`, { replace: true });
      })));
  }
  if (ctx.session.can.manage) {
    const result = h("p", { id: "test-result", "aria-live": "polite" });
    main.append(h("div", { class: "bar-actions" },
      h("button", { type: "button", class: "secondary", id: "alert-test", onclick: async () => {
        result.textContent = "Sending…";
        try {
          const r = await post(`/v1/alerts/${encodeURIComponent(id)}/test`);
          result.textContent = r.results.map((c) => `${c.type} #${c.channel}: ${c.ok ? "sent" : `failed — ${c.error}`}`).join("; ");
        } catch (e) {
          result.textContent = describeError(e);
        }
      } }, "Send a test notification"), result));
  }
  const rows = [...hist.history].reverse();
  cols.append(h("section", { class: "card", "aria-labelledby": "history-title" }, h("h2", { id: "history-title" }, "History"),
    rows.length
      ? h("table", { class: "list", id: "alert-history" },
        h("thead", {}, h("tr", {}, ["When (UTC)", "What", "Channel", "Count", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((e) => h("tr", {}, h("td", { class: "mono nowrap" }, fmtTime(e.at)), h("td", {}, e.kind),
          h("td", {}, e.channel || ""), h("td", {}, e.count ?? ""), h("td", {}, e.reason || "")))))
      : h("p", { class: "hint", id: "alert-history-empty" }, "This rule has not fired yet."),
    hist.pending.length ? h("p", { class: "hint" }, `${hist.pending.length} notification(s) waiting to be delivered.`) : null));
  main.append(cols);
}
