// peregrine's own page fed by an H.264 byte stream (ffmpeg standing in for
// libcamera-vid): plays, shows "no signal" when the encoder dies, and plays again when it
// returns, on the same connection and without a reload.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitForFrames, waitUntil, startH264Encoder } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("bundled page plays a byte-stream source, shows no signal, and resumes", async () => {
  // Port 0: the system picks a free one and /state names it, so no port can be taken twice.
  const server = await startPeregrine(["--source", "tcp-listen://127.0.0.1:0", "--resolution", "640x360"]);
  const push = (await server.state()).source.kind.replace("tcp-listen://", "tcp://");
  let encoder = startH264Encoder("640x360", push);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.base}/`);
    const played = await waitForFrames(page, { frames: 60, selector: "#video" });
    assert.equal(played.width, 640);
    await waitUntil(page, () => window.peregrine.state === "playing" && window.peregrine.signal === "live", "playing live");

    await encoder.kill();
    const lostAt = Date.now();
    await waitUntil(page, () => window.peregrine.state === "no signal", "the page to show no signal");
    console.log(`# no signal shown ${Date.now() - lostAt} ms after the encoder died`);
    // The picture says NO SIGNAL in its middle; the page says so along the bottom edge.
    assert.equal(await page.isVisible("#overlay"), false);
    assert.match(await page.textContent("#notice"), /^no signal/);
    assert.equal(await page.textContent("#signal"), "no signal");
    // The NO SIGNAL picture keeps the video element playing.
    const during = await page.evaluate(() => window.peregrine.frames);
    await waitUntil(page, (n) => window.peregrine.frames > n, "NO SIGNAL pictures", { arg: during });

    const restartAt = Date.now();
    encoder = startH264Encoder("640x360", push);
    await waitUntil(page, () => window.peregrine.state === "playing", "playing again");
    const resumed = await page.evaluate(() => window.peregrine.frames);
    await waitUntil(page, (n) => window.peregrine.frames >= n, "30 live frames", { arg: resumed + 30 });
    console.log(`# live again on the page ${Date.now() - restartAt} ms after the encoder restart`);
    const p = await page.evaluate(() => window.peregrine);
    assert.equal(p.offers, 1, "one offer: the same connection carried everything");
    assert.equal(p.reconnects, 0);
    assert.equal(p.signal, "live");
  } finally {
    await page.close();
    await encoder.kill();
    await server.stop();
  }
});
