// µStreamer's MJPEG output in Chromium: `<img src=".../stream">`, as most µStreamer
// users embed it, shows a moving picture; /snapshot loads as an image.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitUntil } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

const mjpegViewers = (state) => state.streams.default.viewers;

test("<img src=/stream> shows the stream and the picture changes", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    // A page of the server's own origin, so the picture can be read back from a canvas.
    await page.goto(`${server.base}/state`);
    await page.evaluate(() => {
      document.body.innerHTML = '<img id="mjpeg" src="/stream">';
      window.seen = new Set();
      const img = document.getElementById("mjpeg");
      const canvas = document.createElement("canvas");
      // Hash the drawn picture at every animation frame; the test pattern's clock and
      // counter change in every picture, so distinct hashes mean a moving picture.
      const look = () => {
        if (img.naturalWidth > 0) {
          canvas.width = img.naturalWidth;
          canvas.height = img.naturalHeight;
          const ctx = canvas.getContext("2d", { willReadFrequently: true });
          ctx.drawImage(img, 0, 0);
          const px = ctx.getImageData(0, 0, canvas.width, canvas.height / 2).data;
          let h = 0;
          for (let i = 0; i < px.length; i += 7) h = (h * 31 + px[i]) | 0;
          window.seen.add(h);
        }
        requestAnimationFrame(look);
      };
      requestAnimationFrame(look);
    });
    await waitUntil(page, () => document.getElementById("mjpeg").naturalWidth > 0, "the first picture");
    const size = await page.evaluate(() => {
      const img = document.getElementById("mjpeg");
      return [img.naturalWidth, img.naturalHeight];
    });
    assert.deepEqual(size, [640, 360]);
    await waitUntil(page, () => window.seen.size >= 10, "10 different pictures");
    const state = await server.state();
    assert.equal(mjpegViewers(state), 1, JSON.stringify(state.streams));
    assert.equal(state.mjpeg.stream_clients, 1);
  } finally {
    await page.close();
  }
  try {
    // The page is gone: so is its viewer, and the test pattern idles again.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const state = await server.state();
      if (mjpegViewers(state) === 0 && state.source.subscribers === 0) break;
      if (Date.now() > deadline) throw new Error(`viewer still counted: ${JSON.stringify(state.streams)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await server.stop();
  }
});

test("a page of another origin embeds /stream and /snapshot", async () => {
  const server = await startPeregrine(["--resolution", "320x240"]);
  const page = await browser.newPage();
  try {
    await page.setContent(
      `<img id="live" src="${server.base}/stream"><img id="still" src="${server.base}/snapshot">`,
    );
    await waitUntil(
      page,
      () => ["live", "still"].every((id) => document.getElementById(id).naturalWidth === 320),
      "both pictures",
    );
  } finally {
    await page.close();
    await server.stop();
  }
});
