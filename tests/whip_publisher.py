#!/usr/bin/env python3
"""A WHIP publisher built on aiortc, an independent WebRTC stack: POST an offer with an
H.264 video track of generated pictures and an Opus track of a 1 kHz tone to a WHIP
endpoint and publish until told to stop, then DELETE the session.

Prints JSON lines: {"published": LOCATION} once answered (or {"refused": STATUS,
"reason": TEXT} and exits), then, when a line "delete" arrives on stdin, {"deleted":
STATUS, "plis": N} with the keyframe requests (RTCP PLI/FIR) the publisher got; "close"
instead closes the connection without a DELETE ({"closed": true}).

Stays on 127.0.0.1: aiortc gathers only non-loopback host addresses, so its address
lookup is replaced, and it is given no STUN server.
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request

import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

import av  # noqa: E402
from aiortc import (  # noqa: E402
    AudioStreamTrack,
    MediaStreamError,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.codecs.h264 import H264Encoder  # noqa: E402
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase  # noqa: E402
from aiortc.rtcrtpsender import RtcpPsfbPacket  # noqa: E402

PLIS = {"count": 0}
_handle_rtcp = RTCRtpSender._handle_rtcp_packet


async def counting_handle_rtcp(self, packet):
    if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (1, 4):
        PLIS["count"] += 1
    await _handle_rtcp(self, packet)


RTCRtpSender._handle_rtcp_packet = counting_handle_rtcp


def send_garbage():
    """Make the H.264 payloads random bytes behind a header with the forbidden bit set:
    RTP that is never H.264 as RFC 6184 has it."""

    def encode(self, frame, force_keyframe=False):
        timestamp = convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)
        return [bytes([0x80 | n]) + os.urandom(899) for n in range(3)], timestamp

    H264Encoder.encode = encode


class Pictures(VideoStreamTrack):
    """Bright pictures of a fixed size with a dark bar moving across them (NO SIGNAL
    is dark)."""

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma, *chroma = frame.planes
        row = bytearray([180]) * luma.line_size
        x = (self.count * 8) % (self.width - 16)
        row[x : x + 16] = bytes([16]) * 16
        luma.update(bytes(row) * (luma.buffer_size // luma.line_size))
        for plane in chroma:
            plane.update(bytes([128]) * plane.buffer_size)
        self.count += 1
        frame.pts, frame.time_base = pts, time_base or fractions.Fraction(1, 90000)
        return frame


TONE_RATE = 48000
TONE_SAMPLES = 960
# 1 kHz has exactly 48 samples per period: every 20 ms frame is the same 20 periods.
TONE_PCM = b"".join(
    int(16384 * math.sin(2 * math.pi * 1000 * n / TONE_RATE)).to_bytes(2, "little", signed=True)
    for n in range(TONE_SAMPLES)
)


class Tone(AudioStreamTrack):
    """A 1 kHz sine at half scale, 48 kHz mono, in 20 ms frames paced in real time."""

    RATE = TONE_RATE
    SAMPLES = TONE_SAMPLES
    PCM = TONE_PCM

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if hasattr(self, "_timestamp"):
            self._timestamp += self.SAMPLES
            await asyncio.sleep(self._start + self._timestamp / self.RATE - time.time())
        else:
            self._start = time.time()
            self._timestamp = 0
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self.PCM)
        frame.pts = self._timestamp
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def say(**fields):
    print(json.dumps(fields))
    sys.stdout.flush()


async def publish(url, width, height):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(Pictures(width, height), direction="sendonly")
    h264 = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType == "video/H264"
    ]
    transceiver.setCodecPreferences(h264)
    # Sound is offered as a browser would: Opus, on aiortc's own payload type.
    pc.addTransceiver(Tone(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.encode()
    status, headers, body = await asyncio.to_thread(
        http, "POST", url, offer, "application/sdp"
    )
    if status != 201:
        await pc.close()
        say(refused=status, reason=body.strip())
        return
    location = headers.get("Location") or headers.get("location")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    say(published=location)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "close":
            # Leave without DELETE, as a publisher that crashes or loses its network.
            await pc.close()
            say(closed=True)
            return
        if line in ("", "delete"):
            break
    base = url.split("/", 3)
    resource = f"{base[0]}//{base[2]}{location}"
    deleted = (await asyncio.to_thread(http, "DELETE", resource))[0]
    await pc.close()
    say(deleted=deleted, plis=PLIS["count"])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="the WHIP endpoint, e.g. http://127.0.0.1:8080/cam/whip")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--garbage", action="store_true", help="send random payloads")
    args = parser.parse_args()
    if args.garbage:
        send_garbage()
    width, height = (int(n) for n in args.size.split("x"))
    asyncio.run(publish(args.url, width, height))


if __name__ == "__main__":
    main()
