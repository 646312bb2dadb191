// The browser benchmark's measurements, shared by scripts/bench-browser.sh (bench.mjs)
// and its short CI run (janus-compat/tests/browser_bench.test.mjs):
//
// * time to first live picture: navigation → the first picture on screen whose capture
//   time (the test pattern's code strip) is at most LIVE_AGE_MS old, over loads with
//   random idle gaps in which nobody watches, with where the time went (signalling,
//   offer, answer, ICE, DTLS, first picture) read from the page's own WebSocket,
//   fetch and RTCPeerConnection;
// * glass-to-glass: per picture, the capture time in its code strip against the time
//   the browser shows it (requestVideoFrameCallback's expectedDisplayTime), next to the
//   server's own delay (/state rtc histograms) for the same window.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { kitDir, sleep } from "../../janus-compat/tests/harness.mjs";

export const LIVE_AGE_MS = 250;

// The bundled page's strip reader and clock, for any page (the init script is
// function-scoped).
const codestrip =
  readFileSync(path.resolve(kitDir, "../client/codestrip.js"), "utf8") +
  "\nwindow.__benchReadStrip = readCodeStrip;\nwindow.__benchWallClockOf = wallClockOf;\n";

/**
 * Runs in the page before its own scripts: timestamps (ms since navigation) of the
 * page's signalling and connection, and the code strip of every picture shown.
 */
function instrument(liveAgeMs) {
  const now = () => performance.now();
  const b = {
    pc: null, signal: null, offer: null, answer: null, ice: null, dtls: null,
    firstFrame: null, firstLive: null, firstAge: null, frames: 0, unreadable: 0,
    collect: false, ages: [],
  };
  window.__bench = b;
  const once = (key) => { if (b[key] === null) b[key] = now(); };

  // The Janus API: the WebSocket's open is where signalling can start.
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = new Proxy(NativeWebSocket, {
    construct(target, args, newTarget) {
      const ws = Reflect.construct(target, args, newTarget);
      ws.addEventListener("open", () => once("signal"));
      return ws;
    },
  });
  // WHEP: the POST of the offer is the signalling.
  const nativeFetch = window.fetch;
  window.fetch = function (resource, init) {
    const method = (init && init.method) || (resource instanceof Request ? resource.method : "GET");
    if (method === "POST") once("signal");
    return nativeFetch.apply(this, arguments);
  };
  const NativePc = window.RTCPeerConnection;
  window.RTCPeerConnection = new Proxy(NativePc, {
    construct(target, args, newTarget) {
      const pc = Reflect.construct(target, args, newTarget);
      once("pc");
      pc.addEventListener("iceconnectionstatechange", () => {
        if (["connected", "completed"].includes(pc.iceConnectionState)) once("ice");
      });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected") once("dtls");
      });
      return pc;
    },
  });
  // Offer: the server's arrives (Janus) or ours is made (WHEP); answer: ours is made
  // (Janus) or the server's arrives (WHEP).
  const note = (desc) => {
    if (desc && desc.type === "offer") once("offer");
    if (desc && desc.type === "answer") once("answer");
  };
  for (const name of ["setLocalDescription", "setRemoteDescription"]) {
    const native = NativePc.prototype[name];
    NativePc.prototype[name] = function (desc) {
      const result = native.apply(this, arguments);
      if (desc) note(desc);
      else Promise.resolve(result).then(() => note(this.localDescription), () => {});
      return result;
    };
  }

  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const hook = (video) => {
    const onFrame = (_, metadata) => {
      b.frames += 1;
      if (b.firstFrame === null) b.firstFrame = metadata.expectedDisplayTime;
      const code = window.__benchReadStrip(video, canvas, ctx);
      if (!code) {
        b.unreadable += 1;
      } else {
        const age = window.__benchWallClockOf(metadata.expectedDisplayTime) - code.ms;
        if (b.firstAge === null) b.firstAge = age;
        if (b.firstLive === null && age <= liveAgeMs) b.firstLive = metadata.expectedDisplayTime;
        if (b.collect) b.ages.push(age);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  new MutationObserver(() => {
    const v = document.querySelector("video");
    if (v && !v.dataset.benchHooked) { v.dataset.benchHooked = "1"; hook(v); }
  }).observe(document, { childList: true, subtree: true });
}

/** A page of `browser` with the benchmark's instruments, in a context of its own. */
export async function instrumentedPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript({ content: codestrip });
  await page.addInitScript(instrument, LIVE_AGE_MS);
  return {
    page,
    async close() {
      await page.close({ runBeforeUnload: true }).catch(() => {});
      await context.close().catch(() => {});
    },
  };
}

/** Wait until the page's instruments say `fn(window.__bench)`; its state on timeout. */
export async function waitForBench(page, fn, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await page.evaluate(() => window.__bench);
    if (fn(b)) return b;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify({ ...b, ages: b.ages.length })}`);
    await sleep(20);
  }
}

/** A small seeded generator, so runs before and after a change see the same gaps. */
export function seededRandom(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Until the server says nobody watches (the last page has gone). */
export async function nobodyWatching(server, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await server.state();
    if (s.viewers === 0 && s.rtc.peers === 0) return;
    if (Date.now() > deadline) throw new Error(`viewers left behind: ${s.viewers} viewers, ${s.rtc.peers} peers`);
    await sleep(20);
  }
}

/** A load's steps, ms since navigation: the page's HTML in, peer connection made,
 * signalling open (WebSocket open, or WHEP POST sent), offer, answer, ICE connected,
 * DTLS done (connection state connected), first picture shown, first live one. */
export const STEPS = ["html", "pc", "signal", "offer", "answer", "ice", "dtls", "firstFrame", "firstLive"];

/**
 * `loads` navigations to `url`, each after all viewers have gone and an idle gap of
 * gapMs[0]..gapMs[1] (random); per load the page's timestamps (ms since navigation).
 */
export async function firstLivePictures(browser, server, url, { loads, gapMs = [200, 3000], random = Math.random }) {
  const results = [];
  for (let load = 0; load < loads; load++) {
    await nobodyWatching(server);
    await sleep(gapMs[0] + random() * (gapMs[1] - gapMs[0]));
    const viewer = await instrumentedPage(browser);
    try {
      await viewer.page.goto(url);
      const b = await waitForBench(viewer.page, (b) => b.firstLive !== null, "a live picture");
      const html = await viewer.page.evaluate(() => performance.getEntriesByType("navigation")[0].responseEnd);
      results.push({ ...Object.fromEntries(STEPS.map((k) => [k, b[k]])), html, firstAge: b.firstAge });
    } finally {
      await viewer.close();
    }
  }
  return results;
}

export const percentile = (xs, p) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.floor((v.length * p) / 100))] : NaN;
};

/** What a histogram of /state (buckets of [upper bound µs, count]) got between two reads. */
export function histogramSince(later, earlier) {
  const before = new Map((earlier?.buckets || []).map(([bound, n]) => [bound, n]));
  const buckets = later.buckets.map(([bound, n]) => [bound, n - (before.get(bound) || 0)]).filter(([, n]) => n > 0);
  const count = buckets.reduce((s, [, n]) => s + n, 0);
  const quantile = (q) => {
    let seen = 0;
    for (const [bound, n] of buckets) {
      seen += n;
      if (seen >= q * count) return bound;
    }
    return NaN;
  };
  return { count, p50Ms: quantile(0.5) / 1000, p99Ms: quantile(0.99) / 1000 };
}

/** The load generator's viewers in the background (extra load), until `stop()`. */
export function startLoadGenerator(binary, server, viewers, seconds) {
  const child = spawn(binary, ["--server", server.wsUrl, "--viewers", String(viewers), "--duration", String(seconds), "--quiet"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (d) => { log = (log + d).slice(-4000); });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    log: () => log,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * Glass-to-glass of the page at `url` over `seconds`, with `extra` more viewers (the
 * pages of `extraPages()` or anything the caller started): per picture shown, its
 * age (ms) when on screen, and the server's delay over the same window.
 */
export async function glassToGlass(browser, server, url, { seconds, viewers, startExtra }) {
  const measuring = await instrumentedPage(browser);
  const extra = [];
  try {
    await measuring.page.goto(url);
    await waitForBench(measuring.page, (b) => b.firstLive !== null, "a live picture");
    if (startExtra) extra.push(...(await startExtra()));
    // Until all viewers are in, and a second more to let the start settle.
    const deadline = Date.now() + 60_000;
    while ((await server.state()).viewers < viewers) {
      if (Date.now() > deadline) throw new Error(`only ${(await server.state()).viewers} of ${viewers} viewers`);
      await sleep(100);
    }
    await sleep(1000);
    const before = (await server.state()).rtc;
    await measuring.page.evaluate(() => { window.__bench.ages = []; window.__bench.unreadable = 0; window.__bench.collect = true; });
    await sleep(seconds * 1000);
    const b = await measuring.page.evaluate(() => { window.__bench.collect = false; return window.__bench; });
    const s = await server.state();
    return {
      viewers: s.viewers,
      frames: b.ages.length,
      unreadable: b.unreadable,
      p50Ms: percentile(b.ages, 50),
      p99Ms: percentile(b.ages, 99),
      captureToSend: histogramSince(s.rtc.capture_to_send_us, before.capture_to_send_us),
      sendDelay: histogramSince(s.rtc.send_delay_us, before.send_delay_us),
    };
  } finally {
    for (const e of extra) await e.close();
    await measuring.close();
  }
}

/** `n` more bundled pages playing `url` in `browser`, once each shows pictures. */
export async function extraPages(browser, url, n) {
  const viewers = [];
  for (let i = 0; i < n; i++) {
    const v = await instrumentedPage(browser);
    viewers.push(v);
    await v.page.goto(url);
  }
  for (const v of viewers) await waitForBench(v.page, (b) => b.frames > 0, "an extra page's first picture", 60_000);
  return viewers;
}

export const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
