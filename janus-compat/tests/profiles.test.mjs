// Streams in the H.264 profiles cameras and encoders produce play in Chromium, through
// the stock demo page and the bundled page. Debian's Chromium declines High in SDP but
// decodes it; peregrine offers it under Constrained Baseline too and sends on what the
// answer kept. The files are made as cameras encode: no B-frames (a stream with them is
// reported instead; see tests/bytestream.rs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startPeregrine, startPageServer, launchChromium, waitForFrames } from "./harness.mjs";

const PROFILES = [
  { name: "high", args: ["-profile:v", "high"], plid: /^64/ },
  { name: "main", args: ["-profile:v", "main"], plid: /^4d/ },
  { name: "baseline", args: ["-profile:v", "baseline"], plid: /^42/ },
];

let dir, pages, browser;
before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "peregrine-profiles-"));
  for (const p of PROFILES) {
    execFileSync("ffmpeg", [
      "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
      "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", ...p.args, "-f", "h264",
      path.join(dir, `${p.name}.h264`),
    ]);
  }
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  pages?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

for (const profile of PROFILES) {
  test(`${profile.name}-profile file plays in the demo page and the bundled page`, async () => {
    const server = await startPeregrine(["--source", path.join(dir, `${profile.name}.h264`)]);
    const context = await browser.newContext();
    try {
      const demo = await context.newPage();
      const t0 = Date.now();
      await demo.goto(`${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`);
      const played = await waitForFrames(demo, { frames: 30, since: t0 });
      assert.equal(played.width, 640);
      assert.deepEqual((await demo.evaluate(() => window.demo)).errors, []);

      const bundled = await context.newPage();
      const t1 = Date.now();
      await bundled.goto(`${server.base}/`);
      const alsoPlayed = await waitForFrames(bundled, { frames: 30, since: t1, selector: "#video" });
      assert.equal(alsoPlayed.width, 640);

      const state = await server.state();
      const plid = state.input?.profile_level_id ?? state.source?.profile_level_id;
      assert.match(String(plid), profile.plid, "the stream really is of this profile");
      const log = server.log();
      assert.doesNotMatch(log, /viewer declined the video/);
      // Two browsers came and went: the log stays plain text without library chatter.
      assert.doesNotMatch(log, /Unsupported Extension Type|\x1b\[/, "log noise or colour codes");
      console.log(`# ${profile.name} (${plid}): demo page first frame ${played.firstFrameMs} ms, bundled page ${alsoPlayed.firstFrameMs} ms`);
    } finally {
      await context.close();
      await server.stop();
    }
  });
}
