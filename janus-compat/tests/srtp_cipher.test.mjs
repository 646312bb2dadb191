// Which SRTP cipher a browser ends up with. Chromium lists AES-CM + HMAC-SHA1 before
// AES-GCM and the server takes the client's order, so only a server that leaves AES-CM
// out gets AES-GCM, the cipher that costs least per packet. By default peregrine does
// (`--srtp-ciphers aead`); `--srtp-ciphers all` takes AES-CM back for older clients.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitForFrames } from "./harness.mjs";

// Runs before the page's scripts: keeps every RTCPeerConnection the page makes.
function keepPeerConnections() {
  const Original = window.RTCPeerConnection;
  window.peerConnections = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.peerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
}

async function negotiatedCipher(browser, url) {
  const page = await browser.newPage();
  try {
    await page.addInitScript(keepPeerConnections);
    await page.goto(url);
    await waitForFrames(page, { frames: 10 });
    return await page.evaluate(async () => {
      const stats = await window.peerConnections[0].getStats();
      let transport = null;
      stats.forEach((s) => { if (s.type === "transport") transport = s; });
      return transport?.srtpCipher ?? null;
    });
  } finally {
    await page.close();
  }
}

test("browsers get AES-GCM by default and AES-CM when the server allows it", async () => {
  const browser = await launchChromium();
  try {
    for (const [args, expected] of [[[], /AEAD_AES_(128|256)_GCM$/], [["--srtp-ciphers", "all"], /AES128_CM_HMAC_SHA1_80$/]]) {
      const server = await startPeregrine(args);
      try {
        for (const path of ["/", "/?whep=1"]) {
          const cipher = await negotiatedCipher(browser, `http://127.0.0.1:${server.ports.http}${path}`);
          console.log(`# ${args.join(" ") || "(default)"} ${path}: ${cipher}`);
          assert.match(cipher ?? "none", expected, `${args.join(" ") || "default"} ${path}: SRTP cipher ${cipher}, expected ${expected}`);
        }
      } finally {
        await server.stop();
      }
    }
  } finally {
    await browser.close();
  }
});
