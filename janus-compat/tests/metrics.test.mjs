// /metrics with a real browser viewer: the stock demo page in headless Chromium plays,
// and the server's exposition follows it (viewer gauge, time to first frame, Chromium's
// own RTCP receiver reports), as validated by Prometheus's promtool.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, sleep } from "./harness.mjs";

const VIEWERS = 'peregrine_viewers{stream="default",transport="webrtc"}';
let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
});

async function scrape(server) {
  const r = await fetch(`${server.base}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await r.text();
  const samples = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  const get = (series) => {
    assert.ok(samples.has(series), `no ${series} in\n${text}`);
    return samples.get(series);
  };
  return { text, get };
}

async function waitMetrics(server, what, pred) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = await scrape(server);
    if (pred(m)) return m;
    if (Date.now() > deadline) throw new Error(`${what}: not seen within 30 s in\n${m.text}`);
    await sleep(200);
  }
}

function promtoolCheck(text) {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  if (r.error) {
    throw new Error(`cannot run promtool (${r.error.message}): install Debian's prometheus package (scripts/install-test-deps.sh does)`);
  }
  const said = `${r.stdout}${r.stderr}`.trim();
  assert.ok(r.status === 0 && said === "", `promtool check metrics (status ${r.status}): ${said}`);
}

test("a Chromium viewer shows in /metrics, with its own receiver reports", async () => {
  const server = await startPeregrine(["--resolution", "640x360"]);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`);
    const played = await waitForFrames(page, { frames: 30, since: t0 });
    assert.ok(played.frames >= 30, `decoded ${played.frames} frames`);

    const m = await waitMetrics(server, "viewer, first frame and Chromium's reports", (m) =>
      m.get(VIEWERS) === 1 &&
      m.get("peregrine_webrtc_time_to_first_frame_seconds_count") === 1 &&
      m.get("peregrine_webrtc_receiver_loss_ratio_count") >= 1 &&
      m.get("peregrine_webrtc_receiver_jitter_seconds_count") >= 1,
    );
    const ttff = m.get("peregrine_webrtc_time_to_first_frame_seconds_sum");
    assert.ok(ttff > 0 && ttff < 30, `time to first frame ${ttff} s`);
    assert.ok(m.get("peregrine_webrtc_keyframes_sent_total") >= 1);
    assert.equal(m.get("peregrine_janus_sessions"), 1);
    // Fractions lost, each between 0 and 1.
    const losses = m.get("peregrine_webrtc_receiver_loss_ratio_sum");
    assert.ok(losses >= 0 && losses <= m.get("peregrine_webrtc_receiver_loss_ratio_count"), `loss sum ${losses}`);
    promtoolCheck(m.text);

    await context.close();
    const gone = await waitMetrics(server, "viewer gone", (m) =>
      m.get(VIEWERS) === 0 && m.get("peregrine_webrtc_peers") === 0 && m.get("peregrine_janus_sessions") === 0,
    );
    promtoolCheck(gone.text);
  } finally {
    await context.close().catch(() => {});
    await server.stop();
  }
});
