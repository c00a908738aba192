// The search page: the form, the trace list, live polling and the scatter plot.
"use strict";
// The traces of the last search, newest first; live mode adds to them.
let listed = [];
function searchParams() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(document.getElementById("search"))) if (v) params.set(k, v);
  return params;
}
async function search(ev) {
  if (ev) ev.preventDefault();
  const errBox = document.getElementById("search-error");
  errBox.textContent = "";
  try { listed = await api("/api/traces?" + searchParams()); renderList(); }
  catch (e) { errBox.textContent = e.message; }
}
// Live: every two seconds, the traces that started since the newest one listed.
async function poll() {
  if (!document.getElementById("live").checked || !listed.length) return;
  const params = searchParams();
  params.delete("lookback");
  params.set("start", String(Math.max(...listed.map(t => summarize(t).start)) + 1));
  try {
    const known = new Set(listed.map(t => t.traceID));
    const fresh = (await api("/api/traces?" + params)).filter(t => !known.has(t.traceID));
    if (fresh.length) { listed = fresh.concat(listed).slice(0, Number(params.get("limit")) || 20); renderList(); }
  } catch (_) { /* the next poll tries again */ }
}
// Traces ticked for comparing, at most two: a third replaces the older one.
let picked = [];
function togglePick(id, on) {
  picked = picked.filter(x => x !== id);
  if (on) picked.push(id);
  if (picked.length > 2) picked = picked.slice(-2);
  for (const c of document.querySelectorAll("input.pick")) c.checked = picked.includes(c.dataset.pick);
  document.getElementById("compare-selected").disabled = picked.length !== 2;
}
function renderList() {
  const body = document.querySelector("#traces tbody");
  const all = listed.map(t => ({ t, s: summarize(t) }));
  body.replaceChildren(...all.map(({ t, s }) => {
    const pick = el("input", { type: "checkbox", class: "pick", title: "select to compare", "data-pick": t.traceID });
    if (picked.includes(t.traceID)) pick.checked = true;
    pick.addEventListener("click", ev => { ev.stopPropagation(); togglePick(t.traceID, pick.checked); });
    const row = el("tr", { class: "trace-row", "data-trace-id": t.traceID },
      el("td", {}, pick),
      el("td", {}, el("a", { href: "/trace/" + t.traceID }, t.traceID.slice(0, 12))),
      el("td", {}, s.root.operationName, s.errors ? el("span", { class: "err" }, " (" + s.errors + " errors)") : "",
        s.kept ? el("span", { class: "kept", title: "not sampled; kept because a span was " + (s.kept === "slow" ? "slow" : "failed") }, "kept: " + s.kept) : ""),
      el("td", {}, ...s.services.map(n => el("span", { class: "svc", style: "background:" + colorOf(n) }, n))),
      el("td", {}, t.spans.length),
      el("td", {}, fmtDur(s.end - s.start)),
      el("td", {}, new Date(s.start / 1000).toLocaleTimeString()));
    row.addEventListener("click", () => { location.href = "/trace/" + t.traceID; });
    return row;
  }));
  if (!all.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No traces match.")));
  scatter(all);
}
// Duration over start time, one dot per trace listed; click a dot to open its trace.
function scatter(all) {
  const svg = document.getElementById("scatter");
  const NS = "http://www.w3.org/2000/svg";
  const w = svg.clientWidth || 1000, h = 140, pad = 14;
  svg.replaceChildren();
  if (!all.length) return;
  const t0 = Math.min(...all.map(x => x.s.start)), t1 = Math.max(...all.map(x => x.s.start));
  const dmax = Math.max(1, ...all.map(x => x.s.end - x.s.start));
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", 4); label.setAttribute("y", 11); label.setAttribute("font-size", "10"); label.setAttribute("fill", "#777");
  label.textContent = "duration, up to " + fmtDur(dmax);
  svg.append(label);
  for (const { t, s } of all) {
    const c = document.createElementNS(NS, "circle");
    const x = pad + (t1 > t0 ? (s.start - t0) / (t1 - t0) : 0.5) * (w - 2 * pad);
    const y = h - pad - (s.end - s.start) / dmax * (h - 2 * pad);
    c.setAttribute("cx", x.toFixed(1)); c.setAttribute("cy", y.toFixed(1)); c.setAttribute("r", "4");
    c.setAttribute("fill", s.errors ? "#d62828" : colorOf(s.services[0] || ""));
    c.setAttribute("data-dot-of", t.traceID);
    const tip = document.createElementNS(NS, "title");
    tip.textContent = s.root.operationName + " · " + fmtDur(s.end - s.start);
    c.append(tip);
    c.addEventListener("click", () => { location.href = "/trace/" + t.traceID; });
    svg.append(c);
  }
}
