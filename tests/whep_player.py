#!/usr/bin/env python3
"""A WHEP player built on aiortc, an independent WebRTC stack: POST an offer to a WHEP
endpoint, play what the answer brings, DELETE the session. Prints one JSON line:
pictures decoded and their sizes, audio frames, time to the first picture.

Stays on 127.0.0.1: aiortc gathers only non-loopback host addresses, so its address
lookup is replaced, and it is given no STUN server.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def play(url, want, timeout):
    started = time.monotonic()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    result = {"pictures": 0, "sizes": [], "audio_frames": 0, "ttff_ms": None}
    done = asyncio.Event()

    async def read_video(track):
        while result["pictures"] < want:
            frame = await track.recv()
            if result["ttff_ms"] is None:
                result["ttff_ms"] = round((time.monotonic() - started) * 1000)
            size = [frame.width, frame.height]
            if size not in result["sizes"]:
                result["sizes"].append(size)
            result["pictures"] += 1
        done.set()

    async def read_audio(track):
        while True:
            await track.recv()
            result["audio_frames"] += 1

    tasks = []

    @pc.on("track")
    def on_track(track):
        reader = read_video if track.kind == "video" else read_audio
        tasks.append(asyncio.ensure_future(reader(track)))

    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.encode()
    status, headers, body = await asyncio.to_thread(
        http, "POST", url, offer, "application/sdp"
    )
    if status != 201:
        raise SystemExit(f"POST answered {status}: {body}")
    location = headers.get("Location") or headers.get("location")
    result["answer_video"] = [
        l for l in body.splitlines() if l.startswith("a=rtpmap:") and "H264" in l
    ]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        base = url.split("/", 3)
        resource = f"{base[0]}//{base[2]}{location}"
        result["delete"] = (await asyncio.to_thread(http, "DELETE", resource))[0]
        for task in tasks:
            task.cancel()
        await pc.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="the WHEP endpoint, e.g. http://127.0.0.1:8080/whep")
    parser.add_argument("--pictures", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    result = asyncio.run(play(args.url, args.pictures, args.timeout))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
