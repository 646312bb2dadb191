// The drop-in kit end to end: one peregrine plays µStreamer (test pattern into the
// memsink named in the example janus-config/), another plays Janus + ustreamer plugin
// (--janus-config on the example folder, so --source memsink: comes from the jcfg), and
// the stock demo page in Chromium plays the video through it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { kitDir, startPeregrine, startPageServer, launchChromium, waitForFrames } from "./harness.mjs";

const SINK = "demo::ustreamer::h264"; // as in janus-config/janus.plugin.ustreamer.jcfg
let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
});

test("demo page plays from --janus-config fed by a memsink writer", async () => {
  const writer = await startPeregrine(["--resolution", "640x360", "--h264-sink", SINK, "--h264-sink-rm"]);
  const server = await startPeregrine(["--janus-config", path.join(kitDir, "janus-config")]);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`);
    const r = await waitForFrames(page, { frames: 60, since: t0 });
    assert.equal(r.width, 640, "video width");
    const demo = await page.evaluate(() => window.demo);
    assert.deepEqual(demo.errors, [], "page errors");
    const state = await server.state();
    assert.equal(state.source.width, 640);
    assert.match(server.log(), /memsink opened/);
    assert.match(writer.log(), /memsink has a reader/);
    console.log(`# first frame through the memsink after ${r.firstFrameMs} ms`);
  } finally {
    await context.close();
    await server.stop();
    await writer.stop();
  }
});
