// Shared by every view: colours per service, time formats, element building, API calls,
// and what a trace's summary line needs.
"use strict";
// Red is kept for errors.
const COLORS = ["#457b9d", "#e76f51", "#2a9d8f", "#8e44ad", "#f4a261", "#264653", "#6a994e", "#b5838d", "#3a86ff", "#8d6e63"];
// A service's colour comes from a hash of its name, so it is mostly the same on every page;
// two services of one page never share one while the palette lasts.
const colorSlots = new Map(), slotsUsed = new Set();
const colorOf = s => {
  if (!colorSlots.has(s)) {
    let h = 0; for (const c of s) h = (h * 31 + c.codePointAt(0)) >>> 0;
    let i = h % COLORS.length;
    while (slotsUsed.has(i) && slotsUsed.size < COLORS.length) i = (i + 1) % COLORS.length;
    colorSlots.set(s, i); slotsUsed.add(i);
  }
  return COLORS[colorSlots.get(s)];
};
// Local time of day with milliseconds: requests of one player are often that close.
const clock = us => { const d = new Date(us / 1000); return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0"); };
const fmtDur = us => us >= 1e6 ? (us / 1e6).toFixed(2) + " s" : us >= 1e3 ? (us / 1e3).toFixed(2) + " ms" : us + " µs";
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v); }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
async function api(path) {
  const r = await fetch(path);
  const body = await r.json();
  if (!r.ok) throw new Error(body.errors ? body.errors.map(e => e.msg).join("; ") : r.statusText);
  return body.data;
}
// A span's parent id: its CHILD_OF reference (links come as FOLLOWS_FROM), or null.
function parentOf(sp) {
  const r = sp.references.find(r => r.refType === "CHILD_OF");
  return r ? r.spanID : null;
}
function summarize(t) {
  const ids = new Set(t.spans.map(s => s.spanID));
  const root = t.spans.find(s => !ids.has(parentOf(s))) || t.spans[0];
  const start = Math.min(...t.spans.map(s => s.startTime));
  const end = Math.max(...t.spans.map(s => s.startTime + s.duration));
  const services = [...new Set(t.spans.map(s => t.processes[s.processID].serviceName))];
  const errors = t.spans.filter(s => s.tags.some(g => g.key === "error" && g.value === true)).length;
  // Kept although the sampler skipped it: why (error or slow), from the spans' mqrs.kept tag.
  const keptTag = t.spans.flatMap(s => s.tags).find(g => g.key === "mqrs.kept");
  const kept = keptTag ? String(keptTag.value) : "";
  return { root, start, end, services, errors, kept };
}
async function loadServices() {
  const sel = document.getElementById("service");
  for (const s of await api("/api/services")) sel.append(el("option", { value: s }, s));
}
async function loadOperations() {
  const svc = document.getElementById("service").value;
  const sel = document.getElementById("operation");
  sel.replaceChildren(el("option", { value: "" }, "(all)"));
  if (!svc) return;
  for (const o of await api("/api/services/" + encodeURIComponent(svc) + "/operations")) sel.append(el("option", { value: o }, o));
}
