//! Statements known to be cheap: in `learn` and `frozen` mode the planner hook copies a
//! statement's Query before planning it (the planner scribbles on it, and applying an arm plans
//! it again), but a statement whose default plan costs less than
//! `ruvector.dag_replan_min_cost` is never planned again, so that copy is wasted on exactly the
//! statements that run most often (an OLTP lookup by key). This backend remembers, by the
//! statement's text with its constants left out and the tables it reads, how many plannings in
//! a row came out below the threshold; after [`STREAK`] of them the copy is skipped. A
//! statement that then costs more than the threshold keeps its default plan that once (it
//! cannot be planned again without the copy: exactly what PostgreSQL would run) and is copied
//! again from its next planning on.

use super::*;

/// Plannings in a row below the threshold before the copy is skipped.
pub(crate) const STREAK: u8 = 4;
/// Statements remembered (direct-mapped by key: a collision forgets the older one).
const SLOTS: usize = 256;

thread_local! {
    /// (key, plannings in a row below the threshold) per slot.
    static CHEAP: RefCell<Vec<(u64, u8)>> = const { RefCell::new(Vec::new()) };
}

/// The key of `parse`'s statement: its text (the part of `query_string` it came from) with
/// digits and quoted literals left out, its command type, the enabled tables it reads and the
/// threshold `min` (a changed `ruvector.dag_replan_min_cost` starts every streak again). Two
/// statements that differ only in their constants share a key: if their costs fall on both
/// sides of the threshold the streak never grows, so the copy is only ever skipped for
/// statements that were cheap every time. Never 0.
///
/// # Safety
/// `parse` is a valid Query and `query_string` null or the text it was parsed from.
pub(super) unsafe fn key(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    relids: &[u32],
    min: f64,
) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut put = |x: u64| {
        h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
    };
    put((*parse).commandType as u64);
    put(min.to_bits());
    for r in relids {
        put(u64::from(*r));
    }
    if !query_string.is_null() {
        let text = std::ffi::CStr::from_ptr(query_string).to_bytes();
        let start = usize::try_from((*parse).stmt_location)
            .unwrap_or(0)
            .min(text.len());
        let end = match usize::try_from((*parse).stmt_len) {
            Ok(n) if n > 0 => (start + n).min(text.len()),
            _ => text.len(),
        };
        put(key_of_text(&text[start..end]));
    }
    h.max(1)
}

/// A hash of `text` without its digits and the contents of its quoted literals. Every
/// statement in scope in `learn` and `frozen` mode hashes its text: the bytes kept are packed
/// eight to a word and the words mixed, not one multiplication per byte, and eight bytes with
/// no digit and no quote among them (most of a statement's text) are packed at once.
pub(crate) fn key_of_text(text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |w: u64| {
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    };
    // The kept bytes not mixed yet (the last `filled` of them in the low bytes of `word`).
    let (mut word, mut filled) = (0u64, 0u32);
    let mut quoted = false;
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let c = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
        if !quoted && !has_digit_or_quote(c) {
            // The eight bytes kept as they are: what the byte at a time below would pack.
            if filled == 0 {
                mix(c);
            } else {
                let f = 8 * filled;
                mix((word << (64 - f)) | (c >> f));
                word = c & ((1u64 << f) - 1);
            }
            continue;
        }
        for &b in chunk {
            keep_byte(b, &mut quoted, &mut word, &mut filled, &mut mix);
        }
    }
    for &b in chunks.remainder() {
        keep_byte(b, &mut quoted, &mut word, &mut filled, &mut mix);
    }
    // The bytes left over and how many there were (so "ab" and "\0ab" differ).
    mix(word);
    mix(u64::from(filled));
    h
}

/// One byte of [`key_of_text`]: a quote opens or closes a literal, a digit or a byte inside a
/// literal is left out, any other byte is packed (a full word mixed).
#[inline(always)]
fn keep_byte(
    b: u8,
    quoted: &mut bool,
    word: &mut u64,
    filled: &mut u32,
    mix: &mut impl FnMut(u64),
) {
    if b == b'\'' {
        *quoted = !*quoted;
        return;
    }
    if *quoted || b.is_ascii_digit() {
        return;
    }
    *word = (*word << 8) | u64::from(b);
    *filled += 1;
    if *filled == 8 {
        mix(*word);
        (*word, *filled) = (0, 0);
    }
}

/// Whether any of the eight bytes of `x` is an ASCII digit or a quote (exact: bytes of 128 and
/// above are neither; "Bit Twiddling Hacks", `hasbetween` and `haszero`).
#[inline(always)]
pub(crate) fn has_digit_or_quote(x: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const LOW7: u64 = ONES * 127;
    const HIGH: u64 = ONES * 128;
    // A byte b < 128 with 0x2f < b < 0x3a ('0'..='9').
    let (m, n) = (0x2f_u64, 0x3a_u64);
    let low = x & LOW7;
    let digit = (ONES * (127 + n)).wrapping_sub(low) & !x & (low + ONES * (127 - m)) & HIGH;
    // A zero byte in x ^ '\''.
    let q = x ^ (ONES * u64::from(b'\''));
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    digit | quote != 0
}

/// Whether the statement of `key` came out below the threshold on its last [`STREAK`]
/// plannings.
pub(super) fn known(key: u64) -> bool {
    CHEAP.with(|c| {
        c.borrow()
            .get(slot(key))
            .is_some_and(|&(k, n)| k == key && n >= STREAK)
    })
}

/// A planning of the statement of `key` came out `below` the threshold or not.
pub(super) fn saw(key: u64, below: bool) {
    CHEAP.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_empty() {
            c.resize(SLOTS, (0, 0));
        }
        let e = &mut c[slot(key)];
        if !below {
            if e.0 == key {
                *e = (0, 0);
            }
            return;
        }
        *e = if e.0 == key {
            (key, e.1.saturating_add(1))
        } else {
            (key, 1)
        };
    });
}

fn slot(key: u64) -> usize {
    (key % SLOTS as u64) as usize
}
