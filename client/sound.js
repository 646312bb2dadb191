// Sound on peregrine's bundled page: the level of what the server sends, the level of
// the microphone the page sends back, and the audio-video offset.
//
// The offset is measured, not guessed. The server's test tone beeps at each whole second
// of its clock, and its test pattern draws each picture's capture time into the picture.
// So for every beep the page knows how late it plays (when the beep is heard − the whole
// second), and for every picture how late it shows (when it is shown − its capture time);
// the offset is the difference: positive when the sound is behind the picture. With a
// source other than the test tone there are no beeps, and the offset shows "–". The
// browser lines the two up by itself from the server's sender reports; it moves the
// picture a little at a time, so the offset settles over the first seconds.
"use strict";

const LEVEL_FLOOR_DB = -90;
// Samples above this (of full scale) after this long of quiet start a beep.
const ONSET_THRESHOLD = 0.1;
const ONSET_QUIET_S = 0.3;
// A beep heard later than this after its second is not one of ours.
const MAX_AUDIO_LATENCY_MS = 900;

// Runs on the audio thread, where `currentTime` is the context time of the block's first
// sample: the onset is placed to the sample, not to the nearest block.
const ONSET_WORKLET = `
class PeregrineOnset extends AudioWorkletProcessor {
  constructor() { super(); this.quiet = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        if (Math.abs(ch[i]) > ${ONSET_THRESHOLD}) {
          if (this.quiet >= ${ONSET_QUIET_S} * sampleRate) this.port.postMessage(currentTime + i / sampleRate);
          this.quiet = 0;
        } else {
          this.quiet += 1;
        }
      }
    }
    return true;
  }
}
registerProcessor("peregrine-onset", PeregrineOnset);
`;

/** Median of the numbers in `values`, or null. */
function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** RMS level in dBFS of what `analyser` holds now. */
function analyserLevel(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (const v of buffer) sum += v * v;
  const rms = Math.sqrt(sum / buffer.length);
  return Math.max(LEVEL_FLOOR_DB, Math.round(20 * Math.log10(rms || 1e-9)));
}

class Sound {
  constructor(report) {
    // `report(name, value)` publishes a reading (to window.peregrine and the stats bar).
    this.report = report;
    this.ctx = null;
    this.remote = null; // { track, source, analyser }
    this.mic = null; // { stream, analyser }
    this.videoLatencies = [];
    this.audioLatencies = [];
    this.buffer = new Float32Array(2048);
    setInterval(() => this.tick(), 100);
  }

  context() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      this.onset = this.ctx.audioWorklet
        ? this.ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([ONSET_WORKLET], { type: "text/javascript" })))
        : Promise.reject(new Error("AudioWorklet needs a secure context (https:// or localhost)"));
      this.onset.catch((e) => console.warn("peregrine: no audio-video offset:", e.message));
    }
    return this.ctx;
  }

  /** Browsers start audio only after a click: call from one. */
  resume() {
    if (this.ctx && this.ctx.state === "suspended") this.ctx.resume();
  }

  /** The server's audio track arrived (again): measure it. */
  async listen(track) {
    if (this.remote && this.remote.track === track) return;
    this.stopListening();
    const ctx = this.context();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = this.buffer.length;
    source.connect(analyser);
    this.remote = { track, source, analyser };
    this.audioLatencies = [];
    try {
      await this.onset;
    } catch {
      return;
    }
    if (!this.remote || this.remote.track !== track) return;
    const node = new AudioWorkletNode(ctx, "peregrine-onset");
    const silent = ctx.createGain();
    silent.gain.value = 0;
    source.connect(node).connect(silent).connect(ctx.destination);
    node.port.onmessage = (ev) => this.onBeep(ev.data);
    this.remote.node = node;
  }

  stopListening() {
    if (!this.remote) return;
    this.remote.source.disconnect();
    if (this.remote.node) this.remote.node.port.onmessage = null;
    this.remote = null;
    this.report("audioLevelDb", null);
  }

  /** A beep started at context time `t`: when was, or will be, it heard? */
  onBeep(t) {
    const ts = this.ctx.getOutputTimestamp();
    if (!ts.performanceTime) return;
    const heard = wallClockOf(ts.performanceTime + (t - ts.contextTime) * 1000);
    const latency = ((heard % 1000) + 1000) % 1000;
    if (latency > MAX_AUDIO_LATENCY_MS) return;
    this.audioLatencies.push(latency);
    if (this.audioLatencies.length > 5) this.audioLatencies.shift();
    this.report("audioLatencyMs", Math.round(latency));
    this.report("beeps", (window.peregrine.beeps || 0) + 1);
  }

  /** A picture captured at `captureMs` (its code strip) shows at `shownMs` (both epoch ms). */
  onPicture(captureMs, shownMs) {
    this.videoLatencies.push(shownMs - captureMs);
    if (this.videoLatencies.length > 30) this.videoLatencies.shift();
  }

  /** The microphone the page sends, for its level. */
  measureMic(stream) {
    const ctx = this.context();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = this.buffer.length;
    ctx.createMediaStreamSource(stream).connect(analyser);
    this.mic = { stream, analyser };
  }

  stopMic() {
    if (!this.mic) return;
    for (const t of this.mic.stream.getTracks()) t.stop();
    this.mic = null;
    this.report("micLevelDb", null);
  }

  tick() {
    if (this.remote) this.report("audioLevelDb", analyserLevel(this.remote.analyser, this.buffer));
    if (this.mic) this.report("micLevelDb", analyserLevel(this.mic.analyser, this.buffer));
    const audio = median(this.audioLatencies);
    const video = median(this.videoLatencies);
    this.report("avOffsetMs", audio === null || video === null ? null : Math.round(audio - video));
  }
}

window.PeregrineSound = Sound;
