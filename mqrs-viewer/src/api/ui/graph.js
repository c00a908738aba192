// The service graph: modules as nodes, calls between them as edges with their count, error
// rate and p95, from /api/dependencies over the dashboard's window. Callers stand left of
// the modules they call; click a module to search its traces.
"use strict";
async function serviceGraph() {
  const svg = document.getElementById("graph");
  const note = document.getElementById("graph-note");
  const win = document.getElementById("window").value;
  let deps;
  try { deps = await api("/api/dependencies?endTs=" + Date.now() + "&lookback=" + WINDOW_S[win] * 1000); }
  catch (e) { note.textContent = e.message; return; }
  drawGraph(svg, deps);
  note.textContent = deps.length ? "" : "No calls between modules in this window.";
}
// Column of each service: its distance in calls from the modules nobody calls (or, when every
// module is called, as with a gate that modules push back to, from the one that calls most
// for how little it is called). Calls back to an earlier column are drawn as loops.
function graphColumns(names, deps) {
  const inCalls = new Map(names.map(n => [n, 0])), outCalls = new Map(names.map(n => [n, 0]));
  for (const d of deps) {
    if (d.parent === d.child) continue;
    inCalls.set(d.child, inCalls.get(d.child) + d.callCount);
    outCalls.set(d.parent, outCalls.get(d.parent) + d.callCount);
  }
  let sources = names.filter(n => inCalls.get(n) === 0);
  if (!sources.length) {
    const score = n => outCalls.get(n) - inCalls.get(n);
    sources = [names.slice().sort((a, b) => score(b) - score(a))[0]];
  }
  const col = new Map(sources.map(n => [n, 0]));
  let frontier = sources;
  while (frontier.length) {
    const next = [];
    for (const n of frontier) {
      for (const d of deps) {
        if (d.parent === n && !col.has(d.child)) { col.set(d.child, col.get(n) + 1); next.push(d.child); }
      }
    }
    frontier = next;
  }
  for (const n of names) if (!col.has(n)) col.set(n, 0);
  return col;
}
function drawGraph(svg, deps) {
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  svg.replaceChildren();
  const names = [...new Set(deps.flatMap(d => [d.parent, d.child]))].sort();
  if (!names.length) { svg.setAttribute("height", "0"); return; }
  const col = graphColumns(names, deps);
  const columns = [];
  for (const n of names) (columns[col.get(n)] = columns[col.get(n)] || []).push(n);
  const NW = 130, NH = 34, GAPX = 230, GAPY = 70, PAD = 20;
  const pos = new Map();
  columns.forEach((ns, c) => ns.forEach((n, r) => pos.set(n, { x: PAD + c * (NW + GAPX), y: PAD + r * GAPY })));
  const rows = Math.max(...columns.map(c => (c || []).length));
  const width = PAD * 2 + columns.length * NW + (columns.length - 1) * GAPX;
  const height = PAD * 2 + (rows - 1) * GAPY + NH + 50;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));
  const defs = mk("defs", {});
  const marker = mk("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(mk("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#666" }));
  defs.append(marker);
  svg.append(defs);
  for (const d of deps) {
    const a = pos.get(d.parent), b = pos.get(d.child);
    const rate = d.errorCount ? d.errorCount / Math.max(1, d.callCount) : 0;
    const colour = d.errorCount ? "#d62828" : "#666";
    const g = mk("g", { class: "edge", "data-edge": d.parent + ">" + d.child, "data-calls": d.callCount,
      "data-errors": d.errorCount || 0, "data-p95": d.p95Us || 0 });
    let path, lx, ly;
    if (b.x > a.x) {
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
      path = `M ${x1} ${y1} C ${x1 + GAPX / 2} ${y1}, ${x2 - GAPX / 2} ${y2}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 - 6;
    } else {
      // A call back to an earlier column (or within one): a loop under the nodes.
      const x1 = a.x + NW / 2, y1 = a.y + NH, x2 = b.x + NW / 2, y2 = b.y + NH;
      const low = Math.max(y1, y2) + 30;
      path = `M ${x1} ${y1} C ${x1} ${low}, ${x2} ${low}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2; ly = low;
    }
    g.append(mk("path", { d: path, fill: "none", stroke: colour, "stroke-width": String(1 + Math.min(4, Math.log10(d.callCount + 1))), "marker-end": "url(#arrow)" }));
    const label = `${d.callCount} calls · ${(100 * rate).toFixed(1)} % err · p95 ${fmtDur(d.p95Us || 0)}`;
    g.append(mk("text", { x: lx, y: ly, "text-anchor": "middle", "font-size": "11", fill: d.errorCount ? "#c0392b" : "#444", class: "edge-label" }, label));
    g.append(mk("title", {}, `${d.parent} → ${d.child}: ${label}`));
    svg.append(g);
  }
  for (const n of names) {
    const p = pos.get(n);
    const g = mk("g", { class: "node", "data-node": n, style: "cursor:pointer" });
    g.append(mk("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: "6", fill: colorOf(n) }));
    g.append(mk("text", { x: p.x + NW / 2, y: p.y + NH / 2 + 5, "text-anchor": "middle", fill: "#fff", "font-size": "13", "font-weight": "600" }, n));
    g.addEventListener("click", async () => {
      document.getElementById("service").value = n;
      await loadOperations();
      search();
    });
    svg.append(g);
  }
}
