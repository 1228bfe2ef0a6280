"""Writes the demo corpus: bank policies and hospital procedures written for
Sovra's demo, in text, Markdown, HTML, PDF and DOCX, some in Indonesian and
Chinese. Folders name the group that may read them (see demo/README.md).

Run from this folder: python3 make_corpus.py. The outputs are committed, so
the quick start does not need Python; PDF and DOCX are built with the
standard library alone (a minimal PDF with Helvetica text, a minimal
WordprocessingML package).
"""
import os, zipfile, textwrap

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def write(path, data):
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(full, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
        f.write(data)

def pdf(title, paragraphs):
    """A one-or-more page PDF with a text layer (ASCII, Helvetica)."""
    lines = [title, ""]
    for p in paragraphs:
        lines += textwrap.wrap(p, 90) + [""]
    pages = [lines[i:i + 48] for i in range(0, len(lines), 48)]
    objs = []
    def add(b):
        objs.append(b)
        return len(objs)
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    pages_id = len(objs) + 1 + 2 * len(pages)
    kids = []
    for page in pages:
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 790 Td"]
        for line in page:
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents %d 0 R /Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, content, font)))
    assert add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))) == pages_id
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, catalog, xref)
    return bytes(out)

def docx(title, paragraphs):
    def esc(s):
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = f'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>{esc(title)}</w:t></w:r></w:p>'
    for p in paragraphs:
        if p.startswith("## "):
            body += f'<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>{esc(p[3:])}</w:t></w:r></w:p>'
        else:
            body += f'<w:p><w:r><w:t xml:space="preserve">{esc(p)}</w:t></w:r></w:p>'
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f'<w:body>{body}</w:body></w:document>')
    types = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             '<Default Extension="xml" ContentType="application/xml"/>'
             '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
    rels = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [("[Content_Types].xml", types), ("_rels/.rels", rels), ("word/document.xml", document)]:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()

def md(title, sections):
    out = f"# {title}\n\n"
    for head, paras in sections:
        out += f"## {head}\n\n" + "\n\n".join(paras) + "\n\n"
    return out

def html(title, sections):
    body = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in sections)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<script>window.tracking = 'should never be indexed';</script><style>body{{font-family:sans-serif}}</style></head>"
            f"<body><nav>Intranet home | Policies</nav><h1>{title}</h1>{body}</body></html>")

from corpus_text import DOCS  # noqa: E402  (the words live in their own file)

for path, kind, title, content in DOCS:
    if kind == "md":
        write(path, md(title, content))
    elif kind == "html":
        write(path, html(title, content))
    elif kind == "txt":
        write(path, title + "\n\n" + "\n\n".join(content) + "\n")
    elif kind == "pdf":
        write(path, pdf(title, content))
    elif kind == "docx":
        write(path, docx(title, content))
print(f"wrote {len(DOCS)} documents under {ROOT}")
