// Network namespaces for running Debian's Janus in tests. Janus ignores loopback when it
// gathers ICE candidates, and with no default route it even announces 127.0.0.1 as its
// own address, so each Janus gets a namespace of its own joined to the host by a veth
// pair (a /30, no default route): its candidates are its veth address, which the host
// (peregrine, Chromium) reaches directly. Everything made here is removed by
// `destroy()`, and at process exit whatever a failed test left.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { kitDir } from "./harness.mjs";

const made = new Set();
const janusProcesses = new Set();
function cleanUp() {
  for (const child of janusProcesses) child.kill("SIGKILL");
  for (const ns of made) removeNamespace(ns);
}
process.on("exit", cleanUp);
// A test run stopped from outside (a timeout, Ctrl+C) removes them too.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    cleanUp();
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  });
}

function ip(...args) {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

function removeNamespace(name) {
  // Deleting the namespace deletes its end of the veth pair, and with it the host's.
  try { ip("netns", "delete", name); } catch { /* already gone */ }
  made.delete(name);
}

/**
 * A namespace `index` (0..63) for this process: `hostIp` on the host's end of the veth
 * pair, `nsIp` inside. Needs root (CAP_NET_ADMIN).
 */
export function createNamespace(index) {
  const tag = `${process.pid % 100000}${index}`;
  const name = `pgfwd${tag}`;
  const hostIf = `pgh${tag}`;
  const nsIf = `pgn${tag}`;
  // A /30 per namespace in 10.213.0.0/16, apart for each process and index.
  const block = ((process.pid % 1024) * 64 + index) % 16384;
  const base = [10, 213, block >> 6, (block & 63) * 4];
  const hostIp = `${base[0]}.${base[1]}.${base[2]}.${base[3] + 1}`;
  const nsIp = `${base[0]}.${base[1]}.${base[2]}.${base[3] + 2}`;
  removeNamespace(name);
  try { ip("link", "delete", hostIf); } catch { /* not there */ }
  ip("netns", "add", name);
  made.add(name);
  try {
    ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
    ip("link", "set", nsIf, "netns", name);
    ip("addr", "add", `${hostIp}/30`, "dev", hostIf);
    ip("link", "set", hostIf, "up");
    ip("-n", name, "addr", "add", `${nsIp}/30`, "dev", nsIf);
    ip("-n", name, "link", "set", nsIf, "up");
    ip("-n", name, "link", "set", "lo", "up");
  } catch (e) {
    removeNamespace(name);
    try { ip("link", "delete", hostIf); } catch { /* went with the namespace */ }
    throw new Error(`cannot set up network namespace ${name}: ${e.stderr || e.message}`);
  }
  return {
    name,
    hostIp,
    nsIp,
    destroy: () => removeNamespace(name),
  };
}

const JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus";
const OTHER_PLUGINS = ["audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip", "textroom", "videocall", "voicemail"];
const OTHER_TRANSPORTS = ["mqtt", "nanomsg", "pfunix", "rabbitmq"];

/**
 * Start Debian's Janus in namespace `ns`, with the HTTP transport on `nsIp:8088` (and,
 * with `websockets`, the WebSocket one on `nsIp:8188`) and the Streaming plugin given
 * `streamingConfig` (the text of janus.plugin.streaming.jcfg), plus, if given,
 * VideoRoom's `videoroomConfig`. Resolves once `/janus/info` answers.
 */
export async function startJanus(ns, { streamingConfig = "general: {}\n", videoroomConfig = null, websockets = false } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "peregrine-janus-"));
  const plugins = videoroomConfig ? OTHER_PLUGINS : [...OTHER_PLUGINS, "videoroom"];
  writeFileSync(path.join(dir, "janus.jcfg"), `
general: {
  configs_folder = "${dir}"
  plugins_folder = "${JANUS_LIB}/plugins"
  transports_folder = "${JANUS_LIB}/transports"
  events_folder = "${JANUS_LIB}/events"
  loggers_folder = "${JANUS_LIB}/loggers"
  debug_level = 4
  interface = "${ns.nsIp}"
}
media: {
  rtp_port_range = "20000-40000"
}
nat: {
  nice_debug = false
  ice_enforce_list = "${ns.nsIp}"
}
plugins: {
  disable = "${plugins.map((p) => `libjanus_${p}.so`).join(",")}"
}
transports: {
  disable = "${[...OTHER_TRANSPORTS, ...(websockets ? [] : ["websockets"])].map((t) => `libjanus_${t}.so`).join(",")}"
}
events: {
  broadcast = false
}
loggers: {
  disable = "libjanus_jsonlog.so"
}
`);
  writeFileSync(path.join(dir, "janus.transport.http.jcfg"), `
general: {
  json = "indented"
  base_path = "/janus"
  http = true
  port = 8088
  ip = "${ns.nsIp}"
  https = false
}
admin: {
  admin_http = false
}
cors: {
}
`);
  writeFileSync(path.join(dir, "janus.transport.websockets.jcfg"), `
general: {
  json = "indented"
  ws = true
  ws_port = 8188
  ws_ip = "${ns.nsIp}"
  wss = false
}
admin: {
  admin_ws = false
}
`);
  writeFileSync(path.join(dir, "janus.plugin.streaming.jcfg"), streamingConfig);
  if (videoroomConfig) writeFileSync(path.join(dir, "janus.plugin.videoroom.jcfg"), videoroomConfig);

  const child = spawn("ip", ["netns", "exec", ns.name, "janus", "-C", path.join(dir, "janus.jcfg"), "-F", dir, "-o"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const keep = (d) => { log += d.toString(); if (log.length > 400_000) log = log.slice(-200_000); };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  janusProcesses.add(child);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
    janusProcesses.delete(child);
    resolve({ code, signal });
  }));
  const url = `http://${ns.nsIp}:8088/janus`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const res = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 5000))]);
    if (!res) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`janus exited at start:\n${log}`);
    }
    try {
      const r = await fetch(`${url}/info`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`janus did not come up in ${ns.name}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, wsUrl: `ws://${ns.nsIp}:8188`, log: () => log, stop };
}

/**
 * Serve one test page at `pathname` with the janus.js and adapter.js it loads, on
 * 127.0.0.1 (Chromium runs on the host; only Janus is in a namespace).
 */
export async function serveJanusPage(pathname, html) {
  const files = {
    "/janus.js": path.join(kitDir, "node_modules/janus-gateway/npm/src/janus.js"),
    "/adapter.js": path.join(kitDir, "node_modules/webrtc-adapter/out/adapter.js"),
  };
  const server = createServer(async (req, res) => {
    const p = new URL(req.url, "http://x").pathname;
    if (p === pathname) {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(html);
    } else if (files[p]) {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(await readFile(files[p]));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}
