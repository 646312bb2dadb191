// The browser benchmark's machinery (scripts/bench-browser.sh), briefly: time to first
// live picture over a few loads with idle gaps for the bundled page (WHEP and Janus API)
// and the demo page, and glass-to-glass at 1 and 10 viewers. Only that live pictures
// were seen and that every figure is a number is checked; the timings are printed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium } from "./harness.mjs";
import { firstLivePictures, glassToGlass, extraPages, percentile, STEPS } from "../../benches/browser/lib.mjs";

let browser, pages, server;
before(async () => {
  browser = await launchChromium();
  pages = await startPageServer();
  server = await startPeregrine(["--resolution", "640x360"]);
});
after(async () => {
  await browser?.close();
  pages?.close();
  await server?.stop();
});

const LOADS = 3;

test("first live picture: the bundled page (WHEP, Janus API) and the demo page, each load after an idle gap", async () => {
  const urls = {
    "bundled page, WHEP": `${server.base}/?whep=1`,
    "bundled page, Janus API": `${server.base}/?whep=0`,
    "demo page": `${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`,
  };
  for (const [name, url] of Object.entries(urls)) {
    const runs = await firstLivePictures(browser, server, url, { loads: LOADS, gapMs: [200, 600] });
    assert.equal(runs.length, LOADS);
    for (const run of runs) {
      for (const step of STEPS) assert.ok(Number.isFinite(run[step]) && run[step] > 0, `${name}: ${step} ${JSON.stringify(run)}`);
      assert.ok(run.firstLive >= run.firstFrame, `${name}: ${JSON.stringify(run)}`);
    }
    const live = runs.map((r) => r.firstLive);
    console.log(`# ${name}: first live picture p50 ${Math.round(percentile(live, 50))} ms (${live.map(Math.round).join(", ")}); DTLS p50 ${Math.round(percentile(runs.map((r) => r.dtls), 50))} ms`);
  }
});

test("glass-to-glass per picture at 1 and 10 viewers, next to the server's delay", async () => {
  const url = `${server.base}/?whep=1`;
  for (const viewers of [1, 10]) {
    const r = await glassToGlass(browser, server, url, {
      seconds: 2,
      viewers,
      startExtra: () => extraPages(browser, url, viewers - 1),
    });
    assert.equal(r.viewers, viewers);
    assert.ok(r.frames > 0, `no picture read in the window: ${JSON.stringify(r)}`);
    for (const x of [r.p50Ms, r.p99Ms, r.captureToSend.p50Ms, r.sendDelay.p50Ms]) assert.ok(Number.isFinite(x), JSON.stringify(r));
    console.log(`# ${viewers} viewers: glass-to-glass p50 ${Math.round(r.p50Ms)} ms, p99 ${Math.round(r.p99Ms)} ms over ${r.frames} pictures; server capture->send p50 ${r.captureToSend.p50Ms} ms`);
  }
});
