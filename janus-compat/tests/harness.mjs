// Shared pieces of the browser tests: start peregrine, serve the demo page from another
// origin (as pages usually are), drive Debian's Chromium headless, read <video> stats.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createServer as createHttpsServer, get as httpsGet } from "node:https";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const kitDir = path.resolve(here, "..");
const repoDir = path.resolve(kitDir, "..");

export function peregrineBinary() {
  const candidates = [
    process.env.PEREGRINE_BIN,
    path.join(repoDir, "target/release/peregrine"),
    path.join(repoDir, "target/debug/peregrine"),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`peregrine binary not found (tried ${candidates.join(", ")}); run cargo build --release`);
  return found;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET `url` as JSON; over https, trusting the PEM certificates `ca` (and no others). */
async function getJson(url, ca, headers = {}) {
  if (!url.startsWith("https:")) {
    const r = await fetch(url, { headers });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }
  return new Promise((resolve, reject) => {
    httpsGet(url, { ca, headers }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => {
        if (res.statusCode !== 200) reject(new Error(`${url}: ${res.statusCode}`));
        else { try { resolve(JSON.parse(body)); } catch (e) { reject(e); } }
      });
    }).on("error", reject);
  });
}

/**
 * Start peregrine on free loopback ports (or the `ports` of an earlier run, to restart
 * it in place); resolves once /state answers. With `tls: { ca }` the ports speak TLS
 * (the arguments give the certificate) and /state is asked over https:// trusting `ca`.
 */
export async function startPeregrine(extraArgs = [], reusePorts = null, { tls = null, env = {} } = {}) {
  // A port found free can be taken by another process before peregrine binds it; the pid
  // in /state tells our server from a stranger, and fresh ports are tried then.
  let lastError;
  for (let attempt = 0; attempt < (reusePorts ? 1 : 3); attempt++) {
    try {
      return await tryStart(extraArgs, reusePorts, tls, env);
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError;
}

async function tryStart(extraArgs, reusePorts, tls, env) {
  const ports = reusePorts || { http: await freePort(), ws: await freePort(), janusHttp: await freePort() };
  const args = [
    "--host", "127.0.0.1",
    "--port", String(ports.http),
    "--janus-ws-port", String(ports.ws),
    "--janus-http-port", String(ports.janusHttp),
    "--udp-port-range", "0",
    // Without a named source, a machine with a camera would stream the camera.
    ...(extraArgs.some((a) => ["--source", "--janus-config", "--config", "--device"].includes(a))
      ? []
      : ["--source", "testsrc"]),
    ...extraArgs,
  ];
  const child = spawn(peregrineBinary(), args, {
    stdio: ["ignore", "pipe", "pipe"],
    // The program's own log defaults, unless the person running the tests sets RUST_LOG.
    env: { ...process.env, ...env },
  });
  let log = "";
  const keep = (d) => { log += d.toString(); if (log.length > 200_000) log = log.slice(-100_000); };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const s = tls ? "s" : "";
  const base = `http${s}://127.0.0.1:${ports.http}`;
  const headers = basicAuthHeaders(args);
  const state = () => getJson(`${base}/state`, tls?.ca, headers);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`peregrine exited at start:\n${log}`);
    try {
      const { pid } = await state();
      if (pid === child.pid) break;
      child.kill("SIGKILL");
      throw new Error(`port ${ports.http} is answered by another process`);
    } catch (e) {
      if (String(e.message).includes("another process")) throw e;
      /* not up yet */
    }
    if (Date.now() > deadline) { child.kill("SIGKILL"); throw new Error(`peregrine did not come up:\n${log}`); }
    await sleep(50);
  }
  return {
    ports,
    base,
    wsUrl: `ws${s}://127.0.0.1:${ports.ws}/`,
    httpUrl: `http${s}://127.0.0.1:${ports.janusHttp}/janus`,
    log: () => log,
    state,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      const res = await Promise.race([exited, sleep(5000).then(() => null)]);
      if (!res) { child.kill("SIGKILL"); throw new Error("peregrine did not stop within 5 s of SIGTERM"); }
      return res;
    },
  };
}

/** The `Authorization` header for the `--user` / `--passwd` among `args`, if any. */
export function basicAuthHeaders(args) {
  const value = (flag) => { const i = args.indexOf(flag); return i < 0 ? undefined : args[i + 1]; };
  const user = value("--user");
  if (user === undefined) return {};
  const token = Buffer.from(`${user}:${value("--passwd") ?? ""}`).toString("base64");
  return { authorization: `Basic ${token}` };
}

/**
 * Serve the kit's pages, janus.js, adapter.js and whip-whep's WHEP player on a loopback
 * port of their own; over
 * https:// with `tls: { cert, key }` (PEM).
 */
export async function startPageServer({ tls = null } = {}) {
  const files = {
    "/demo.html": [path.join(kitDir, "demo.html"), "text/html"],
    "/janus.js": [path.join(kitDir, "node_modules/janus-gateway/npm/src/janus.js"), "text/javascript"],
    "/adapter.js": [path.join(kitDir, "node_modules/webrtc-adapter/out/adapter.js"), "text/javascript"],
    "/kvmd-style.html": [path.join(kitDir, "tests/kvmd-style.html"), "text/html"],
    "/whep.js": [path.join(kitDir, "node_modules/whip-whep/whep.js"), "text/javascript"],
    "/whep-player.html": [path.join(kitDir, "tests/whep-player.html"), "text/html"],
  };
  const handler = async (req, res) => {
    const entry = files[new URL(req.url, "http://x").pathname];
    if (!entry) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "content-type": entry[1] });
    res.end(await readFile(entry[0]));
  };
  const server = tls ? createHttpsServer(tls, handler) : createServer(handler);
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const scheme = tls ? "https" : "http";
  return { base: `${scheme}://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

export async function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--allow-loopback-in-peer-connection",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      ...extraArgs,
    ],
  });
}

/**
 * Makes the page see the system clock as set forward by `ms` since it opened:
 * performance.timeOrigin stays where it was at load (as Chromium keeps it when NTP steps
 * the clock, or after a suspend) while Date.now() and the server's clock move on.
 */
export async function clockSetForwardSinceLoad(page, ms) {
  await page.addInitScript((step) => {
    const origin = performance.timeOrigin - step;
    Object.defineProperty(performance, "timeOrigin", { get: () => origin });
  }, ms);
}

/** Frames decoded by the page's <video> and its size. */
export async function videoStats(page, selector = "video") {
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    if (!v) return { frames: 0, width: 0, height: 0 };
    const q = v.getVideoPlaybackQuality();
    return { frames: q.totalVideoFrames, width: v.videoWidth, height: v.videoHeight };
  }, selector);
}

/**
 * Wait until the page's video has decoded `frames` frames. Resolves with the time from
 * `since` to the first decoded frame and the final stats; rejects with the page's state
 * on timeout.
 */
export async function waitForFrames(page, { frames = 60, since = Date.now(), timeoutMs = 30_000, selector = "video" } = {}) {
  let firstFrameMs = null;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await videoStats(page, selector);
    if (firstFrameMs === null && s.frames > 0) firstFrameMs = Date.now() - since;
    if (s.frames >= frames) return { firstFrameMs, ...s };
    if (Date.now() > deadline) {
      // Whichever page this is: the demo page, the bundled page or the jmuxer page.
      const state = await page
        .evaluate(() => window.demo || window.peregrine || window.h264 || null)
        .catch(() => null);
      throw new Error(`video decoded only ${s.frames} frames in ${timeoutMs} ms; page state ${JSON.stringify(state)}`);
    }
    await sleep(50);
  }
}

/** Wait until `fn(arg)` is true in the page (the bundled page's `window.peregrine`). */
export async function waitUntil(page, fn, what, { timeoutMs = 20_000, arg } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; page state ${JSON.stringify(await page.evaluate(() => window.peregrine))}`);
    }
    await sleep(50);
  }
}

/**
 * ffmpeg's test source of `size` (WxH) as raw H.264 pushed to `url` (e.g.
 * tcp://127.0.0.1:PORT), as libcamera-vid or an encoder on the network sends it.
 */
export function startH264Encoder(size, url) {
  const child = spawn("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
    "-f", "lavfi", "-i", `testsrc=size=${size}:rate=30`,
    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency",
    "-g", "30", "-bsf:v", "h264_mp4toannexb", "-f", "h264", url,
  ], { stdio: "ignore" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    async kill() {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
