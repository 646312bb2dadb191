// The bundled pages behind HTTP Basic auth (--user / --passwd, as µStreamer's): a
// browser that has the password plays the WebRTC page and the jmuxer relay page (their
// WebSocket upgrades and /state reads carry the credentials the browser asked for once);
// one without it, or with a wrong one, gets 401 and nothing plays.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPeregrine, launchChromium, waitForFrames, waitUntil, sleep } from "./harness.mjs";

const USER = "viewer";
const PASSWD = "open sesame";
let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("with the password the bundled page and the jmuxer page play; without it, 401", async () => {
  const server = await startPeregrine(["--user", USER, "--passwd", PASSWD, "--resolution", "640x360"]);
  try {
    const context = await browser.newContext({ httpCredentials: { username: USER, password: PASSWD } });
    try {
      const page = await context.newPage();
      const t0 = Date.now();
      const response = await page.goto(`${server.base}/`);
      assert.equal(response.status(), 200);
      const played = await waitForFrames(page, { frames: 30, since: t0, selector: "#video" });
      assert.equal(played.width, 640);
      // The page's own /state reads got through too: it shows the source's size.
      await waitUntil(page, () => window.peregrine.state === "playing", "the page to say playing");
      console.log(`# behind Basic auth: first frame after ${played.firstFrameMs} ms`);

      const relay = await context.newPage();
      const t1 = Date.now();
      await relay.goto(`${server.base}/jmuxer.html`);
      const relayed = await waitForFrames(relay, { frames: 30, since: t1, selector: "#video" });
      assert.equal(relayed.width, 640);
    } finally {
      await context.close();
    }
    // Closing the tab ends its Janus session; wait for that before counting.
    const deadline = Date.now() + 10_000;
    while ((await server.state()).janus.sessions > 0) {
      assert.ok(Date.now() < deadline, "the closed page's session never ended");
      await sleep(50);
    }

    // Without the password, or with a wrong one, the page is answered 401 with the
    // challenge and nothing of it loads.
    for (const credentials of [undefined, { username: USER, password: "open sesamE" }]) {
      const stranger = await browser.newContext(credentials ? { httpCredentials: credentials } : {});
      try {
        const page = await stranger.newPage();
        const answers = [];
        page.on("response", (r) => answers.push([r.url(), r.status(), r.headers()["www-authenticate"]]));
        // Chromium either gives up on the challenge (no credentials to answer it with) or
        // shows the 401 page after its one answer was refused.
        const response = await page.goto(`${server.base}/`).catch((e) => {
          assert.match(e.message, /ERR_INVALID_AUTH_CREDENTIALS/);
          return null;
        });
        if (response) {
          assert.equal(response.status(), 401);
          assert.match(await page.textContent("body"), /401 Unauthorized/);
        }
        assert.ok(answers.length >= 1, "the server answered");
        for (const [url, status, challenge] of answers) {
          assert.equal(url, `${server.base}/`, "nothing but the page itself was asked for");
          assert.equal(status, 401, JSON.stringify(credentials));
          assert.equal(challenge, 'Basic realm="peregrine", charset="UTF-8"');
        }
      } finally {
        await stranger.close();
      }
    }
    const state = await server.state();
    assert.equal(state.janus.sessions, 0, `refused pages made sessions: ${JSON.stringify(state.janus)}`);
  } finally {
    await server.stop();
  }
});
