// The histogram of matching events over time: SVG bars from GET /v1/aggregate, drag across it
// (or use the keyboard: arrows move a selection, Enter zooms) to zoom into a range.

import { h, clear, fmtShort, fmtCount } from "./dom.js";

const W = 1000;
const H = 120;

/**
 * Draws the histogram into `box`.
 * `buckets`: [{start, count}], `intervalMs`, `fromMs`/`toMs`: the domain shown,
 * `onZoom(fromMs, toMs)`: called with the selected range.
 */
export function drawHistogram(box, { buckets, intervalMs, fromMs, toMs, total, onZoom, now = Date.now() }) {
  clear(box);
  const span = Math.max(1, toMs - fromMs);
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const x = (ms) => ((ms - fromMs) / span) * W;
  const svg = h("svg:svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    class: "histogram-svg",
    role: "img",
    "aria-label": `Histogram of ${fmtCount(total)} matching events over time. Drag across it to zoom into a range.`,
    id: "histogram-svg",
  });
  for (const b of buckets) {
    const start = Date.parse(b.start);
    const x0 = Math.max(0, x(start));
    const x1 = Math.min(W, x(start + intervalMs));
    if (x1 <= 0 || x0 >= W || b.count === 0) continue;
    const bh = Math.max(2, (b.count / max) * (H - 4));
    const bar = h("svg:rect", {
      x: x0.toFixed(2),
      y: (H - bh).toFixed(2),
      width: Math.max(0.8, x1 - x0 - 0.6).toFixed(2),
      height: bh.toFixed(2),
      class: "bar",
    });
    bar.append(h("svg:title", {}, `${new Date(start).toISOString()}: ${fmtCount(b.count)} events`));
    svg.append(bar);
  }
  const sel = h("svg:rect", { x: 0, y: 0, width: 0, height: H, class: "selection", visibility: "hidden" });
  svg.append(sel);

  const axis = h("div", { class: "axis", "aria-hidden": "true" });
  for (let i = 0; i <= 4; i++) {
    axis.append(h("span", {}, fmtShort(fromMs + (span * i) / 4, span)));
  }
  const frame = h("div", { class: "histogram-frame", tabindex: "0", id: "histogram",
    "aria-describedby": "histogram-help" }, svg);
  const help = h("p", { class: "hint", id: "histogram-help" },
    "Drag across the chart to zoom in; with the keyboard, Shift+←/→ widen a selection and Enter zooms.");
  // Zoom out: the same middle, twice the span (never past now).
  const zoomOut = h("button", { type: "button", class: "secondary small", id: "zoom-out", onclick: () => {
    const mid = (fromMs + toMs) / 2;
    const to = Math.min(now, mid + span);
    onZoom(Math.floor(to - 2 * span), Math.ceil(to));
  } }, "Zoom out");
  box.append(h("div", { class: "histogram-head" }, h("strong", { id: "hits-total" }, `${fmtCount(total)} event${total === 1 ? "" : "s"}`),
    zoomOut,
    h("span", { class: "hint" }, `UTC, ${intervalMs >= 86400e3 ? intervalMs / 86400e3 + " d" : intervalMs >= 3600e3 ? intervalMs / 3600e3 + " h" : intervalMs >= 60e3 ? intervalMs / 60e3 + " min" : intervalMs / 1e3 + " s"} per bar`)),
    frame, axis, help);

  // Dragging: a fraction of the width is a time.
  let start = null;
  const frac = (ev) => {
    const r = svg.getBoundingClientRect();
    return Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
  };
  const show = (a, b) => {
    const lo = Math.min(a, b), hi = Math.max(a, b);
    sel.setAttribute("x", (lo * W).toFixed(1));
    sel.setAttribute("width", ((hi - lo) * W).toFixed(1));
    sel.setAttribute("visibility", "visible");
  };
  const finish = (a, b) => {
    const lo = Math.min(a, b), hi = Math.max(a, b);
    sel.setAttribute("visibility", "hidden");
    if (hi - lo < 0.005) return;
    onZoom(Math.floor(fromMs + lo * span), Math.ceil(fromMs + hi * span));
  };
  svg.addEventListener("pointerdown", (ev) => {
    start = frac(ev);
    svg.setPointerCapture?.(ev.pointerId);
    show(start, start);
    ev.preventDefault();
  });
  svg.addEventListener("pointermove", (ev) => {
    if (start !== null) show(start, frac(ev));
  });
  svg.addEventListener("pointerup", (ev) => {
    if (start === null) return;
    const a = start;
    start = null;
    finish(a, frac(ev));
  });
  // Keyboard: a selection of a tenth of the width that arrows move and Shift+arrows resize.
  let kb = null;
  frame.addEventListener("keydown", (ev) => {
    if (!["ArrowLeft", "ArrowRight", "Enter", "Escape"].includes(ev.key)) return;
    ev.preventDefault();
    if (ev.key === "Escape") {
      kb = null;
      sel.setAttribute("visibility", "hidden");
      return;
    }
    if (ev.key === "Enter") {
      if (kb) finish(kb[0], kb[1]);
      kb = null;
      return;
    }
    kb = kb || [0.45, 0.55];
    const d = ev.key === "ArrowLeft" ? -0.05 : 0.05;
    if (ev.shiftKey) kb[1] = Math.min(1, Math.max(kb[0] + 0.01, kb[1] + d));
    else {
      const w = kb[1] - kb[0];
      kb[0] = Math.min(1 - w, Math.max(0, kb[0] + d));
      kb[1] = kb[0] + w;
    }
    show(kb[0], kb[1]);
  });
}
