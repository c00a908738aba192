// One player's session: every request of one user or session id on one time axis.
"use strict";
// Every request of a player, in order, on one time axis, so the requests before a failure and
// the gaps between them are in view. The gate's request history holds every request whatever
// was sampled (guest requests before the login too); those whose trace is held open it on a
// click, the others are plain marks with their duration and error. Without a history (a viewer
// of its own) the timeline is the traces held.
async function showSession(key, id) {
  document.getElementById("search-view").hidden = true;
  document.getElementById("session-view").hidden = false;
  const tag = key === "user" ? "user.id" : "session.id";
  document.getElementById("session-title").textContent = (key === "user" ? "User " : "Session ") + id;
  const box = document.getElementById("session-timeline");
  let traces, history;
  try {
    const params = new URLSearchParams({ tags: JSON.stringify({ [tag]: id }), lookback: "2d", limit: "500" });
    const ask = new URLSearchParams({ [key]: id });
    [traces, history] = await Promise.all([
      api("/api/traces?" + params),
      fetch("/api/history?" + ask).then(r => r.ok ? r.json() : { data: [] }).catch(() => ({ data: [] })),
    ]);
  } catch (e) { document.getElementById("session-meta").textContent = e.message; return; }
  const held = new Map(traces.map(t => [t.traceID, { t, s: summarize(t) }]));
  const fromTrace = ({ t, s }) => ({
    start: s.start, end: s.end, name: s.root.operationName, failed: s.errors > 0, kept: s.kept,
    traceId: t.traceID, error: "",
  });
  const items = [];
  const shown = new Set();
  for (const session of history.data || []) {
    for (const e of session.entries) {
      const x = e.trace_id ? held.get(e.trace_id) : null;
      if (x) shown.add(e.trace_id);
      items.push({
        start: e.start_us, end: e.start_us + e.duration_us, name: e.operation,
        failed: !!e.error_type || (x ? x.s.errors > 0 : false), kept: x ? x.s.kept : "",
        traceId: x ? e.trace_id : null, error: e.error_type ? e.error_type + ": " + (e.error || "") : "",
      });
    }
  }
  // Traces of this player the history does not hold (another gate's, or none kept).
  for (const [tid, x] of held) if (!shown.has(tid)) items.push(fromTrace(x));
  items.sort((a, b) => a.start - b.start);
  if (!items.length) { document.getElementById("session-meta").textContent = "No requests of this " + key + " are held."; return; }
  const start = items[0].start, end = Math.max(...items.map(x => x.end));
  const total = Math.max(1, end - start);
  const failed = items.filter(x => x.failed).length;
  const traced = items.filter(x => x.traceId).length;
  document.getElementById("session-meta").textContent =
    `${items.length} requests over ${fmtDur(total)} from ${new Date(start / 1000).toLocaleString()}` +
    (failed ? ` · ${failed} failed` : "") + ` · ${traced} traced`;
  const ticks = el("div", { class: "ticks" });
  for (let i = 0; i <= 4; i++) ticks.append(el("span", { style: `left:${i * 25}%` }, "+" + fmtDur(Math.round(total * i / 4))));
  document.getElementById("session-ruler").replaceChildren(el("div", {}, ""), ticks, el("div", {}, ""));
  let prevEnd = null;
  box.replaceChildren(...items.map(x => {
    const left = (x.start - start) / total * 100, width = Math.max((x.end - x.start) / total * 100, 0.3);
    const colour = x.failed ? "#d62828" : x.traceId ? colorOf(x.name.split(/[ /]/)[0]) : "#b8c4d0";
    const gap = prevEnd === null ? "" : "+" + fmtDur(Math.max(0, x.start - prevEnd));
    prevEnd = Math.max(prevEnd || 0, x.end);
    const attrs = { class: "session-row" + (x.failed ? " failed" : "") + (x.traceId ? "" : " untraced"), "data-start": x.start };
    if (x.traceId) attrs["data-trace-id"] = x.traceId;
    if (x.error) attrs.title = x.error;
    const row = el("div", attrs,
      el("div", { class: "muted" }, clock(x.start)),
      el("div", {}, x.name, x.failed ? el("span", { class: "err" }, " failed") : "",
        x.kept ? el("span", { class: "kept" }, "kept: " + x.kept) : "",
        x.traceId ? "" : el("span", { class: "muted" }, " (not traced)")),
      el("div", { class: "bar-wrap" }, el("div", { class: "bar", style: `left:${left}%;width:${width}%;background:${colour}` })),
      el("div", { class: "dur" }, fmtDur(x.end - x.start)),
      el("div", { class: "muted", title: "since the previous request ended" }, gap));
    if (x.traceId) row.addEventListener("click", () => { location.href = "/trace/" + x.traceId; });
    return row;
  }));
}
