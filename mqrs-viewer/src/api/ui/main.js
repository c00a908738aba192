// Picks the view from the address and starts it.
"use strict";
stats();
const m = location.pathname.match(/^\/trace\/([0-9a-fA-F]+)$/);
const who = location.pathname.match(/^\/(user|session)\/(.+)$/);
const pair = location.pathname.match(/^\/compare\/([0-9a-fA-F]+)\/([0-9a-fA-F]+)$/);
document.getElementById("player").addEventListener("submit", ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  if (f.get("id")) location.href = "/" + f.get("key") + "/" + encodeURIComponent(f.get("id"));
});
if (m) { showTrace(m[1]); } else if (pair) { showCompare(pair[1], pair[2]); } else if (who) { showSession(who[1], decodeURIComponent(who[2])); } else {
  document.getElementById("search").addEventListener("submit", search);
  setInterval(poll, 2000);
  document.getElementById("window").addEventListener("change", () => { latency(); serviceGraph(); });
  document.getElementById("compare-selected").addEventListener("click", () => {
    if (picked.length === 2) location.href = "/compare/" + picked[0] + "/" + picked[1];
  });
  serviceGraph();
  document.getElementById("service").addEventListener("change", loadOperations);
  latency();
  loadServices().then(() => search()).catch(e => { document.getElementById("search-error").textContent = e.message; });
}
