// peregrine's bundled viewer: a small Janus API client over WebSocket speaking to the
// ustreamer plugin (features → watch → offer → answer → start), with reconnects, 503
// retries and live stats; with `?whep=1` a WHEP player instead (one POST of its offer).
// No dependencies, no build step.
"use strict";

const RETRY_WATCH_MS = 500;
const RECONNECT_MS = 1000;
const KEEPALIVE_MS = 25000;

const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const query = new URLSearchParams(location.search);
const wsScheme = location.protocol === "https:" ? "wss:" : "ws:";
const serverUrl = query.get("server") || `${wsScheme}//${location.host}/janus/ws`;
// The server's API secret or token (--janus-api-secret, --janus-token), when it needs one.
const credentials = {};
for (const key of ["apisecret", "token"]) if (query.get(key)) credentials[key] = query.get(key);

// Sound: asked for once the sound button is on (or with `?audio=1`), as kvmd asks only
// with its volume up: with sound the browser holds pictures back until their sound
// plays (lip sync), without it each picture shows at once. The page's microphone is
// sent once the mic button is on (or with `?mic=1`).
let wantAudio = query.get("audio") === "1";
let wantMic = query.get("mic") === "1";

// What a test (or a curious person in the console) can read.
window.peregrine = {
  state: "connecting", offers: 0, watch503: 0, reconnects: 0, latencyMs: null, fps: 0, frames: 0, firstFrameMs: null,
  // WHEP mode: when (ms since navigation) the offer was posted, answered, connected.
  whep: null, iceRestarts: 0,
  audio: false, mic: false, audioLevelDb: null, micLevelDb: null, audioLatencyMs: null, avOffsetMs: null, beeps: 0,
};

// Readings shown on the page, by the key they have in window.peregrine: the offset next
// to the latency, the levels as meters on the sound and microphone buttons.
function showLevel(meter, db) {
  $(meter).style.width = db === null ? "0" : `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
}
function report(name, value) {
  window.peregrine[name] = value;
  if (name === "avOffsetMs") {
    $("av-offset").textContent = value === null ? "–" : `${value > 0 ? "+" : ""}${value} ms`;
    $("av-part").classList.toggle("hidden", value === null);
  } else if (name === "audioLevelDb") {
    showLevel("sound-meter", value);
  } else if (name === "micLevelDb") {
    showLevel("mic-meter", value);
  }
}
const sound = new window.PeregrineSound(report);

function setStatus(text, showOverlay) {
  window.peregrine.state = text;
  $("status").textContent = text;
  $("status").title = text; // the whole text, where the bar has to cut it
  overlay.textContent = text;
  overlay.classList.toggle("hidden", !showOverlay);
}

/**
 * What index.html's first script started for `mode` ("whep" or "janus"), taken once: a
 * retry or reconnect starts afresh.
 */
function takeEarlyStart(mode) {
  const early = window.peregrineEarly;
  window.peregrineEarly = null;
  return early && early.mode === mode ? early : null;
}

function randomTransaction() {
  return Math.random().toString(36).slice(2, 14);
}

class Viewer {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.session = null;
    this.handle = null;
    this.pc = null;
    this.iceServers = [];
    this.pending = new Map();
    this.timers = new Set();
    // One watch at a time: a second one would bring a second offer, and the answer to
    // the first could then be taken for the second's.
    this.watchTimer = null;
    this.awaitingOffer = false;
    // The ICE servers the features name are needed for the answer.
    this.features = null;
    this.featuresReady = new Promise((resolve) => { this.featuresKnown = resolve; });
  }

  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
    return t;
  }

  /** Watch after `ms`, instead of any watch already waiting. */
  scheduleWatch(ms) {
    if (this.watchTimer !== null) { clearTimeout(this.watchTimer); this.timers.delete(this.watchTimer); }
    this.watchTimer = this.later(() => this.watch(), ms);
  }

  connect() {
    viewer = this;
    setStatus("connecting", true);
    // What the page started while loading (session, handle, watch), if still good.
    const early = takeEarlyStart("janus");
    const reuse = early && early.url === this.url && early.ws.readyState <= WebSocket.OPEN;
    if (early && !reuse) early.ws.close();
    if (reuse) {
      this.ws = early.ws;
      early.ready.then((started) => this.takeOver(early, started), (e) => this.fail(e));
      return;
    }
    const ws = new WebSocket(this.url, "janus-protocol");
    this.ws = ws;
    this.listen();
    ws.onopen = () => this.start().catch((e) => this.fail(e));
  }

  listen() {
    this.ws.onmessage = (ev) => this.onMessage(JSON.parse(ev.data));
    this.ws.onclose = () => this.fail(new Error("connection closed"));
    this.ws.onerror = () => {};
  }

  async start() {
    const created = await this.request({ janus: "create" });
    this.began(created.data.id);
    const attached = await this.request({ janus: "attach", session_id: this.session, plugin: "janus.plugin.ustreamer" });
    this.handle = attached.data.id;
    this.message({ request: "features" });
    // Without sound or microphone the watch does not depend on the features: both go
    // at once, a round trip less before the offer.
    this.watchedEarly = !wantAudio && !wantMic;
    // A watch asked for before the handle was made is this one (or the features' one).
    this.watchPending = false;
    if (this.watchedEarly) this.watch();
  }

  /** Go on from what index.html started: its session and handle, maybe its watch. */
  takeOver(early, { session, handle, watched }) {
    if (this.closed) return;
    this.listen();
    if (this.ws.readyState !== WebSocket.OPEN) return this.fail(new Error("connection closed"));
    this.began(session);
    this.handle = handle;
    this.watchedEarly = watched;
    if (watched) {
      this.awaitingOffer = true;
      this.watching = { audio: false, mic: false };
    }
    for (const msg of early.messages) this.onMessage(msg);
    // A click (sound, microphone) meanwhile wants other settings than the early watch's;
    // without an early watch, the features' one has them.
    if (this.watchPending && watched) this.watch();
    this.watchPending = false;
  }

  began(session) {
    this.session = session;
    this.keepalive = setInterval(() => this.send({ janus: "keepalive", session_id: this.session }), KEEPALIVE_MS);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ ...msg, ...credentials }));
  }

  request(msg) {
    const transaction = randomTransaction();
    return new Promise((resolve, reject) => {
      this.pending.set(transaction, { resolve, reject });
      this.send({ ...msg, transaction });
    });
  }

  message(body, jsep) {
    const msg = { janus: "message", session_id: this.session, handle_id: this.handle, body, transaction: randomTransaction() };
    if (jsep) msg.jsep = jsep;
    this.send(msg);
  }

  onMessage(msg) {
    const waiter = msg.transaction && this.pending.get(msg.transaction);
    if (waiter && msg.janus !== "ack" && msg.janus !== "event") {
      this.pending.delete(msg.transaction);
      if (msg.janus === "error") waiter.reject(Object.assign(new Error(`${msg.error.code} ${msg.error.reason}`), { fromServer: true }));
      else waiter.resolve(msg);
      return;
    }
    switch (msg.janus) {
      case "event": return this.onPluginEvent(msg.plugindata && msg.plugindata.data, msg.jsep);
      // While the source is gone the picture itself says NO SIGNAL: no overlay on top.
      case "webrtcup": return setStatus(window.peregrine.signal === "no signal" ? "no signal" : "playing", false);
      // While a new watch is on its way, a hangup is about the peer the page left.
      case "hangup": return this.awaitingOffer || this.watchTimer !== null ? undefined : this.restartWatch(`hangup: ${msg.reason || ""}`);
      case "timeout": return this.fail(new Error("session timed out"));
      default: return undefined;
    }
  }

  onPluginEvent(data, jsep) {
    if (!data) return;
    if (data.error_code === 503) {
      window.peregrine.watch503 += 1;
      setStatus("waiting for the video source", true);
      this.scheduleWatch(RETRY_WATCH_MS);
      return;
    }
    if (data.error_code) {
      setStatus(`error ${data.error_code}: ${data.error}`, true);
      this.closePeer();
      this.scheduleWatch(2000);
      return;
    }
    const result = data.result || {};
    if (result.status === "features") {
      const features = result.features || {};
      const url = features.ice && features.ice.url;
      this.iceServers = url ? [{ urls: url }] : [];
      this.features = features;
      this.featuresKnown();
      $("mic").disabled = !features.mic;
      $("mic").title = features.mic ? "talk: send this computer's microphone" : "the server plays no microphone";
      if (!this.watchedEarly) this.watch();
    } else if (jsep && jsep.type === "offer") {
      this.awaitingOffer = false;
      this.answer(jsep).catch((e) => this.fail(e));
    }
  }

  watch() {
    this.watchTimer = null;
    // Asked for (the sound button) before there is a handle to watch with.
    if (this.handle === null) {
      this.watchPending = true;
      return;
    }
    this.awaitingOffer = true;
    const features = this.features || {};
    const audio = wantAudio && features.audio === true;
    const mic = wantMic && features.mic === true;
    const request = { request: "watch", params: { orientation: 0, audio, mic } };
    this.watching = { audio, mic };
    // `?stream=NAME` watches one of the server's other streams; without it, the default.
    if (query.get("stream")) request.stream = query.get("stream");
    this.message(request);
  }

  async answer(offer) {
    window.peregrine.offers += 1;
    this.closePeer();
    const offers = window.peregrine.offers;
    await this.featuresReady;
    if (offers !== window.peregrine.offers) return;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (video.srcObject !== stream) video.srcObject = stream;
      if (ev.track.kind === "audio" && this.watching.audio) {
        report("audio", true);
        sound.listen(ev.track);
      }
    };
    pc.onicecandidate = (ev) => {
      const candidate = ev.candidate
        ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex }
        : { completed: true };
      this.send({ janus: "trickle", session_id: this.session, handle_id: this.handle, candidate, transaction: randomTransaction() });
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") this.restartWatch("connection failed");
    };
    // A newer offer replaces this one at any of the waits: its answer is never sent.
    await pc.setRemoteDescription(offer);
    if (pc !== this.pc) return;
    if (this.watching.mic) await this.sendMic(pc);
    if (pc !== this.pc) return;
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (pc !== this.pc) return;
    this.message({ request: "start" }, { type: answer.type, sdp: answer.sdp });
  }

  /** Put the microphone on the offer's audio section (the server offered sendrecv). */
  async sendMic(pc) {
    const transceiver = pc.getTransceivers().find((t) => t.receiver.track.kind === "audio");
    if (!transceiver) return;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      if (pc !== this.pc) { for (const t of stream.getTracks()) t.stop(); return; }
      await transceiver.sender.replaceTrack(stream.getAudioTracks()[0]);
      transceiver.direction = this.watching.audio ? "sendrecv" : "sendonly";
      sound.stopMic();
      sound.measureMic(stream);
      report("mic", true);
    } catch (e) {
      // No microphone, or it was refused: watch on without one.
      console.warn("peregrine: microphone:", e.message);
      showNotice(`microphone: ${e.message}`);
    }
  }

  restartWatch(why, ms = RECONNECT_MS) {
    setStatus(`reconnecting (${why})`, true);
    this.closePeer();
    this.scheduleWatch(ms);
  }

  closePeer() {
    if (this.pc) { this.pc.close(); this.pc = null; }
    sound.stopListening();
    sound.stopMic();
    report("audio", false);
    report("mic", false);
  }

  fail(err) {
    if (this.closed) return;
    this.closed = true;
    console.warn("peregrine:", err.message);
    clearInterval(this.keepalive);
    for (const t of this.timers) clearTimeout(t);
    for (const w of this.pending.values()) w.reject(err);
    this.closePeer();
    if (this.ws) { this.ws.onclose = null; this.ws.close(); }
    // A refusal (such as 403 for a missing ?apisecret=) is worth showing as it is.
    setStatus(err.fromServer ? `${err.message}, retrying` : "server unreachable, reconnecting", true);
    window.peregrine.reconnects += 1;
    setTimeout(() => new Viewer(this.url).connect(), RECONNECT_MS);
  }
}

// ---- WHEP (`?whep=1`): our offer POSTed to /whep (or /STREAM/whep), the answer back,
// DELETE on leaving. No session to set up first: one round trip to the first picture. ----

/** The first `a=ice-ufrag` and `a=ice-pwd` of an SDP or sdpfrag. */
function iceCredentials(sdp) {
  const value = (name) => (sdp.match(new RegExp(`^a=${name}:(.*)$`, "m")) || [])[1]?.trim();
  const ufrag = value("ice-ufrag");
  const pwd = value("ice-pwd");
  if (!ufrag || !pwd) throw new Error("no ICE credentials");
  return { ufrag, pwd };
}

class WhepViewer {
  constructor() {
    this.pc = null;
    this.resource = null;
    this.timer = null;
    this.watching = { audio: false, mic: false };
    const stream = query.get("stream");
    this.endpoint = stream ? `${encodeURIComponent(stream)}/whep` : "whep";
    // The server's API secret or token, as a Bearer token.
    const token = credentials.token || credentials.apisecret;
    this.auth = token ? { Authorization: `Bearer ${token}` } : {};
  }

  connect() {
    viewer = this;
    window.peregrine.mode = "whep";
    $("mic").disabled = true;
    $("mic").title = "no microphone over WHEP";
    setStatus("connecting", true);
    this.start().catch((e) => this.retry(e.message, RECONNECT_MS));
  }

  async start() {
    window.peregrine.offers += 1;
    // The first time, the page has posted the offer already (index.html), maybe even
    // connected: take over its peer connection, its tracks and its candidates.
    const early = takeEarlyStart("whep");
    const pc = early ? early.pc : new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    this.watching = { audio: early ? early.audio : wantAudio, mic: false };
    if (!early) {
      pc.addTransceiver("video", { direction: "recvonly" });
      if (wantAudio) pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      if (video.srcObject !== stream) video.srcObject = stream;
      if (ev.track.kind === "audio") {
        report("audio", true);
        sound.listen(ev.track);
      }
    };
    for (const ev of early ? early.tracks : []) pc.ontrack(ev);
    const timing = { posted: null, answered: null, connected: null, etag: null };
    window.peregrine.whep = timing;
    // Our candidates follow in PATCHes: the server's are in its answer, and its checks
    // answer ours as they come, so waiting for gathering would only delay the POST.
    this.etag = null;
    const candidateLine = (c) => (c ? `a=${c.candidate}` : "a=end-of-candidates");
    this.candidates = early ? early.candidates.map(candidateLine) : [];
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc) return;
      this.candidates.push(candidateLine(ev.candidate));
      if (this.resource) this.trickle();
    };
    let r, answer;
    if (early) {
      ({ response: r, body: answer } = await early.reply);
      timing.posted = Math.round(early.posted);
      timing.answered = Math.round(early.answered);
      // Shown before this script ran.
      if (early.firstFrameMs !== undefined) window.peregrine.firstFrameMs ??= Math.round(early.firstFrameMs);
    } else {
      // Posted as made, while the browser applies it (as index.html does).
      const offer = await pc.createOffer();
      const applied = pc.setLocalDescription(offer);
      timing.posted = Math.round(performance.now());
      r = await fetch(this.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", ...this.auth },
        body: offer.sdp,
      });
      answer = await r.text();
      await applied;
      timing.answered = Math.round(performance.now());
    }
    if (pc !== this.pc) return;
    if (r.status !== 201) {
      // 409: the source has no pictures yet; 503: too many viewers. Both say when to retry.
      const after = Number(r.headers.get("Retry-After")) * 1000 || RECONNECT_MS;
      if (r.status === 409) window.peregrine.watch503 += 1;
      return this.retry(r.status === 409 ? "waiting for the video source" : `${r.status} ${answer.trim()}`, after);
    }
    this.resource = new URL(r.headers.get("Location"), new URL(this.endpoint, location.href));
    this.etag = r.headers.get("ETag");
    timing.etag = this.etag;
    if (!early) await pc.setRemoteDescription({ type: "answer", sdp: answer });
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        window.peregrine.whep.connected = Math.round(performance.now());
        setStatus(window.peregrine.signal === "no signal" ? "no signal" : "playing", false);
      }
      // A lost path gets an ICE restart first (same session, DTLS and pictures); a
      // session the server no longer has gets a new one.
      if (pc.connectionState === "failed") {
        this.restartIce().catch(() => this.restartWatch("connection failed"));
      }
    };
    // An early start may have connected before this script ran.
    if (pc.connectionState !== "new" && pc.connectionState !== "connecting") pc.onconnectionstatechange();
    this.trickle();
  }

  /**
   * ICE restart (RFC 9725 §4.3.2): our new credentials PATCHed with If-Match "*"; the
   * server's new ones and candidates come back with the new ICE session's ETag, and
   * take the place of those of its answer.
   */
  async restartIce() {
    const pc = this.pc;
    if (!pc || !this.resource) throw new Error("no WHEP session");
    // Candidates of the new session wait for its ETag.
    this.restarting = true;
    try {
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer());
      const ours = iceCredentials(pc.localDescription.sdp);
      const r = await fetch(this.resource, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", ...this.auth },
        body: `a=ice-ufrag:${ours.ufrag}\r\na=ice-pwd:${ours.pwd}\r\n`,
      });
      if (pc !== this.pc) return;
      if (r.status !== 200) throw new Error(`ICE restart refused: ${r.status} ${(await r.text()).trim()}`);
      this.etag = r.headers.get("ETag");
      const frag = await r.text();
      const theirs = iceCredentials(frag);
      const candidates = frag.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:") || l === "a=end-of-candidates");
      const answer = pc.remoteDescription.sdp
        .split(/\r?\n/)
        .filter((l) => l && !l.startsWith("a=candidate:") && l !== "a=end-of-candidates")
        .flatMap((l) => {
          if (l.startsWith("a=ice-ufrag:")) return [`a=ice-ufrag:${theirs.ufrag}`];
          if (l.startsWith("a=ice-pwd:")) return [`a=ice-pwd:${theirs.pwd}`, ...candidates];
          return [l];
        })
        .join("\r\n");
      await pc.setRemoteDescription({ type: "answer", sdp: `${answer}\r\n` });
      window.peregrine.iceRestarts += 1;
      window.peregrine.whep.etag = this.etag;
    } finally {
      this.restarting = false;
    }
    this.trickle();
  }

  /** The ICE username fragments in use: ours and the server's (from the selected pair). */
  async iceUfrags() {
    const stats = await this.pc.getStats();
    let transport = null;
    stats.forEach((s) => { if (s.type === "transport") transport = s; });
    const pair = transport && stats.get(transport.selectedCandidatePairId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return { local: transport?.iceLocalUsernameFragment ?? null, remote: remote?.usernameFragment ?? null };
  }

  /** Send the candidates gathered so far (RFC 8840 sdpfrag, If-Match the session's ETag). */
  trickle() {
    if (!this.candidates.length || this.restarting) return;
    const body = `${this.candidates.join("\r\n")}\r\n`;
    this.candidates = [];
    const headers = { "Content-Type": "application/trickle-ice-sdpfrag", ...this.auth };
    if (this.etag) headers["If-Match"] = this.etag;
    fetch(this.resource, { method: "PATCH", headers, body }).catch(() => {});
  }

  retry(why, ms) {
    setStatus(why, true);
    this.closePeer();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start().catch((e) => this.retry(e.message, RECONNECT_MS)), ms);
  }

  restartWatch(why, ms = RECONNECT_MS) {
    this.retry(`reconnecting (${why})`, ms);
  }

  /** End the session on the server (DELETE) and close the connection. */
  closePeer() {
    if (this.resource) {
      fetch(this.resource, { method: "DELETE", headers: this.auth, keepalive: true }).catch(() => {});
      this.resource = null;
    }
    if (this.pc) { this.pc.close(); this.pc = null; }
    sound.stopListening();
    report("audio", false);
  }
}

// ---- stats: resolution, fps, latency from the capture time drawn into the picture ----

const strip = document.createElement("canvas");
const stripCtx = strip.getContext("2d", { willReadFrequently: true });
let framesThisSecond = 0;

function onFrame(now, metadata) {
  framesThisSecond += 1;
  window.peregrine.frames += 1;
  // Time to first frame: page navigation → the first picture on screen.
  if (window.peregrine.firstFrameMs === null) window.peregrine.firstFrameMs = Math.round(now);
  const ms = readCaptureTime(video, strip, stripCtx);
  if (ms !== null) {
    // When the picture is on screen, on the same clock the sound's timing uses.
    const shown = wallClockOf(metadata ? metadata.expectedDisplayTime : performance.now());
    window.peregrine.latencyMs = Math.round(shown - ms);
    $("latency").textContent = `${window.peregrine.latencyMs} ms`;
    sound.onPicture(ms, shown);
  }
  video.requestVideoFrameCallback(onFrame);
}

setInterval(() => {
  window.peregrine.fps = framesThisSecond;
  $("fps").textContent = String(framesThisSecond);
  framesThisSecond = 0;
  if (video.videoWidth) $("resolution").textContent = `${video.videoWidth}×${video.videoHeight}`;
}, 1000);

// ---- source status: "no signal" while the camera or encoder is gone, and why ----
// The video keeps playing (the server sends a NO SIGNAL picture), so the page only needs
// to say so, and the reason /state gives, along the bottom edge; when the source returns
// the same connection carries live video again.

const SOURCE_POLL_MS = 500;
window.peregrine.signal = null;
window.peregrine.reason = null;

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text || "";
  notice.classList.toggle("hidden", !text);
}

async function pollSource() {
  let source;
  try {
    const r = await fetch("state", { cache: "no-store" });
    const s = await r.json();
    source = s.source || {};
    window.peregrine.viewers = s.viewers;
  } catch {
    return; // the server is away; the Janus connection reports that
  }
  const signal = source.state === "no_signal" ? "no signal" : "live";
  const reason = signal === "no signal" ? source.last_error || null : null;
  window.peregrine.signal = signal;
  window.peregrine.reason = reason;
  $("signal").textContent = signal;
  showNotice(signal === "no signal" ? (reason ? `no signal: ${reason}` : "no signal") : null);
  const state = window.peregrine.state;
  if (signal === "no signal" && state === "playing") setStatus("no signal", false);
  else if (signal === "live" && state === "no signal") setStatus("playing", false);
}
setInterval(pollSource, SOURCE_POLL_MS);
pollSource();

// ---- fullscreen: the picture and its notice, without the stats bar ----

$("fullscreen").addEventListener("click", () => {
  const stage = $("stage");
  if (document.fullscreenElement || document.webkitFullscreenElement) {
    (document.exitFullscreen || document.webkitExitFullscreen).call(document);
  } else if (stage.requestFullscreen) {
    stage.requestFullscreen().catch((e) => console.warn("peregrine: fullscreen:", e.message));
  } else if (stage.webkitRequestFullscreen) {
    stage.webkitRequestFullscreen();
  } else if (video.webkitEnterFullscreen) {
    video.webkitEnterFullscreen(); // iPhone Safari: only a video element can go fullscreen
  }
});

// ---- sound: browsers play it only after a click; the mic re-watches with it on ----

function showSound() {
  $("sound-toggle").setAttribute("aria-pressed", String(wantAudio));
  $("sound-toggle").title = wantAudio ? "sound is on" : "sound is off: click to hear it";
  $("mic").setAttribute("aria-pressed", String(wantMic));
}
$("sound-toggle").addEventListener("click", () => {
  wantAudio = !wantAudio;
  // The click allows sound: the picture starts muted only for autoplay's sake.
  video.muted = !wantAudio;
  sound.resume();
  showSound();
  // At once: the server replaces the peer; nothing failed that a pause would help.
  if (viewer) viewer.restartWatch(wantAudio ? "sound on" : "sound off", 0);
});
$("mic").addEventListener("click", () => {
  wantMic = !wantMic;
  sound.resume();
  showSound();
  if (viewer) viewer.restartWatch(wantMic ? "microphone on" : "microphone off", 0);
});
showSound();

if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onFrame);

let viewer = null;
if (query.get("whep") === "1") {
  new WhepViewer().connect();
  // For tests and the console: restart ICE now, and read the ufrags in use.
  window.peregrine.restartIce = () => viewer.restartIce();
  window.peregrine.iceUfrags = () => viewer.iceUfrags();
  // Leaving the page ends the WHEP session at once rather than at its ICE timeout.
  window.addEventListener("pagehide", () => viewer.closePeer());
} else {
  new Viewer(serverUrl).connect();
}
