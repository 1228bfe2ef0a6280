#!/usr/bin/env python3
"""Writes the hostile uploads of the hardening review into a folder (argv[1]).

Generated, not committed, so their size stays out of the repository:
- self-drawing.pdf: a page whose form XObject draws itself (808 bytes in the
  review; unbounded recursion in the PDF extractor).
- page-loop.pdf: a page that is its own /Parent and has no /MediaBox (found
  by fuzzing; the PDF extractor looks for the inherited box forever).
- nested-spans.html: 20,000 nested <span> tags (120 KB; recursion in any
  tree walk).
- inflate-bomb.pdf: about 200 KB that inflates to 200 MB in one Flate stream.
- inflate-bomb.docx: word/document.xml declared small, inflating to 200 MB.
Standard library only: the integration tests and the fuzz seed script run it.
"""
import io
import sys
import zipfile
import zlib
from pathlib import Path


def pdf(objects):
    """A well-formed PDF with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def stream(dict_entries, data):
    return b"<< " + dict_entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def self_drawing_pdf():
    return pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /X1 4 0 R >> >> /Contents 5 0 R >>",
        stream(b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] "
               b"/Resources << /XObject << /X1 4 0 R >> >>", b"/X1 Do"),
        stream(b"", b"/X1 Do"),
    ])


def page_loop_pdf():
    return pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 3 0 R /Contents 4 0 R >>",
        stream(b"", b"BT ET"),
    ])


def inflate_bomb_pdf(size=200 * 1024 * 1024):
    z = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    data = b"".join(z.compress(chunk) for _ in range(size >> 20)) + z.flush()
    return pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        stream(b"/Filter /FlateDecode", data),
    ])


def inflate_bomb_docx(size=200 * 1024 * 1024):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            chunk = b" " * (1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
    return out.getvalue()


def nested_spans_html(depth=20_000):
    return b"<html><body>" + b"<span>" * depth + b"deep text" + b"</body></html>"


def main():
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    files = {
        "self-drawing.pdf": self_drawing_pdf(),
        "page-loop.pdf": page_loop_pdf(),
        "nested-spans.html": nested_spans_html(),
        "inflate-bomb.pdf": inflate_bomb_pdf(),
        "inflate-bomb.docx": inflate_bomb_docx(),
    }
    for name, data in files.items():
        (target / name).write_bytes(data)
        print(f"{name}\t{len(data)}")


if __name__ == "__main__":
    main()
