// The search page: query bar (errors marked in place by the server's lenient parser), time range,
// account, histogram with drag-to-zoom, a results table paged by cursor as you scroll, the event
// detail panel, live tail, and "save as view". The URL holds the whole state.

import { get, post, url } from "./api.js";
import { h, clear, toast, fmtTime, fmtCount, describeError, field } from "./dom.js";
import { drawHistogram } from "./histogram.js";
import { renderDetail, refine } from "./detail.js";

/** The first page fills a laptop screen twice over and arrives fast; later pages are larger. */
const FIRST_PAGE = 50;
const PAGE = 100;
/** Scrolling loads pages by itself up to this many rows; past it, "Load more" still works. */
const AUTO_ROWS = 2000;
const RANGES = [
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["30d", "Last 30 days"],
  ["all", "All time"],
  ["custom", "Custom range…"],
];

let state = null;
let ctl = null; // AbortController of the running search
let tail = null; // EventSource of live tail
let observer = null;
let parseTimer = null;
/** Where live tail starts: set when it is turned on, kept across searches while it stays on. */
let tailSince = null;

/** The page's state, read from the URL. */
function readState() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get("q") || "",
    from: p.has("from") ? p.get("from") : "now-24h",
    to: p.get("to") || "",
    account: p.get("account") || "",
    event: p.get("event") || "",
    eventAccount: p.get("eventAccount") || "",
    live: p.get("live") === "1",
  };
}

export function searchHref(s) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  p.set("from", s.from ?? "now-24h");
  if (s.to) p.set("to", s.to);
  if (s.account) p.set("account", s.account);
  if (s.event) p.set("event", s.event);
  if (s.eventAccount) p.set("eventAccount", s.eventAccount);
  if (s.live) p.set("live", "1");
  return `/ui/search?${p}`;
}

function writeState(push) {
  const href = searchHref(state);
  if (push) history.pushState(null, "", href);
  else history.replaceState(null, "", href);
}

/** Milliseconds of `now`, `now-15m`, `now-2h`, `now-7d`, or an ISO time; null if unknown. */
export function timeMs(expr, now = Date.now()) {
  if (!expr) return null;
  const m = /^now(?:-(\d+)(s|m|h|d|w))?$/.exec(expr.trim());
  if (m) {
    if (!m[1]) return now;
    const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[m[2]];
    return now - Number(m[1]) * unit;
  }
  const t = Date.parse(expr);
  return Number.isNaN(t) ? null : t;
}

function rangeOf(s) {
  if (!s.from && !s.to) return "all";
  const m = /^now-(\d+[mhd])$/.exec(s.from);
  if (m && !s.to && RANGES.some(([v]) => v === m[1])) return m[1];
  return "custom";
}

const toLocalInput = (ms) => (ms == null ? "" : new Date(ms).toISOString().slice(0, 19));
const fromLocalInput = (v) => (v ? new Date(`${v}Z`).toISOString() : "");

function params(extra = {}) {
  return { q: state.q, from: state.from, to: state.to, account: state.account || undefined, ...extra };
}

export async function render(main, ctx) {
  state = readState();
  tailSince = null;
  document.title = "Search · Trailkeep";
  const { session } = ctx;

  // --- query bar -------------------------------------------------------------------------
  const q = h("input", { id: "q", name: "q", type: "search", class: "mono", value: state.q,
    placeholder: 'outcome:failure AND action:codeengine.app*  (docs: query language)',
    autocomplete: "off", spellcheck: "false", "aria-describedby": "q-errors" });
  const marked = h("div", { class: "qmarked mono", id: "q-marked", "aria-hidden": "true" });
  const qErrors = h("div", { id: "q-errors", class: "q-errors", "aria-live": "polite" });
  const range = h("select", { id: "range" }, RANGES.map(([v, l]) => h("option", { value: v }, l)));
  range.value = rangeOf(state);
  const fromIn = h("input", { id: "from", type: "datetime-local", step: "1" });
  const toIn = h("input", { id: "to", type: "datetime-local", step: "1" });
  const custom = h("div", { class: "custom-range", id: "custom-range" },
    field("From (UTC)", fromIn), field("To (UTC)", toIn));
  const account = h("select", { id: "account" },
    h("option", { value: "" }, session.allAccounts ? "All accounts" : "All my accounts"),
    session.accounts.map((a) => h("option", { value: a }, a)));
  account.value = state.account;
  const live = h("input", { type: "checkbox", id: "live", checked: state.live });
  const form = h("form", { class: "querybar", role: "search", "aria-label": "Search events" },
    h("div", { class: "qfield" }, h("label", { for: "q" }, "Query"), q, marked),
    field("Time range", range),
    custom,
    field("Account", account),
    h("div", { class: "bar-actions" },
      h("button", { type: "submit", id: "search-submit" }, "Search"),
      h("label", { class: "toggle" }, live, " Live tail"),
      session.can.manage ? h("button", { type: "button", class: "secondary", id: "save-view" }, "Save as view") : null),
  );
  const syncCustom = () => {
    const isCustom = range.value === "custom";
    custom.hidden = !isCustom;
    if (isCustom) {
      fromIn.value = toLocalInput(timeMs(state.from));
      toIn.value = toLocalInput(state.to ? timeMs(state.to) : null);
    }
  };
  syncCustom();

  // --- results -----------------------------------------------------------------------------
  const histo = h("section", { class: "histogram card", id: "histogram-box", "aria-label": "Events over time" });
  const status = h("p", { class: "status", id: "status", role: "status", "aria-live": "polite" });
  const tbody = h("tbody", { id: "results-body" });
  const table = h("table", { class: "results", id: "results" },
    h("caption", { class: "visually-hidden" }, "Matching events, newest first. Use the arrow keys to move between rows and Enter to open one."),
    h("colgroup", {}, ["time", "action", "outcome", "severity", "initiator", "target", "msg"].map((c) => h("col", { class: `c-${c}` }))),
    h("thead", {}, h("tr", {}, ["Time (UTC)", "Action", "Outcome", "Severity", "Initiator", "Target", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    tbody);
  const more = h("button", { type: "button", class: "secondary", id: "load-more", hidden: true }, "Load more");
  const sentinel = h("div", { class: "sentinel" });
  const detail = h("aside", { class: "detail card", id: "detail", "aria-labelledby": "detail-title", hidden: true });
  const tableWrap = h("div", { class: "table-wrap", id: "table-wrap" }, table, sentinel, more, status);
  const layout = h("div", { class: "results-layout" }, tableWrap, detail);
  main.append(h("h1", { class: "visually-hidden" }, "Search"), form, qErrors, histo, layout);

  // --- behaviour ---------------------------------------------------------------------------
  let items = [];
  let cursor = null;
  let loading = false;
  let lastFocused = null;

  const openDetail = (item, focus = true) => {
    state.event = item.event?.id || "";
    state.eventAccount = item.account;
    writeState(false);
    for (const tr of tbody.querySelectorAll("tr[aria-selected=true]")) tr.setAttribute("aria-selected", "false");
    const row = [...tbody.children].find((tr) => tr.dataset.id === state.event && tr.dataset.account === item.account);
    row?.setAttribute("aria-selected", "true");
    lastFocused = row || lastFocused;
    detail.hidden = false;
    layout.classList.add("with-detail");
    const tl = new URLSearchParams({ target: item.event?.target?.id || "", account: item.account });
    const vf = new URLSearchParams({ event: item.event?.id || "", account: item.account });
    renderDetail(detail, item, {
      onRefine: (t, exclude) => {
        state.q = refine(q.value, t, exclude); // what is in the bar, even if not yet run
        q.value = state.q;
        runSearch(true);
      },
      onClose: closeDetail,
      timelineHref: `/ui/timeline?${tl}`,
      verifyHref: `/ui/integrity?${vf}`,
    });
    if (focus) detail.querySelector("#detail-title").focus();
  };
  const closeDetail = () => {
    detail.hidden = true;
    layout.classList.remove("with-detail");
    state.event = "";
    state.eventAccount = "";
    writeState(false);
    lastFocused?.focus();
  };

  const shown = new Set(); // `${account}/${index}` of every row, so a tail never repeats one
  const row = (item, fresh) => {
    const e = item.event || {};
    shown.add(`${item.account}/${item.index}`);
    const who = e.initiator?.name || e.initiator?.id || "";
    const what = e.target?.name || e.target?.id || "";
    const msg = e.message || e.reason?.reasonForFailure || item.derived?.description || "";
    // One row is in the tab order (roving tabindex); the arrow keys move between rows.
    const tr = h("tr", { tabindex: "-1", "aria-selected": "false", class: fresh ? "fresh" : null,
        dataset: { id: e.id || "", account: item.account } },
      h("td", { class: "mono nowrap" }, fmtTime(e.eventTime)),
      h("td", { class: "mono" }, e.action || ""),
      h("td", {}, h("span", { class: `pill outcome-${(e.outcome || "").toLowerCase()}` }, e.outcome || "")),
      h("td", {}, h("span", { class: `pill severity-${(e.severity || "").toLowerCase()}` }, e.severity || "")),
      h("td", { title: e.initiator?.id || "" }, who),
      h("td", { title: e.target?.id || "" }, what),
      h("td", { class: "msg" }, msg));
    tr.addEventListener("focus", () => {
      for (const other of tbody.querySelectorAll("tr[tabindex='0']")) if (other !== tr) other.tabIndex = -1;
      tr.tabIndex = 0;
    });
    tr.addEventListener("click", () => openDetail(item));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        openDetail(item);
      } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const next = ev.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
        next?.focus();
        if (!next && ev.key === "ArrowDown") loadMore();
      }
    });
    return tr;
  };

  const showStatus = () => {
    if (loading) return;
    if (!items.length) status.textContent = "No events match. Widen the time range or change the query.";
    else if (!cursor) status.textContent = `Showing ${fmtCount(items.length)} events — that is all.`;
    else if (items.length < AUTO_ROWS) status.textContent = `Showing ${fmtCount(items.length)} events — scroll for more.`;
    else status.textContent = `Showing ${fmtCount(items.length)} events — narrow the time range (drag on the chart) or the query, or load more.`;
    more.hidden = !cursor;
  };

  const loadMore = async () => {
    if (!cursor || loading) return;
    loading = true;
    status.textContent = "Loading more…";
    try {
      const page = await get("/v1/events", params({ limit: PAGE, cursor }), ctl?.signal);
      cursor = page.next_cursor;
      items.push(...page.events);
      const frag = document.createDocumentFragment();
      for (const it of page.events) frag.append(row(it));
      tbody.append(frag);
    } catch (e) {
      if (e.name !== "AbortError") toast(describeError(e), "error");
    } finally {
      loading = false;
      showStatus();
    }
  };
  more.addEventListener("click", loadMore);

  const checkQuery = async (text) => {
    clear(marked);
    clear(qErrors);
    q.removeAttribute("aria-invalid");
    if (!text.trim()) return true;
    let res;
    try {
      res = await get("/v1/query/parse", { q: text });
    } catch {
      return true; // the search itself will say what is wrong
    }
    if (q.value !== text) return res.valid;
    if (res.valid) return true;
    q.setAttribute("aria-invalid", "true");
    let at = 0;
    for (const e of res.errors) {
      const s = Math.max(at, e.start16);
      const end = Math.max(s, e.end16);
      if (s > at) marked.append(text.slice(at, s));
      marked.append(h("mark", { title: e.message }, end > s ? text.slice(s, end) : " "));
      at = end;
    }
    marked.append(text.slice(at));
    qErrors.append(h("ul", { class: "error" }, res.errors.map((e) =>
      h("li", {}, `Column ${e.column}: ${e.message}${e.expected.length ? ` (expected ${e.expected.join(" or ")})` : ""}`))));
    return false;
  };

  const runHistogram = async (signal) => {
    histo.replaceChildren(h("p", { class: "hint" }, "Counting…"));
    try {
      const agg = await get("/v1/aggregate", params({ interval: "auto" }), signal);
      const intervalMs = (parseInt(agg.interval, 10) || 3600) * 1000;
      const starts = agg.buckets.map((b) => Date.parse(b.start));
      const now = Date.now();
      let fromMs = timeMs(state.from, now) ?? (starts.length ? Math.min(...starts) : now - 86400e3);
      let toMs = timeMs(state.to, now) ?? now;
      if (toMs <= fromMs) toMs = fromMs + intervalMs;
      histo.dataset.sincePageLoadMs = String(Math.round(performance.now()));
      drawHistogram(histo, {
        buckets: agg.buckets, intervalMs, fromMs, toMs, total: agg.total,
        onZoom: (a, b) => {
          state.from = new Date(a).toISOString();
          state.to = new Date(b).toISOString();
          range.value = "custom";
          syncCustom();
          runSearch(true);
        },
      });
    } catch (e) {
      if (e.name !== "AbortError") histo.replaceChildren(h("p", { class: "error" }, describeError(e)));
    }
  };

  const runSearch = async (push) => {
    stopTail();
    ctl?.abort();
    ctl = new AbortController();
    const signal = ctl.signal;
    writeState(push);
    const started = performance.now();
    // Said at once, so nothing (a person or a test) takes the previous results for the new ones.
    loading = true;
    status.textContent = "Searching…";
    tbody.setAttribute("aria-busy", "true");
    const valid = await checkQuery(state.q);
    if (signal.aborted) return; // a newer search took over
    if (!valid) {
      loading = false;
      tbody.removeAttribute("aria-busy");
      status.textContent = "Fix the query to search.";
      return;
    }
    items = [];
    cursor = null;
    const histogramDone = runHistogram(signal);
    try {
      const page = await get("/v1/events", params({ limit: FIRST_PAGE }), signal);
      if (signal.aborted) return;
      items = page.events;
      cursor = page.next_cursor;
      const frag = document.createDocumentFragment();
      shown.clear();
      for (const it of items) frag.append(row(it));
      tbody.replaceChildren(frag);
      tableWrap.scrollTop = 0; // new results start at the top
      if (tbody.firstElementChild) tbody.firstElementChild.tabIndex = 0;
      tbody.removeAttribute("aria-busy");
      loading = false;
      showStatus();
      // How long the first page took from the request to the table, query check included (read by
      // the browser tests).
      status.dataset.firstResultsMs = String(Math.round(performance.now() - started));
      status.dataset.sincePageLoadMs = String(Math.round(performance.now()));
      if (state.event) {
        const found = items.find((i) => i.event?.id === state.event && (!state.eventAccount || i.account === state.eventAccount));
        if (found) openDetail(found, false);
        else {
          get(`/v1/events/${encodeURIComponent(state.event)}`, { account: state.eventAccount || undefined })
            .then((it) => openDetail(it, false))
            .catch(() => closeDetail());
        }
      } else {
        detail.hidden = true;
        layout.classList.remove("with-detail");
      }
      if (state.live) startTail();
    } catch (e) {
      loading = false;
      if (e.name === "AbortError") return;
      tbody.removeAttribute("aria-busy");
      tbody.replaceChildren();
      status.textContent = describeError(e);
      status.classList.add("error");
      return;
    }
    status.classList.remove("error");
    await histogramDone;
  };

  const startTail = () => {
    stopTail();
    // A few seconds back, so nothing sent while the tail was (re)connecting is missed; rows
    // already shown are skipped.
    tailSince = tailSince || new Date(Date.now() - 5000).toISOString();
    const src = new EventSource(url("/v1/events/stream", params({ to: undefined, from: tailSince })));
    tail = src;
    let n = 0;
    src.addEventListener("event", (m) => {
      const it = JSON.parse(m.data);
      if (shown.has(`${it.account}/${it.index}`)) return;
      items.unshift(it);
      tbody.prepend(row(it, true));
      n += 1;
      status.textContent = `Live: ${fmtCount(n)} new event${n === 1 ? "" : "s"} at the top.`;
    });
    src.addEventListener("error", () => {
      if (src.readyState === EventSource.CLOSED) status.textContent = "Live tail stopped.";
    });
    status.textContent = "Live: waiting for new events…";
  };

  // --- wiring ------------------------------------------------------------------------------
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.q = q.value.trim();
    state.account = account.value;
    if (range.value === "custom") {
      state.from = fromLocalInput(fromIn.value);
      state.to = fromLocalInput(toIn.value);
    } else if (range.value === "all") {
      state.from = "";
      state.to = "";
    } else {
      state.from = `now-${range.value}`;
      state.to = "";
    }
    state.event = "";
    runSearch(true);
  });
  range.addEventListener("change", () => {
    syncCustom();
    if (range.value !== "custom") form.requestSubmit();
  });
  account.addEventListener("change", () => form.requestSubmit());
  q.addEventListener("input", () => {
    clearTimeout(parseTimer);
    parseTimer = setTimeout(() => checkQuery(q.value), 250);
  });
  live.addEventListener("change", () => {
    state.live = live.checked;
    writeState(false);
    if (state.live) {
      tailSince = null;
      startTail();
    } else {
      tailSince = null;
      stopTail();
      showStatus();
    }
  });
  document.getElementById("save-view")?.addEventListener("click", () => saveViewDialog(session));
  observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && tbody.children.length < AUTO_ROWS) loadMore();
  }, { rootMargin: "400px" });
  observer.observe(sentinel);

  await runSearch(false);
}

function stopTail() {
  tail?.close();
  tail = null;
}

export function leave() {
  ctl?.abort();
  stopTail();
  observer?.disconnect();
  observer = null;
  clearTimeout(parseTimer);
}

/** The window of a view from the current range (`now-24h` → `24h`). */
function windowOf(s) {
  const m = /^now-(\d+[smhdw])$/.exec(s.from || "");
  return m ? m[1] : "24h";
}

function saveViewDialog(session) {
  const name = h("input", { id: "view-name", required: true, maxlength: "200" });
  const acct = h("select", { id: "view-account", required: true },
    session.accounts.map((a) => h("option", { value: a }, a)));
  acct.value = state.account || session.accounts.find((a) => a === session.defaultAccount) || session.accounts[0] || "";
  const win = h("input", { id: "view-window", value: windowOf(state), required: true });
  const error = h("p", { class: "error", role: "alert" });
  const dlg = h("dialog", { class: "card", "aria-labelledby": "view-dialog-title" });
  const form = h("form", { method: "dialog" },
    h("h2", { id: "view-dialog-title" }, "Save this search as a view"),
    h("p", { class: "mono hint" }, state.q || "(every event)"),
    field("Name", name), field("Account", acct, "A view covers one account."),
    field("Default window", win, "How far back the view looks: 15m, 24h, 7d…"),
    error,
    h("div", { class: "bar-actions" },
      h("button", { type: "submit", id: "view-save" }, "Save view"),
      h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Cancel")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const v = await post("/v1/views", { name: name.value.trim(), account: acct.value, query: state.q, window: win.value.trim() });
      dlg.close();
      toast(`Saved view “${v.name}”.`);
    } catch (e) {
      error.textContent = [describeError(e), ...e.details.map((d) => `${d.path}: ${d.reason}`)].join(" — ");
    }
  });
  dlg.append(form);
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  name.focus();
}
