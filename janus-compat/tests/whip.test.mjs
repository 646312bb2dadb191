// WHIP ingest seen from a browser: aiortc publishes H.264 to a stream whose source is
// `whip` (tests/whip_publisher.py), and the stock demo page (janus.js) watching that
// stream by name shows the publisher's pictures, not NO SIGNAL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, sleep, kitDir } from "./harness.mjs";

let dir, pages, browser;
before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "peregrine-whip-"));
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  pages?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The aiortc publisher, and its JSON reports one by one. */
function startPublisher(url) {
  const script = path.join(kitDir, "..", "tests", "whip_publisher.py");
  const child = spawn("python3", [script, url], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    let timer;
    const silence = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("the publisher said nothing for 30 s")), 30_000);
    });
    try {
      const { value, done } = await Promise.race([lines.next(), silence]);
      if (done) throw new Error("the publisher ended");
      return JSON.parse(value);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    next,
    async delete() { child.stdin.write("delete\n"); return next(); },
    kill() { child.kill("SIGKILL"); },
  };
}

/** Mean luma-ish brightness of the page's current video picture (0-255). */
async function brightness(page) {
  return page.evaluate(() => {
    const v = document.querySelector("video");
    const c = document.createElement("canvas");
    c.width = 64; c.height = 36;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;
    return sum / (d.length / 4);
  });
}

test("a janus.js viewer of a whip stream shows the aiortc publisher's pictures", async () => {
  const config = path.join(dir, "whip.toml");
  writeFileSync(config, [
    'source = "testsrc"',
    'resolution = "320x240"',
    "",
    "[[stream]]",
    'name = "cam"',
    'source = "whip"',
    'resolution = "640x360"',
    "",
  ].join("\n"));
  const server = await startPeregrine(["--config", config]);
  const publisher = startPublisher(`${server.base}/cam/whip`);
  const context = await browser.newContext();
  try {
    const published = await publisher.next();
    assert.match(String(published.published), /^\/whip\/resource\//, JSON.stringify(published));
    const deadline = Date.now() + 20_000;
    while ((await server.state()).streams.cam.source.state !== "live") {
      if (Date.now() > deadline) throw new Error("the whip stream never went live");
      await sleep(100);
    }
    const page = await context.newPage();
    const ws = encodeURIComponent(server.wsUrl);
    await page.goto(`${pages.base}/demo.html?server=${ws}&stream=cam`);
    const shown = await waitForFrames(page, { frames: 60 });
    assert.deepEqual([shown.width, shown.height], [640, 360]);
    assert.deepEqual(await page.evaluate(() => window.demo.errors), []);
    // The publisher's pictures are bright; NO SIGNAL is dark grey.
    const light = await brightness(page);
    assert.ok(light > 120, `the publisher's pictures are shown (brightness ${light})`);
    console.log(`# janus.js first frame of the WHIP publisher: ${shown.firstFrameMs} ms`);
    const deleted = await publisher.delete();
    assert.equal(deleted.deleted, 200, JSON.stringify(deleted));
  } finally {
    publisher.kill();
    await context.close();
    await server.stop();
  }
});
