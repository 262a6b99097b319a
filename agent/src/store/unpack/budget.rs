//! The reader under the tar parser. The tar crate reads an entry's PAX records and GNU long
//! names into memory whole, whatever size their header claims; between entries this reader
//! lets the parser have at most a budget of bytes, so a header claiming gigabytes fails at the
//! budget instead of filling memory. (The crate offers no limit of its own, and parsing the
//! framing a second time here would be a second tar parser to keep in step with the first.)

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::UnpackError;

/// Shared between the reader (inside the parser) and the unpack loop.
#[derive(Debug, Default)]
struct State {
    /// Bytes the parser may still read; `None` outside headers (unbounded).
    left: Cell<Option<u64>>,
    limit: Cell<u64>,
    exceeded: Cell<bool>,
}

pub struct Budgeted<R> {
    inner: R,
    state: Rc<State>,
}

/// The unpack loop's handle on the budget.
pub struct Budget {
    state: Rc<State>,
}

impl<R: Read> Budgeted<R> {
    pub fn new(inner: R) -> (Budgeted<R>, Budget) {
        let state = Rc::new(State::default());
        (
            Budgeted {
                inner,
                state: state.clone(),
            },
            Budget { state },
        )
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.state.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            self.state.exceeded.set(true);
            return Err(io::Error::other(format!(
                "tar headers over {} bytes",
                self.state.limit.get()
            )));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.state.left.set(Some(left - got as u64));
        Ok(got)
    }
}

impl Budget {
    /// Runs `f` (the parser's step to the next entry) with at most `limit` bytes to read.
    pub fn during_headers<T>(&self, limit: u64, f: impl FnOnce() -> T) -> T {
        self.state.limit.set(limit);
        self.state.left.set(Some(limit));
        let out = f();
        self.state.left.set(None);
        out
    }

    /// The parser's error, or the budget's when that is what stopped it.
    pub fn explain(&self, e: io::Error) -> UnpackError {
        if self.state.exceeded.get() {
            UnpackError::HeaderTooLarge {
                limit: self.state.limit.get(),
            }
        } else {
            UnpackError::Io(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_cut_at_the_budget_only_during_headers() {
        let data = vec![7u8; 100];
        let (mut r, budget) = Budgeted::new(data.as_slice());
        let mut buf = [0u8; 64];
        let err = budget
            .during_headers(10, || -> io::Result<()> {
                assert_eq!(r.read(&mut buf)?, 10);
                r.read(&mut buf).map(|_| ())
            })
            .unwrap_err();
        assert!(matches!(
            budget.explain(err),
            UnpackError::HeaderTooLarge { limit: 10 }
        ));
        // Outside headers: unbounded.
        assert_eq!(r.read(&mut buf).unwrap(), 64);
    }
}
