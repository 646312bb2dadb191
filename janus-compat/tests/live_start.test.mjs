// What a person sees when opening the stock demo page after nobody watched for a while:
// the first picture must be live (captured after the page was opened), no picture may be
// corrupted on the way there, and the first live picture (≤ 250 ms old) comes quickly.
// The source is a memsink fed by a second peregrine (the test pattern, always running,
// keyframes on request), as µStreamer feeds the Janus plugin; the server closes the sink
// while nobody watches. Every presented picture's code strip is read in the page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { readFileSync } from "node:fs";
import { kitDir, startPeregrine, startPageServer, launchChromium, sleep } from "./harness.mjs";

const SINK = `live-start-${process.pid}::ustreamer::h264`;
const LOADS = Number(process.env.LIVE_START_LOADS || 6);
const IDLE_GAP_MS = Number(process.env.LIVE_START_GAP_MS || 1500);
const LIVE_AGE_MS = 250;
const BLANK_LUMA = 8;
// The bundled page's strip reader, exported from the (function-scoped) init script.
const codestrip = readFileSync(path.resolve(kitDir, "../client/codestrip.js"), "utf8") +
  "\nwindow.readCodeStrip = readCodeStrip;\n";

// Runs in the page: read the strip of every picture the <video> presents.
function recordPresentedPictures() {
  window.presented = [];
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const stripBlocks = (ctx, width) => {
    if (!width) return "";
    const px = ctx.getImageData(0, 0, width, 96).data;
    let rows = [];
    for (let r = 0; r < 6; r++) {
      let row = "";
      for (let c = 0; c < 18; c++) row += px[((r * 16 + 8) * width + c * 16 + 8) * 4] > 128 ? "1" : "0";
      rows.push(row);
    }
    return rows.join("|");
  };
  const thumb = document.createElement("canvas");
  thumb.width = 32;
  thumb.height = 18;
  const thumbCtx = thumb.getContext("2d", { willReadFrequently: true });
  const meanLuma = (video) => {
    thumbCtx.drawImage(video, 0, 0, 32, 18);
    const px = thumbCtx.getImageData(0, 0, 32, 18).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
    return Math.round(sum / (32 * 18));
  };
  const hook = (video) => {
    const onFrame = () => {
      const code = window.readCodeStrip(video, canvas, ctx);
      // An unreadable strip is kept as its block pattern, to tell a placeholder or a
      // blank picture from a damaged one in a failure message.
      const blocks = code ? "" : stripBlocks(ctx, canvas.width);
      const luma = code ? null : meanLuma(video);
      window.presented.push({ at: Date.now(), code, blocks, luma, size: `${video.videoWidth}x${video.videoHeight}` });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  new MutationObserver(() => {
    const v = document.querySelector("video");
    if (v && !v.dataset.hooked) { v.dataset.hooked = "1"; hook(v); }
  }).observe(document, { childList: true, subtree: true });
}

let pages, browser;
before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  pages?.close();
});

const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

test(`demo page starts live after idle gaps (${LOADS} loads, ${IDLE_GAP_MS} ms apart)`, async () => {
  const writer = await startPeregrine(["--resolution", "640x360", "--h264-sink", SINK, "--h264-sink-rm"]);
  const server = await startPeregrine(["--source", `memsink:${SINK}`]);
  const firstLive = [], firstAge = [];
  let blankPictures = 0;
  try {
    for (let load = 0; load < LOADS; load++) {
      if (load > 0) {
        // The last page closed its socket; wait for the server to let go of the sink.
        const deadline = Date.now() + 10_000;
        const closes = () => server.log().split("memsink closed: nobody watching").length - 1;
        while (closes() < load) {
          assert.ok(Date.now() < deadline, "the server never closed the sink after the page left");
          await sleep(20);
        }
        await sleep(IDLE_GAP_MS);
      }
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        await page.addInitScript({ content: codestrip });
        await page.addInitScript(recordPresentedPictures);
        const t0 = Date.now();
        await page.goto(`${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`);
        let live;
        const deadline = Date.now() + 20_000;
        for (;;) {
          const seen = await page.evaluate(() => window.presented);
          live = seen.findIndex((p) => p.code && p.at - p.code.ms <= LIVE_AGE_MS);
          if (live >= 0) {
            // Chromium sometimes presents one all-black picture as the track starts,
            // before the first decoded one. Nothing of the stream is black (the pattern
            // is colourful, NO SIGNAL is grey with light letters): it is the player's
            // blank, not a picture we sent. Only leading ones are skipped.
            const blanks = seen.findIndex((p) => p.code || p.luma === null || p.luma > BLANK_LUMA);
            blankPictures += Math.max(0, blanks);
            const upToLive = seen.slice(Math.max(0, blanks), live + 1);
            upToLive.forEach((p, i) => {
              assert.ok(p.code, `load ${load}: picture ${i} before the first live one has no readable code strip (corrupted or a placeholder): ${JSON.stringify(upToLive)}\n${server.log().slice(-4000)}`);
              assert.ok(p.code.ms >= t0 - 100, `load ${load}: picture ${i} was captured ${t0 - p.code.ms} ms before the page was opened`);
              if (i > 0) assert.ok(p.code.frame > upToLive[i - 1].code.frame, `load ${load}: picture ${i} goes back in time`);
            });
            firstLive.push(seen[live].at - t0);
            firstAge.push(upToLive[0].at - upToLive[0].code.ms);
            break;
          }
          assert.ok(Date.now() < deadline, `load ${load}: no live picture within 20 s; presented ${JSON.stringify(seen.slice(0, 20))}`);
          await sleep(20);
        }
        // And it stays sound once live: a second of pictures, all readable and in order.
        await sleep(1000);
        const after = (await page.evaluate(() => window.presented)).slice(live);
        const broken = after.filter((p) => !p.code).length;
        assert.equal(broken, 0, `load ${load}: ${broken} of ${after.length} pictures after the first live one are unreadable: ${JSON.stringify(after.filter((p) => !p.code))}`);
        assert.deepEqual((await page.evaluate(() => window.demo)).errors, []);
      } finally {
        await context.close();
      }
    }
  } finally {
    await server.stop();
    await writer.stop();
  }
  console.log(`# first live picture after navigation: p50 ${percentile(firstLive, 50)} ms, max ${Math.max(...firstLive)} ms over ${LOADS} loads (${firstLive.join(", ")})`);
  console.log(`# blank pictures the player showed before the first decoded one: ${blankPictures}`);
  console.log(`# age of the first picture shown: p50 ${percentile(firstAge, 50)} ms, max ${Math.max(...firstAge)} ms`);
  assert.ok(percentile(firstLive, 50) <= 3000, `first live picture p50 ${percentile(firstLive, 50)} ms`);
});
