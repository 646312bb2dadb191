// Several streams in one server, each from its own kind of source, each reached by name
// from a different output at once: the stock demo page (janus.js) plays `default` with no
// change, the same page with `watch {stream: "cam2"}` plays a looping H.264 file, the
// jmuxer page plays a TCP byte stream from `/h264?stream=cam3`, and a fourth stream that
// nobody watches stays idle. Each stream has a picture size of its own, so a page showing
// another stream's pictures would be caught.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  startPeregrine, startPageServer, launchChromium, waitForFrames, sleep, startH264Encoder,
} from "./harness.mjs";

let dir, pages, browser;
before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "peregrine-streams-"));
  execFileSync("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
    "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-g", "30", "-f", "h264",
    path.join(dir, "cam2.h264"),
  ]);
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  pages?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Poll /state until `ok(state)`; fails with the last state. */
async function waitState(server, ok, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let state;
  for (;;) {
    state = await server.state();
    if (ok(state)) return state;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(state.streams)}`);
    await sleep(100);
  }
}

test("three streams from three kinds of source play at once, each by name; the unwatched one idles", async () => {
  const config = path.join(dir, "streams.toml");
  writeFileSync(config, [
    'source = "testsrc"',
    'resolution = "320x240"',
    "",
    "[[stream]]",
    'name = "cam2"',
    `source = "${path.join(dir, "cam2.h264")}"`,
    'resolution = "640x360"',
    "",
    "[[stream]]",
    'name = "cam3"',
    // Port 0: the system picks a free one and /state names it.
    'source = "tcp-listen://127.0.0.1:0"',
    'resolution = "480x270"',
    "",
    "[[stream]]",
    'name = "idle"',
    'source = "testsrc"',
    "",
  ].join("\n"));
  const server = await startPeregrine(["--config", config]);
  const first = await server.state();
  assert.deepEqual(Object.keys(first.streams).sort(), ["cam2", "cam3", "default", "idle"]);
  const push = first.streams.cam3.source.kind.replace("tcp-listen://", "tcp://");
  const encoder = startH264Encoder("480x270", push);
  const context = await browser.newContext();
  try {
    const demo = await context.newPage();
    const cam2 = await context.newPage();
    const jmuxer = await context.newPage();
    const ws = encodeURIComponent(server.wsUrl);
    await demo.goto(`${pages.base}/demo.html?server=${ws}`);
    await cam2.goto(`${pages.base}/demo.html?server=${ws}&stream=cam2`);
    await jmuxer.goto(`${server.base}/jmuxer.html?stream=cam3`);
    const [d, c, j] = await Promise.all([
      waitForFrames(demo, { frames: 60 }),
      waitForFrames(cam2, { frames: 60 }),
      waitForFrames(jmuxer, { frames: 60, selector: "#video" }),
    ]).catch(async (e) => {
      // What the server saw of each stream tells a source that stalled from a page that did.
      e.message += `; server streams ${JSON.stringify((await server.state()).streams)}`;
      throw e;
    });
    assert.deepEqual([d.width, d.height], [320, 240], "the demo page plays the default stream");
    assert.deepEqual([c.width, c.height], [640, 360], "watch {stream: cam2} plays the H.264 file");
    assert.deepEqual([j.width, j.height], [480, 270], "/h264?stream=cam3 plays the TCP source");
    for (const page of [demo, cam2]) {
      assert.deepEqual(await page.evaluate(() => window.demo.errors), []);
    }

    const state = await waitState(
      server,
      (s) => ["default", "cam2", "cam3"].every((n) => s.streams[n].viewers === 1),
      "one viewer on each watched stream",
    );
    for (const name of ["default", "cam2", "cam3"]) {
      assert.ok(state.streams[name].source.frames > 0, `${name} carries pictures`);
    }
    assert.equal(state.streams.idle.viewers, 0);
    assert.equal(state.streams.idle.source.subscribers, 0, "nothing holds the unwatched stream");
    assert.equal(state.streams.idle.source.frames, 0, "the unwatched stream's source made no picture");
    console.log(`# first frames: default ${d.firstFrameMs} ms, cam2 ${c.firstFrameMs} ms, cam3 (jmuxer) ${j.firstFrameMs} ms`);
  } finally {
    await context.close();
    await encoder.kill();
    await server.stop();
  }
});
