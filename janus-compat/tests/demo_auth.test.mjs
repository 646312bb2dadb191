// The real janus.js demo page against a peregrine that requires Janus's API secret or a
// stored token: with the right one (janus.js sends it from `new Janus({apisecret,
// token})`) the page plays, over both transports; without it, the session is refused
// with Janus's "Unauthorized" error.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, waitUntil } from "./harness.mjs";

const SECRET = "demo-s3cret";
const TOKEN = "demo-token";
let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
});

/** Open the demo page on `transportUrl` with extra query parameters. */
async function openDemo(transportUrl, params) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const query = new URLSearchParams({ server: transportUrl, ...params });
  const t0 = Date.now();
  await page.goto(`${pages.base}/demo.html?${query}`);
  return { context, page, t0 };
}

async function assertPlays(transportUrl, params) {
  const { context, page, t0 } = await openDemo(transportUrl, params);
  try {
    const r = await waitForFrames(page, { frames: 30, since: t0 });
    assert.ok(r.frames >= 30, `decoded ${r.frames} frames`);
    const demo = await page.evaluate(() => window.demo);
    assert.deepEqual(demo.errors, [], "the page reported errors");
    assert.ok(demo.webrtcUp, "the page saw webrtcup");
  } finally {
    await context.close();
  }
}

async function assertRefused(transportUrl, params) {
  const { context, page } = await openDemo(transportUrl, params);
  try {
    await waitUntil(page, () => window.demo.errors.length > 0, "the page's error callback", { timeoutMs: 10_000 });
    const demo = await page.evaluate(() => window.demo);
    assert.match(demo.errors[0], /Unauthorized request \(wrong or missing secret\/token\)/);
    assert.equal(demo.offers, 0, "no offer reached a refused page");
  } finally {
    await context.close();
  }
}

test("demo page with the API secret plays over both transports; without it it is refused", async () => {
  const server = await startPeregrine(["--janus-api-secret", SECRET]);
  try {
    await assertPlays(server.wsUrl, { apisecret: SECRET });
    await assertPlays(server.httpUrl, { apisecret: SECRET });
    // A long-poll page's session outlives its tab until it times out, so count from here.
    const before = (await server.state()).janus.sessions;
    await assertRefused(server.wsUrl, {});
    await assertRefused(server.httpUrl, { apisecret: "wrong" });
    const after = (await server.state()).janus.sessions;
    assert.ok(after <= before, `refused pages made sessions (${before} before, ${after} after)`);
  } finally {
    await server.stop();
  }
});

test("bundled page passes ?apisecret= on; without it, it shows the refusal", async () => {
  const server = await startPeregrine(["--janus-api-secret", SECRET]);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${server.base}/?apisecret=${SECRET}`);
    const played = await waitForFrames(page, { frames: 30, since: t0, selector: "#video" });
    assert.ok(played.frames >= 30, `decoded ${played.frames} frames`);
    const refused = await context.newPage();
    await refused.goto(`${server.base}/`);
    await waitUntil(refused, () => /^403 Unauthorized/.test(window.peregrine.state), "the 403 on the page");
    assert.match(await refused.textContent("#status"), /403 Unauthorized request/);
  } finally {
    await context.close();
    await server.stop();
  }
});

test("demo page with a stored token plays; with another token it is refused", async () => {
  const server = await startPeregrine(["--janus-token-auth", "--janus-token", TOKEN]);
  try {
    await assertPlays(server.httpUrl, { token: TOKEN });
    await assertRefused(server.wsUrl, { token: "not-stored" });
  } finally {
    await server.stop();
  }
});
