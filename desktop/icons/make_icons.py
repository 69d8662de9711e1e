#!/usr/bin/env python3
"""Draws the Veil app icon (a teal V on a dark rounded square) as icon.png (256 px),
32x32.png, 128x128.png and icon.ico, with the standard library only. Run it again after a
change: python3 icons/make_icons.py (from desktop/)."""
import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png(width, height, rgba):
    raw = b"".join(b"\x00" + rgba[y * width * 4:(y + 1) * width * 4] for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def draw(size):
    s = size
    out = bytearray()
    r = 0.22 * s  # corner radius
    for y in range(s):
        for x in range(s):
            cx, cy = x + 0.5, y + 0.5
            # rounded square coverage (anti-aliased by distance)
            qx = max(abs(cx - s / 2) - (s / 2 - r), 0)
            qy = max(abs(cy - s / 2) - (s / 2 - r), 0)
            d = math.hypot(qx, qy) - r
            a_bg = max(0.0, min(1.0, 0.5 - d))
            # background: vertical gradient, deep navy
            t = cy / s
            bg = (int(16 + 10 * t), int(24 + 14 * t), int(44 + 20 * t))
            # the V: two strokes meeting at the bottom
            w = 0.085 * s
            dv = min(seg_dist(cx, cy, 0.27 * s, 0.28 * s, 0.5 * s, 0.74 * s),
                     seg_dist(cx, cy, 0.73 * s, 0.28 * s, 0.5 * s, 0.74 * s))
            a_v = max(0.0, min(1.0, w - dv + 0.5))
            v = (int(45 + 40 * (1 - t)), int(212 - 30 * t), int(191 + 30 * t))
            col = [bg[i] * (1 - a_v) + v[i] * a_v for i in range(3)]
            out += bytes([int(col[0]), int(col[1]), int(col[2]), int(255 * a_bg)])
    return bytes(out)


def main():
    images = {}
    for size, name in [(256, "icon.png"), (128, "128x128.png"), (32, "32x32.png")]:
        data = png(size, size, draw(size))
        images[size] = data
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    # ICO with PNG payloads (Vista and later read them).
    entries = [(32, images[32]), (256, images[256])]
    header = struct.pack("<HHH", 0, 1, len(entries))
    offset = 6 + 16 * len(entries)
    dirs = b""
    for size, data in entries:
        dirs += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    with open(os.path.join(HERE, "icon.ico"), "wb") as f:
        f.write(header + dirs + b"".join(d for _, d in entries))


if __name__ == "__main__":
    main()
