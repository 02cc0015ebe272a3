//! The byte-level BPE tokenizer of GPT-2-style GGUF models (`tokenizer.ggml.model = gpt2`),
//! built from the vocabulary and merges in the GGUF metadata, and SmolLM2's ChatML template.
//!
//! Hand-written rather than the `tokenizers` crate: that one pulls in a C regex library
//! (`onig`) and much more than a pre-tokenizer, a merge loop and two byte tables.
//!
//! Encoding: the text is split into pieces (SmolLM's pre-tokenizer: every digit alone, then
//! GPT-2's pattern), each piece's UTF-8 bytes are mapped to GPT-2's printable stand-in
//! characters, and adjacent symbols are merged by merge rank, lowest first. A final symbol
//! missing from the vocabulary falls back to its single-byte tokens. Decoding maps the stand-in
//! characters back to bytes, so any UTF-8 text round-trips.
//!
//! The pre-tokenizer follows `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! with Rust's `char::is_alphabetic` / `char::is_numeric` / `char::is_whitespace` for `\p{L}`,
//! `\p{N}` and `\s`: identical on ASCII, and close elsewhere (`is_alphabetic` also counts a few
//! marks). A different split only changes which tokens are chosen, never the round trip.

use std::collections::HashMap;

use crate::LlmError;
use crate::gguf::Gguf;

/// ggml's token type of control tokens (`<|im_start|>` and friends).
const CONTROL: i64 = 3;

/// Byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    control: Vec<bool>,
    split_digits: bool,
    byte_char: [char; 256],
    char_byte: HashMap<char, u8>,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>`: also the end of a generated answer.
    pub im_end: u32,
    /// The system prompt the model's chat template inserts when there is none.
    pub default_system: Option<String>,
}

/// GPT-2's table from bytes to printable characters: printable Latin-1 bytes stand for
/// themselves, the others (controls, space, ...) take the code points from 256 up, in order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut table = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("Latin-1")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below the surrogates")
        };
    }
    table
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Number
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// GPT-2's pre-tokenizer pattern (see the module docs).
fn split_gpt2(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let run = |mut i: usize, kind: Class| {
        while i < chars.len() && class(chars[i].1) == kind {
            i += 1;
        }
        i
    };
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let end = if c == '\'' {
            let rest = &text[at(i) + 1..];
            match ["s", "t", "re", "ve", "m", "ll", "d"]
                .iter()
                .find(|s| rest.starts_with(*s))
            {
                Some(s) => i + 1 + s.len(),
                None => run(i, Class::Other),
            }
        } else if c == ' ' && next.is_some_and(|n| class(n) != Class::Space) {
            run(i + 1, class(next.expect("checked")))
        } else if class(c) == Class::Space {
            let end = run(i, Class::Space);
            // `\s+(?!\S)`: before a non-space, the last blank goes with what follows.
            if end < chars.len() && end - i > 1 {
                end - 1
            } else {
                end
            }
        } else {
            run(i, class(c))
        };
        pieces.push(&text[at(i)..at(end)]);
        i = end;
    }
    pieces
}

impl Tokenizer {
    /// Builds the tokenizer from a vocabulary (id order), merges (`"left right"`, by rank) and
    /// the control flags. With `split_digits`, every digit is a piece of its own (SmolLM).
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        control: Vec<bool>,
        split_digits: bool,
    ) -> Result<Self, LlmError> {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let ranks = merges
            .iter()
            .enumerate()
            .map(|(rank, m)| {
                let (a, b) = m
                    .split_once(' ')
                    .ok_or_else(|| LlmError::Format(format!("merge `{m}` is not two symbols")))?;
                Ok(((a.to_string(), b.to_string()), rank))
            })
            .collect::<Result<_, LlmError>>()?;
        let byte_char = byte_chars();
        let char_byte = byte_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let special = |name: &str| {
            ids.get(name)
                .copied()
                .ok_or_else(|| LlmError::Format(format!("the vocabulary has no `{name}` token")))
        };
        Ok(Self {
            im_start: special("<|im_start|>")?,
            im_end: special("<|im_end|>")?,
            control: (0..tokens.len())
                .map(|i| control.get(i).copied().unwrap_or(false))
                .collect(),
            tokens,
            ids,
            ranks,
            split_digits,
            byte_char,
            char_byte,
            default_system: None,
        })
    }

    /// The tokenizer of a GGUF file (`tokenizer.ggml.*`), with the default system prompt of its
    /// chat template when it has one.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, LlmError> {
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlmError::Format(format!(
                "tokenizer model `{model}` is not supported (only gpt2 byte-level BPE)"
            )));
        }
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let merges = gguf.strings("tokenizer.ggml.merges")?;
        let control = if gguf.has("tokenizer.ggml.token_type") {
            gguf.ints("tokenizer.ggml.token_type")?
                .into_iter()
                .map(|t| t == CONTROL)
                .collect()
        } else {
            Vec::new()
        };
        // llama.cpp's "smollm" pre-tokenizer (like "starcoder") splits digits one by one.
        let split_digits = gguf.has("tokenizer.ggml.pre")
            && matches!(
                gguf.string("tokenizer.ggml.pre")?,
                "smollm" | "starcoder" | "refact" | "codeshell"
            );
        let mut tokenizer = Self::new(tokens, &merges, control, split_digits)?;
        if gguf.has("tokenizer.chat_template") {
            tokenizer.default_system =
                default_system_prompt(gguf.string("tokenizer.chat_template")?);
        }
        Ok(tokenizer)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The pieces the pre-tokenizer splits `text` into.
    fn pieces<'a>(&self, text: &'a str) -> Vec<&'a str> {
        if !self.split_digits {
            return split_gpt2(text);
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                pieces.extend(split_gpt2(&text[start..i]));
                pieces.push(&text[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        pieces.extend(split_gpt2(&text[start..]));
        pieces
    }

    /// Merges the symbols of one piece by rank, lowest first.
    fn bpe(&self, piece: &str) -> Vec<String> {
        let mut symbols: Vec<String> = piece
            .bytes()
            .map(|b| self.byte_char[b as usize].to_string())
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| {
                    self.ranks
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .map(|&rank| (rank, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        symbols
    }

    /// Token ids of plain text (special-token names in `text` are ordinary text here).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids = Vec::new();
        for piece in self.pieces(text) {
            for symbol in self.bpe(piece) {
                if let Some(&id) = self.ids.get(&symbol) {
                    ids.push(id);
                    continue;
                }
                // Byte fallback: a merged symbol the vocabulary lacks, as its bytes.
                for c in symbol.chars() {
                    let id = self.ids.get(&c.to_string()).ok_or_else(|| {
                        LlmError::Format(format!(
                            "the vocabulary has no token for byte {:#04x}",
                            self.char_byte[&c]
                        ))
                    })?;
                    ids.push(*id);
                }
            }
        }
        Ok(ids)
    }

    /// Text of token ids; control tokens are left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let id = id as usize;
            if id >= self.tokens.len() || self.control[id] {
                continue;
            }
            for c in self.tokens[id].chars() {
                match self.char_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    // Not a stand-in character (a user-defined token): its own UTF-8.
                    None => bytes.extend(c.to_string().as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The ChatML prompt of one user message, ready for the assistant's answer:
    /// `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`,
    /// the system turn being the template's default one (left out when there is none).
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids = Vec::new();
        let turn = |role: &str, content: &str, ids: &mut Vec<u32>| -> Result<(), LlmError> {
            ids.push(self.im_start);
            ids.extend(self.encode(&format!("{role}\n{content}"))?);
            ids.push(self.im_end);
            ids.extend(self.encode("\n")?);
            Ok(())
        };
        if let Some(system) = &self.default_system {
            turn("system", system, &mut ids)?;
        }
        turn("user", user, &mut ids)?;
        ids.push(self.im_start);
        ids.extend(self.encode("assistant\n")?);
        Ok(ids)
    }
}

/// The default system prompt of a ChatML template such as SmolLM2's
/// (`... != 'system' %}{{ '<|im_start|>system\n...<|im_end|>\n' }}`).
fn default_system_prompt(template: &str) -> Option<String> {
    let start = template.find("<|im_start|>system")? + "<|im_start|>system".len();
    // The newline is a real one or an escaped `\n`, as the template's author wrote it.
    let rest = &template[start..];
    let skip = [("\n", 1), ("\\n", 2)]
        .iter()
        .find(|(p, _)| rest.starts_with(p))?
        .1;
    let start = start + skip;
    let end = start + template[start..].find("<|im_end|>")?;
    let text = &template[start..end];
    // A template that builds the system turn from a message has `+` or braces in it.
    (!text.contains(['{', '}', '\'', '+'])).then(|| text.replace("\\n", "\n"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hand-made vocabulary: the control tokens, the 256 byte tokens and a few merges.
    /// "hell" is the product of a merge but not a token: it falls back to its bytes unless
    /// merged further into "hello".
    pub(crate) fn tiny_vocab() -> (Vec<String>, Vec<String>) {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        tokens.extend(byte_chars().iter().map(|c| c.to_string()));
        tokens.extend(["he", "ll", "hello", "Ġw", "Ġwo", "rl"].map(String::from));
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l"]
            .map(String::from)
            .to_vec();
        (tokens, merges)
    }

    /// The tokenizer of [`tiny_vocab`], digits split as SmolLM's.
    pub(crate) fn tiny_tokenizer() -> Tokenizer {
        let (tokens, merges) = tiny_vocab();
        let control = (0..tokens.len()).map(|i| i < 3).collect();
        Tokenizer::new(tokens, &merges, control, true).unwrap()
    }

    fn text_of(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| t.tokens[i as usize].clone()).collect()
    }

    #[test]
    fn gpt2_pre_tokenizer_matches_the_pattern() {
        assert_eq!(
            split_gpt2("Hello world's  end!! 123\n\n  x"),
            [
                "Hello", " world", "'s", " ", " end", "!!", " 123", "\n\n ", " x"
            ]
        );
        assert_eq!(split_gpt2("a  \nb"), ["a", "  ", "\n", "b"]);
        assert_eq!(split_gpt2("trailing  "), ["trailing", "  "]);
        assert_eq!(split_gpt2(" 'x"), [" '", "x"]);
    }

    #[test]
    fn merges_apply_by_rank_and_unknown_symbols_fall_back_to_bytes() {
        let t = tiny_tokenizer();
        let ids = t.encode("hello world").unwrap();
        assert_eq!(text_of(&t, &ids), ["hello", "Ġwo", "rl", "d"]);
        // "hell" (merged, not in the vocabulary) becomes its four byte tokens.
        let ids = t.encode("hell").unwrap();
        assert_eq!(text_of(&t, &ids), ["h", "e", "l", "l"]);
        // Digits are split one by one before merging.
        let ids = t.encode("x12").unwrap();
        assert_eq!(text_of(&t, &ids), ["x", "1", "2"]);
    }

    #[test]
    fn any_utf8_round_trips() {
        let t = tiny_tokenizer();
        for text in [
            "hello world",
            "Grüße, 東京! 🚀 tabs\tand\r\nnewlines  ",
            "",
            " leading space and 3.14159",
            "\u{0}\u{7f}\u{ff}é",
        ] {
            let ids = t.encode(text).unwrap();
            assert_eq!(t.decode(&ids), text, "{ids:?}");
        }
    }

    #[test]
    fn control_tokens_are_left_out_of_text_and_wrap_chat_turns() {
        let mut t = tiny_tokenizer();
        t.default_system = Some("be brief".into());
        let ids = t.chat_prompt("hi").unwrap();
        assert_eq!(ids[0], t.im_start);
        assert_eq!(t.decode(&ids), "system\nbe brief\nuser\nhi\nassistant\n");
        assert_eq!(ids.iter().filter(|&&i| i == t.im_end).count(), 2);
    }

    #[test]
    fn default_system_prompt_is_read_from_the_template() {
        let template = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}";
        assert_eq!(
            default_system_prompt(template).as_deref(),
            Some("You are SmolLM")
        );
        assert_eq!(
            default_system_prompt(
                "{{'<|im_start|>system\\n' + message['content'] + '<|im_end|>'}}"
            ),
            None
        );
    }

    #[test]
    fn gguf_metadata_gives_the_same_tokenizer_and_the_template_system_prompt() {
        let (gguf, _, tiny) = crate::testing::tiny_model_file(9);
        let t = Tokenizer::from_gguf(&gguf).unwrap();
        assert_eq!(t.default_system.as_deref(), Some("Be brief."));
        assert!(t.split_digits);
        assert_eq!(
            t.encode("hello world 42").unwrap(),
            tiny.encode("hello world 42").unwrap()
        );
        assert_eq!((t.im_start, t.im_end), (1, 2));
        let prompt = t.chat_prompt("hi").unwrap();
        assert_eq!(
            t.decode(&prompt),
            "system\nBe brief.\nuser\nhi\nassistant\n"
        );
    }

    /// Against the real vocabulary: the tokens SmolLM2 itself generated for this sentence
    /// (`generate --prompt "What is the capital of France?"`) are the tokenizer's encoding.
    #[test]
    #[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh)"]
    fn smollm2_vocabulary_encodes_like_the_model() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let t = Tokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
        let sentence = "The capital of France is Paris.";
        let ids = t.encode(sentence).unwrap();
        assert_eq!(ids, [504, 3575, 282, 4649, 314, 7042, 30]);
        assert_eq!(t.decode(&ids), sentence);
        // Digits one by one, as SmolLM's pre-tokenizer splits them (again the model's own
        // tokens, from `--prompt "What is 47 + 38?"`).
        let sentence = "To add 47 and 38, we need to combine the numbers in a way that";
        let expected = [
            2068, 803, 216, 36, 39, 284, 216, 35, 40, 28, 392, 737, 288, 8993, 260, 2966, 281, 253,
            970, 338,
        ];
        assert_eq!(t.encode(sentence).unwrap(), expected);
        let text = "Grüße, 東京! 🚀\n\tend  ";
        assert_eq!(t.decode(&t.encode(text).unwrap()), text);
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
    }
}
