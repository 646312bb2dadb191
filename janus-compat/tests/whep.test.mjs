// WHEP in Chromium: the whip-whep player (npm, by the WHEP draft's author) from a page
// of another origin, and peregrine's own page in its WHEP mode (`?whep=1`), whose time
// to first frame is printed next to the same page's over the Janus API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium, videoStats, waitForFrames, waitUntil } from "./harness.mjs";

let browser;
let pages;
before(async () => {
  browser = await launchChromium();
  pages = await startPageServer();
});
after(async () => {
  await browser?.close();
  pages?.close();
});

/** /state until nothing of WHEP (sessions, peers, viewers) is left. */
async function nothingLeft(server) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = await server.state();
    if (s.whep.sessions === 0 && s.rtc.peers === 0 && s.viewers === 0) return;
    if (Date.now() > deadline) throw new Error(`WHEP left behind: ${JSON.stringify({ whep: s.whep, peers: s.rtc.peers, viewers: s.viewers })}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("whip-whep's WHEP player plays 60 frames, restarts ICE and keeps playing, and its stop ends the session", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    await page.goto(`${pages.base}/whep-player.html?url=${encodeURIComponent(`${server.base}/whep`)}`);
    const played = await waitForFrames(page, { frames: 60, since: t0, selector: "#video" });
    assert.equal(played.width, 640);
    assert.equal(played.height, 360);
    const whep = await page.evaluate(() => window.whep);
    assert.equal(whep.error, null, `the player failed: ${whep.error}`);
    console.log(`# whip-whep player: first frame after navigation ${played.firstFrameMs} ms`);
    const s = await server.state();
    assert.equal(s.whep.sessions, 1);
    assert.equal(s.streams.default.viewers_by.webrtc, 1);

    // Its ICE restart (PATCH with If-Match "*") is answered with new credentials and
    // ETag, and the pictures go on over them.
    // (whip-whep keeps no ETag from its POST, only the restart's.)
    const before = await page.evaluate(async () => ({ etag: window.whepClient.etag ?? null, ufrag: await window.remoteUfrag() }));
    assert.ok(before.ufrag, JSON.stringify(before));
    const framesBefore = (await videoStats(page, "#video")).frames;
    await page.evaluate(() => window.whepClient.restart());
    await waitForFrames(page, { frames: framesBefore + 60, selector: "#video" });
    await waitUntil(page, async () => (await window.remoteUfrag()) !== null, "a selected pair");
    const after = await page.evaluate(async () => ({ etag: window.whepClient.etag, ufrag: await window.remoteUfrag() }));
    assert.match(after.etag ?? "", /^"[0-9a-f]+"$/, "the new ICE session's ETag");
    assert.notEqual(after.ufrag, before.ufrag);
    assert.equal((await server.state()).whep.sessions, 1);

    await page.evaluate(() => window.stopWhep());
    await nothingLeft(server);
  } finally {
    await page.close();
    await server.stop();
  }
});

test("the bundled page plays over WHEP; its time to first frame is printed next to the Janus API's", async () => {
  const server = await startPeregrine();
  try {
    const ttff = { janus: [], whep: [] };
    // Each mode three times, alternating, so a slow moment of a shared machine falls on
    // both; the page's own reading (navigation → first picture on screen) is kept.
    for (let round = 0; round < 3; round++) {
      for (const mode of ["janus", "whep"]) {
        const page = await browser.newPage();
        try {
          const t0 = Date.now();
          await page.goto(`${server.base}/${mode === "whep" ? "?whep=1" : ""}`);
          const played = await waitForFrames(page, { frames: 60, since: t0, selector: "#video" });
          assert.equal(played.width, 1280);
          await waitUntil(page, () => window.peregrine.state === "playing", "playing");
          const p = await page.evaluate(() => window.peregrine);
          assert.equal(p.mode, mode === "whep" ? "whep" : undefined);
          assert.ok(p.firstFrameMs > 0, `first frame at ${p.firstFrameMs} ms`);
          ttff[mode].push(p.firstFrameMs);
          if (mode === "whep") {
            const s = await server.state();
            assert.equal(s.whep.sessions, 1);
            const t = p.whep;
            console.log(`# WHEP: offer posted ${t.posted} ms, answered ${t.answered} ms, connected ${t.connected} ms, first frame ${p.firstFrameMs} ms`);
          }
        } finally {
          await page.close({ runBeforeUnload: true });
        }
        // Leaving the page ends its WHEP session (DELETE on pagehide).
        if (mode === "whep") await nothingLeft(server);
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[1];
    const best = (xs) => Math.min(...xs);
    console.log(`# bundled page TTFF (navigation → first frame, median/best of 3): WHEP ${median(ttff.whep)}/${best(ttff.whep)} ms, Janus API ${median(ttff.janus)}/${best(ttff.janus)} ms`);
  } finally {
    await server.stop();
  }
});

test("the bundled page restarts ICE over WHEP and keeps playing on the server's new credentials", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    await page.goto(`${server.base}/?whep=1`);
    await waitForFrames(page, { frames: 30, since: t0, selector: "#video" });
    await waitUntil(page, () => window.peregrine.state === "playing", "playing");
    const before = await page.evaluate(async () => ({ etag: window.peregrine.whep.etag, ufrags: await window.peregrine.iceUfrags() }));
    assert.ok(before.etag && before.ufrags.remote && before.ufrags.local, JSON.stringify(before));
    const framesBefore = (await videoStats(page, "#video")).frames;

    await page.evaluate(() => window.peregrine.restartIce());
    assert.equal(await page.evaluate(() => window.peregrine.iceRestarts), 1);
    // Pictures keep coming, over a pair of the new ICE session.
    await waitForFrames(page, { frames: framesBefore + 60, selector: "#video" });
    await waitUntil(page, async () => (await window.peregrine.iceUfrags()).remote !== null, "a selected pair");
    const after = await page.evaluate(async () => ({ etag: window.peregrine.whep.etag, ufrags: await window.peregrine.iceUfrags() }));
    assert.notEqual(after.etag, before.etag, "a new ETag for the new ICE session");
    assert.notEqual(after.ufrags.remote, before.ufrags.remote, "the server's new ufrag is used");
    assert.notEqual(after.ufrags.local, before.ufrags.local, "ours changed too");
    const s = await server.state();
    assert.equal(s.whep.sessions, 1, "the same session");
    assert.equal(s.rtc.peers, 1, "the same peer");
    assert.equal(await page.evaluate(() => window.peregrine.offers), 1, "no new session was opened");
  } finally {
    await page.close({ runBeforeUnload: true });
  }
  await nothingLeft(server);
  await server.stop();
});

test("over WHEP the page's first script plays on its own, and leaving then ends the session at once", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    // The page's other scripts load only after the first picture; here they never do.
    await page.route(/\/(peregrine|sound|codestrip)\.js$/, (route) => route.abort());
    const t0 = Date.now();
    await page.goto(`${server.base}/?whep=1`);
    const played = await waitForFrames(page, { frames: 30, since: t0, selector: "#video" });
    assert.equal(played.width, 640);
    assert.equal(await page.evaluate(() => typeof window.peregrine), "undefined", "peregrine.js never ran");
    assert.ok(await page.evaluate(() => document.getElementById("overlay").classList.contains("hidden")), "no \"connecting…\" over the picture");
    assert.equal((await server.state()).whep.sessions, 1);
  } finally {
    await page.close({ runBeforeUnload: true });
  }
  // The first script's pagehide ends the session (without it the peer would stay until
  // its ICE timeout).
  await nothingLeft(server);
  await server.stop();
});
