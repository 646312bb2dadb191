// peregrine's own page (client/, served by the binary): plays, shows the latency read
// from the picture, and comes back by itself when the server restarts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitForFrames, waitUntil, clockSetForwardSinceLoad } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("bundled page plays, shows latency, and survives a server restart", async () => {
  let server = await startPeregrine();
  const page = await browser.newPage();
  // The latency reading holds after the system clock is set (24 s, as NTP does at boot).
  await clockSetForwardSinceLoad(page, 24_000);
  try {
    const t0 = Date.now();
    await page.goto(`${server.base}/`);
    const played = await waitForFrames(page, { frames: 60, since: t0, selector: "#video" });
    assert.equal(played.width, 1280);
    console.log(`# bundled page: first frame after navigation ${played.firstFrameMs} ms`);

    // The latency figure comes from the capture time drawn into the picture.
    await waitUntil(page, () => typeof window.peregrine.latencyMs === "number", "a latency reading");
    const p = await page.evaluate(() => window.peregrine);
    assert.ok(p.latencyMs >= 0 && p.latencyMs < 2000, `latency ${p.latencyMs} ms`);
    assert.match(await page.textContent("#latency"), /^\d+ ms$/);
    assert.match(await page.textContent("#resolution"), /^1280×720$/);
    assert.equal(p.state, "playing");
    console.log(`# bundled page: latency ${p.latencyMs} ms, ${p.fps} fps`);

    // Restart the server on the same ports: the page notices and plays again unaided.
    const ports = server.ports;
    await server.stop();
    await waitUntil(page, () => window.peregrine.state !== "playing", "the page to notice the server went away");
    const framesBefore = await page.evaluate(() => window.peregrine.frames);
    server = await startPeregrine([], ports);
    await waitUntil(page, () => window.peregrine.state === "playing", "playing again after the restart");
    await waitUntil(page, (n) => window.peregrine.frames >= n, "30 new frames", { arg: framesBefore + 30 });
    const after = await page.evaluate(() => window.peregrine);
    assert.ok(after.reconnects >= 1, `reconnects ${after.reconnects}`);
    assert.ok(after.frames >= framesBefore + 30, `frames ${framesBefore} → ${after.frames}`);
  } finally {
    await page.close();
    await server.stop();
  }
});
