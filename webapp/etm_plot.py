"""A package's execution times as a small SVG: the measured points (the
figure used as a dot, min..max as a bar) and the model's line. Server-side,
no script: the model page shows it as an image and it downloads as a file."""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 360, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 34


def package_svg(model_name: str, version: int, pkg: str, term: dict) -> str:
    points = {int(arg): point for arg, point in (term.get("points") or {}).items()}
    has_line = "base_ms" in term
    base, per_arg = float(term.get("base_ms", 0)), float(term.get("per_arg_ms", 0))
    xs = sorted(points) or [0, 10]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = max(0, x_lo - 1), x_hi + 1
    tops = [float(p.get("max", p["ms"])) for p in points.values()] + [float(p["ms"]) for p in points.values()]
    if has_line:
        tops += [base + per_arg * x_lo, base + per_arg * x_hi]
    y_hi = max(tops + [1.0]) * 1.1

    def sx(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - y / y_hi * (HEIGHT - TOP - BOTTOM)

    title = f"{model_name} v{version}: {pkg}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="10">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<line x1="{LEFT}" y1="{sy(0):.1f}" x2="{WIDTH - RIGHT}" y2="{sy(0):.1f}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{sy(0):.1f}" stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{sy(0) + 3:.1f}" text-anchor="end">0</text>',
        f'<text x="{LEFT - 4}" y="{sy(y_hi / 1.1) + 3:.1f}" text-anchor="end">{y_hi / 1.1:.4g}</text>',
        f'<text x="{sx(x_lo):.1f}" y="{HEIGHT - BOTTOM + 13}" text-anchor="middle">{x_lo}</text>',
        f'<text x="{sx(x_hi):.1f}" y="{HEIGHT - BOTTOM + 13}" text-anchor="middle">{x_hi}</text>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">arg1</text>',
        f'<text x="12" y="{(TOP + HEIGHT - BOTTOM) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(TOP + HEIGHT - BOTTOM) / 2:.1f})">ms</text>',
    ]
    if has_line:
        parts.append(f'<line class="line" x1="{sx(x_lo):.1f}" y1="{sy(base + per_arg * x_lo):.1f}" '
                     f'x2="{sx(x_hi):.1f}" y2="{sy(base + per_arg * x_hi):.1f}" stroke="#2563eb" stroke-width="1.5">'
                     f"<title>{base:g} + {per_arg:g}·arg1 ms</title></line>")
    for arg, point in sorted(points.items()):
        low, high = float(point.get("min", point["ms"])), float(point.get("max", point["ms"]))
        parts.append(f'<line x1="{sx(arg):.1f}" y1="{sy(low):.1f}" x2="{sx(arg):.1f}" y2="{sy(high):.1f}" '
                     'stroke="#b45309"/>')
        parts.append(f'<circle class="point" cx="{sx(arg):.1f}" cy="{sy(float(point["ms"])):.1f}" r="3" '
                     f'fill="#b45309"><title>arg1 {arg}: {point["ms"]} ms (n={point.get("count", "?")}, '
                     f'mean {point.get("mean", "?")}, spread {point.get("spread", "?")})</title></circle>')
    if not points and not has_line:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no figures</text>')
    parts.append("</svg>")
    return "\n".join(parts)
