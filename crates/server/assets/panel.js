"use strict";
// The admin key lives in this tab only. `#key=...` in the address signs in without a prompt; the
// fragment never reaches the server.
const SHOWN = 300;   // cards per column; the rest are counted, so 1,000+ requests stay responsive
let key = sessionStorage.getItem("laneway-admin-key");
const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
if (fromHash) { key = fromHash; sessionStorage.setItem("laneway-admin-key", key); history.replaceState(null, "", location.pathname); }
const $ = (id) => document.getElementById(id);
const cards = new Map();

function api(path, method = "POST", body) {
  const headers = { Authorization: "Bearer " + key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

function showLogin(message) {
  $("login").classList.remove("hidden");
  $("app").classList.add("hidden");
  $("bar").classList.add("hidden");
  $("login-error").textContent = message || "";
  $("status").textContent = "signed out";
  $("status").classList.remove("live");
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("laneway-admin-key", key);
  connect();
});

function age(ms) {
  if (ms == null) return "";
  return ms < 1000 ? ms + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 60000) + " min " + Math.round(ms % 60000 / 1000) + " s";
}

const laneEls = new Map();

// Each lane's element is made once and updated in place, so its buttons stay the same
// elements between updates and a click is never lost to a redraw.
function laneEl(name) {
  let el = laneEls.get(name);
  if (!el) {
    el = document.createElement("div");
    el.className = "lane";
    el.dataset.lane = name;
    el.innerHTML = '<div class="name"><span class="title"></span> <span class="badge paused">paused</span>' +
      '<span class="badge by-hand" title="set from the panel or the admin API; a reload keeps it unless the file changes this lane\'s limit">set by hand</span></div>' +
      '<div class="bar"><span></span></div><div class="meta"></div>' +
      '<div class="controls"><button class="pause" data-action="pause"></button><button data-action="mode"></button></div>';
    el.querySelector(".title").textContent = name;
    laneEls.set(name, el);
  }
  return el;
}

function renderLanes(lanes) {
  const box = $("lanes");
  const live = new Set(lanes.map((l) => l.name));
  for (const [name, el] of laneEls) if (!live.has(name)) { el.remove(); laneEls.delete(name); }
  [...box.querySelectorAll(".empty")].forEach((e) => e.remove());
  lanes.forEach((l, i) => {
    const el = laneEl(l.name);
    const limit = l.limit == null ? "∞" : l.limit;
    const pct = l.limit ? Math.min(100, 100 * l.in_flight / l.limit) : (l.in_flight ? 100 : 0);
    const extra = [l.rpm_used != null ? l.rpm_used + " rpm used" : "", l.tpm_used != null ? l.tpm_used + " tpm used" : ""].filter(Boolean).join(" · ");
    el.dataset.mode = l.mode;
    el.dataset.paused = String(l.paused);
    el.querySelector(".badge.paused").classList.toggle("hidden", !l.paused);
    el.querySelector(".badge.by-hand").classList.toggle("hidden", l.limit_source !== "operator");
    // Widths are set through the DOM: the page's Content-Security-Policy allows no inline styles.
    el.querySelector(".bar span").style.width = pct + "%";
    const meta = `<b class="in-flight">${l.in_flight}</b> / ${limit} in flight · <b class="queued">${l.queued}</b> queued · ` +
      `<span class="state-${l.state}">${l.state.replace("_", " ")}</span>${extra ? "<br>" + esc(extra) : ""}`;
    const m = el.querySelector(".meta");
    if (m.innerHTML !== meta) m.innerHTML = meta;
    const pause = el.querySelector("button.pause");
    pause.dataset.action = l.paused ? "resume" : "pause";
    pause.textContent = l.paused ? "Resume" : "Pause";
    el.querySelector('button[data-action="mode"]').textContent = l.mode === "serial" ? "Parallel" : "One at a time";
    if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
  });
  if (!lanes.length && !box.querySelector(".empty")) box.innerHTML = '<div class="empty">no lanes</div>';
}

$("lanes").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const lane = button.closest(".lane");
  const path = "/admin/lanes/" + encodeURIComponent(lane.dataset.lane);
  const action = button.dataset.action;
  const r = action === "mode"
    ? await api(path, "PATCH", { concurrency: lane.dataset.mode === "serial" ? "parallel" : "serial" })
    : await api(path + "/" + action);
  if (!r.ok) alert((await r.json()).error.message);
});

// Batches (Batch API) are read every few seconds; each keeps its element, as lanes do.
const batchEls = new Map();
const ENDED = ["completed", "failed", "expired", "cancelled"];

function renderBatches(list) {
  const box = $("batches");
  const live = new Set(list.map((b) => b.id));
  for (const [id, el] of batchEls) if (!live.has(id)) { el.remove(); batchEls.delete(id); }
  [...box.querySelectorAll(".empty")].forEach((e) => e.remove());
  list.forEach((b, i) => {
    let el = batchEls.get(b.id);
    if (!el) {
      el = document.createElement("div");
      el.className = "lane batch";
      el.dataset.batch = b.id;
      el.innerHTML = '<div class="name"><span class="title"></span> <span class="badge status"></span></div>' +
        '<div class="bar"><span></span></div><div class="meta"></div>' +
        '<div class="controls"><button class="danger" data-action="cancel-batch">Cancel</button></div>';
      el.querySelector(".title").textContent = b.id;
      batchEls.set(b.id, el);
    }
    const p = b.progress, total = p.total || 0;
    el.dataset.status = b.status;
    el.querySelector(".badge.status").textContent = b.status.replace("_", " ");
    el.querySelector(".bar span").style.width = (total ? 100 * p.done / total : 0) + "%";
    const meta = [`<b class="done">${p.done}</b> / ${total} done`, `${b.request_counts.failed} failed`, esc(b.owner)];
    if (p.lanes && p.lanes.length) meta.push("lanes " + esc(p.lanes.join(", ")));
    if (p.items_per_second) meta.push(p.items_per_second.toFixed(1) + " items/s");
    const m = el.querySelector(".meta");
    const html = meta.join(" · ");
    if (m.innerHTML !== html) m.innerHTML = html;
    el.querySelector(".controls").classList.toggle("hidden", ENDED.includes(b.status) || b.status === "cancelling");
    if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
  });
  if (!list.length && !box.querySelector(".empty")) box.innerHTML = '<div class="empty">no batches</div>';
}

async function loadBatches() {
  let r;
  try { r = await api("/admin/batches?limit=20", "GET"); } catch (e) { return; }
  if (r.ok) renderBatches((await r.json()).data);
}

$("batches").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action=cancel-batch]");
  if (!button) return;
  const id = button.closest(".batch").dataset.batch;
  if (!confirm(`Cancel batch ${id}? Items not started are dropped; what finished is kept.`)) return;
  const r = await api("/v1/batches/" + encodeURIComponent(id) + "/cancel");
  if (!r.ok) alert((await r.json()).error.message);
  loadBatches();
});

function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

function card(r) {
  let el = cards.get(r.id);
  if (!el) {
    el = document.createElement("div");
    el.className = "card";
    el.dataset.id = r.id;
    if (r.client_request_id) el.dataset.clientId = r.client_request_id;
    el.innerHTML = '<span class="id"></span><span class="meta"></span><button></button>';
    el.querySelector("button").addEventListener("click", () => act(el));
    cards.set(r.id, el);
  }
  const running = r.state === "running";
  el.classList.toggle("running", running);
  el.dataset.state = r.state;
  el.querySelector(".id").textContent = r.client_request_id ? `${r.id} (${r.client_request_id})` : r.id;
  const where = running ? "lane " + r.lane : "waits for " + (r.pool || []).join(", ") + (r.position ? " · position " + r.position : "");
  el.querySelector(".meta").textContent =
    `${r.key} · ${r.model}${r.stream ? " · stream" : ""} · ${where} · ` +
    (running ? "running " + age(r.running_ms) + (r.attempt > 1 ? " · attempt " + r.attempt : "") : "waiting " + age(r.queued_ms));
  el.querySelector("button").textContent = running ? "Stop" : "Cancel";
  return el;
}

async function act(el) {
  const verb = el.dataset.state === "running" ? "stop" : "cancel";
  const r = await api(`/admin/requests/${encodeURIComponent(el.dataset.id)}/${verb}`);
  if (!r.ok && r.status !== 404) alert((await r.json()).error.message);
}

function place(column, list) {
  const box = $(column);
  const shown = list.slice(0, SHOWN).map(card);
  // Reorder only what moved, so a large queue does not rebuild the DOM on every update.
  shown.forEach((el, i) => { if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null); });
  while (box.children.length > shown.length) box.lastChild.remove();
  $("more-" + column).textContent = list.length > SHOWN ? `… and ${list.length - SHOWN} more` : "";
  if (!list.length) box.innerHTML = '<div class="empty">none</div>';
}

function render(snap) {
  renderLanes(snap.lanes);
  const running = snap.requests.filter((r) => r.state === "running");
  const queued = snap.requests.filter((r) => r.state === "queued").sort((a, b) => (a.position || 1e9) - (b.position || 1e9));
  const live = new Set(snap.requests.map((r) => r.id));
  for (const id of cards.keys()) if (!live.has(id)) { cards.get(id).remove(); cards.delete(id); }
  for (const col of ["running", "queued"]) [...$(col).querySelectorAll(".empty")].forEach((e) => e.remove());
  place("running", running);
  place("queued", queued);
  $("n-running").textContent = `(${running.length})`;
  $("n-queued").textContent = `(${queued.length})`;
  $("counts").textContent = `${running.length} processing · ${queued.length} pending`;
}

$("stop-all").addEventListener("click", async () => {
  if (!confirm("Stop every running request? Their clients get 503 request_cancelled.")) return;
  await api("/admin/stop-all");
});
$("clear-queue").addEventListener("click", async () => {
  if (!confirm("Cancel every pending request? Their clients get 503 request_cancelled.")) return;
  await api("/admin/clear-queue");
});

// Server-sent events over fetch, so the admin key travels in a header rather than the URL.
async function connect() {
  if (!key) return showLogin();
  let res;
  try { res = await fetch("/admin/events", { headers: { Authorization: "Bearer " + key } }); }
  catch (e) { $("status").textContent = "gateway unreachable, retrying…"; return setTimeout(connect, 2000); }
  if (res.status === 401 || res.status === 404) {
    sessionStorage.removeItem("laneway-admin-key");
    return showLogin(res.status === 404 ? "The admin API is off: set server.admin_key." : "That key was refused.");
  }
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("bar").classList.remove("hidden");
  $("status").textContent = "live";
  $("status").classList.add("live");
  loadBatches();
  const batchTimer = setInterval(loadBatches, 2000);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch (e) { break; }
    if (chunk.done) break;
    buf += decoder.decode(chunk.value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) render(JSON.parse(data));
    }
  }
  clearInterval(batchTimer);
  $("status").textContent = "reconnecting…";
  $("status").classList.remove("live");
  setTimeout(connect, 1000);
}
connect();
