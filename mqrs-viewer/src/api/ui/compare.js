// Trace compare: two traces side by side, their spans matched by path (the chain of service
// and operation names from the root, and the order among siblings of the same name), with
// the differences in time and in structure marked.
"use strict";
// A difference in time worth marking: over a fifth of the first trace's span and over 100 µs.
const notable = (a, b) => Math.abs(b - a) > Math.max(0.2 * a, 100);
// The spans of trace `t` by path key, and each key's children keys in start order.
function pathTree(t) {
  const ids = new Set(t.spans.map(s => s.spanID));
  const children = new Map();
  const roots = [];
  for (const sp of t.spans) {
    const p = ids.has(parentOf(sp)) ? parentOf(sp) : null;
    if (p) { if (!children.has(p)) children.set(p, []); children.get(p).push(sp); } else roots.push(sp);
  }
  const byKey = new Map(), kidsOf = new Map(), placed = new Set();
  const label = sp => t.processes[sp.processID].serviceName + " " + sp.operationName;
  const place = (spans, parentKey) => {
    const seen = new Map(), keys = [];
    for (const sp of spans.slice().sort((a, b) => a.startTime - b.startTime)) {
      // A span id seen twice (a foreign SDK's bug) would otherwise loop forever.
      if (placed.has(sp)) continue;
      placed.add(sp);
      const l = label(sp), n = seen.get(l) || 0;
      seen.set(l, n + 1);
      const key = parentKey + "\u241f" + l + "#" + n;
      byKey.set(key, sp); keys.push(key);
      kidsOf.set(key, place(children.get(sp.spanID) || [], key));
    }
    return keys;
  };
  kidsOf.set("", place(roots, ""));
  return { byKey, kidsOf, start: Math.min(...t.spans.map(s => s.startTime)),
    end: Math.max(...t.spans.map(s => s.startTime + s.duration)) };
}
async function showCompare(a, b) {
  document.getElementById("search-view").hidden = true;
  document.getElementById("compare-view").hidden = false;
  const title = document.getElementById("compare-title");
  let body;
  try {
    const r = await fetch("/api/traces?traceID=" + encodeURIComponent(a) + "&traceID=" + encodeURIComponent(b));
    body = await r.json();
    if (!r.ok) throw new Error(body.errors ? body.errors.map(e => e.msg).join("; ") : r.statusText);
  } catch (e) { title.textContent = e.message; return; }
  const missing = (body.errors || []).map(e => e.traceID);
  if (missing.length) { title.textContent = "Not held: trace " + missing.join(", "); return; }
  const [ta, tb] = body.data;
  const A = pathTree(ta), B = pathTree(tb);
  const sa = summarize(ta), sb = summarize(tb);
  const totA = A.end - A.start, totB = B.end - B.start;
  const scale = Math.max(1, totA, totB);
  title.textContent = sa.root.operationName === sb.root.operationName
    ? "Compare: " + sa.root.operationName : "Compare: " + sa.root.operationName + " with " + sb.root.operationName;
  const rows = [];
  let onlyA = 0, onlyB = 0, slower = 0, faster = 0;
  const bar = (t, sp, colour) => sp
    ? el("div", { class: "bar", style: `left:${(sp.startTime - t.start) / scale * 100}%;width:${Math.max(sp.duration / scale * 100, 0.3)}%;background:${colour}` })
    : "";
  const walk = (key, depth) => {
    const ka = A.kidsOf.get(key) || [], kb = B.kidsOf.get(key) || [];
    const keys = ka.concat(kb.filter(k => !ka.includes(k)));
    for (const k of keys) {
      const x = A.byKey.get(k), y = B.byKey.get(k);
      const sp = x || y, t = x ? ta : tb;
      const svc = t.processes[sp.processID].serviceName;
      let cls = "", delta = "";
      if (!y) { cls = "only-a"; onlyA++; delta = "only in A"; }
      else if (!x) { cls = "only-b"; onlyB++; delta = "only in B"; }
      else {
        const d = y.duration - x.duration;
        delta = (d >= 0 ? "+" : "−") + fmtDur(Math.abs(d)) + (x.duration ? ` (${d >= 0 ? "+" : "−"}${Math.abs(100 * d / x.duration).toFixed(0)} %)` : "");
        if (notable(x.duration, y.duration)) { cls = d > 0 ? "slower" : "faster"; if (d > 0) slower++; else faster++; }
      }
      const isErr = s => s && s.tags.some(g => g.key === "error" && g.value === true);
      rows.push(el("div", { class: "cmp-row " + cls, "data-path": k, "data-diff": cls || "same" },
        el("div", { class: "span-name", style: "padding-left:" + (6 + depth * 16) + "px" },
          el("span", { class: "svc", style: "background:" + colorOf(svc) }, svc), sp.operationName,
          isErr(x) || isErr(y) ? el("span", { class: "err" }, " !") : ""),
        el("div", { class: "bar-wrap" }, bar(A, x, isErr(x) ? "#d62828" : colorOf(svc))),
        el("div", { class: "bar-wrap" }, bar(B, y, isErr(y) ? "#d62828" : colorOf(svc))),
        el("div", { class: "dur" }, x ? fmtDur(x.duration) : "–"),
        el("div", { class: "dur" }, y ? fmtDur(y.duration) : "–"),
        el("div", { class: "delta" }, delta)));
      walk(k, depth + 1);
    }
  };
  walk("", 0);
  const d = totB - totA;
  document.getElementById("compare-meta").replaceChildren(
    el("div", {}, "A: ", el("a", { href: "/trace/" + ta.traceID }, ta.traceID.slice(0, 12)), ` · ${ta.spans.length} spans · ${fmtDur(totA)} · ${new Date(A.start / 1000).toLocaleString()}`),
    el("div", {}, "B: ", el("a", { href: "/trace/" + tb.traceID }, tb.traceID.slice(0, 12)), ` · ${tb.spans.length} spans · ${fmtDur(totB)} · ${new Date(B.start / 1000).toLocaleString()}`),
    el("div", { id: "compare-summary" }, `B took ${d >= 0 ? "+" : "−"}${fmtDur(Math.abs(d))} against A · ` +
      `${onlyA} spans only in A, ${onlyB} only in B · ${slower} slower, ${faster} faster (over a fifth and 100 µs)`));
  const head = el("div", { class: "cmp-row cmp-head" }, el("div", {}, "span (matched by path)"), el("div", {}, "A"), el("div", {}, "B"),
    el("div", { class: "dur" }, "A"), el("div", { class: "dur" }, "B"), el("div", {}, "B − A"));
  document.getElementById("compare-rows").replaceChildren(head, ...rows);
}
