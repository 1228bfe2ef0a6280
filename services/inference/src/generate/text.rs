//! Turning generated tokens into text as they come: pieces that are whole
//! UTF-8, and stop sequences cut out (text that could still become one is
//! held back until it cannot).

/// Tracks what has been emitted of the decoded text.
#[derive(Debug, Default)]
pub struct TextStream {
    stop: Vec<String>,
    emitted: usize,
    stopped: bool,
}

impl TextStream {
    pub fn new(stop: &[String]) -> Self {
        Self {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Given all text decoded so far, returns the new piece that may be
    /// emitted now, and whether a stop sequence was reached.
    pub fn push<'a>(&mut self, decoded: &'a str) -> (&'a str, bool) {
        if self.stopped {
            return ("", true);
        }
        // An incomplete UTF-8 sequence decodes as U+FFFD: wait for the rest.
        let text = decoded.strip_suffix('\u{FFFD}').unwrap_or(decoded);
        let from = self.emitted.min(text.len());
        let search_from = from.saturating_sub(self.longest_stop());
        let search_from = floor_char_boundary(text, search_from);
        let first_stop = self
            .stop
            .iter()
            .filter_map(|s| {
                text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let piece = if at > from { &text[from..at] } else { "" };
            self.emitted = self.emitted.max(at);
            return (piece, true);
        }
        let safe = text.len() - self.held_back(text);
        if safe <= from {
            return ("", false);
        }
        self.emitted = safe;
        (&text[from..safe], false)
    }

    /// The rest of the text once generation has ended without a stop sequence.
    pub fn finish<'a>(&mut self, decoded: &'a str) -> &'a str {
        if self.stopped {
            return "";
        }
        let from = floor_char_boundary(decoded, self.emitted.min(decoded.len()));
        self.emitted = decoded.len();
        &decoded[from..]
    }

    /// The emitted text's length in bytes.
    pub fn emitted(&self) -> usize {
        self.emitted
    }

    fn longest_stop(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }

    /// Bytes at the end of `text` that are a proper prefix of a stop sequence.
    fn held_back(&self, text: &str) -> usize {
        let mut hold = 0;
        for s in &self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && text.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        hold
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], steps: &[&str]) -> (String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut t = TextStream::new(&stop);
        let mut out = String::new();
        for s in steps {
            let (piece, stopped) = t.push(s);
            out.push_str(piece);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(t.finish(steps.last().copied().unwrap_or("")));
        (out, false)
    }

    #[test]
    fn pieces_add_up_to_the_text() {
        assert_eq!(
            run(&[], &["He", "Hello", "Hello wor", "Hello world"]).0,
            "Hello world"
        );
    }

    #[test]
    fn a_stop_sequence_is_cut_even_across_steps() {
        assert_eq!(
            run(
                &["END"],
                &["answer", "answer E", "answer EN", "answer END more"]
            ),
            ("answer ".into(), true)
        );
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_turns_out_not_to_stop() {
        let (out, stopped) = run(&["END"], &["a E", "a Ex", "a Ex b"]);
        assert_eq!((out.as_str(), stopped), ("a Ex b", false));
    }

    #[test]
    fn incomplete_utf8_waits_for_its_last_byte() {
        let stop: Vec<String> = vec![];
        let mut t = TextStream::new(&stop);
        assert_eq!(t.push("caf\u{FFFD}").0, "caf");
        assert_eq!(t.push("café").0, "é");
    }
}
