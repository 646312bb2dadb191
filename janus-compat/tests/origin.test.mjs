// A page from another site, opened in a real Chromium, must not reach peregrine through
// the browser: no Janus WebSocket, no Janus HTTP session, no reading /state. The same
// page from this host (any port) or from a listed origin works. "evil.test" resolves
// to 127.0.0.1 inside this browser only, so every byte stays on loopback.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, startPageServer, launchChromium } from "./harness.mjs";

let pages, browser;

before(async () => {
  pages = await startPageServer();
  browser = await launchChromium(["--host-resolver-rules=MAP evil.test 127.0.0.1"]);
});

after(async () => {
  await browser?.close();
  pages?.close();
});

const evilBase = () => pages.base.replace("127.0.0.1", "evil.test");

/** What a page at `pageBase` can do with `server`, tried from inside the page. */
async function probe(server, pageBase) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${pageBase}/demo.html?server=none`);
    return await page.evaluate(async ({ wsUrl, httpUrl, stateUrl, mainWs }) => {
      const socket = (url, protocols) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, protocols);
          const timer = setTimeout(() => resolve("timeout"), 10_000);
          ws.onopen = () => { clearTimeout(timer); ws.close(); resolve("open"); };
          ws.onerror = () => { clearTimeout(timer); resolve("error"); };
        });
      const read = async (url, init) => {
        try {
          const r = await fetch(url, init);
          return `status ${r.status}: ${(await r.text()).slice(0, 200)}`;
        } catch (e) {
          return `blocked`;
        }
      };
      return {
        origin: location.origin,
        janusWs: await socket(wsUrl, "janus-protocol"),
        mainJanusWs: await socket(mainWs, "janus-protocol"),
        h264: await socket(mainWs.replace("/janus/ws", "/h264")),
        janusHttp: await read(httpUrl, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ janus: "create", transaction: "t" }),
        }),
        state: await read(stateUrl),
      };
    }, {
      wsUrl: server.wsUrl,
      httpUrl: server.httpUrl,
      stateUrl: `${server.base}/state`,
      mainWs: `${server.base.replace("http:", "ws:")}/janus/ws`,
    });
  } finally {
    await context.close();
  }
}

test("a page from another site cannot use peregrine through the browser", async () => {
  const server = await startPeregrine();
  try {
    const evil = await probe(server, evilBase());
    assert.match(evil.origin, /^http:\/\/evil\.test:/);
    assert.equal(evil.janusWs, "error", "Janus WebSocket transport");
    assert.equal(evil.mainJanusWs, "error", "Janus WebSocket on the main port");
    assert.equal(evil.h264, "error", "/h264 relay");
    assert.equal(evil.janusHttp, "blocked", "Janus HTTP transport");
    assert.equal(evil.state, "blocked", "/state");
    const state = await server.state();
    assert.equal(state.janus.sessions, 0, "no session was created for the page");

    // The same page served from this host, on another port, still gets everything.
    const own = await probe(server, pages.base);
    assert.equal(own.janusWs, "open");
    assert.equal(own.mainJanusWs, "open");
    assert.equal(own.h264, "open");
    assert.match(own.janusHttp, /^status 200: .*success/);
    assert.match(own.state, /^status 200: /);
  } finally {
    await server.stop();
  }
});

test("--allow-origin lets a listed site in", async () => {
  const server = await startPeregrine(["--allow-origin", evilBase()]);
  try {
    const listed = await probe(server, evilBase());
    assert.equal(listed.janusWs, "open");
    assert.match(listed.janusHttp, /^status 200: .*success/);
    assert.match(listed.state, /^status 200: /);
  } finally {
    await server.stop();
  }
});
