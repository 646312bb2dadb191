// The scale-out recipe "Janus Streaming mountpoints fed by --rtp-forward", with the real
// thing: one peregrine on the host forwards plain RTP to two Debian Janus 1.1.2
// instances, each in a network namespace of its own (Janus ignores loopback), each with
// an `rtp` mountpoint (H.264 on PT 96, RTCP feedback port); a headless Chromium plays
// each mountpoint through its Janus with the real janus.js and the Streaming plugin.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitForFrames, sleep } from "./harness.mjs";
import { createNamespace, serveJanusPage, startJanus } from "./netns.mjs";

const WIDTH = 640;
const HEIGHT = 360;
const VIDEO_PORT = 5004;
const RTCP_PORT = 5005;

const MOUNTPOINT = `
general: {
}
peregrine: {
  type = "rtp"
  id = 1
  description = "peregrine over RTP"
  audio = false
  video = true
  videoport = ${VIDEO_PORT}
  videortcpport = ${RTCP_PORT}
  videopt = 96
  videocodec = "h264"
  videofmtp = "profile-level-id=42e01f;packetization-mode=1"
}
`;

// The Streaming plugin's player, as Janus's own demo does it: watch, answer, start.
const PAGE = `<!doctype html>
<html><body>
<video id="v" autoplay playsinline muted></video>
<script src="/adapter.js"></script>
<script src="/janus.js"></script>
<script>
  window.demo = { errors: [], webrtcUp: false };
  const server = new URLSearchParams(location.search).get("server");
  Janus.init({ debug: false, dependencies: Janus.useDefaultDependencies(), callback: () => {
    const janus = new Janus({
      server, iceServers: [],
      error: (e) => window.demo.errors.push("session: " + e),
      success: () => janus.attach({
        plugin: "janus.plugin.streaming",
        error: (e) => window.demo.errors.push("attach: " + e),
        success: (handle) => {
          window.handle = handle;
          handle.send({ message: { request: "watch", id: 1 } });
        },
        onmessage: (msg, jsep) => {
          if (msg.error) window.demo.errors.push("plugin: " + msg.error);
          if (!jsep) return;
          window.handle.createAnswer({
            jsep,
            media: { audioSend: false, videoSend: false },
            success: (answer) => window.handle.send({ message: { request: "start" }, jsep: answer }),
            error: (e) => window.demo.errors.push("answer: " + e),
          });
        },
        webrtcState: (up) => { window.demo.webrtcUp = up; },
        onremotetrack: (track, mid, added) => {
          if (!added || track.kind !== "video") return;
          document.getElementById("v").srcObject = new MediaStream([track]);
        },
      }),
    });
  } });
</script>
</body></html>`;

let namespaces = [];
let januses = [];
let pages, browser, peregrine;

before(async () => {
  namespaces = [createNamespace(0), createNamespace(1)];
  januses = await Promise.all(namespaces.map((ns) => startJanus(ns, { streamingConfig: MOUNTPOINT })));
  pages = await serveJanusPage("/streaming.html", PAGE);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
  await peregrine?.stop().catch(() => {});
  await Promise.all(januses.map((j) => j.stop()));
  for (const ns of namespaces) ns.destroy();
});

test("two Janus instances fed by one peregrine's --rtp-forward each play to their own viewer", async () => {
  const started = Date.now();
  peregrine = await startPeregrine([
    "--source", "testsrc",
    "--resolution", `${WIDTH}x${HEIGHT}`,
    ...namespaces.flatMap((ns) => ["--rtp-forward", `${ns.nsIp}:${VIDEO_PORT}`]),
  ]);
  const context = await browser.newContext();
  try {
    const viewers = await Promise.all(januses.map(async (janus) => {
      const page = await context.newPage();
      const t0 = Date.now();
      await page.goto(`${pages.base}/streaming.html?server=${encodeURIComponent(janus.url)}`);
      return { page, t0 };
    }));
    const results = await Promise.all(viewers.map(({ page, t0 }) =>
      waitForFrames(page, { frames: 60, since: t0, timeoutMs: 45_000 })));
    for (const [i, r] of results.entries()) {
      const demo = await viewers[i].page.evaluate(() => window.demo);
      assert.deepEqual(demo.errors, [], `viewer of Janus ${i} reported errors`);
      assert.ok(r.frames >= 60, `viewer of Janus ${i} decoded ${r.frames} frames`);
      assert.equal(r.width, WIDTH, `viewer of Janus ${i}: video width`);
      assert.equal(r.height, HEIGHT, `viewer of Janus ${i}: video height`);
    }
    console.log(`# peregrine → RTP → Janus (netns) → Chromium: first frame after navigation ${results.map((r) => r.firstFrameMs).join(", ")} ms (${Date.now() - started} ms from peregrine's start)`);

    // Each Janus learned from peregrine's sender reports where its keyframe requests
    // (sent when a viewer starts) go, and they arrived.
    let state;
    for (let i = 0; i < 100; i++) {
      state = await peregrine.state();
      if (state.rtp_forwards.every((f) => f.packets > 100 && f.keyframe_requests > 0)) break;
      await sleep(100);
    }
    const forwards = state.rtp_forwards;
    assert.equal(forwards.length, 2);
    for (const f of forwards) {
      assert.ok(f.packets > 100, `forward to ${f.target} sent ${f.packets} packets`);
      assert.ok(f.keyframe_requests > 0, `no keyframe request came back from Janus at ${f.target}`);
    }
    console.log(`# forwards: ${forwards.map((f) => `${f.target} ${f.packets} packets, ${f.keyframe_requests} keyframe requests (${f.keyframe_requests_coalesced} coalesced)`).join("; ")}`);
  } finally {
    await context.close();
  }
});
