// The camera pipeline in the browser: a camera's MJPEG recording (made by ffmpeg, 4:2:2
// as UVC cameras send it) replayed as the capture device, converted, encoded with
// openh264 and played by the bundled page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startPeregrine, launchChromium, waitForFrames } from "./harness.mjs";

let browser;
let dir;
before(async () => {
  browser = await launchChromium();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "peregrine-camera-page-"));
});
after(async () => {
  await browser?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("bundled page plays a replayed MJPEG camera through conversion and encoding", async () => {
  const recording = path.join(dir, "camera.mjpeg");
  execFileSync("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
    "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30", "-frames:v", "60",
    "-pix_fmt", "yuvj422p", "-c:v", "mjpeg", "-q:v", "4", "-f", "mjpeg", recording,
  ]);
  const server = await startPeregrine(["--source", recording, "--resolution", "640x480"]);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.base}/`);
    const played = await waitForFrames(page, { frames: 60, selector: "#video" });
    console.log(`# first frame after ${played.firstFrameMs} ms, ${played.frames} frames`);
    assert.equal(played.width, 640);
    assert.equal(played.height, 480);
    const state = await server.state();
    assert.equal(state.source.state, "live");
    assert.match(state.source.kind, /MJPEG 640x480/);
    assert.ok(state.source.fps > 20, `fps ${state.source.fps}`);
  } finally {
    await page.close();
    await server.stop();
  }
});
