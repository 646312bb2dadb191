// peregrine with --tls-cert/--tls-key, in a Chromium that trusts the test certificate
// for real (by its public key, --ignore-certificate-errors-spki-list; every other
// certificate check stays on): the demo page (real janus.js) plays over wss://, the
// bundled page plays over https:// in a secure context, and plain http:// and ws:// to
// the TLS ports do not play.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, waitUntil } from "./harness.mjs";

const WIDTH = 1280;
let dir, cert, key, ca, browser, pages, server;

const openssl = (args, input) => execFileSync("openssl", args, { input, stdio: ["pipe", "pipe", "pipe"] });

/** A test CA and a certificate for 127.0.0.1 signed by it, in a fresh folder. */
function makeCertificates() {
  dir = mkdtempSync(path.join(tmpdir(), "peregrine-tls-browser-"));
  const f = (name) => path.join(dir, name);
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-days", "2", "-subj", "/CN=peregrine browser test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-keyout", f("ca.key"), "-out", f("ca.pem")]);
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f("server.key")]);
  openssl(["req", "-new", "-key", f("server.key"), "-subj", "/CN=127.0.0.1", "-out", f("server.csr")]);
  writeFileSync(f("server.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
  openssl(["x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
    "-set_serial", "7", "-days", "2", "-extfile", f("server.ext"), "-out", f("server.pem")]);
  cert = f("server.pem");
  key = f("server.key");
  ca = readFileSync(f("ca.pem"));
  // What Chromium is told to trust: the base64 SHA-256 of the server's public key.
  const spki = openssl(["pkey", "-pubin", "-outform", "der"], openssl(["x509", "-in", cert, "-pubkey", "-noout"]));
  return openssl(["dgst", "-sha256", "-binary"], spki).toString("base64");
}

before(async () => {
  const spki = makeCertificates();
  browser = await launchChromium([`--ignore-certificate-errors-spki-list=${spki}`]);
  pages = await startPageServer({ tls: { cert: readFileSync(cert), key: readFileSync(key) } });
  server = await startPeregrine(["--tls-cert", cert, "--tls-key", key], null, { tls: { ca } });
});

after(async () => {
  await server?.stop();
  await browser?.close();
  pages?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A page in a fresh context, with the URLs of the WebSockets it opens. */
async function openPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  return { context, page, sockets };
}

test("the demo page, loaded over https://, plays through the Janus API over wss://", async () => {
  assert.match(server.wsUrl, /^wss:\/\//);
  const { context, page, sockets } = await openPage();
  try {
    const t0 = Date.now();
    await page.goto(`${pages.base}/demo.html?server=${encodeURIComponent(server.wsUrl)}`);
    const played = await waitForFrames(page, { frames: 60, since: t0 });
    assert.equal(played.width, WIDTH);
    const demo = await page.evaluate(() => window.demo);
    assert.deepEqual(demo.errors, []);
    assert.ok(demo.webrtcUp, "webrtcup");
    assert.deepEqual(sockets, [server.wsUrl]);
    console.log(`# demo page over wss: first frame after navigation ${played.firstFrameMs} ms`);
  } finally {
    await context.close();
  }
});

test("the demo page's own server URL is wss:// when it is loaded over https://", async () => {
  const { context, page, sockets } = await openPage();
  try {
    // No ?server=: the page picks port 8188 of its own host, in the page's scheme.
    await page.goto(`${pages.base}/demo.html`);
    const deadline = Date.now() + 10_000;
    while (sockets.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(sockets, ["wss://127.0.0.1:8188/"]);
  } finally {
    await context.close();
  }
});

test("the bundled page plays over https:// in a secure context, its WebSockets over wss://", async () => {
  const { context, page, sockets } = await openPage();
  try {
    const t0 = Date.now();
    await page.goto(`${server.base}/`);
    const played = await waitForFrames(page, { frames: 60, since: t0, selector: "#video" });
    assert.equal(played.width, WIDTH);
    const where = await page.evaluate(() => ({ secure: window.isSecureContext, protocol: location.protocol }));
    assert.deepEqual(where, { secure: true, protocol: "https:" });
    assert.ok(sockets.length >= 1, "the page opened a WebSocket");
    for (const url of sockets) assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\//);
    console.log(`# bundled page over https: first frame after navigation ${played.firstFrameMs} ms`);
  } finally {
    await context.close();
  }
});

test("plain http:// and ws:// to the TLS ports do not play, and the server carries on", async () => {
  const { context, page } = await openPage();
  try {
    const plainPage = server.base.replace("https:", "http:");
    await assert.rejects(page.goto(`${plainPage}/`), /ERR_/, "the page must not load over http://");

    // The demo page from an http:// page server, pointed at the TLS WebSocket port
    // with ws://: janus.js reports the failed connection and nothing plays.
    const plainPages = await startPageServer();
    try {
      const plainWs = server.wsUrl.replace("wss:", "ws:");
      const page = await context.newPage();
      await page.goto(`${plainPages.base}/demo.html?server=${encodeURIComponent(plainWs)}`);
      await waitUntil(page, () => window.demo.errors.length > 0, "janus.js to report the failure");
      const demo = await page.evaluate(() => window.demo);
      assert.equal(demo.webrtcUp, false);
      const frames = await page.evaluate(() => document.querySelector("video").getVideoPlaybackQuality().totalVideoFrames);
      assert.equal(frames, 0);
    } finally {
      plainPages.close();
    }
    assert.match(server.log(), /plain HTTP \(or other non-TLS bytes\) to a TLS port/);
  } finally {
    await context.close();
  }
  // Still serving over https.
  const state = await server.state();
  assert.equal(typeof state.pid, "number");
  const again = await openPage();
  try {
    await again.page.goto(`${server.base}/`);
    await waitForFrames(again.page, { frames: 30, selector: "#video" });
  } finally {
    await again.context.close();
  }
});
