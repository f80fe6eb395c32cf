// The gateway's web page: our own small WHEP client, the /v1 API, nothing from elsewhere.
"use strict";
const gw = { auth: sessionStorage.getItem("auth"), channel: null, pc: null, location: null, hlsUrl: null };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = {};
  if (gw.auth) headers["Authorization"] = gw.auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let m = r.status + "";
    try { m += ": " + (await r.json()).message; } catch (e) {}
    throw new Error(m);
  }
  return r.status === 204 ? null : r.json();
}

function showError(m) { $("error").textContent = m || ""; }

async function loadTree() {
  let devices;
  try { devices = await api("GET", "/v1/devices"); } catch (e) { showError("devices: " + e.message); return; }
  const ul = $("devices");
  ul.textContent = "";
  for (const d of devices) {
    const li = document.createElement("li");
    li.className = "device";
    li.dataset.id = d.id;
    li.innerHTML = "";
    const s = document.createElement("span");
    s.className = d.online ? "online" : "offline";
    s.textContent = (d.name || d.id) + (d.online ? " (online)" : " (offline)");
    li.appendChild(s);
    const sub = document.createElement("ul");
    let detail = null;
    try { detail = await api("GET", "/v1/devices/" + encodeURIComponent(d.id)); } catch (e) {}
    for (const c of (detail ? detail.channel_list : [])) {
      const cl = document.createElement("li");
      cl.className = "channel" + (c.id === gw.channel ? " sel" : "");
      cl.dataset.id = c.id;
      cl.textContent = (c.name || c.id) + " [" + (c.status || "?") + (c.mounted ? "" : ", not mounted") + "]";
      cl.onclick = () => select(c);
      sub.appendChild(cl);
    }
    li.appendChild(sub);
    ul.appendChild(li);
  }
}

function select(c) {
  gw.channel = c.id;
  gw.hlsUrl = c.hls_url;
  $("title").textContent = "Channel " + c.id;
  $("play").disabled = false;
  $("stop").disabled = false;
  for (const el of document.querySelectorAll("li.channel")) el.classList.toggle("sel", el.dataset.id === c.id);
}

// WHEP: offer with every candidate (no trickle), answer in the 201.
async function play() {
  await stop();
  showError("");
  $("hls").textContent = "";
  $("note").textContent = "";
  const pc = new RTCPeerConnection({ iceServers: [] });
  gw.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => { stream.addTrack(ev.track); $("video").srcObject = stream; };
  pc.onconnectionstatechange = () => { $("state").textContent = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const t = setTimeout(resolve, 3000);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
    });
  });
  const headers = { "Content-Type": "application/sdp" };
  if (gw.auth) headers["Authorization"] = gw.auth;
  const whep = "/" + encodeURIComponent(gw.channel) + "/whep";
  let r = await fetch(whep, { method: "POST", headers, body: pc.localDescription.sdp });
  // An H.265 channel is refused with 406 (browsers decode no H.265 over WebRTC): ask for
  // the gateway's H.264 transcode of it (video only), and say so.
  if (r.status === 406) {
    let m = "";
    try { m = (await r.json()).message; } catch (e) {}
    if (m.includes("transcode=h264")) {
      r = await fetch(whep + "?transcode=h264", { method: "POST", headers, body: pc.localDescription.sdp });
      if (r.status === 201) $("note").textContent = "H.265 channel: transcoded to H.264 by the gateway";
    } else {
      r = new Response(JSON.stringify({ message: m }), { status: 406 });
    }
  }
  if (r.status !== 201) {
    let m = "WHEP " + r.status;
    try { m += ": " + (await r.json()).message; } catch (e) {}
    pc.close();
    gw.pc = null;
    fallback(m);
    throw new Error(m);
  }
  gw.location = r.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
}

// HLS: Chromium plays no HLS by itself and no HLS library is bundled: show the URL.
function fallback(why) {
  showError(why);
  const v = $("video");
  if (gw.hlsUrl && v.canPlayType("application/vnd.apple.mpegurl")) {
    v.src = gw.hlsUrl;
    $("hls").textContent = "playing HLS: " + gw.hlsUrl;
  } else if (gw.hlsUrl) {
    $("hls").textContent = "This browser cannot play HLS by itself; open it in a player: " + gw.hlsUrl;
  } else {
    $("hls").textContent = "HLS is off on this gateway (hls = true enables it).";
  }
}

// Both fields are taken before the first await: a play() started while this DELETE is in
// flight must not have its new connection closed when the DELETE returns.
async function stop() {
  const location = gw.location, pc = gw.pc;
  gw.location = null;
  gw.pc = null;
  if (pc) pc.close();
  $("state").textContent = "";
  if (location) {
    const headers = {};
    if (gw.auth) headers["Authorization"] = gw.auth;
    try { await fetch(location, { method: "DELETE", headers }); } catch (e) {}
  }
}

async function loadSessions() {
  let list;
  try { list = await api("GET", "/v1/sessions"); } catch (e) { return; }
  const tb = $("sessions");
  tb.textContent = "";
  for (const s of list) {
    const tr = document.createElement("tr");
    for (const v of [s.path, s.protocol, s.remote, s.user || "", s.bytes_sent, Math.round(s.bitrate_bps / 1000)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
}

$("login").onsubmit = (ev) => {
  ev.preventDefault();
  gw.auth = "Basic " + btoa($("user").value + ":" + $("pass").value);
  sessionStorage.setItem("auth", gw.auth);
  loadTree();
  loadSessions();
};
$("play").onclick = () => { play().catch((e) => showError(e.message)); };
$("stop").onclick = () => { stop(); };
for (const b of document.querySelectorAll("#ptz button")) {
  b.onclick = () => {
    if (!gw.channel) return;
    api("POST", "/v1/channels/" + encodeURIComponent(gw.channel) + "/ptz", JSON.parse(b.dataset.ptz))
      .catch((e) => showError("PTZ: " + e.message));
  };
}
window.gw = gw;
window.gwPlay = play;
window.gwLoadTree = loadTree;
// Nothing is fetched before the login: a 401 with a Basic challenge would open the
// browser's own login prompt (and hold the page's other requests).
if (gw.auth) { loadTree(); loadSessions(); }
setInterval(() => { if (gw.auth) loadTree(); }, 10000);
setInterval(() => { if (gw.auth) loadSessions(); }, 2000);
