// The real janus.js (npm janus-gateway) and webrtc-adapter, in the stock ustreamer demo
// page, in headless Debian Chromium, against peregrine: the page must play.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, sleep } from "./harness.mjs";

const WIDTH = 1280;
let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
});

async function playDemo(server, transportUrl, count) {
  const context = await browser.newContext();
  try {
    const started = Date.now();
    const tabs = await Promise.all(
      Array.from({ length: count }, async () => {
        const page = await context.newPage();
        const t0 = Date.now();
        await page.goto(`${pages.base}/demo.html?server=${encodeURIComponent(transportUrl)}`);
        return { page, t0 };
      }),
    );
    const results = await Promise.all(
      tabs.map(({ page, t0 }) => waitForFrames(page, { frames: 60, since: t0 })),
    );
    const demos = await Promise.all(tabs.map(({ page }) => page.evaluate(() => window.demo)));
    for (const [i, r] of results.entries()) {
      assert.ok(r.frames >= 60, `page ${i} decoded ${r.frames} frames`);
      assert.equal(r.width, WIDTH, `page ${i} video width`);
      assert.deepEqual(demos[i].errors, [], `page ${i} reported errors`);
      assert.ok(demos[i].webrtcUp, `page ${i} saw webrtcup`);
    }
    const ttff = results.map((r) => r.firstFrameMs);
    console.log(`# ${count} page(s) over ${transportUrl.split(":")[0]}: first frame after navigation ${ttff.join(", ")} ms (all ${Date.now() - started} ms)`);
    return { results, demos };
  } finally {
    await context.close();
  }
}

test("demo page plays over the Janus WebSocket transport", async () => {
  const server = await startPeregrine();
  try {
    await playDemo(server, server.wsUrl, 1);
  } finally {
    await server.stop();
  }
});

test("demo page plays over the Janus HTTP long-poll transport", async () => {
  const server = await startPeregrine();
  try {
    await playDemo(server, server.httpUrl, 1);
  } finally {
    await server.stop();
  }
});

test("four demo pages play at once", async () => {
  const server = await startPeregrine();
  try {
    await playDemo(server, server.wsUrl, 4);
    // Closing the pages closes their sockets, which must destroy their sessions and peers.
    let state;
    for (let i = 0; i < 50; i++) {
      state = await server.state();
      if (state.janus.sessions === 0 && state.rtc.peers === 0) break;
      await sleep(100);
    }
    assert.equal(state.janus.sessions, 0, "sessions left after the pages closed");
    assert.equal(state.rtc.peers, 0, "peers left after the pages closed");
  } finally {
    await server.stop();
  }
});

test("a watch in the source's first second waits for its first keyframe: no 503", async () => {
  // The source warms up for a second after the first viewer appears (as a camera
  // does): the page's watch lands before any SPS/PPS exists, and is answered with the
  // offer once they come rather than with a 503 to retry after a back-off.
  const server = await startPeregrine(["--testsrc-warmup-ms", "1000"]);
  try {
    const { demos } = await playDemo(server, server.wsUrl, 1);
    assert.equal(demos[0].watch503, 0, "503 replies while the source warmed up");
    assert.equal(demos[0].offers, 1, "one offer");
  } finally {
    await server.stop();
  }
});

test("page opened long before the first keyframe retries on 503 and then plays", async () => {
  // Three seconds of warm-up outlast the server's wait for a keyframe (2 s): the watch
  // is answered with a 503, and the page's retry finds the stream.
  const server = await startPeregrine(["--testsrc-warmup-ms", "3000"]);
  try {
    const { demos } = await playDemo(server, server.wsUrl, 1);
    assert.ok(demos[0].watch503 >= 1, `page saw ${demos[0].watch503} 503 replies`);
    assert.equal(demos[0].offers, 1, "exactly one offer after the retries");
  } finally {
    await server.stop();
  }
});
