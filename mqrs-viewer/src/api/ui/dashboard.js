// The per-operation dashboard and the counters in the header.
"use strict";
// Seconds in each window the dashboard offers.
const WINDOW_S = { "5m": 300, "1h": 3600, "6h": 21600, "1d": 86400 };
async function latency() {
  const body = document.querySelector("#latency tbody");
  const win = document.getElementById("window").value;
  try {
    const ops = await api("/api/latency?lookback=" + win + "&spanKind=server");
    body.replaceChildren(...ops.map(o => {
      const rate = o.count / WINDOW_S[win];
      const row = el("tr", { class: "trace-row", "data-operation": o.operation },
        el("td", {}, el("span", { class: "svc", style: "background:" + colorOf(o.service) }, o.service)),
        el("td", {}, o.operation), el("td", {}, o.count),
        el("td", {}, (rate >= 1 ? rate.toFixed(1) : rate.toFixed(3)) + "/s"),
        el("td", o.errors ? { class: "err" } : {}, o.errors),
        el("td", o.errors ? { class: "err", "data-error-rate": "" } : { "data-error-rate": "" }, (100 * o.errors / Math.max(1, o.count)).toFixed(1) + " %"),
        ...[o.avg_us, o.p50_us, o.p95_us, o.p99_us, o.max_us].map(v => el("td", {}, fmtDur(v))),
        el("td", { class: "muted", "data-source": o.source || "spans" }, o.source || "spans"));
      // Its slowest traces: this operation at or above its p95.
      row.addEventListener("click", async () => {
        document.getElementById("service").value = o.service;
        await loadOperations();
        document.getElementById("operation").value = o.operation;
        document.querySelector("#search [name=minDuration]").value = o.p95_us + "us";
        document.querySelector("#search [name=lookback]").value = win === "5m" ? "1h" : win;
        search();
      });
      return row;
    }));
  } catch (e) { body.replaceChildren(el("tr", {}, el("td", { colspan: 12, class: "err" }, e.message))); }
}
async function stats() {
  try {
    const s = await (await fetch("/api/stats")).json();
    document.getElementById("stats").textContent = `${s.traces} traces · ${s.spans} spans · ${s.spans_dropped} dropped`;
  } catch (_) { /* the page still works without counters */ }
}
