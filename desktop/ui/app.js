// The Veil app's frontend: renders the service's state, peers, throughput and log; asks the
// backend (src/commands.rs) for everything. Events: `veil://event` (the service's events),
// `veil://link` (whether the service is reachable).
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;
const $ = (id) => document.getElementById(id);

const ui = {
  hello: null,        // the service's last hello / state
  link: null,         // last link event
  busy: false,        // a connect/disconnect is under way
  lastTraffic: null,  // previous stats tick's totals
  rate: { tx: 0, rx: 0 },
  peak: { tx: 0, rx: 0 },
  peers: [],
  autoJoinTried: false,
  stateSeq: 0,        // state events seen; an answer older than the last one is not applied
  keychain: null,
};
window.veilUi = ui; // for the end-to-end test's checks

const chart = new window.ThroughputChart($("chart"));

// ---- formatting -----------------------------------------------------------------------
function bytes(b) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = b, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${b} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
const bits = (v) => window.ThroughputChart.bits(v);
function hms(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
// Backticked commands in hints become <code>.
function withCode(text) {
  return esc(text).replace(/`([^`]+)`/g, "<code>$1</code>");
}
function toast(text, ms = 3500) {
  const t = $("toast");
  t.textContent = text;
  t.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add("hidden"), ms);
}

// ---- state --------------------------------------------------------------------------------
const LABELS = {
  connected: "Connected",
  connecting: "Connecting…",
  disconnecting: "Disconnecting…",
  disconnected: "Disconnected",
  needs_token: "Not joined to a network",
};

function applyState(s) {
  ui.hello = Object.assign({}, ui.hello || {}, s);
  const state = s.state;
  const dot = $("state-dot");
  dot.className = "dot " + ({ connected: "on", connecting: "busy", disconnecting: "busy" }[state] || "");
  let text = LABELS[state] || state;
  if (state === "connected" && s.overlay_ipv4) text = `Connected as ${s.overlay_ipv4}`;
  $("state-text").textContent = text;
  $("state-sub").textContent = s.relays && s.relays.length ? `relay ${s.relays.join(", ")}` : "";
  const sw = $("switch");
  const on = state === "connected" || state === "connecting";
  sw.setAttribute("aria-checked", on ? "true" : "false");
  sw.classList.toggle("busy", ui.busy || state === "connecting" || state === "disconnecting");
  $("switch-label").textContent = on ? "On" : "Off";
  sw.disabled = ui.busy || state === "needs_token" || state === "disconnecting";
  sw.setAttribute("aria-label", on ? "Disconnect" : "Connect");
  chart.emptyText = on ? "Waiting for traffic data…" : "No traffic data while disconnected";
  chart.draw();
  $("foot-net").textContent = s.relays && s.relays.length ? `Network via ${s.relays.join(", ")}` : "";
  $("leave").classList.toggle("hidden", state === "needs_token");
  if (s.error && state === "disconnected") {
    showBanner({ kind: "refused", message: "The last connection failed.", hint: s.error }, "warn");
  } else if (ui.link && ui.link.up) {
    hideBanner();
  }
  if (state !== "connected" && state !== "connecting") {
    ui.lastTraffic = null;
  }
  $("join").classList.toggle("hidden", state !== "needs_token");
  if (state === "needs_token") maybeAutoJoin();
}

function showBanner(err, tone) {
  const b = $("banner");
  b.classList.remove("hidden");
  b.classList.toggle("warn", tone === "warn");
  $("banner-icon").textContent = tone === "warn" ? "!" : "×";
  $("banner-title").textContent = err.message || String(err);
  $("banner-hint").innerHTML = err.hint ? withCode(err.hint) : "";
  b.dataset.kind = err.kind || "";
}
function hideBanner() {
  $("banner").classList.add("hidden");
  $("banner").dataset.kind = "";
}

function onLink(link) {
  ui.link = link;
  if (link.up) {
    hideBanner();
    $("dashboard").classList.remove("dim");
    applyState(link.hello);
    $("foot-version").textContent = `service ${link.hello.version} · protocol ${link.hello.protocol}`;
    loadLogs();
  } else {
    $("dashboard").classList.add("dim");
    $("join").classList.add("hidden");
    $("leave").classList.add("hidden");
    showBanner(link.error || { message: "The Veil service cannot be reached." });
    const dot = $("state-dot");
    dot.className = "dot error";
    $("state-text").textContent = link.error && link.error.kind === "permission" ? "No permission" : "Service not running";
    $("state-sub").textContent = "";
    $("switch").disabled = true;
    $("switch").setAttribute("aria-checked", "false");
    $("switch-label").textContent = "Off";
  }
}

// ---- events -------------------------------------------------------------------------------
function onEvent(e) {
  switch (e.event) {
    case "state":
      ui.stateSeq++;
      applyState(e);
      if (e.state !== "connected" && e.state !== "connecting") {
        renderPeers([]);
        renderCards(null);
        chart.clear();
        ui.peak = { tx: 0, rx: 0 };
      }
      break;
    case "stats":
      onStats(e);
      break;
    case "log":
      appendLog(e);
      break;
    case "peer_up":
    case "peer_path":
      ui.flash = e.id;
      break;
    default:
      break;
  }
}

function onStats(s) {
  const t = s.traffic;
  if (ui.lastTraffic) {
    const dt = (t.unix_ms - ui.lastTraffic.unix_ms) / 1000;
    if (dt > 0) {
      ui.rate.tx = Math.max(0, ((t.tx_bytes - ui.lastTraffic.tx_bytes) * 8) / dt);
      ui.rate.rx = Math.max(0, ((t.rx_bytes - ui.lastTraffic.rx_bytes) * 8) / dt);
      ui.peak.tx = Math.max(ui.peak.tx, ui.rate.tx);
      ui.peak.rx = Math.max(ui.peak.rx, ui.rate.rx);
      chart.push(t.unix_ms, ui.rate.tx, ui.rate.rx);
    }
  }
  ui.lastTraffic = t;
  renderCards(s);
  renderPeers(s.peers);
}

function renderCards(s) {
  const h = ui.hello || {};
  if (!s) {
    $("addr4").textContent = h.overlay_ipv4 || "—";
    $("addr6").textContent = "";
    $("relay").textContent = (h.relays && h.relays[0]) || "—";
    $("relay-sub").textContent = "";
    for (const k of ["rate-tx", "rate-rx"]) $(k).textContent = "—";
    for (const k of ["total-tx", "total-rx"]) $(k).textContent = "";
    return;
  }
  $("addr4").textContent = h.overlay_ipv4 || "assigning…";
  $("relay").textContent = (h.relays && h.relays[0]) || "—";
  $("relay-sub").textContent = s.relay_connected
    ? `connected${s.relay_rtt_ms != null ? ` · ${s.relay_rtt_ms.toFixed(1)} ms` : ""}`
    : "not connected, retrying";
  $("rate-tx").textContent = bits(ui.rate.tx);
  $("rate-rx").textContent = bits(ui.rate.rx);
  $("total-tx").textContent = `${bytes(s.traffic.tx_bytes)} in total`;
  $("total-rx").textContent = `${bytes(s.traffic.rx_bytes)} in total`;
}

function pathCell(p) {
  const kind = ["direct", "relayed", "private"].includes(p.path) ? p.path : "none";
  const label = { direct: "Direct", relayed: "Relayed", private: "Private", none: "No session" }[kind];
  let sub = "";
  if (kind === "direct" && p.endpoint) sub = esc(p.endpoint);
  else if (p.relay_reason) sub = esc(p.relay_reason);
  return `<span class="badge ${kind}">${label}</span>${sub ? `<div class="sub">${sub}</div>` : ""}`;
}

function renderPeers(peers) {
  ui.peers = peers;
  const body = $("peers-body");
  $("peer-count").textContent = peers.length;
  $("peers-empty").classList.toggle("hidden", peers.length > 0);
  body.innerHTML = peers
    .map((p) => {
      const mtu = p.pmtu != null ? `${p.pmtu}<div class="sub">${esc(p.pmtu_state)}</div>` : `<span class="muted">${esc(p.pmtu_state || "—")}</span>`;
      const rtt = p.rtt_ms != null ? `${p.rtt_ms.toFixed(p.rtt_ms < 10 ? 2 : 1)} ms` : "—";
      const flash = ui.flash === p.id ? " flash" : "";
      return `<tr class="peer${flash}" data-id="${esc(p.id)}" data-path="${esc(p.path)}" data-pmtu="${p.pmtu ?? ""}">
        <td>${p.name ? `<span class="name">${esc(p.name)}</span><div class="sub mono">${esc(p.id)}</div>` : `<span class="mono">${esc(p.id)}</span>`}</td>
        <td class="mono" title="${esc(p.overlay_ipv6)}">${esc(p.overlay_ipv4 || "—")}<div class="sub">${esc(p.overlay_ipv6)}</div></td>
        <td>${pathCell(p)}</td>
        <td class="num">${mtu}</td>
        <td class="num">${rtt}</td>
        <td class="num">↑ ${bytes(p.tx_bytes)}<div class="sub">↓ ${bytes(p.rx_bytes)}</div></td>
      </tr>`;
    })
    .join("");
  ui.flash = null;
}

// ---- log ----------------------------------------------------------------------------------
const MAX_LOG = 500;
function appendLog(l) {
  const pane = $("logs");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 30;
  const div = document.createElement("div");
  div.className = `line ${l.level}`;
  div.innerHTML = `<span class="t">${hms(l.unix_ms)}</span><span class="lv">${esc(l.level)}</span>${esc(l.message)}`;
  pane.appendChild(div);
  while (pane.childElementCount > MAX_LOG) pane.firstElementChild.remove();
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}
async function loadLogs() {
  try {
    const lines = await invoke("logs", { lines: 200 });
    $("logs").innerHTML = "";
    lines.forEach(appendLog);
  } catch (e) {
    /* the banner tells already */
  }
}
$("log-clear").addEventListener("click", () => ($("logs").innerHTML = ""));

// ---- actions ------------------------------------------------------------------------------
// The state in an answer is as it was when the service answered; a state event that came
// meanwhile is newer (a relay can come up before the answer to `connect` arrives).
function applyAnswer(h, seq) {
  if (h && h.state && ui.stateSeq === seq) applyState(h);
}

async function run(action, args) {
  const seq = ui.stateSeq;
  ui.busy = true;
  applyState(ui.hello || {});
  try {
    const h = await invoke(action, args);
    applyAnswer(h, seq);
    return h;
  } catch (e) {
    if (e.kind === "service_missing" || e.kind === "permission") onLink({ up: false, error: e });
    else showBanner(e, e.kind === "refused" ? "warn" : undefined);
    throw e;
  } finally {
    ui.busy = false;
    if (ui.hello) applyState(ui.hello);
  }
}

$("switch").addEventListener("click", async () => {
  if (ui.busy || !ui.hello) return;
  const on = ui.hello.state === "connected" || ui.hello.state === "connecting";
  try {
    await run(on ? "disconnect" : "connect");
  } catch (e) { /* shown */ }
});

$("banner-retry").addEventListener("click", boot);

async function refreshKeychain() {
  try {
    ui.keychain = await invoke("keychain");
  } catch (e) {
    ui.keychain = { available: false, error: e };
  }
  const remember = $("remember");
  const note = $("keychain-note");
  if (ui.keychain.available) {
    remember.disabled = false;
    remember.parentElement.classList.remove("disabled");
    note.textContent = "Veil can join again by itself if the service forgets the token.";
  } else {
    remember.checked = false;
    remember.disabled = true;
    remember.parentElement.classList.add("disabled");
    const err = ui.keychain.error || {};
    note.innerHTML = withCode(`${err.message || "No keychain is available."} ${err.hint || ""}`);
  }
}

async function maybeAutoJoin() {
  if (ui.autoJoinTried) return;
  ui.autoJoinTried = true;
  await refreshKeychain();
  if (!ui.keychain || !ui.keychain.has_token) {
    setTimeout(() => $("token-input").focus(), 50);
    return;
  }
  try {
    const seq = ui.stateSeq;
    const h = await invoke("join_remembered");
    if (h) {
      applyAnswer(h, seq);
      toast("Joined with the token remembered in your keychain");
      await run("connect");
    }
  } catch (e) {
    showJoinError(e);
  }
}

function showJoinError(e) {
  const box = $("join-error");
  box.innerHTML = withCode(e.message + (e.hint ? " " + e.hint : ""));
  box.classList.remove("hidden");
}

$("join-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const btn = $("join-btn");
  $("join-error").classList.add("hidden");
  btn.disabled = true;
  btn.textContent = "Joining…";
  try {
    const seq = ui.stateSeq;
    const res = await invoke("join", { token: $("token-input").value, remember: $("remember").checked });
    $("token-input").value = "";
    if (res.keychain_error) toast(`Joined, but the token is not remembered: ${res.keychain_error.message}`, 7000);
    else if (res.remembered) toast("Joined; the token is remembered in your keychain");
    applyAnswer(res.hello, seq);
    btn.textContent = "Connecting…";
    await run("connect");
  } catch (e) {
    showJoinError(e);
  } finally {
    btn.disabled = false;
    btn.textContent = "Join and connect";
  }
});

$("leave").addEventListener("click", () => $("confirm-leave").classList.remove("hidden"));
$("leave-cancel").addEventListener("click", () => $("confirm-leave").classList.add("hidden"));
$("leave-ok").addEventListener("click", async () => {
  $("confirm-leave").classList.add("hidden");
  ui.autoJoinTried = true; // leaving on purpose: do not join again by itself
  try {
    await run("leave", { forget: $("forget").checked });
    toast("Left the network");
  } catch (e) { /* shown */ }
});

// ---- start --------------------------------------------------------------------------------
async function boot() {
  try {
    const seq = ui.stateSeq;
    const h = await invoke("hello");
    // A state event that arrived meanwhile is newer than this answer.
    const hello = ui.stateSeq === seq || !ui.hello ? h : Object.assign({}, h, ui.hello);
    onLink({ up: true, hello, error: null });
  } catch (e) {
    onLink({ up: false, hello: null, error: e });
  }
}

listen("veil://link", (e) => onLink(e.payload));
listen("veil://event", (e) => onEvent(e.payload));
renderPeers([]);
renderCards(null);
boot();
