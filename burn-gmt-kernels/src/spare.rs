//! Spare output buffers for the one-pass mask on the CPU backends
//! ([`HostAccess::map_values`](crate::host_ops::HostAccess::map_values)): the pass writes a
//! gradient into a second buffer (see [`host::mask_smallest`](crate::host::mask_smallest) for
//! why), and the gradient's own buffer, free once the pass is done, is kept here for the next
//! gradient of its size. A new allocation would cost the kernel's zeroing of each page on its
//! first write, about half a pass more; a step's gradients come in the same sizes step after
//! step, so after the first step every pass writes into a buffer already mapped.
//!
//! At most [`SPARE_MAX_BYTES`] are kept in all (the oldest go first), one buffer per storage
//! type and size.

use std::any::{Any, TypeId};
use std::sync::Mutex;

/// Bytes of spare buffers kept in all, at most: the largest gradient of a 135M-parameter LLM
/// (its 113 MB embedding) and a few more, not the model's whole gradient.
pub(crate) const SPARE_MAX_BYTES: usize = 256 << 20;

/// A kept buffer, with its storage type and size in bytes.
struct Spare {
    kind: TypeId,
    bytes: usize,
    buffer: Box<dyn Any + Send>,
}

/// The kept buffers, oldest first.
static SPARES: Mutex<Vec<Spare>> = Mutex::new(Vec::new());

fn spares() -> std::sync::MutexGuard<'static, Vec<Spare>> {
    // A panic while the lock was held leaves only buffers behind: still usable.
    SPARES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A kept buffer of storage type `T` and `bytes` bytes, if there is one.
pub(crate) fn take<T: Any + Send>(bytes: usize) -> Option<T> {
    let kind = TypeId::of::<T>();
    let mut spares = spares();
    let at = spares
        .iter()
        .position(|s| s.kind == kind && s.bytes == bytes)?;
    let spare = spares.remove(at);
    spare.buffer.downcast::<T>().ok().map(|b| *b)
}

/// Keeps `buffer` (of `bytes` bytes) for the next [`take`] of its type and size, dropping the
/// oldest kept buffers to stay within [`SPARE_MAX_BYTES`]; one larger than that is dropped.
pub(crate) fn give<T: Any + Send>(bytes: usize, buffer: T) {
    if bytes == 0 || bytes > SPARE_MAX_BYTES {
        return;
    }
    let kind = TypeId::of::<T>();
    let mut spares = spares();
    spares.retain(|s| !(s.kind == kind && s.bytes == bytes));
    let mut held: usize = spares.iter().map(|s| s.bytes).sum();
    while held + bytes > SPARE_MAX_BYTES {
        held -= spares.remove(0).bytes;
    }
    spares.push(Spare {
        kind,
        bytes,
        buffer: Box::new(buffer),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers come back by type and size, once; the oldest go when the total would pass the
    /// bound. (One test: the kept buffers are shared by the whole process.)
    #[test]
    fn buffers_come_back_by_type_and_size_within_the_bound() {
        give(12, vec![1u32, 2, 3]);
        assert_eq!(take::<Vec<u16>>(12), None);
        assert_eq!(take::<Vec<u32>>(16), None);
        assert_eq!(take::<Vec<u32>>(12), Some(vec![1, 2, 3]));
        assert_eq!(take::<Vec<u32>>(12), None);
        let half = SPARE_MAX_BYTES / 2;
        give(half, 1u8);
        give(half, 2u16);
        give(half, 3u32);
        assert_eq!(take::<u8>(half), None, "the oldest went");
        assert_eq!((take::<u16>(half), take::<u32>(half)), (Some(2), Some(3)));
        give(SPARE_MAX_BYTES + 1, 4u64);
        assert_eq!(take::<u64>(SPARE_MAX_BYTES + 1), None, "too large to keep");
    }
}
