// Stored tokens managed through Janus's Admin API, as an application that hands out
// viewer tokens does: the real janus.js demo page with `?token=` is refused before the
// token is added over the admin HTTP API, plays once it is, and is refused again (the
// page shows Janus's 403) once it is removed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, waitUntil, freePort } from "./harness.mjs";

const ADMIN_SECRET = "admin-s3cret";
const TOKEN = "viewer-token-1";
const PLUGIN = "janus.plugin.ustreamer";
let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pages?.close();
});

/** peregrine with token authentication and the admin HTTP API on a free port. */
async function startWithAdmin() {
  let lastError;
  // The admin port is found free here and bound later: another process may take it
  // meanwhile, so the start is tried again with another.
  for (let attempt = 0; attempt < 3; attempt++) {
    const adminPort = await freePort();
    try {
      const server = await startPeregrine([
        "--janus-token-auth",
        "--janus-admin-http-port", String(adminPort),
        "--janus-admin-secret", ADMIN_SECRET,
      ]);
      return { server, adminUrl: `http://127.0.0.1:${adminPort}/admin` };
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError;
}

/** One Admin API request over HTTP, with the admin secret. */
async function admin(adminUrl, request) {
  const response = await fetch(adminUrl, {
    method: "POST",
    body: JSON.stringify({ transaction: String(Math.random()), admin_secret: ADMIN_SECRET, ...request }),
  });
  assert.equal(response.status, 200);
  return response.json();
}

async function openDemo(transportUrl) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const query = new URLSearchParams({ server: transportUrl, token: TOKEN });
  const t0 = Date.now();
  await page.goto(`${pages.base}/demo.html?${query}`);
  return { context, page, t0 };
}

async function assertPlays(transportUrl) {
  const { context, page, t0 } = await openDemo(transportUrl);
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

async function assertRefused(transportUrl) {
  const { context, page } = await openDemo(transportUrl);
  try {
    await waitUntil(page, () => window.demo.errors.length > 0, "the page's error callback", { timeoutMs: 10_000 });
    const demo = await page.evaluate(() => window.demo);
    assert.match(demo.errors[0], /Unauthorized request \(wrong or missing secret\/token\)/);
    assert.equal(demo.offers, 0, "no offer reached a refused page");
  } finally {
    await context.close();
  }
}

test("a token added through the Admin API plays at once; removed, it is refused", async () => {
  const { server, adminUrl } = await startWithAdmin();
  try {
    await assertRefused(server.wsUrl);

    const added = await admin(adminUrl, { janus: "add_token", token: TOKEN, plugins: [PLUGIN] });
    assert.equal(added.janus, "success", JSON.stringify(added));
    assert.deepEqual(added.data.plugins, [PLUGIN]);
    const listed = await admin(adminUrl, { janus: "list_tokens" });
    assert.deepEqual(listed.data.tokens, [{ token: TOKEN, allowed_plugins: [PLUGIN] }]);

    await assertPlays(server.wsUrl);
    await assertPlays(server.httpUrl);

    const removed = await admin(adminUrl, { janus: "remove_token", token: TOKEN });
    assert.equal(removed.janus, "success", JSON.stringify(removed));
    await assertRefused(server.wsUrl);
    await assertRefused(server.httpUrl);

    // The bundled page shows the code and the reason.
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${server.base}/?token=${TOKEN}`);
      await waitUntil(page, () => /^403 Unauthorized/.test(window.peregrine.state), "the 403 on the page");
      assert.match(await page.textContent("#status"), /403 Unauthorized request/);
    } finally {
      await context.close();
    }
  } finally {
    await server.stop();
  }
});

test("a token without the plugin opens a session but cannot watch", async () => {
  const { server, adminUrl } = await startWithAdmin();
  try {
    await admin(adminUrl, { janus: "add_token", token: TOKEN });
    const taken = await admin(adminUrl, { janus: "disallow_token", token: TOKEN, plugins: [PLUGIN] });
    assert.deepEqual(taken.data.plugins, []);
    const { context, page } = await openDemo(server.wsUrl);
    try {
      await waitUntil(page, () => window.demo.errors.length > 0, "the page's error callback", { timeoutMs: 10_000 });
      const demo = await page.evaluate(() => window.demo);
      assert.match(demo.errors[0], /Provided token can't access plugin 'janus\.plugin\.ustreamer'/);
      assert.equal(demo.offers, 0);
    } finally {
      await context.close();
    }
  } finally {
    await server.stop();
  }
});
