// The WebSocket fallbacks in real players: jmuxer on /h264, JSMpeg (npm
// @cycjimmy/jsmpeg-player) on /jsmpeg fed by ffmpeg uploads or by peregrine's transcoder.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startPeregrine, launchChromium, waitForFrames, sleep } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

async function waitUntil(page, fn, what, { timeoutMs = 30_000, arg, stateOf = () => null } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; page state ${JSON.stringify(await page.evaluate(stateOf))}`);
    await sleep(100);
  }
}

test("jmuxer page plays /h264", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    await page.goto(`${server.base}/jmuxer.html`);
    const played = await waitForFrames(page, { frames: 60, since: t0, selector: "#video" });
    assert.equal(played.width, 640);
    assert.equal(played.height, 360);
    console.log(`# jmuxer: first frame after ${played.firstFrameMs} ms, ${played.frames} frames`);
  } finally {
    await page.close();
    await server.stop();
  }
});
