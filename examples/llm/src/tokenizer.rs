//! SmolLM2's tokenizer through the `tokenizers` crate (Hugging Face's, built with its pure-Rust
//! `fancy-regex` instead of the C library `onig`), and its ChatML template.
//!
//! A GGUF file carries the tokenizer as metadata (`tokenizer.ggml.*`: the byte-level BPE
//! vocabulary, its merges, the token types and the pre-tokenizer's name); [`Tokenizer::from_gguf`]
//! writes it as a `tokenizer.json` (what [`Tokenizer::from_file`] reads) with the pipeline of
//! the model's own `tokenizer.json`: SmolLM's pre-tokenizer (every digit alone, then GPT-2's
//! byte-level pattern), byte-level BPE, the byte-level decoder, and the control tokens as
//! special tokens (left out of decoded text).

use std::path::Path;

use serde_json::{Value, json};

use crate::LlmError;
use crate::gguf::Gguf;

/// ggml's token type of control tokens (`<|im_start|>` and friends).
const CONTROL: i64 = 3;

/// Byte-level BPE tokenizer with SmolLM2's chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>`: also the end of a generated answer.
    pub im_end: u32,
    /// The system prompt the model's chat template inserts when there is none.
    pub default_system: Option<String>,
}

/// The `tokenizer.json` of a byte-level BPE vocabulary (`tokens` in id order, `merges` as
/// `"left right"` by rank), `control` marking the special tokens; with `split_digits`, every
/// digit is a piece of its own (SmolLM's pre-tokenizer).
pub fn tokenizer_json(
    tokens: &[String],
    merges: &[String],
    control: &[bool],
    split_digits: bool,
) -> String {
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect();
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|&(id, _)| control.get(id).copied().unwrap_or(false))
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = if split_digits {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    })
    .to_string()
}

impl Tokenizer {
    /// The tokenizer of a `tokenizer.json`'s contents; `<|im_start|>` and `<|im_end|>` must be
    /// in its vocabulary.
    pub fn from_json(json: &str) -> Result<Self, LlmError> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| LlmError::Format(format!("tokenizer.json: {e}")))?;
        let special = |name: &str| {
            inner.token_to_id(name).ok_or_else(|| {
                LlmError::Format(format!("tokenizer: the vocabulary has no `{name}` token"))
            })
        };
        Ok(Self {
            im_start: special("<|im_start|>")?,
            im_end: special("<|im_end|>")?,
            inner,
            default_system: None,
        })
    }

    /// The tokenizer of a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self, LlmError> {
        let json = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&json)
    }

    /// The tokenizer of a GGUF file (`tokenizer.ggml.*`), with the default system prompt of its
    /// chat template when it has one.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, LlmError> {
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlmError::Format(format!(
                "tokenizer.ggml.model: `{model}` is not supported (only gpt2 byte-level BPE)"
            )));
        }
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let merges = gguf.strings("tokenizer.ggml.merges")?;
        if let Some(bad) = merges.iter().find(|m| m.split(' ').count() != 2) {
            return Err(LlmError::Format(format!(
                "tokenizer.ggml.merges: `{bad}` is not two symbols"
            )));
        }
        let control: Vec<bool> = if gguf.has("tokenizer.ggml.token_type") {
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
        let mut tokenizer =
            Self::from_json(&tokenizer_json(&tokens, &merges, &control, split_digits))?;
        if gguf.has("tokenizer.chat_template") {
            tokenizer.default_system =
                default_system_prompt(gguf.string("tokenizer.chat_template")?);
        }
        Ok(tokenizer)
    }

    /// Vocabulary size (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of text (a special token's name in `text` becomes that token, as in the
    /// model's own tokenizer).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| LlmError::Format(format!("encoding {text:?}: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Text of token ids; special tokens and ids outside the vocabulary are left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| (id as usize) < self.vocab_size())
            .collect();
        self.inner.decode(&known, true).unwrap_or_default()
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

    /// GPT-2's stand-in characters of the 256 bytes: printable Latin-1 bytes stand for
    /// themselves, the others take the code points from 256 up, in order.
    fn byte_chars() -> Vec<char> {
        let printable =
            |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut next = 256;
        (0..256u32)
            .map(|b| {
                if printable(b) {
                    char::from_u32(b).unwrap()
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap()
                }
            })
            .collect()
    }

    /// A hand-made vocabulary: the control tokens, the 256 byte tokens and a few merges.
    pub(crate) fn tiny_vocab() -> (Vec<String>, Vec<String>) {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        tokens.extend(byte_chars().iter().map(|c| c.to_string()));
        tokens.extend(["he", "ll", "hell", "hello", "Ġw", "Ġwo", "rl"].map(String::from));
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l"]
            .map(String::from)
            .to_vec();
        (tokens, merges)
    }

    /// The tiny vocabulary's `tokenizer.json`, digits split as SmolLM's.
    fn tiny_json() -> String {
        let (tokens, merges) = tiny_vocab();
        let control: Vec<bool> = (0..tokens.len()).map(|i| i < 3).collect();
        tokenizer_json(&tokens, &merges, &control, true)
    }

    /// The tokenizer of [`tiny_vocab`], read from a `tokenizer.json` file this test writes.
    pub(crate) fn tiny_tokenizer() -> Tokenizer {
        let path = std::env::temp_dir().join(format!(
            "burn-gmt-llm-tokenizer-{}-{:?}.json",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, tiny_json()).unwrap();
        let tokenizer = Tokenizer::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        tokenizer
    }

    fn text_of(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| t.inner.id_to_token(i).unwrap())
            .collect()
    }

    #[test]
    fn merges_apply_by_rank_after_the_pre_tokenizer() {
        let t = tiny_tokenizer();
        let ids = t.encode("hello world").unwrap();
        assert_eq!(text_of(&t, &ids), ["hello", "Ġwo", "rl", "d"]);
        let ids = t.encode("hell").unwrap();
        assert_eq!(text_of(&t, &ids), ["hell"]);
        // Digits are split one by one before merging; GPT-2's pattern splits the rest (the
        // contraction `'s` is a piece of its own, which no merge of the tiny vocabulary joins).
        let ids = t.encode("x12 he's").unwrap();
        assert_eq!(text_of(&t, &ids), ["x", "1", "2", "Ġ", "he", "'", "s"]);
        // Without the pre-tokenizer's split, `Ġ` and `he` would merge across the space and
        // `e's` would not be split at the apostrophe: check that a piece never spans one.
        let ids = t.encode("hello'hello").unwrap();
        assert_eq!(text_of(&t, &ids), ["hello", "'", "hello"]);
        assert_eq!(t.vocab_size(), 3 + 256 + 7);
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
        // Ids outside the vocabulary are left out too.
        assert_eq!(t.decode(&[10_000, ids[1]]), t.decode(&[ids[1]]));
    }

    #[test]
    fn a_vocabulary_without_the_chat_tokens_is_refused() {
        let (mut tokens, merges) = tiny_vocab();
        tokens[2] = "<|end|>".into();
        let err = Tokenizer::from_json(&tokenizer_json(&tokens, &merges, &[], true)).unwrap_err();
        assert!(err.to_string().contains("<|im_end|>"), "{err}");
        assert!(Tokenizer::from_json("{").is_err());
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
