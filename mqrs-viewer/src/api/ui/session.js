// One player's session: every trace of one user or session id on one time axis.
"use strict";
// One player's session: every trace of one user or session id, in order, on one time axis, so
// the requests before a failure and the gaps between them are in view.
async function showSession(key, id) {
  document.getElementById("search-view").hidden = true;
  document.getElementById("session-view").hidden = false;
  const tag = key === "user" ? "user.id" : "session.id";
  document.getElementById("session-title").textContent = (key === "user" ? "User " : "Session ") + id;
  const box = document.getElementById("session-timeline");
  let traces;
  try {
    const params = new URLSearchParams({ tags: JSON.stringify({ [tag]: id }), lookback: "2d", limit: "500" });
    traces = await api("/api/traces?" + params);
  } catch (e) { document.getElementById("session-meta").textContent = e.message; return; }
  const all = traces.map(t => ({ t, s: summarize(t) })).sort((a, b) => a.s.start - b.s.start);
  if (!all.length) { document.getElementById("session-meta").textContent = "No traces of this " + key + " are held."; return; }
  const start = all[0].s.start, end = Math.max(...all.map(x => x.s.end));
  const total = Math.max(1, end - start);
  const failed = all.filter(x => x.s.errors).length;
  document.getElementById("session-meta").textContent =
    `${all.length} requests over ${fmtDur(total)} from ${new Date(start / 1000).toLocaleString()}` + (failed ? ` · ${failed} failed` : "");
  const ticks = el("div", { class: "ticks" });
  for (let i = 0; i <= 4; i++) ticks.append(el("span", { style: `left:${i * 25}%` }, "+" + fmtDur(Math.round(total * i / 4))));
  document.getElementById("session-ruler").replaceChildren(el("div", {}, ""), ticks, el("div", {}, ""));
  let prevEnd = null;
  box.replaceChildren(...all.map(({ t, s }) => {
    const left = (s.start - start) / total * 100, width = Math.max((s.end - s.start) / total * 100, 0.3);
    const colour = s.errors ? "#d62828" : colorOf(s.services[0] || "");
    const gap = prevEnd === null ? "" : "+" + fmtDur(Math.max(0, s.start - prevEnd));
    prevEnd = Math.max(prevEnd || 0, s.end);
    const row = el("div", { class: "session-row" + (s.errors ? " failed" : ""), "data-trace-id": t.traceID, "data-start": s.start },
      el("div", { class: "muted" }, clock(s.start)),
      el("div", {}, s.root.operationName, s.errors ? el("span", { class: "err" }, " failed") : "",
        s.kept ? el("span", { class: "kept" }, "kept: " + s.kept) : ""),
      el("div", { class: "bar-wrap" }, el("div", { class: "bar", style: `left:${left}%;width:${width}%;background:${colour}` })),
      el("div", { class: "dur" }, fmtDur(s.end - s.start)),
      el("div", { class: "muted", title: "since the previous request ended" }, gap));
    row.addEventListener("click", () => { location.href = "/trace/" + t.traceID; });
    return row;
  }));
}
