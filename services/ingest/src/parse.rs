//! Parsing: plain text, Markdown, HTML (markup and scripts stripped), PDF
//! (its text layer, through `pdf-extract`) and DOCX (bounded unzip, then the
//! paragraphs of `word/document.xml`).

use std::io::Read;

use quick_xml::events::Event;
use scraper::{Html, Node};

use crate::IngestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

pub const DOCX_MIME: &str =
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

impl Format {
    /// From a MIME type (parameters such as `; charset=utf-8` ignored).
    pub fn from_content_type(ct: &str) -> Result<Format, IngestError> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Ok(match essence.as_str() {
            "text/plain" => Format::Text,
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/pdf" => Format::Pdf,
            DOCX_MIME => Format::Docx,
            _ => return Err(IngestError::Unsupported(essence)),
        })
    }

    /// From a file name's extension.
    pub fn from_path(path: &std::path::Path) -> Result<Format, IngestError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            _ => return Err(IngestError::Unsupported(format!(".{ext}"))),
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
            Format::Docx => DOCX_MIME,
        }
    }
}

/// A paragraph-like unit of text; headings start new chunks where possible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub text: String,
    pub heading: bool,
}

/// Bounds on what parsing may produce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes a DOCX package, or the compressed streams of a PDF, may
    /// decompress to.
    pub max_unpacked_bytes: u64,
    /// Most characters of extracted text.
    pub max_text_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 64 * 1024 * 1024,
            max_text_chars: 8 * 1024 * 1024,
        }
    }
}

/// Parses `bytes` of `format` into blocks of text.
pub fn parse(bytes: &[u8], format: Format, limits: Limits) -> Result<Vec<Block>, IngestError> {
    let blocks = match format {
        Format::Text => split_paragraphs(utf8(bytes)?),
        Format::Markdown => markdown(utf8(bytes)?),
        Format::Html => html(utf8(bytes)?),
        Format::Pdf => split_paragraphs(&pdf(bytes, limits)?),
        Format::Docx => docx(bytes, limits)?,
    };
    let blocks: Vec<Block> = blocks
        .into_iter()
        .map(|b| Block {
            text: normalize_ws(&b.text),
            heading: b.heading,
        })
        .filter(|b| !b.text.is_empty())
        .collect();
    if blocks.is_empty() {
        return Err(IngestError::Empty);
    }
    let chars: usize = blocks.iter().map(|b| b.text.chars().count()).sum();
    if chars > limits.max_text_chars {
        return Err(IngestError::TooLarge(format!(
            "{chars} characters of text (limit {})",
            limits.max_text_chars
        )));
    }
    Ok(blocks)
}

fn utf8(bytes: &[u8]) -> Result<&str, IngestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        IngestError::Corrupt(format!("not valid UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Collapses runs of spaces and tabs inside a block; keeps single newlines.
fn normalize_ws(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn split_paragraphs(text: &str) -> Vec<Block> {
    let text = text.replace("\r\n", "\n").replace('\u{c}', "\n\n");
    text.split("\n\n")
        .map(|p| Block {
            text: p.trim().to_owned(),
            heading: false,
        })
        .collect()
}

fn markdown(text: &str) -> Vec<Block> {
    use pulldown_cmark::{Event as Md, Parser, Tag, TagEnd};
    let mut blocks = Vec::new();
    let mut current = String::new();
    let mut heading = false;
    let flush = |blocks: &mut Vec<Block>, current: &mut String, heading: bool| {
        if !current.trim().is_empty() {
            blocks.push(Block {
                text: std::mem::take(current),
                heading,
            });
        }
        current.clear();
    };
    for event in Parser::new(text) {
        match event {
            Md::Start(Tag::Heading { .. }) => {
                flush(&mut blocks, &mut current, heading);
                heading = true;
            }
            Md::End(TagEnd::Heading(_)) => {
                flush(&mut blocks, &mut current, heading);
                heading = false;
            }
            Md::Start(
                Tag::Paragraph | Tag::Item | Tag::CodeBlock(_) | Tag::TableRow | Tag::BlockQuote(_),
            ) => {
                flush(&mut blocks, &mut current, heading);
            }
            Md::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::CodeBlock | TagEnd::TableRow) => {
                flush(&mut blocks, &mut current, heading);
            }
            Md::Text(t) | Md::Code(t) => current.push_str(&t),
            Md::SoftBreak | Md::HardBreak => current.push('\n'),
            Md::End(TagEnd::TableCell) => current.push(' '),
            _ => {}
        }
    }
    flush(&mut blocks, &mut current, heading);
    blocks
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "nav",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "td",
    "th",
    "br",
    "hr",
    "pre",
    "blockquote",
    "dd",
    "dt",
    "figcaption",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "title",
];
const SKIP_TAGS: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
];

/// Elements nested deeper than this add their text but no structure: the
/// walk is iterative, so depth costs no stack, and this bounds the work a
/// pathological nesting can cause per element.
const MAX_HTML_DEPTH: usize = 256;

fn html(text: &str) -> Vec<Block> {
    let doc = Html::parse_document(text);
    let mut blocks = Vec::new();
    let mut current = String::new();
    let mut heading = false;
    fn push(blocks: &mut Vec<Block>, current: &mut String, heading: bool) {
        if !current.trim().is_empty() {
            blocks.push(Block {
                text: current.trim().to_owned(),
                heading,
            });
        }
        current.clear();
    }
    // The document's <title> is metadata, not body text.
    let root = doc.tree.root();
    let body = doc
        .tree
        .nodes()
        .find(|n| matches!(n.value(), Node::Element(e) if e.name() == "body"))
        .unwrap_or(root);
    // Depth-first, with an explicit stack: `Enter` visits a node, `Leave`
    // closes an element after its children. Text under skipped elements is
    // dropped.
    enum Step<'a> {
        Enter(ego_tree::NodeRef<'a, Node>, usize),
        Leave { block: bool, inline_gap: bool },
    }
    let mut stack: Vec<Step<'_>> = body.children().rev().map(|c| Step::Enter(c, 1)).collect();
    while let Some(step) = stack.pop() {
        match step {
            Step::Leave { block, inline_gap } => {
                if block {
                    push(&mut blocks, &mut current, heading);
                    heading = false;
                } else if inline_gap {
                    current.push(' ');
                }
            }
            Step::Enter(node, depth) => match node.value() {
                Node::Text(t) => current.push_str(t),
                Node::Element(e) => {
                    let name = e.name();
                    if SKIP_TAGS.contains(&name) {
                        continue;
                    }
                    let shallow = depth <= MAX_HTML_DEPTH;
                    let is_block = shallow && BLOCK_TAGS.contains(&name);
                    if is_block {
                        push(&mut blocks, &mut current, heading);
                        heading = matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6");
                    }
                    stack.push(Step::Leave {
                        block: is_block,
                        inline_gap: matches!(name, "td" | "th" | "span" | "a"),
                    });
                    stack.extend(node.children().rev().map(|c| Step::Enter(c, depth + 1)));
                }
                _ => {}
            },
        }
    }
    push(&mut blocks, &mut current, heading);
    blocks
}

fn pdf(bytes: &[u8], limits: Limits) -> Result<String, IngestError> {
    use pdf_extract::{Document, PlainTextOutput, output_doc};
    if !bytes.starts_with(b"%PDF-") {
        return Err(IngestError::Corrupt(
            "not a PDF file (no %PDF- header)".into(),
        ));
    }
    // The document is parsed once: its Flate streams are counted, then its
    // text extracted. pdf-extract (and lopdf beneath it) panics on some
    // malformed files; a bad upload must not take a worker down, so a
    // panic here is an ordinary error.
    let damaged = || IngestError::Corrupt("PDF: the file is damaged or truncated".into());
    let owned = bytes.to_vec();
    let mut doc = std::panic::catch_unwind(move || Document::load_mem(&owned))
        .map_err(|_| damaged())?
        .map_err(|e| IngestError::Corrupt(format!("PDF: {e}")))?;
    pdf_unpacked_within(&doc, limits.max_unpacked_bytes)?;
    // The document is moved in and dropped inside: nothing sees it after a
    // panic, so asserting unwind safety is sound.
    let extracted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        // As pdf-extract does: a document encrypted with the empty password.
        if doc.is_encrypted() {
            doc.decrypt("")
                .map_err(|e| IngestError::Corrupt(format!("PDF: {e}")))?;
        }
        pdf_structure_sound(&doc)?;
        let mut text = String::new();
        output_doc(&doc, &mut PlainTextOutput::new(&mut text))
            .map(|()| text)
            .map_err(|e| IngestError::Corrupt(format!("PDF: {e}")))
    }));
    extracted.unwrap_or_else(|_| Err(damaged()))
}

/// Forms drawn inside forms, deepest: pdf-extract recurses once per level.
const MAX_PDF_FORM_DEPTH: usize = 32;
/// Form drawings in a whole document, counting each time a form is drawn.
const MAX_PDF_FORM_DRAWS: usize = 100_000;

/// Refuses the page structures pdf-extract cannot leave: it follows a page's
/// `/Parent` chain for inherited attributes and recurses into every form
/// XObject a content stream draws (`Do`), with no guard against loops. A
/// looping page tree spins forever; a form that draws itself, directly or
/// through others, recurses until the stack runs out; forms that each draw
/// the next several times multiply the work exponentially. All three are
/// found here first, walking only the `Do` operators of the streams.
fn pdf_structure_sound(doc: &pdf_extract::Document) -> Result<(), IngestError> {
    use pdf_extract::ObjectId;
    let loops = || IngestError::Corrupt("PDF: the page tree loops back on itself".into());
    let mut draws = FormDraws {
        doc,
        path: Vec::new(),
        left: MAX_PDF_FORM_DRAWS,
        names: std::collections::HashMap::new(),
    };
    for page in doc.page_iter() {
        let mut seen: Vec<ObjectId> = vec![page];
        let mut node = doc.get_dictionary(page).ok();
        let mut resources = None;
        while let Some(dict) = node {
            if resources.is_none() {
                resources = doc.get_dict_in_dict(dict, b"Resources").ok();
            }
            let Ok(parent) = dict.get(b"Parent").and_then(|p| p.as_reference()) else {
                break;
            };
            if seen.contains(&parent) {
                return Err(loops());
            }
            seen.push(parent);
            node = doc.get_dictionary(parent).ok();
        }
        if let (Some(resources), Ok(content)) = (resources, doc.get_page_content(page)) {
            draws.walk(&content, resources)?;
        }
    }
    Ok(())
}

/// The walk of [`pdf_structure_sound`] through the forms a stream draws.
struct FormDraws<'a> {
    doc: &'a pdf_extract::Document,
    /// The forms being drawn, outermost first.
    path: Vec<pdf_extract::ObjectId>,
    /// Drawings still allowed.
    left: usize,
    /// The names each form's content draws, decoded once.
    names: std::collections::HashMap<pdf_extract::ObjectId, Vec<Vec<u8>>>,
}

impl<'a> FormDraws<'a> {
    fn walk(
        &mut self,
        content: &[u8],
        resources: &'a pdf_extract::Dictionary,
    ) -> Result<(), IngestError> {
        for name in drawn_names(content) {
            self.draw(&name, resources)?;
        }
        Ok(())
    }

    fn draw(
        &mut self,
        name: &[u8],
        resources: &'a pdf_extract::Dictionary,
    ) -> Result<(), IngestError> {
        let doc = self.doc;
        let Ok(xobjects) = doc.get_dict_in_dict(resources, b"XObject") else {
            return Ok(());
        };
        let Ok(id) = xobjects.get(name).and_then(|o| o.as_reference()) else {
            return Ok(());
        };
        let Ok(pdf_extract::Object::Stream(form)) = doc.get_object(id) else {
            return Ok(());
        };
        if self.path.contains(&id) {
            return Err(IngestError::Corrupt("PDF: a form draws itself".into()));
        }
        if self.path.len() >= MAX_PDF_FORM_DEPTH {
            return Err(IngestError::TooLarge(format!(
                "PDF forms nest deeper than {MAX_PDF_FORM_DEPTH} levels"
            )));
        }
        self.left = self.left.checked_sub(1).ok_or_else(|| {
            IngestError::TooLarge(format!(
                "PDF draws forms more than {MAX_PDF_FORM_DRAWS} times"
            ))
        })?;
        // As pdf-extract does: the form's own resources, else the caller's.
        let inner = doc
            .get_dict_in_dict(&form.dict, b"Resources")
            .unwrap_or(resources);
        // As pdf-extract reads a form: decoded, else as stored.
        let names = self
            .names
            .entry(id)
            .or_insert_with(|| {
                drawn_names(
                    &form
                        .decompressed_content()
                        .unwrap_or_else(|_| form.content.clone()),
                )
            })
            .clone();
        self.path.push(id);
        for name in &names {
            self.draw(name, inner)?;
        }
        self.path.pop();
        Ok(())
    }
}

/// The XObject names a content stream draws (`/Name Do`), in order; none
/// when the stream does not decode (pdf-extract fails on it then anyway).
fn drawn_names(content: &[u8]) -> Vec<Vec<u8>> {
    let Ok(content) = pdf_extract::content::Content::decode(content) else {
        return Vec::new();
    };
    content
        .operations
        .iter()
        .filter(|op| op.operator == "Do")
        .filter_map(|op| op.operands.first()?.as_name().ok().map(<[u8]>::to_vec))
        .collect()
}

/// Refuses a PDF whose Flate streams inflate to more than `max` bytes in
/// all, counting each through a bounded decoder before the extractor
/// inflates anything. Other filters are left to the worker's memory limit.
fn pdf_unpacked_within(doc: &pdf_extract::Document, max: u64) -> Result<(), IngestError> {
    let mut total: u64 = 0;
    for object in doc.objects.values() {
        let pdf_extract::Object::Stream(stream) = object else {
            continue;
        };
        let flate = stream
            .filters()
            .is_ok_and(|f| f.iter().any(|name| *name == b"FlateDecode"));
        if !flate {
            continue;
        }
        let mut decoder = flate2::read::ZlibDecoder::new(stream.content.as_slice());
        let mut buf = [0u8; 64 * 1024];
        // A damaged stream counts as far as it inflates.
        while let Ok(n @ 1..) = decoder.read(&mut buf) {
            total = total.saturating_add(n as u64);
            if total > max {
                break;
            }
        }
        if total > max {
            return Err(IngestError::TooLarge(format!(
                "PDF streams unpack to more than {max} bytes"
            )));
        }
    }
    Ok(())
}

fn docx(bytes: &[u8], limits: Limits) -> Result<Vec<Block>, IngestError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| IngestError::Corrupt(format!("DOCX: not a valid ZIP package: {e}")))?;
    let declared: u64 = (0..archive.len())
        .filter_map(|i| archive.by_index_raw(i).ok().map(|f| f.size()))
        .sum();
    if declared > limits.max_unpacked_bytes {
        return Err(IngestError::TooLarge(format!(
            "DOCX unpacks to {declared} bytes (limit {})",
            limits.max_unpacked_bytes
        )));
    }
    let entry = archive
        .by_name("word/document.xml")
        .map_err(|_| IngestError::Corrupt("DOCX: word/document.xml is missing".into()))?;
    // Sizes in the ZIP directory can lie: read at most the limit plus one byte.
    let mut xml = Vec::new();
    entry
        .take(limits.max_unpacked_bytes + 1)
        .read_to_end(&mut xml)
        .map_err(|e| IngestError::Corrupt(format!("DOCX: {e}")))?;
    if xml.len() as u64 > limits.max_unpacked_bytes {
        return Err(IngestError::TooLarge(format!(
            "DOCX document.xml exceeds {} bytes when unpacked",
            limits.max_unpacked_bytes
        )));
    }
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut blocks = Vec::new();
    let mut current = String::new();
    let mut heading = false;
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => match e.name().as_ref() {
                b"w:t" => in_text = true,
                b"w:p" => {
                    current.clear();
                    heading = false;
                }
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.name().as_ref() {
                b"w:tab" => current.push('\t'),
                b"w:br" | b"w:cr" => current.push('\n'),
                b"w:pStyle" => {
                    heading = e.attributes().flatten().any(|a| {
                        a.key.as_ref() == b"w:val" && {
                            let v = String::from_utf8_lossy(&a.value).to_ascii_lowercase();
                            v.starts_with("heading") || v == "title"
                        }
                    });
                }
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => {
                let decoded = t
                    .decode()
                    .map_err(|e| IngestError::Corrupt(format!("DOCX: {e}")))?;
                current.push_str(&quick_xml::escape::unescape(&decoded).unwrap_or(decoded.clone()));
            }
            Ok(Event::GeneralRef(r)) if in_text => {
                let name = String::from_utf8_lossy(&r);
                let ch = match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                };
                current.push_str(ch);
            }
            Ok(Event::End(e)) => match e.name().as_ref() {
                b"w:t" => in_text = false,
                b"w:p" => {
                    if !current.trim().is_empty() {
                        blocks.push(Block {
                            text: std::mem::take(&mut current),
                            heading,
                        });
                    }
                    current.clear();
                }
                _ => {}
            },
            Ok(Event::Eof) => break,
            Err(e) => return Err(IngestError::Corrupt(format!("DOCX: malformed XML: {e}"))),
            _ => {}
        }
        buf.clear();
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_strips_markup_and_scripts() {
        let b = parse(
            b"<html><head><title>T</title><script>alert(1)</script></head><body><h1>Leave</h1><p>Staff <b>may</b> take leave.</p><script>evil()</script><style>p{}</style></body></html>",
            Format::Html,
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            b[0],
            Block {
                text: "Leave".into(),
                heading: true
            }
        );
        assert_eq!(b[1].text, "Staff may take leave.");
        assert!(
            !b.iter()
                .any(|x| x.text.contains("evil") || x.text.contains("alert"))
        );
    }

    #[test]
    fn markdown_headings_and_paragraphs() {
        let b = parse(
            b"# Title\n\nFirst para\nline two.\n\n- item one\n- item two\n",
            Format::Markdown,
            Limits::default(),
        )
        .unwrap();
        assert!(b[0].heading);
        assert_eq!(b[1].text, "First para\nline two.");
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        assert!(matches!(
            parse(&[0xff, 0xfe, 0x41], Format::Text, Limits::default()),
            Err(IngestError::Corrupt(_))
        ));
        assert_eq!(
            parse(b"   \n\n  ", Format::Text, Limits::default()),
            Err(IngestError::Empty)
        );
        assert!(matches!(
            parse(b"%PDF-1.4\n1 0 obj", Format::Pdf, Limits::default()),
            Err(IngestError::Corrupt(_))
        ));
        assert!(matches!(
            parse(b"hello", Format::Pdf, Limits::default()),
            Err(IngestError::Corrupt(_))
        ));
        assert!(matches!(
            parse(b"PK\x03\x04garbage", Format::Docx, Limits::default()),
            Err(IngestError::Corrupt(_))
        ));
        assert!(matches!(
            Format::from_content_type("image/png"),
            Err(IngestError::Unsupported(_))
        ));
        let tiny = Limits {
            max_unpacked_bytes: 10,
            max_text_chars: 5,
        };
        assert!(matches!(
            parse(b"hello world", Format::Text, tiny),
            Err(IngestError::TooLarge(_))
        ));
    }

    /// A PDF of `objects` (object 1 the catalog) with a correct
    /// cross-reference table, as `tests/hostile/make.py` writes them.
    fn pdf_of(objects: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for off in offsets {
            out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn pdf_stream(dict: &str, data: &str) -> Vec<u8> {
        format!(
            "<< {dict} /Length {} >>\nstream\n{data}\nendstream",
            data.len()
        )
        .into_bytes()
    }

    /// Parses on a thread and gives up after 20 s, so a hang fails the test
    /// instead of stalling the suite.
    fn parse_pdf_within_time(bytes: Vec<u8>) -> Result<Vec<Block>, IngestError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(parse(&bytes, Format::Pdf, Limits::default()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("parsing the PDF did not end within 20 s"))
    }

    const HELVETICA: &str =
        "/Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >>";

    #[test]
    fn pdf_page_that_is_its_own_parent_is_refused_not_followed_forever() {
        let bytes = pdf_of(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 3 0 R /Contents 4 0 R >>".to_vec(),
            pdf_stream("", "BT ET"),
        ]);
        let Err(IngestError::Corrupt(message)) = parse_pdf_within_time(bytes) else {
            panic!("a looping page tree must be refused as damaged");
        };
        assert!(message.contains("page tree loops"), "{message}");
    }

    #[test]
    fn pdf_form_drawing_itself_through_another_is_refused() {
        // Page draws X1; X1 draws X2; X2 draws X1 again.
        let bytes = pdf_of(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /X1 4 0 R /X2 5 0 R >> >> /Contents 6 0 R >>".to_vec(),
            pdf_stream("/Type /XObject /Subtype /Form /BBox [0 0 612 792]", "/X2 Do"),
            pdf_stream("/Type /XObject /Subtype /Form /BBox [0 0 612 792]", "/X1 Do"),
            pdf_stream("", "/X1 Do"),
        ]);
        let Err(IngestError::Corrupt(message)) = parse_pdf_within_time(bytes) else {
            panic!("a form drawing itself must be refused as damaged");
        };
        assert!(message.contains("draws itself"), "{message}");
    }

    #[test]
    fn pdf_forms_multiplying_their_drawings_are_refused_as_too_large() {
        // Each of 20 forms draws the next one twice: 2^20 drawings.
        let mut objects = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /F0 5 0 R >> >> >>".to_vec(),
            pdf_stream("", "/F0 Do"),
        ];
        for level in 0..20 {
            let next = level + 1;
            let resources = if next < 20 {
                format!("/Resources << /XObject << /F{next} {} 0 R >> >>", 6 + level)
            } else {
                String::new()
            };
            objects.push(pdf_stream(
                &format!("/Type /XObject /Subtype /Form /BBox [0 0 1 1] {resources}"),
                &format!("/F{next} Do /F{next} Do"),
            ));
        }
        let Err(IngestError::TooLarge(message)) = parse_pdf_within_time(pdf_of(&objects)) else {
            panic!("an exponential nest of forms must be refused");
        };
        assert!(message.contains("forms more than"), "{message}");
    }

    #[test]
    fn pdf_form_drawn_twice_without_a_loop_gives_its_text() {
        let bytes = pdf_of(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << {HELVETICA} /XObject << /X1 4 0 R >> >> /Contents 5 0 R >>").into_bytes(),
            pdf_stream(
                "/Type /XObject /Subtype /Form /BBox [0 0 612 792]",
                "BT /F1 12 Tf 72 700 Td (Leave is approved by the manager.) Tj ET",
            ),
            pdf_stream("", "/X1 Do /X1 Do"),
        ]);
        let blocks = parse_pdf_within_time(bytes).expect("a sound PDF parses");
        let text: String = blocks.iter().map(|b| b.text.as_str()).collect();
        assert!(text.contains("Leave is approved"), "{text}");
    }
}
