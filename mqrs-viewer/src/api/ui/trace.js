// One trace: the timeline with its ruler, span details, folding, find, the critical path.
"use strict";
async function showTrace(id) {
  document.getElementById("search-view").hidden = true;
  document.getElementById("trace-view").hidden = false;
  const box = document.getElementById("timeline");
  let t;
  try { t = (await api("/api/traces/" + encodeURIComponent(id)))[0]; }
  catch (e) { document.getElementById("trace-title").textContent = e.message; return; }
  const s = summarize(t);
  const total = Math.max(1, s.end - s.start);
  document.getElementById("trace-title").textContent = s.root.operationName;
  document.getElementById("trace-meta").textContent =
    `trace ${t.traceID} · ${t.spans.length} spans · ${fmtDur(total)} · services: ${s.services.join(", ")}` +
    (s.kept ? ` · not sampled, kept (${s.kept}): only the path to the ${s.kept === "slow" ? "slow" : "failing"} span was recorded` : "");
  const children = new Map();
  const ids = new Set(t.spans.map(x => x.spanID));
  const roots = [];
  for (const sp of t.spans) {
    const p = ids.has(parentOf(sp)) ? parentOf(sp) : null;
    if (p) { if (!children.has(p)) children.set(p, []); children.get(p).push(sp); } else roots.push(sp);
  }
  const kids = sp => (children.get(sp.spanID) || []).slice().sort((a, b) => a.startTime - b.startTime);
  document.getElementById("trace-legend").replaceChildren(...s.services.slice().sort().map(n =>
    el("span", { class: "svc legend", style: "background:" + colorOf(n) }, n)));
  const critical = criticalPath(roots, kids);
  const ticks = el("div", { class: "ticks" });
  for (let i = 0; i <= 4; i++) ticks.append(el("span", { style: `left:${i * 25}%` }, fmtDur(Math.round(total * i / 4))));
  document.getElementById("trace-ruler").replaceChildren(el("div", {}, ""), ticks, el("div", {}, ""));
  const blob = new Blob([JSON.stringify({ data: [t] }, null, 2)], { type: "application/json" });
  const dl = document.getElementById("download");
  dl.href = URL.createObjectURL(blob);
  dl.download = "trace-" + t.traceID + ".json";
  const rows = [];
  // Each span once, whatever the API returned: a parent cycle or an id given twice must not
  // loop, and a span no root reaches is shown at the top level.
  const shown = new Set();
  const walk = (sp, depth, ancestors) => {
    if (shown.has(sp)) return;
    shown.add(sp);
    const svc = t.processes[sp.processID].serviceName;
    const isErr = sp.tags.some(g => g.key === "error" && g.value === true);
    const tag = k => (sp.tags.find(g => g.key === k) || {}).value;
    const kind = tag("span.kind");
    const left = (sp.startTime - s.start) / total * 100, width = Math.max(sp.duration / total * 100, 0.2);
    const own = kids(sp);
    const onPath = critical.has(sp.spanID);
    const twisty = el("span", { class: "twisty" }, own.length ? "▾" : "");
    const row = el("div", { class: "span-row" + (onPath ? " critical" : ""), "data-span-id": sp.spanID, "data-depth": depth,
        "data-critical": onPath ? "1" : "0", "data-ancestors": ancestors.join(" ") },
      el("div", { class: "span-name", style: "padding-left:" + (6 + depth * 16) + "px" }, twisty,
        el("span", { class: "svc", style: "background:" + colorOf(svc) }, svc), sp.operationName,
        kind === "client" ? el("span", { class: "muted" }, " (client)") : "", isErr ? el("span", { class: "err" }, " !") : ""),
      el("div", { class: "bar-wrap" }, el("div", { class: "bar", style: `left:${left}%;width:${width}%;background:${isErr ? "#d62828" : colorOf(svc)}` })),
      el("div", { class: "dur" }, fmtDur(sp.duration)));
    // Details: what a span is, how it ended, where its time went, all its tags and events.
    const status = isErr ? "error: " + (tag("otel.status_description") || "") : "ok";
    const facts = [["service", svc], ["kind", kind || "internal"], ["status", status],
      ["starts at", "+" + fmtDur(sp.startTime - s.start)], ["duration", fmtDur(sp.duration)],
      ["self time", fmtDur(selfTime(sp, own))], ["span id", sp.spanID]];
    const details = el("div", { class: "tags details", hidden: "", "data-details-of": sp.spanID },
      el("table", {}, ...facts.map(([k, v]) => el("tr", {}, el("td", { class: "muted" }, k), el("td", { class: k === "status" && isErr ? "err" : "" }, v))),
        ...sp.tags.filter(g => !["span.kind", "error", "otel.status_code", "otel.status_description"].includes(g.key))
          .map(g => el("tr", {}, el("td", { class: "muted" }, g.key), el("td", {}, String(g.value))))),
      ...sp.logs.map(l => el("div", { class: "muted event" }, "+" + fmtDur(l.timestamp - sp.startTime) + " " + l.fields.map(f => f.key + "=" + f.value).join(" "))));
    row.addEventListener("click", ev => {
      if (ev.target === twisty && own.length) { setCollapsed(sp.spanID, twisty.textContent === "▾"); return; }
      details.hidden = !details.hidden;
    });
    rows.push(row, details);
    for (const c of own) walk(c, depth + 1, ancestors.concat(sp.spanID));
  };
  for (const r of roots.sort((a, b) => a.startTime - b.startTime)) walk(r, 0, []);
  for (const sp of t.spans) walk(sp, 0, []);
  box.replaceChildren(...rows);
  const find = document.getElementById("find");
  find.oninput = () => findInTrace(t, find.value);
  const asked = new URLSearchParams(location.search).get("find");
  if (asked) { find.value = asked; findInTrace(t, asked); }
  document.getElementById("compare-with").onsubmit = ev => {
    ev.preventDefault();
    const other = new FormData(ev.target).get("other").trim();
    if (other) location.href = "/compare/" + t.traceID + "/" + encodeURIComponent(other);
  };
    document.getElementById("expand-all").onclick = () => { for (const r of roots) setCollapsed(r.spanID, false, true); };
  document.getElementById("collapse-all").onclick = () => { for (const r of roots) setCollapsed(r.spanID, true); };
  // The player behind the request: every trace of theirs on one timeline.
  const tagOf = k => (s.root.tags.find(g => g.key === k) || t.spans.flatMap(x => x.tags).find(g => g.key === k) || {}).value;
  const links = [];
  const sid = tagOf("session.id"), uid = tagOf("user.id");
  if (sid) links.push(el("a", { href: "/session/" + encodeURIComponent(sid), id: "session-link" }, "this connection's requests"));
  if (uid) links.push(" · ", el("a", { href: "/user/" + encodeURIComponent(uid), id: "user-link" }, "everything user " + uid + " did"));
  document.getElementById("trace-links").replaceChildren(...links);
}
// Marks the spans whose name, service, tag or event holds `text` (any case) and dims the rest.
function findInTrace(t, text) {
  const needle = text.trim().toLowerCase();
  let n = 0;
  for (const sp of t.spans) {
    const row = document.querySelector(`.span-row[data-span-id="${sp.spanID}"]`);
    if (!row) continue;
    const hay = [sp.operationName, t.processes[sp.processID].serviceName,
      ...sp.tags.flatMap(g => [g.key, String(g.value)]),
      ...sp.logs.flatMap(l => l.fields.flatMap(f => [f.key, String(f.value)]))].join("\n").toLowerCase();
    const hit = needle !== "" && hay.includes(needle);
    n += hit ? 1 : 0;
    row.classList.toggle("match", hit);
    row.classList.toggle("dim", needle !== "" && !hit);
    row.dataset.match = hit ? "1" : "0";
  }
  document.getElementById("find-count").textContent = needle ? n + (n === 1 ? " span" : " spans") : "";
}
// Hides (or shows) every span under `id`; `all` also opens the spans folded below it.
function setCollapsed(id, collapsed, all) {
  const box = document.getElementById("timeline");
  const row = box.querySelector(`.span-row[data-span-id="${id}"]`);
  if (row) row.querySelector(".twisty").textContent = row.querySelector(".twisty").textContent && (collapsed ? "▸" : "▾");
  for (const r of box.querySelectorAll(".span-row")) {
    if (!r.dataset.ancestors.split(" ").includes(id)) continue;
    if (collapsed) { r.hidden = true; box.querySelector(`[data-details-of="${r.dataset.spanId}"]`).hidden = true; continue; }
    // Opening: a span shows unless a closed span lies between it and `id`.
    const path = r.dataset.ancestors.split(" ");
    const between = path.slice(path.indexOf(id) + 1);
    const closed = all ? false : between.some(a => (box.querySelector(`.span-row[data-span-id="${a}"] .twisty`) || {}).textContent === "▸");
    r.hidden = closed;
    if (all && r.querySelector(".twisty").textContent) r.querySelector(".twisty").textContent = "▾";
  }
}
// The critical path: from the end of each span on it, the child that finished last before
// that point, then the one that finished last before that child began, and so on.
function criticalPath(roots, kids) {
  const on = new Set(), seen = new Set();
  const visit = sp => {
    if (seen.has(sp)) return;
    seen.add(sp);
    on.add(sp.spanID);
    let until = sp.startTime + sp.duration;
    const byEnd = kids(sp).slice().sort((a, b) => (b.startTime + b.duration) - (a.startTime + a.duration));
    for (const c of byEnd) {
      if (c.startTime + c.duration <= until + 1) { visit(c); until = c.startTime; }
    }
  };
  const root = roots.slice().sort((a, b) => (b.startTime + b.duration) - (a.startTime + a.duration))[0];
  if (root) visit(root);
  return on;
}
// A span's own time: its duration less the time some child of it was running.
function selfTime(sp, own) {
  const end = sp.startTime + sp.duration;
  let covered = 0, at = sp.startTime;
  for (const c of own) {
    const a = Math.max(c.startTime, at), b = Math.min(c.startTime + c.duration, end);
    if (b > a) { covered += b - a; at = b; }
  }
  return Math.max(0, sp.duration - covered);
}
