// The admin page's node actions, as API requests from this origin.
"use strict";
document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-node-act]");
  if (!b) return;
  const node = b.closest("tr").dataset.node;
  const act = b.dataset.nodeAct;
  if (act === "drain" && !confirm(`Drain ${node}? Its workspaces stop and move elsewhere.`)) return;
  const r = await fetch(`/v1/nodes/${node}/${act}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: act === "drain" ? JSON.stringify({ deadline_seconds: 0 }) : "{}",
  });
  if (r.ok) { location.reload(); return; }
  let e = {};
  try { e = await r.json(); } catch (_) { /* not JSON */ }
  document.getElementById("message").textContent = `${act} ${node}: ${e.code || r.status}: ${e.message || ""}`;
});
document.body.dataset.ready = "true";
