// PiKVM's setup: Debian's nginx serves the page and janus.js and proxies /janus/ws to
// the Janus WebSocket transport on a unix socket (`ws_unix`), with the same proxy
// settings as kvmd's nginx config. peregrine takes Janus's place on that socket and
// the stock demo page, loaded through nginx, must play.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { startPeregrine, launchChromium, waitForFrames, freePort, sleep, kitDir } from "./harness.mjs";

const NGINX = process.env.NGINX || ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p));
let browser, dir;

before(async () => {
  assert.ok(NGINX, "nginx not found: run scripts/install-test-deps.sh (installs Debian's nginx-light)");
  dir = await mkdtemp(path.join(tmpdir(), "peregrine-nginx-"));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function tcpAccepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}

/** nginx.conf for a private, unprivileged nginx: every path in `dir`, one process. */
function nginxConfig({ port, socket }) {
  const files = {
    "/demo.html": path.join(kitDir, "demo.html"),
    "/janus.js": path.join(kitDir, "node_modules/janus-gateway/npm/src/janus.js"),
    "/adapter.js": path.join(kitDir, "node_modules/webrtc-adapter/out/adapter.js"),
  };
  const aliases = Object.entries(files)
    .map(([uri, file]) => `    location = ${uri} { alias ${file}; }`)
    .join("\n");
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 128; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { text/html html; text/javascript js; }
  # As kvmd's nginx: the Janus WebSocket upstream is a unix socket.
  upstream janus-ws {
    server unix:${socket} fail_timeout=0s max_fails=0;
  }
  server {
    listen 127.0.0.1:${port};
${aliases}
    location /janus/ws {
      rewrite ^/janus/ws$ / break;
      proxy_pass http://janus-ws;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_connect_timeout 7d;
      proxy_send_timeout 7d;
      proxy_read_timeout 7d;
    }
  }
}
`;
}

/** Start nginx in the foreground on a free port; resolves once it serves the page. */
async function startNginx(socket) {
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, "nginx.conf");
    await writeFile(conf, nginxConfig({ port, socket }));
    const child = spawn(NGINX, ["-p", dir, "-c", conf, "-e", path.join(dir, "error.log")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 10_000;
    try {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`nginx exited at start: ${log}`);
        const ok = await fetch(`${base}/demo.html`).then((r) => r.ok, () => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`nginx did not serve ${base}/demo.html: ${log}`);
        await sleep(50);
      }
    } catch (e) {
      lastError = e;
      child.kill("SIGKILL");
      await exited;
      continue;
    }
    return {
      base,
      async stop() {
        if (child.exitCode === null) child.kill("SIGTERM");
        const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
        if (!done) child.kill("SIGKILL");
      },
    };
  }
  throw lastError;
}

test("demo page plays through nginx proxying /janus/ws to peregrine's unix socket", async () => {
  const socket = path.join(dir, "janus-ws.sock");
  const server = await startPeregrine(["--janus-ws-unix", socket, "--janus-ws-unix-mode", "660"]);
  let nginx;
  const context = await browser.newContext();
  try {
    assert.equal((await stat(socket)).mode & 0o7777, 0o660, "socket mode");
    nginx = await startNginx(socket);
    const url = `ws://127.0.0.1:${new URL(nginx.base).port}/janus/ws`;
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${nginx.base}/demo.html?server=${encodeURIComponent(url)}`);
    const r = await waitForFrames(page, { frames: 60, since: t0 });
    const demo = await page.evaluate(() => window.demo);
    assert.ok(r.frames >= 60, `decoded ${r.frames} frames`);
    assert.equal(r.width, 1280);
    assert.deepEqual(demo.errors, []);
    assert.ok(demo.webrtcUp, "saw webrtcup");
    // The page's session reached peregrine, and only the socket could carry it: the
    // TCP port the harness gave the WebSocket transport is not listening.
    assert.equal((await server.state()).janus.sessions, 1, "one Janus session");
    assert.equal(await tcpAccepts(server.ports.ws), false, "no TCP WebSocket listener");
    console.log(`# through nginx and ${socket}: first frame after navigation ${r.firstFrameMs} ms`);
  } finally {
    await context.close();
    await nginx?.stop();
    await server.stop();
  }
  assert.equal(existsSync(socket), false, "peregrine removes its socket on exit");
});
