"""A dependency-free line plot (PIL only) for training curves."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from cpixelcnn.io import atomic_write_bytes


def line_plot_png(path: str | Path, xs: list[float], ys: list[float], title: str, x_label: str, y_label: str, size=(640, 400)) -> Path:
    """Plot ys against xs with labelled axes and min/max ticks; written atomically as PNG."""
    import io

    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), title, fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    if xs and ys:
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        x1 = x1 if x1 > x0 else x0 + 1
        y1 = y1 if y1 > y0 else y0 + 1
        sx = (width - left - right) / (x1 - x0)
        sy = (height - top - bottom) / (y1 - y0)
        points = [(left + (x - x0) * sx, height - bottom - (y - y0) * sy) for x, y in zip(xs, ys)]
        if len(points) > 1:
            draw.line(points, fill=(30, 90, 200), width=2)
        else:
            draw.ellipse([points[0][0] - 3, points[0][1] - 3, points[0][0] + 3, points[0][1] + 3], fill=(30, 90, 200))
        draw.text((4, top), f"{y1:.3f}", fill="black")
        draw.text((4, height - bottom - 10), f"{y0:.3f}", fill="black")
        draw.text((left, height - bottom + 4), f"{x0:g}", fill="black")
        draw.text((width - right - 40, height - bottom + 4), f"{x1:g}", fill="black")
    draw.text((width // 2 - 20, height - 20), x_label, fill="black")
    draw.text((4, height // 2), y_label, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
