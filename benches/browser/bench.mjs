// The browser benchmark (scripts/bench-browser.sh): headless Chromium against peregrine
// on the test pattern (keyframes on request). Prints
//  (a) time to first live picture, p50/p90/max over LOADS loads with random idle gaps,
//      for the bundled page (WHEP) and the unchanged demo page (janus.js, Janus API),
//      with the median of each step of a load;
//  (b) glass-to-glass per picture, p50/p99, at 1, 10 and 100 viewers (one page measures;
//      9 more pages, or 99 load-generator viewers, are the extra load), next to the
//      server's capture → send and send delay.
// Settings from the environment: LOADS (20), GAP_MS ("200-3000"), SECONDS (10),
// VIEWERS ("1,10,100"), RESOLUTION (1280x720), SEED (1), PEREGRINE_BIN, PEREGRINE_LOAD,
// PEREGRINE_ARGS (more server arguments, e.g. "--static DIR" to measure other pages),
// EXTRA=load (the extra viewers of the 10-viewer step from the load generator too, when
// nine more decoding pages would make the browser's CPU the figure).
import path from "node:path";
import { existsSync } from "node:fs";
import { startPeregrine, startPageServer, launchChromium } from "../../janus-compat/tests/harness.mjs";
import {
  firstLivePictures, glassToGlass, extraPages, startLoadGenerator, seededRandom, percentile, STEPS, repoDir,
} from "./lib.mjs";

const env = process.env;
const LOADS = Number(env.LOADS || 20);
const GAP_MS = (env.GAP_MS || "200-3000").split("-").map(Number);
const SECONDS = Number(env.SECONDS || 10);
const VIEWERS = (env.VIEWERS || "1,10,100").split(",").map(Number).filter((n) => n > 0); // "none": (a) only
const RESOLUTION = env.RESOLUTION || "1280x720";
const loadBinary = env.PEREGRINE_LOAD || path.join(repoDir, "target/release/peregrine-load");

const fmt = (x) => (Number.isFinite(x) ? String(Math.round(x)) : "–");
const pad = (s, n) => String(s).padStart(n);

const extraArgs = (env.PEREGRINE_ARGS || "").split(" ").filter(Boolean);
const server = await startPeregrine(["--resolution", RESOLUTION, ...extraArgs]);
const pages = await startPageServer();
const browser = await launchChromium();
try {
  console.log(`peregrine on the test pattern ${RESOLUTION}; Chromium ${browser.version()}`);
  console.log(`\n(a) time to first live picture (capture age <= 250 ms), ${LOADS} loads, idle gaps ${GAP_MS[0]}-${GAP_MS[1]} ms; ms since navigation`);
  const pagesUnderTest = [
    ["bundled page, WHEP", `${server.base}/?whep=1`],
    ["bundled page, Janus API", `${server.base}/?whep=0`],
    ["demo page (janus.js), Janus API", `${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`],
  ];
  // Medians of each step (ms since navigation): HTML received, RTCPeerConnection made,
  // signalling open (WebSocket open for the Janus API, the POST sent for WHEP), offer
  // (the server's received, or ours made), answer (ours made, or the server's received),
  // ICE connected, DTLS done, first picture; then the first live picture's p50/p90/max
  // and the age of the first picture shown (median).
  const header = ["html", "pc", "signal", "offer", "answer", "ice", "dtls", "frame", "live50", "p90", "max", "1st age"];
  console.log(`${"".padEnd(32)}${header.map((h) => pad(h, 8)).join("")}`);
  for (const [name, url] of pagesUnderTest) {
    const runs = await firstLivePictures(browser, server, url, { loads: LOADS, gapMs: GAP_MS, random: seededRandom(Number(env.SEED || 1)) });
    const med = (k) => percentile(runs.map((r) => r[k]), 50);
    const live = runs.map((r) => r.firstLive);
    const cells = [...STEPS.slice(0, -1).map(med), percentile(live, 50), percentile(live, 90), Math.max(...live), med("firstAge")];
    console.log(`${name.padEnd(32)}${cells.map((c) => pad(fmt(c), 8)).join("")}`);
  }

  console.log(`\n(b) glass-to-glass per picture (bundled page, WHEP), ${SECONDS} s per step; ms`);
  console.log(`${pad("viewers", 8)}${pad("pictures", 10)}${pad("p50", 8)}${pad("p99", 8)}   server capture->send p50/p99   send delay p50/p99`);
  const measuredUrl = `${server.base}/?whep=1`;
  for (const viewers of VIEWERS) {
    let generator = null;
    const startExtra = async () => {
      if (viewers <= 1) return [];
      if (viewers <= 10 && env.EXTRA !== "load") return extraPages(browser, measuredUrl, viewers - 1);
      if (!existsSync(loadBinary)) throw new Error(`${loadBinary} not found; cargo build --release --bins`);
      generator = startLoadGenerator(loadBinary, server, viewers - 1, SECONDS + 120);
      return [{ close: () => generator.stop() }];
    };
    try {
      const r = await glassToGlass(browser, server, measuredUrl, { seconds: SECONDS, viewers, startExtra });
      const ms = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
      console.log(`${pad(r.viewers, 8)}${pad(r.frames, 10)}${pad(fmt(r.p50Ms), 8)}${pad(fmt(r.p99Ms), 8)}   ${pad(`${ms(r.captureToSend.p50Ms)} / ${ms(r.captureToSend.p99Ms)}`, 27)}   ${pad(`${ms(r.sendDelay.p50Ms)} / ${ms(r.sendDelay.p99Ms)}`, 17)}${r.unreadable ? `   (${r.unreadable} unreadable)` : ""}`);
    } catch (e) {
      console.log(`${pad(viewers, 8)}   failed: ${e.message}${generator ? `\n${generator.log()}` : ""}`);
    }
  }
} finally {
  await browser.close();
  pages.close();
  await server.stop();
}
