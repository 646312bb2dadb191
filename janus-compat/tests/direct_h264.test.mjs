// PiKVM's Direct H.264 mode in Chromium: the bundled direct.html speaks /api/media/ws as
// PiKVM's web client does (WebCodecs VideoDecoder with the announced codec, no
// description, Annex-B chunks, optimizeForLatency, wall-clock timestamps, deltas dropped
// until a key) over http://127.0.0.1, which is a secure context.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, sleep } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

async function waitDecoded(page, frames, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await page.evaluate(() => window.direct);
    if (s.decoded >= frames && s.drawn > 0) return s;
    if (Date.now() > deadline) throw new Error(`decoded only ${s.decoded} frames: ${JSON.stringify(s)}`);
    await sleep(100);
  }
}

test("direct.html decodes /api/media/ws with WebCodecs", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    await page.goto(`${server.base}/direct.html`);
    assert.equal(await page.evaluate(() => window.isSecureContext), true);
    const s = await waitDecoded(page, 60);
    assert.equal(s.width, 640);
    assert.equal(s.height, 360);
    assert.deepEqual(s.errors, []);
    assert.equal(s.reconnects, 0);
    assert.match(s.codec, /^avc1\.[0-9A-F]{6}$/);
    // Once the stream has run, the description names its own profile and level.
    const info = await (await fetch(`${server.base}/api/media`)).json();
    assert.equal(info.ok, true);
    const announced = info.result.media.video.h264.profile_level_id;
    assert.ok(s.codec === `avc1.${announced}` || s.codec === "avc1.42E01F", `${s.codec} vs ${announced}`);
    // Pings are answered (one a second).
    const deadline = Date.now() + 5000;
    while ((await page.evaluate(() => window.direct.pongs)) < 2) {
      if (Date.now() > deadline) throw new Error("no pongs");
      await sleep(200);
    }
    const state = await server.state();
    assert.equal(state.streams.default.viewers, 1, JSON.stringify(state.streams));
    console.log(`# Direct H.264: ${s.decoded} frames decoded ${Date.now() - t0} ms after load, codec ${s.codec}`);
  } finally {
    await page.close();
    await server.stop();
  }
});

test("behind Basic auth direct.html plays with the password and gets 401 without", async () => {
  const args = ["--user", "viewer", "--passwd", "open sesame", "--resolution", "320x240"];
  const server = await startPeregrine(args);
  try {
    const context = await browser.newContext({ httpCredentials: { username: "viewer", password: "open sesame" } });
    try {
      const page = await context.newPage();
      await page.goto(`${server.base}/direct.html`);
      const s = await waitDecoded(page, 30);
      assert.equal(s.width, 320);
    } finally {
      await context.close();
    }
    const res = await fetch(`${server.base}/api/media`);
    assert.equal(res.status, 401);
  } finally {
    await server.stop();
  }
});
