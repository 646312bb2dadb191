// The scale-out recipe "Janus VideoRoom via WHIP", with the real thing: peregrine's
// --whip-forward publishes to Debian's simple-whip-server, which publishes into a Debian
// Janus 1.1.2 VideoRoom (in a network namespace of its own: Janus ignores loopback);
// a headless Chromium subscribes to that publisher with the real janus.js and must
// decode peregrine's picture. Then simple-whip-server is restarted under peregrine: the
// session is gone, and peregrine must publish again by itself.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startPeregrine, launchChromium, waitForFrames, kitDir, freePort, sleep } from "./harness.mjs";
import { createNamespace, serveJanusPage, startJanus } from "./netns.mjs";

const WIDTH = 640;
const HEIGHT = 360;
const ROOM = 1234;
const TOKEN = "whip-test-token";

const VIDEOROOM = `
general: {
}
room-${ROOM}: {
  description = "peregrine over WHIP"
  publishers = 4
  bitrate = 0
  fir_freq = 10
  videocodec = "h264"
  audiocodec = "opus"
}
`;

/** Debian's simple-whip-server: installed, or unpacked by scripts/install-test-deps.sh. */
function whipServerSources() {
  const places = [
    "/usr/share/simple-whip-server/src",
    "/var/cache/peregrine-tests/simple-whip-server/usr/share/simple-whip-server/src",
  ];
  const found = places.find((p) => existsSync(path.join(p, "server.js")));
  if (!found) throw new Error(`simple-whip-server not found in ${places.join(" or ")}; run scripts/install-test-deps.sh`);
  return found;
}

/** Run simple-whip-server on `port` against Janus's WebSocket API `janusWs`. */
async function startWhipServer(port, janusWs) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "peregrine-whip-"));
  const src = whipServerSources();
  for (const f of ["server.js", "whip-janus.js"]) copyFileSync(path.join(src, f), path.join(dir, f));
  writeFileSync(path.join(dir, "config.js"), `module.exports = {
  janus: { address: ${JSON.stringify(janusWs)} },
  port: ${port},
  rest: "/whip",
  allowTrickle: true,
  strictETags: true,
  iceServers: [],
};
`);
  const child = spawn(process.execPath, ["server.js"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NODE_PATH: path.join(kitDir, "node_modules") },
  });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  const exited = new Promise((r) => child.once("exit", r));
  const base = `http://127.0.0.1:${port}/whip`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await Promise.race([exited, sleep(3000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  // It prints "Janus OK" once connected to Janus; then it takes endpoints.
  const deadline = Date.now() + 20_000;
  while (!log.includes("Janus OK")) {
    if (child.exitCode !== null) throw new Error(`simple-whip-server exited:\n${log}`);
    if (Date.now() > deadline) { await stop(); throw new Error(`simple-whip-server did not come up:\n${log}`); }
    await sleep(50);
  }
  const r = await fetch(`${base}/create`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: "cam", room: ROOM, token: TOKEN }),
  });
  if (!r.ok) { await stop(); throw new Error(`creating the endpoint: ${r.status} ${await r.text()}\n${log}`); }
  return { endpoint: `${base}/endpoint/cam`, log: () => log, stop };
}

// A VideoRoom subscriber, as Janus's own demo does it: find the publisher, join as its
// subscriber, answer, start.
const PAGE = `<!doctype html>
<html><body>
<video id="v" autoplay playsinline muted></video>
<script src="/adapter.js"></script>
<script src="/janus.js"></script>
<script>
  window.demo = { errors: [], publisher: null };
  const q = new URLSearchParams(location.search);
  const room = Number(q.get("room"));
  Janus.init({ debug: false, dependencies: Janus.useDefaultDependencies(), callback: () => {
    const janus = new Janus({
      server: q.get("server"), iceServers: [],
      error: (e) => window.demo.errors.push("session: " + e),
      success: () => janus.attach({
        plugin: "janus.plugin.videoroom",
        error: (e) => window.demo.errors.push("attach: " + e),
        success: (handle) => {
          window.handle = handle;
          handle.send({ message: { request: "listparticipants", room }, success: (r) => {
            const p = (r.participants || []).find((x) => x.publisher);
            if (!p) { window.demo.errors.push("no publisher in the room"); return; }
            window.demo.publisher = p.display || String(p.id);
            handle.send({ message: { request: "join", room, ptype: "subscriber", streams: [{ feed: p.id }] } });
          } });
        },
        onmessage: (msg, jsep) => {
          if (msg.error) window.demo.errors.push("plugin: " + msg.error);
          if (!jsep) return;
          window.handle.createAnswer({
            jsep,
            media: { audioSend: false, videoSend: false },
            success: (answer) => window.handle.send({ message: { request: "start", room }, jsep: answer }),
            error: (e) => window.demo.errors.push("answer: " + e),
          });
        },
        onremotetrack: (track, mid, added) => {
          if (!added || track.kind !== "video") return;
          document.getElementById("v").srcObject = new MediaStream([track]);
        },
      }),
    });
  } });
</script>
</body></html>`;

let ns, janus, whip, pages, browser, peregrine;

before(async () => {
  ns = createNamespace(2);
  janus = await startJanus(ns, { videoroomConfig: VIDEOROOM, websockets: true });
  pages = await serveJanusPage("/videoroom.html", PAGE);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
  await peregrine?.stop().catch(() => {});
  await whip?.stop();
  await janus?.stop();
  ns?.destroy();
});

async function waitForWhip(state, what, pred, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await state();
    const w = s.whip_forwards[0];
    if (pred(w)) return w;
    if (Date.now() > deadline) throw new Error(`WHIP forward never ${what}: ${JSON.stringify(w)}`);
    await sleep(100);
  }
}

async function watch() {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${pages.base}/videoroom.html?room=${ROOM}&server=${encodeURIComponent(janus.url)}`);
    const r = await waitForFrames(page, { frames: 60, since: t0, timeoutMs: 45_000 });
    const demo = await page.evaluate(() => window.demo);
    assert.deepEqual(demo.errors, [], "the VideoRoom subscriber reported errors");
    assert.ok(r.frames >= 60, `decoded ${r.frames} frames`);
    assert.equal(r.width, WIDTH, "video width");
    assert.equal(r.height, HEIGHT, "video height");
    return r;
  } finally {
    await context.close();
  }
}

test("--whip-forward publishes into Janus VideoRoom through simple-whip-server, and again after it restarts", async () => {
  const whipPort = await freePort();
  whip = await startWhipServer(whipPort, janus.wsUrl);
  peregrine = await startPeregrine([
    "--source", "testsrc",
    "--resolution", `${WIDTH}x${HEIGHT}`,
    // Janus does not use loopback: peregrine's media must be on the veth address.
    "--media-host", ns.hostIp,
    "--whip-forward", whip.endpoint,
    "--whip-token", TOKEN,
  ]);
  const t0 = Date.now();
  const w = await waitForWhip(peregrine.state, "connected", (w) => w.state === "connected");
  const published = Date.now() - t0;
  assert.ok(w.resource.endsWith("/whip/resource/cam"), `resource ${w.resource}`);
  const r = await watch();
  console.log(`# peregrine → WHIP → simple-whip-server → Janus VideoRoom (netns) → Chromium: publishing ${published} ms after peregrine's start; first frame ${r.firstFrameMs} ms after opening the page`);

  // simple-whip-server restarts and forgets the endpoint; Janus drops the publisher.
  await whip.stop();
  whip = await startWhipServer(whipPort, janus.wsUrl);
  const again = await waitForWhip(peregrine.state, "published again", (w) => w.sessions >= 2 && w.state === "connected", 90_000);
  console.log(`# after the WHIP server restarted: ${again.sessions} sessions, ${again.failures} failures`);
  await watch();
});
