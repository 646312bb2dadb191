// peregrine's own page around the video: the reason a source is down, shown clear of the
// picture's NO SIGNAL lettering; no failed requests (favicon); a stats bar that fits a
// phone's width, with a fullscreen button.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import path from "node:path";
import { startPeregrine, launchChromium, waitForFrames, waitUntil, freePort } from "./harness.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("the page shows why the source is down, below the NO SIGNAL lettering", async () => {
  // A port nobody listens on: every connection attempt is refused.
  const refused = await freePort();
  const server = await startPeregrine(["--source", `tcp://127.0.0.1:${refused}`, "--resolution", "640x360"]);
  const page = await browser.newPage();
  try {
    await page.goto(`${server.base}/`);
    await waitUntil(page, () => /refused/i.test(window.peregrine.reason || ""), "the reason from /state");
    const notice = await page.textContent("#notice");
    assert.match(notice, new RegExp(`^no signal: cannot connect to 127\\.0\\.0\\.1:${refused}: connection refused`, "i"));
    assert.ok(await page.isVisible("#notice"));

    // Viewers get the NO SIGNAL picture; the page puts no text of its own over it.
    await waitForFrames(page, { frames: 5, selector: "#video" });
    await waitUntil(page, () => window.peregrine.state === "no signal", "the no signal state");
    assert.equal(await page.isVisible("#overlay"), false);
    const shot = path.join(os.tmpdir(), "peregrine-no-signal.png");
    await page.screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);
    const box = await page.evaluate(() => {
      const v = document.getElementById("video").getBoundingClientRect();
      const n = document.getElementById("notice").getBoundingClientRect();
      const video = document.getElementById("video");
      // object-fit: contain: the picture's own rectangle inside the element.
      const scale = Math.min(v.width / video.videoWidth, v.height / video.videoHeight);
      const h = video.videoHeight * scale;
      return { pictureTop: v.top + (v.height - h) / 2, pictureHeight: h, noticeTop: n.top };
    });
    // The lettering never leaves the middle third of the picture.
    assert.ok(box.noticeTop >= box.pictureTop + (2 / 3) * box.pictureHeight, JSON.stringify(box));
  } finally {
    await page.close();
    await server.stop();
  }
});

test("every page loads without a failed request (favicon included)", async () => {
  const server = await startPeregrine();
  const page = await browser.newPage();
  const failed = [];
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
  try {
    for (const p of ["/", "/jmuxer.html", "/jsmpeg.html", "/direct.html"]) {
      await page.goto(`${server.base}${p}`, { waitUntil: "load" });
      const icon = await page.evaluate(async () => {
        const link = document.querySelector('link[rel="icon"]');
        const r = await fetch(link.href);
        return { status: r.status, type: r.headers.get("content-type") };
      });
      assert.deepEqual(icon, { status: 200, type: "image/svg+xml" }, p);
    }
    // Browsers ask for /favicon.ico by themselves, e.g. for /state opened in a tab.
    await page.goto(`${server.base}/state`, { waitUntil: "load" });
    const ico = await page.evaluate(async () => (await fetch("/favicon.ico")).status);
    assert.equal(ico, 200);
    assert.deepEqual(failed, []);
  } finally {
    await page.close();
    await server.stop();
  }
});

test("on a 390 px wide phone the stats bar fits in two lines and has a fullscreen button", async () => {
  const server = await startPeregrine();
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  try {
    await page.goto(`${server.base}/`);
    await waitForFrames(page, { frames: 30, selector: "#video" });
    await waitUntil(page, () => typeof window.peregrine.latencyMs === "number" && window.peregrine.fps > 0, "stats");
    const shot = path.join(os.tmpdir(), "peregrine-phone.png");
    await page.screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);

    const measure = () => page.evaluate(() => {
      const bar = document.getElementById("bar");
      const tops = new Set([...bar.querySelectorAll(".stat")].map((s) => Math.round(s.getBoundingClientRect().top)));
      const split = [...bar.querySelectorAll(".stat")].filter((s) => {
        const [dt, dd] = s.children;
        return Math.abs(dt.getBoundingClientRect().top - dd.getBoundingClientRect().top) > 2;
      });
      const b = document.getElementById("fullscreen").getBoundingClientRect();
      return {
        lines: tops.size,
        split: split.length,
        barOverflow: bar.scrollWidth - bar.clientWidth,
        pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
        button: { left: b.left, right: b.right, width: b.width },
      };
    });
    let m = await measure();
    assert.ok(m.lines <= 2, `stats on ${m.lines} lines`);
    assert.equal(m.split, 0, "a label is never on another line than its value");
    assert.ok(m.barOverflow <= 0 && m.pageOverflow <= 0, JSON.stringify(m));
    assert.ok(m.button.width >= 24 && m.button.left >= 0 && m.button.right <= 390, JSON.stringify(m.button));

    // The longest status the page shows still fits.
    await page.evaluate(() => { document.getElementById("status").textContent = "reconnecting (hangup: DTLS alert received from the peer)"; });
    m = await measure();
    await page.screenshot({ path: path.join(os.tmpdir(), "peregrine-phone-long-status.png") });
    assert.ok(m.lines <= 2 && m.barOverflow <= 0 && m.pageOverflow <= 0, JSON.stringify(m));

    await page.click("#fullscreen");
    await waitUntil(page, () => document.fullscreenElement && document.fullscreenElement.id === "stage", "fullscreen");
    await page.evaluate(() => document.exitFullscreen());
  } finally {
    await page.close();
    await server.stop();
  }
});
