//! Host (CPU) implementations of the mask operations on plain slices.
//!
//! These are what the CPU backends run and the fallback every other backend reaches through
//! [`MaskOps`](crate::MaskOps)'s default bodies. Each is one linear pass: selection is a radix
//! select or a sampled bracket over the keys of `|x|` (see [`element`](crate::element)), never
//! a sort.
//!
//! - passes over a slice (histogram, masks, counts): the hot loops;
//! - the sampled bracket: sampling, one scan against it, the selection among its keys;
//! - the one-pass mask ([`mask_smallest`]): the sampled bracket and one pass that masks while
//!   it scans, exact whatever the bracket holds (the argument is in its module);
//! - the selection over an input in parts ([`KeyParts`]), by bracket or radix passes, written
//!   once for slices and for tensors read through `MaskOps`.

mod bracket;
mod onepass;
mod parts;
mod pass;

pub use bracket::{
    BracketScan, KeyBracket, bracket_around, bracket_positions, sample_keys, sample_len,
    scan_bracket, select_in_bracket,
};
pub use onepass::{BracketMiss, mask_smallest};
pub use parts::{
    KeyParts, PartsSelection, select_abs_key, select_abs_key_by_radix, select_by_bracket,
    select_by_radix, select_parts,
};
pub use pass::{
    MaskCounts, abs_key_histogram, abs_threshold_count, abs_threshold_mask, abs_threshold_select,
    random_mask, random_mask_count,
};
