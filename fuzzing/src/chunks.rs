//! How a byte stream arrives: whole, a byte at a time, cut around every byte a parser cares
//! about (`\r`, `\n`, `:`, spaces, the inside of multi-byte UTF-8 characters: `\r\n` split in
//! two, a `data:` prefix split, a character split), or at arbitrary points.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
pub enum Chunking {
    Whole,
    EveryByte,
    /// Before and after every `\r`, `\n`, `:`, space and non-ASCII byte.
    Boundaries,
    At(Vec<Index>),
}

pub fn chunking() -> BoxedStrategy<Chunking> {
    prop_oneof![
        1 => Just(Chunking::Whole),
        1 => Just(Chunking::EveryByte),
        2 => Just(Chunking::Boundaries),
        4 => prop::collection::vec(any::<Index>(), 1..24).prop_map(Chunking::At),
    ]
    .boxed()
}

impl Chunking {
    /// `data` cut into reads (empty reads included where two cuts meet: a transport may
    /// deliver those too).
    pub fn split(&self, data: &[u8]) -> Vec<Bytes> {
        let mut cuts: Vec<usize> = match self {
            Chunking::Whole => Vec::new(),
            Chunking::EveryByte => (1..data.len()).collect(),
            Chunking::Boundaries => data
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, b'\r' | b'\n' | b':' | b' ') || !b.is_ascii())
                .flat_map(|(i, _)| [i, i + 1])
                .collect(),
            Chunking::At(points) => points.iter().map(|p| p.index(data.len() + 1)).collect(),
        };
        cuts.sort_unstable();
        let mut out = Vec::with_capacity(cuts.len() + 1);
        let mut from = 0;
        for cut in cuts {
            let cut = cut.min(data.len());
            if cut >= from {
                out.push(Bytes::copy_from_slice(&data[from..cut]));
                from = cut;
            }
        }
        out.push(Bytes::copy_from_slice(&data[from..]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #[test]
        fn chunks_join_back_to_the_data(data in prop::collection::vec(any::<u8>(), 0..64), how in chunking()) {
            let joined: Vec<u8> = how.split(&data).concat();
            prop_assert_eq!(joined, data);
        }
    }
}
