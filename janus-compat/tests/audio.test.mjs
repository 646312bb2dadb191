// Sound both ways, with real browsers: the server's test tone reaches janus.js and the
// bundled page (frequency found by WebAudio, no audio packets lost, levels and the
// audio-video offset shown), and browsers' microphones (Chromium's fake capture device
// playing a WAV this test writes) reach ALSA through its `file` plugin, two at once mixed.
// Last, with the microphone on (where Chromium sends its video feedback under the audio
// sender's SSRC) a keyframe request from the browser still brings a keyframe.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile, readFile, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startPeregrine, startPageServer, launchChromium, waitForFrames, waitUntil, sleep, clockSetForwardSinceLoad } from "./harness.mjs";

const RATE = 48000;
const TONE_HZ = 1000;

let pages;
let dir;
before(async () => {
  pages = await startPageServer();
  dir = await mkdtemp(path.join(os.tmpdir(), "peregrine-audio-"));
});
after(() => pages?.close());

/** A mono 16-bit WAV of a sine at `hz`, `seconds` long, at half of full scale. */
function sineWav(hz, seconds) {
  const n = Math.round(RATE * seconds);
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(0.5 * 32767 * Math.sin((2 * Math.PI * hz * i) / RATE)), i * 2);
  const h = Buffer.alloc(44);
  h.write("RIFF", 0); h.writeUInt32LE(36 + data.length, 4); h.write("WAVE", 8);
  h.write("fmt ", 12); h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22);
  h.writeUInt32LE(RATE, 24); h.writeUInt32LE(RATE * 2, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34);
  h.write("data", 36); h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

/** Power of `hz` in mono samples (Goertzel), per sample squared. */
function powerAt(samples, hz) {
  const coeff = 2 * Math.cos((2 * Math.PI * hz) / RATE);
  let s1 = 0, s2 = 0;
  for (const x of samples) { const s0 = x / 32768 + coeff * s1 - s2; s2 = s1; s1 = s0; }
  return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.length * samples.length);
}

/** The left channel of `bytes` of S16_LE stereo, as numbers. */
function leftChannel(bytes) {
  const out = new Array(Math.floor(bytes.length / 4));
  for (let i = 0; i < out.length; i++) out[i] = bytes.readInt16LE(i * 4);
  return out;
}

/** 100 ms windows of `samples`, each as {700, 1000, 1500} Hz powers. */
function windows(samples) {
  const out = [];
  for (let i = 0; i + 4800 <= samples.length; i += 4800) {
    const w = samples.slice(i, i + 4800);
    out.push({ a: powerAt(w, 700), ref: powerAt(w, 1000), b: powerAt(w, 1500) });
  }
  return out;
}

/**
 * Makes the page's microphone raw: Chromium's voice processing (noise suppression above
 * all) takes a steady tone for noise and fades it out within seconds, which would be
 * read as gaps. The pages themselves keep the browser's defaults, meant for voices.
 */
function rawMicrophone() {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  navigator.mediaDevices.getUserMedia = (c = {}) => getUserMedia({ ...c, audio: c.audio ? raw : c.audio });
}

/** An asoundrc with `playfile`, ALSA's file plugin writing what is played into `out`. */
async function alsaHome(name) {
  const home = await mkdtemp(path.join(dir, `${name}-`));
  const out = path.join(home, "mic.raw");
  await writeFile(path.join(home, ".asoundrc"),
    `pcm.playfile { type file; slave.pcm "null"; file "${out}"; format "raw" }\n`);
  return { home, out };
}

/** Wait until `file` has grown by `bytes` past `from`; resolves with its new size. */
async function grown(file, from, bytes, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const size = await stat(file).then((s) => s.size, () => 0);
    if (size >= from + bytes) return size;
    if (Date.now() > deadline) throw new Error(`${what}: ${file} has ${size} bytes, wanted ${from + bytes}`);
    await sleep(50);
  }
}

test("janus.js in a kvmd-style client hears the test tone with no audio packet lost", async () => {
  const server = await startPeregrine();
  const browser = await launchChromium();
  const page = await browser.newPage();
  try {
    await page.goto(`${pages.base}/kvmd-style.html?server=${encodeURIComponent(server.wsUrl)}`);
    await waitUntil(page, () => window.kvmd.features !== null, "features");
    const k = await page.evaluate(() => window.kvmd);
    assert.equal(k.features.audio, true, "the default program has sound");
    assert.equal(k.features.mic, false, "and plays no microphone unless told where");
    await waitForFrames(page, { frames: 30, selector: "#video" });
    // Beeps are 100 ms each second: wait for a few seconds of them.
    await waitUntil(page, () => window.kvmd.peaks.length >= 40, "the tone's beeps", { timeoutMs: 20_000 });
    const peaks = await page.evaluate(() => window.kvmd.peaks);
    const near = peaks.filter((hz) => Math.abs(hz - TONE_HZ) <= 25).length;
    console.log(`# kvmd-style: ${peaks.length} loud readings, ${near} at ${TONE_HZ} Hz`);
    assert.ok(near >= 0.9 * peaks.length, `loudest frequencies ${JSON.stringify(peaks.slice(0, 40))}`);
    await waitUntil(page, async () => ((await window.audioStats())?.packetsReceived ?? 0) >= 150, "150 audio packets");
    const stats = await page.evaluate(() => window.audioStats());
    console.log(`# kvmd-style: audio ${JSON.stringify(stats)}`);
    assert.equal(stats.packetsLost, 0);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the bundled page shows the sound's level and an audio-video offset within 40 ms", async () => {
  const server = await startPeregrine();
  const browser = await launchChromium();
  const page = await browser.newPage();
  // Picture and sound are timed on the wall clock as it is now, not as it was at load.
  await clockSetForwardSinceLoad(page, 24_000);
  try {
    // Without sound the page asks for none, and pictures show at once.
    await page.goto(`${server.base}/`);
    await waitUntil(page, () => window.peregrine.frames > 10, "pictures");
    assert.equal(await page.evaluate(() => window.peregrine.audio), false);
    // The sound button turns it on, as a person would.
    const offersBefore = await page.evaluate(() => window.peregrine.offers);
    const t0 = Date.now();
    await page.click("#sound-toggle");
    await waitUntil(page, () => window.peregrine.audio === true, "the sound track");
    await waitUntil(page, () => window.peregrine.beeps >= 4, "four beeps heard", { timeoutMs: 20_000 });
    // One new offer for the click: the hangup of the peer the page left starts no second
    // watch (two raced, and the answer to one could be taken for the other's).
    assert.equal(await page.evaluate(() => window.peregrine.offers), offersBefore + 1, "one watch for one click");
    await waitUntil(page, () => window.peregrine.audioLevelDb > -30, "a beep on the level meter");
    await waitUntil(page, () => typeof window.peregrine.avOffsetMs === "number", "an A/V offset");
    const first = await page.evaluate(() => window.peregrine.avOffsetMs);
    // The browser lines picture and sound up a little at a time, from the sender reports.
    await waitUntil(page, () => typeof window.peregrine.avOffsetMs === "number" && Math.abs(window.peregrine.avOffsetMs) <= 40,
      "picture and sound in sync", { timeoutMs: 150_000 });
    const p = await page.evaluate(() => window.peregrine);
    console.log(`# bundled page: A/V offset ${first} ms at first, ${p.avOffsetMs} ms after ${Date.now() - t0} ms (sound ${p.audioLatencyMs} ms, picture ${p.latencyMs} ms behind)`);
    assert.match(await page.textContent("#av-offset"), /^[+-]?\d+ ms$/);
    const meter = await page.evaluate(() => document.getElementById("sound-meter").style.width);
    assert.notEqual(meter, "0", "the level meter moved");
    assert.equal(await page.evaluate(() => document.getElementById("video").muted), false, "sound on is heard");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("two browsers' microphones are mixed into the ALSA playback", async () => {
  const { home, out } = await alsaHome("mic");
  const wav700 = path.join(dir, "700.wav");
  const wav1500 = path.join(dir, "1500.wav");
  // Longer than the test, so Chromium's fake device never comes to the file's end.
  await writeFile(wav700, sineWav(700, 60));
  await writeFile(wav1500, sineWav(1500, 60));
  const server = await startPeregrine(["--mic-device", "playfile"], null, { env: { HOME: home } });
  const fake = (wav) => ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${wav}`];
  const a = await launchChromium(fake(wav700));
  const b = await launchChromium(fake(wav1500));
  try {
    // One talks through the kvmd-style janus.js client, the other through the bundled page.
    const pageA = await a.newPage();
    await pageA.addInitScript(rawMicrophone);
    // Both only talk, as kvmd does with its volume at zero.
    await pageA.goto(`${pages.base}/kvmd-style.html?mic=1&audio=0&server=${encodeURIComponent(server.wsUrl)}`);
    await waitUntil(pageA, () => window.kvmd.watched && window.kvmd.watched.mic, "the kvmd-style page to ask for the mic");
    const pageB = await b.newPage();
    await pageB.addInitScript(rawMicrophone);
    await pageB.goto(`${server.base}/?mic=1`);
    await waitUntil(pageB, () => window.peregrine.mic === true, "the bundled page to send its microphone");
    await waitFor(server, (s) => micOf(s).talkers === 2, "two talkers");
    // The page shows what its microphone hears (a half-scale sine: about -9 dBFS).
    await waitUntil(pageB, () => window.peregrine.micLevelDb > -20, "the microphone on the level meter");
    assert.notEqual(await pageB.evaluate(() => document.getElementById("mic-meter").style.width), "0");

    // Three seconds of both, then only the first once the second has gone.
    const mark = await grown(out, 0, 0, "playback");
    const both = await grown(out, mark, 3 * RATE * 4, "three seconds of playback");
    const mixed = windows(leftChannel((await readFile(out)).subarray(mark, both)));
    const withBoth = mixed.filter((w) => w.a > 20 * w.ref && w.b > 20 * w.ref).length;
    const heard = (w) => `${w.a > 20 * w.ref ? "a" : "-"}${w.b > 20 * w.ref ? "b" : "-"}`;
    console.log(`# mic: ${withBoth} of ${mixed.length} windows carry both browsers: ${mixed.map(heard).join(" ")}`);
    assert.ok(withBoth >= 0.8 * mixed.length,
      `windows ${mixed.map(heard).join(" ")}; mic ${JSON.stringify(micOf(await server.state()))}`);

    await b.close();
    await waitFor(server, (s) => micOf(s).talkers === 1, "one talker left");
    const after = await grown(out, both, 0, "playback");
    const end = await grown(out, after, 2 * RATE * 4, "two more seconds");
    const alone = windows(leftChannel((await readFile(out)).subarray(after, end)));
    const gaps = alone.filter((w) => !(w.a > 20 * w.ref)).length;
    const ghost = alone.filter((w) => w.b > 0.05 * w.a).length;
    assert.equal(gaps, 0, `the first browser plays on without a gap: ${JSON.stringify(alone.map((w) => w.a.toExponential(1)))}`);
    assert.equal(ghost, 0, "nothing of the browser that left");
  } finally {
    await a.close();
    await b.close().catch(() => {});
    await server.stop();
  }
});

test("with the microphone on, the browser's keyframe request still brings a keyframe", async () => {
  const { home } = await alsaHome("pli");
  const wav = path.join(dir, "pli.wav");
  await writeFile(wav, sineWav(700, 10));
  // A GOP of 20 s: a picture within it can only come from a keyframe made on request.
  const server = await startPeregrine(["--mic-device", "playfile", "--h264-gop", "600"], null, { env: { HOME: home } });
  const browser = await launchChromium(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${wav}`]);
  const page = await browser.newPage();
  try {
    const t0 = Date.now();
    await page.goto(`${pages.base}/kvmd-style.html?mic=1&dropfirstkey=1&server=${encodeURIComponent(server.wsUrl)}`);
    await waitUntil(page, () => window.kvmd.keyframesDropped === 1, "the first keyframe dropped");
    const played = await waitForFrames(page, { frames: 30, since: t0, selector: "#video", timeoutMs: 15_000 });
    const rtc = (await server.state()).rtc;
    console.log(`# PLI with mic: picture after ${played.firstFrameMs} ms, ${rtc.plis_received} PLI, ${rtc.firs_received} FIR`);
    assert.ok(rtc.plis_received + rtc.firs_received >= 1, JSON.stringify(rtc));
    assert.ok(played.firstFrameMs < 15_000, "well within the 20 s GOP");
  } finally {
    await browser.close();
    await server.stop();
  }
});

/** The default stream's microphone playback in /state. */
function micOf(state) {
  return state.streams?.default?.mic ?? {};
}

/** Wait until `fn(/state)` holds. */
async function waitFor(server, fn, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = await server.state();
    if (fn(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s).slice(0, 2000)}`);
    await sleep(100);
  }
}
