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

function upload(port, input, output) {
  const child = spawn("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-nostdin", "-re", ...input,
    "-f", "mpegts", "-muxdelay", "0.001", ...output, `http://127.0.0.1:${port}/upload/s3cret-upload`,
  ], { stdio: ["ignore", "inherit", "inherit"] });
  return { stop: () => child.kill("SIGKILL") };
}

async function jsmpegFrames(page, url, frames = 60) {
  await page.goto(url);
  const jsmpegState = () => window.jsmpeg;
  await waitUntil(page, (n) => window.jsmpeg.frames >= n, `${frames} JSMpeg frames`, { arg: frames, stateOf: jsmpegState });
  return page.evaluate(jsmpegState);
}

test("JSMpeg page decodes an ffmpeg upload, with a second upload carrying MP2 audio", async () => {
  const server = await startPeregrine(["--jsmpeg-secret", "s3cret-upload"]);
  const port = server.ports.http;
  const video = upload(port, ["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"],
    ["-codec:v", "mpeg1video", "-b:v", "1000k", "-bf", "0"]);
  const audio = upload(port, ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"],
    ["-codec:a", "mp2", "-b:a", "128k", "-mpegts_service_id", "2", "-mpegts_pmt_start_pid", "0x1100", "-mpegts_start_pid", "0x200"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    const s = await jsmpegFrames(page, `${server.base}/jsmpeg.html`);
    assert.equal(s.width, 640);
    assert.equal(s.height, 360);
    const relay = (await server.state()).relay;
    assert.equal(relay.uploads, 2, JSON.stringify(relay));
    console.log(`# JSMpeg upload relay: ${s.frames} frames in ${Date.now() - t0} ms`);
  } finally {
    video.stop();
    audio.stop();
    await page.close();
    await server.stop();
  }
});

test("JSMpeg page decodes peregrine's own test pattern through the transcoder", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    const s = await jsmpegFrames(page, `${server.base}/jsmpeg.html`);
    assert.equal(s.width, 640);
    assert.equal(s.height, 360);
    console.log(`# JSMpeg transcode: ${s.frames} frames in ${Date.now() - t0} ms`);
    assert.equal((await server.state()).relay.transcoder.ffmpeg_running, 1);
    await page.close();
    const deadline = Date.now() + 10_000;
    while ((await server.state()).relay.transcoder.ffmpeg_running !== 0) {
      if (Date.now() > deadline) throw new Error("ffmpeg still running after the last viewer left");
      await sleep(100);
    }
  } finally {
    if (!page.isClosed()) await page.close();
    await server.stop();
  }
});
